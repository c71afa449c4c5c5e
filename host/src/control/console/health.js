// Readiness: the checks behind /ready on the Health page, and the banner
// that names a failing check on every page.
import { $, el, labelCells, replaceKeeping } from './dom.js';
import { state } from './state.js';

function failingChecks() {
  const checks = (state.ready && state.ready.checks) || {};
  return Object.entries(checks).filter(([, result]) => result !== 'ok');
}

export function renderBanner() {
  const banner = $('banner');
  const failing = failingChecks();
  banner.hidden = failing.length === 0;
  const text = failing.map(([check, result]) => `${check}: ${result}. `).join('');
  if (banner.getAttribute('data-text') === text) return; // said already
  banner.setAttribute('data-text', text);
  banner.replaceChildren();
  if (failing.length === 0) return;
  banner.append(
    el('strong', {}, 'Not ready. '),
    failing.map(([check, result]) => `${check}: ${result}. `),
    el('a', { href: '#health' }, 'See health'),
  );
}

export function renderHealth() {
  const report = state.ready || { status: 'unknown', checks: {} };
  const failing = failingChecks();
  const summary = failing.length ? `Not ready: ${failing.length} check(s) failing.` : `Ready (${report.status}).`;
  if ($('health-summary').textContent !== summary) {
    $('health-summary').replaceChildren(
      el('strong', { class: `state state-${failing.length ? 'bad' : 'ok'}` }, summary),
    );
  }
  replaceKeeping(
    $('checks').tBodies[0],
    Object.entries(report.checks).map(([check, result]) =>
      el(
        'tr',
        { 'data-check': check },
        el('th', { scope: 'row' }, check),
        el('td', { class: `state state-${result === 'ok' ? 'ok' : 'bad'}` }, result === 'ok' ? 'ok' : `failing: ${result}`),
      ),
    ),
  );
  labelCells($('checks'));
}
