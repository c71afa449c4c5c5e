// Polling: every POLL_MS one round of calls to the admin API and /metrics,
// kept in the shared state, then a redraw and the time it was read
// ("Updated HH:MM:SS UTC"). Actions run through act, which polls once the
// action is done so that the page shows its effect.
import { api, call, token } from './client.js';
import { $, el, say } from './dom.js';
import { parseMetrics, trafficOf } from './metrics.js';
import { render } from './render.js';
import { state } from './state.js';

const POLL_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;

let timer = null;
let polling = false;
let pollAgain = false; // an action asked for a poll while one ran
let pollError = null; // the message the last failed poll showed

/** One round of calls, then render. A poll asked for while one runs (after
 * an action) runs right after it, so the page shows the action's effect. */
export async function poll() {
  if (!token()) return;
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  try {
    const [components, undeployed, metrics, ready, letters] = await Promise.all([
      api('GET', '/admin/components'),
      api('GET', '/admin/components?state=undeployed'),
      call('GET', '/metrics'),
      call('GET', '/admin/ready'),
      api('GET', '/admin/dead-letters'),
    ]);
    state.components = components;
    state.undeployed = undeployed;
    state.metrics = parseMetrics(metrics.body);
    state.ready = ready.body;
    state.letters = letters.dead_letters;
    state.moreLetters = letters.next;
    const t = Date.now();
    state.samples.push({ t, traffic: trafficOf(state.metrics) });
    while (state.samples.length > 2 && t - state.samples[0].t > WINDOW_MS) state.samples.shift();
    if (state.selected) await loadVersions(state.selected);
    render();
    updated(t);
    if (pollError && $('status').textContent === pollError) say('');
    pollError = null;
  } catch (error) {
    if (error.status !== 401) {
      pollError = `${error.message} Showing what was last read.`;
      say(pollError);
    }
  } finally {
    polling = false;
  }
  if (pollAgain) {
    pollAgain = false;
    await poll();
  }
}

/** When the page last read the platform: once polls fail, how old what it
 * shows is. Not a live region: it changes every poll. */
function updated(t) {
  const iso = new Date(t).toISOString();
  $('updated').replaceChildren('Updated ', el('time', { datetime: iso }, `${iso.slice(11, 19)} UTC`));
  $('updated').hidden = !token();
}

export async function loadVersions(name) {
  try {
    const versions = await api('GET', `/admin/components/${encodeURIComponent(name)}/versions`);
    // Another component may have been picked while this one loaded.
    if (versions.name === state.selected) state.versions = versions;
  } catch (error) {
    state.versions = null;
    if (error.status === 404) state.selected = null;
    else throw error;
  }
}

export function startPolling() {
  stopPolling();
  poll();
  timer = setInterval(poll, POLL_MS);
}

export function stopPolling() {
  if (timer) clearInterval(timer);
  timer = null;
}

/** Run an action: say `what` is under way, then what `work` answers, or
 * why it failed; poll once it succeeded. */
export async function act(what, work) {
  say(`${what}…`);
  try {
    const message = await work();
    say(message);
    await poll();
    return true;
  } catch (error) {
    say(`${what} failed. ${error.message}`);
    return false;
  }
}
