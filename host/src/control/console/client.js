// The admin API client: every call carries the admin token kept in this
// tab's sessionStorage, gives up after CALL_TIMEOUT_MS, and a refusal
// becomes an ApiError in plain words. A 401 signs the operator out,
// through the handler console.js gives whenRefused.

const TOKEN_KEY = 'pitstop-admin-token';
/** A poll's calls give up after this long, so a hung call cannot stop polling. */
const CALL_TIMEOUT_MS = 10000;

export const token = () => sessionStorage.getItem(TOKEN_KEY);
export const keepToken = (value) => sessionStorage.setItem(TOKEN_KEY, value);
export const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

let refused = () => {};

/** Call `handler` with a message in words when the token is refused. */
export function whenRefused(handler) {
  refused = handler;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** What an answer of `status` with `body` means, in plain words. */
export function plainError(status, body) {
  const said = body && typeof body === 'object' && body.error ? body.error : String(body || '');
  const what = {
    400: 'The platform refused the request',
    401: 'The admin token was refused',
    404: 'Not found',
    405: 'Not allowed',
    409: 'Conflict',
    413: 'Too large',
    422: 'Not a component this platform can run',
    503: 'Unavailable',
  }[status] || (status >= 500 ? 'The platform failed' : `Answer ${status}`);
  return said ? `${what}: ${said}` : `${what}.`;
}

/** One call; resolves to {status, body} whatever the status, except 401. */
export async function call(method, path, body) {
  const bearer = token();
  const headers = bearer ? { Authorization: `Bearer ${bearer}` } : {};
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), body ? 10 * CALL_TIMEOUT_MS : CALL_TIMEOUT_MS);
  let response;
  let text;
  try {
    response = await fetch(path, { method, headers, body, cache: 'no-store', signal: abort.signal });
    text = await response.text();
  } catch (error) {
    const why = abort.signal.aborted ? 'no answer in time' : error.message;
    throw new ApiError(0, `The admin API cannot be reached (${why}).`);
  } finally {
    clearTimeout(timer);
  }
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch (_) {
    // Not JSON (/metrics): the text itself.
  }
  if (response.status === 401) {
    refused('The admin token was refused. Sign in again.');
    throw new ApiError(401, plainError(401, parsed));
  }
  return { status: response.status, body: parsed };
}

/** One call that must succeed (2xx); throws an ApiError in plain words. */
export async function api(method, path, body) {
  const answer = await call(method, path, body);
  if (answer.status < 200 || answer.status > 299) {
    throw new ApiError(answer.status, plainError(answer.status, answer.body));
  }
  return answer.body;
}
