// Pages and the session: which page shows (the URL's hash names it, the
// sign-in page whenever no token is kept), signing in with the admin
// token, and signing out, which forgets the token and what was read.
import { ApiError, call, forgetToken, keepToken, plainError, token } from './client.js';
import { $, say } from './dom.js';
import { startPolling, stopPolling } from './poll.js';
import { render } from './render.js';
import { state } from './state.js';

const PAGES = ['components', 'traffic', 'events', 'health'];

export function show(page, focus) {
  const signedIn = Boolean(token());
  if (!signedIn) page = 'sign-in';
  else if (!PAGES.includes(page)) page = 'components';
  for (const section of document.querySelectorAll('main > section')) {
    section.hidden = section.id !== `page-${page}`;
  }
  $('nav').hidden = !signedIn;
  $('updated').hidden = !signedIn || !$('updated').textContent;
  for (const link of document.querySelectorAll('nav a')) {
    if (link.getAttribute('href') === `#${page}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${page === 'sign-in' ? 'Sign in' : page[0].toUpperCase() + page.slice(1)} · pitstop console`;
  if (focus) {
    const heading = document.querySelector(`#page-${page} h2`);
    if (heading) heading.focus();
  }
}

export async function signIn(event) {
  event.preventDefault();
  const typed = $('token').value.trim();
  $('sign-in-error').textContent = '';
  if (!typed) return;
  keepToken(typed);
  try {
    const answer = await call('GET', '/admin/components');
    if (answer.status !== 200) throw new ApiError(answer.status, plainError(answer.status, answer.body));
  } catch (error) {
    forgetToken();
    $('sign-in-error').textContent = error.status === 401 ? 'That token was refused.' : error.message;
    show('sign-in', false);
    $('token').value = '';
    $('token').focus();
    return;
  }
  $('token').value = '';
  say('Signed in.');
  const page = location.hash.slice(1);
  show(PAGES.includes(page) ? page : 'components', true);
  startPolling();
}

export function signOut(message) {
  forgetToken();
  stopPolling();
  state.samples = [];
  state.selected = null;
  state.components = [];
  state.letters = [];
  state.metrics = null;
  state.ready = null;
  render();
  $('updated').replaceChildren();
  show('sign-in', true);
  if (typeof message === 'string') $('sign-in-error').textContent = message;
}
