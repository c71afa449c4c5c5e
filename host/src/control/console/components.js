// The Components page's table: every deployed component with its active
// version (and canary), routes, size, breaker, invocations in flight and
// topics.
import { selectCell } from './detail.js';
import { $, el, labelCells, replaceKeeping } from './dom.js';
import { bytes, when } from './format.js';
import { sumBy } from './metrics.js';
import { state } from './state.js';

function stateCell(breaker) {
  if (!breaker) return el('td', {}, 'none');
  const word = breaker.state === 'open' ? 'OPEN' : breaker.state;
  return el(
    'td',
    {},
    el('span', { class: `state state-${breaker.state}` }, word),
    el('br'),
    el(
      'span',
      { class: 'quiet' },
      `${breaker.consecutive_failures} failed in a row, ` +
        `${breaker.window_failures}/${breaker.window_calls} in window, opened ${breaker.opened}×`,
    ),
  );
}

export function renderComponents() {
  const inFlight = sumBy(state.metrics || [], 'pitstop_in_flight_invocations', 'component');
  const rows = state.components.map((c) => {
    const topics = c.topics || { publishes: [], subscribes: [] };
    const canary = c.canary
      ? el('span', { class: 'quiet' }, ` (canary v${c.canary.version} at ${c.canary.percent}%)`)
      : null;
    return el(
      'tr',
      { 'data-component': c.name, 'data-key': c.name },
      selectCell(c.name),
      el('td', { class: 'num version' }, `v${c.version}`, canary),
      el('td', {}, c.routes.length ? c.routes.join(', ') : 'none'),
      el('td', { class: 'num' }, bytes(c.size)),
      el('td', { class: 'nowrap' }, when(c.deployed_at)),
      stateCell(c.breaker),
      el('td', { class: 'num' }, String(inFlight[c.name] || 0)),
      el(
        'td',
        {},
        topics.publishes.length ? `publishes ${topics.publishes.join(', ')}` : null,
        topics.publishes.length && topics.subscribes.length ? el('br') : null,
        topics.subscribes.length ? `subscribes ${topics.subscribes.join(', ')}` : null,
        !topics.publishes.length && !topics.subscribes.length ? 'none' : null,
      ),
    );
  });
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 8 }, 'No component is deployed.')));
  replaceKeeping($('components').tBodies[0], rows);
  labelCells($('components'));
}
