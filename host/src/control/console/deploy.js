// The deploy form: uploads a .wasm as a new version of a component (or a
// new component with routes), counting the seconds while the platform
// compiles it, and says how it went in words.
import { api } from './client.js';
import { $ } from './dom.js';
import { bytes } from './format.js';
import { poll } from './poll.js';

export async function deploy(event) {
  event.preventDefault();
  const name = $('deploy-name').value.trim();
  const file = $('deploy-file').files[0];
  const result = $('deploy-result');
  result.className = 'result';
  if (!name || !file) {
    result.className = 'result error';
    result.textContent = 'Give a component name and choose a .wasm file.';
    return;
  }
  const query = new URLSearchParams();
  for (const route of $('deploy-routes').value.split(',').map((r) => r.trim()).filter(Boolean)) {
    query.append('route', route);
  }
  const path = `/admin/components/${encodeURIComponent(name)}${query.toString() ? `?${query}` : ''}`;
  // The API answers once the component is compiled, which can take a
  // minute for a big interpreter: the seconds are counted meanwhile.
  const started = Date.now();
  const seconds = () => Math.round((Date.now() - started) / 1000);
  const what = `Deploying ${file.name} (${bytes(file.size)}) as ${name}: uploading and compiling`;
  result.textContent = `${what}…`;
  const ticker = setInterval(() => {
    result.textContent = `${what}, ${seconds()} s…`;
  }, 1000);
  try {
    const answer = await api('PUT', path, await file.arrayBuffer());
    const took = `in ${seconds()} s`;
    result.textContent = answer.unchanged
      ? `${name} version ${answer.version} is active with these bytes already: nothing deployed.`
      : answer.created
        ? `Deployed ${name}: a new component, version ${answer.version}, ${took}.`
        : `Deployed ${name} version ${answer.version} ${took}; it serves now.`;
    $('deploy-file').value = '';
    await poll();
  } catch (error) {
    result.className = 'result error';
    // No answer at all: a file over the upload limit is cut off at once;
    // a long wait is a slow compile or a server gone, not a size.
    const cut =
      error.status !== 0
        ? ''
        : seconds() < 5
          ? ' The upload was cut off: a file over the admin API\'s upload limit ([admin] max_upload) is refused before it is read.'
          : ` No answer after ${seconds()} s: the compile may still finish (the components list will show it), or the server went away.`;
    result.textContent = `The deploy of ${name} failed. ${error.message}${cut}`;
  } finally {
    clearInterval(ticker);
  }
}
