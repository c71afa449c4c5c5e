// The Events page: per subscriber its lag and delivery counts (from
// /metrics), and the dead letters, each replayed or discarded from its row.
import { api } from './client.js';
import { $, el, labelCells, replaceKeeping } from './dom.js';
import { when } from './format.js';
import { sumBy } from './metrics.js';
import { act } from './poll.js';
import { state } from './state.js';

export function renderEvents() {
  const metrics = state.metrics || [];
  const lag = sumBy(metrics, 'pitstop_bus_lag_events', 'subscriber');
  const delivered = sumBy(metrics, 'pitstop_bus_delivered_total', 'subscriber');
  const retried = sumBy(metrics, 'pitstop_bus_retried_total', 'subscriber');
  const dead = sumBy(metrics, 'pitstop_bus_dead_lettered_total', 'subscriber');
  const subscribers = new Set([lag, delivered, retried, dead].flatMap(Object.keys));
  for (const c of state.components) if (c.topics && c.topics.subscribes.length) subscribers.add(c.name);
  const rows = [...subscribers].sort().map((name) =>
    el(
      'tr',
      { 'data-subscriber': name },
      el('th', { scope: 'row' }, name),
      el('td', { class: 'num lag' }, String(lag[name] || 0)),
      el('td', { class: 'num delivered' }, String(delivered[name] || 0)),
      el('td', { class: 'num retried' }, String(retried[name] || 0)),
      el('td', { class: 'num dead' }, String(dead[name] || 0)),
    ),
  );
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 5 }, 'No subscriber yet.')));
  replaceKeeping($('subscribers').tBodies[0], rows);
  labelCells($('subscribers'));

  const letters = state.letters.map((letter) => {
    const payload = typeof letter.payload === 'string' ? letter.payload : JSON.stringify(letter.payload);
    const preview = payload.length > 160 ? `${payload.slice(0, 160)}…` : payload;
    const what = `${letter.topic} for ${letter.subscriber} (${letter.id})`;
    return el(
      'tr',
      { 'data-letter': letter.id, 'data-key': `${letter.subscriber}/${letter.id}` },
      el('th', { scope: 'row' }, letter.subscriber),
      el('td', {}, letter.topic),
      el('td', { class: 'nowrap' }, when(new Date(letter.published_at).toISOString())),
      el('td', { class: 'num' }, String(letter.attempts)),
      el('td', {}, letter.last_error || ''),
      el('td', {}, el('code', { class: 'payload' }, preview)),
      el(
        'td',
        {},
        el('button', { type: 'button', class: 'replay', 'data-role': 'replay', 'aria-label': `Replay ${what}`, onclick: () => letterAction(letter, 'replay') }, 'Replay'),
        ' ',
        el('button', { type: 'button', class: 'discard danger', 'data-role': 'discard', 'aria-label': `Discard ${what}`, onclick: () => letterAction(letter, 'discard') }, 'Discard'),
      ),
    );
  });
  if (letters.length === 0) letters.push(el('tr', {}, el('td', { colspan: 7 }, 'No dead letters.')));
  // The listing is paged: the console shows the first page.
  if (state.moreLetters) {
    letters.push(el('tr', {}, el('td', { colspan: 7 }, `More dead letters than shown: page through GET /admin/dead-letters?after=${state.moreLetters}`)));
  }
  replaceKeeping($('dead-letters').tBodies[0], letters);
  labelCells($('dead-letters'));
}

function letterAction(letter, action) {
  const path = `/admin/dead-letters/${encodeURIComponent(letter.subscriber)}/${encodeURIComponent(letter.id)}`;
  if (action === 'replay') {
    act('Replaying the dead letter', async () => {
      await api('POST', `${path}/replay`);
      return `Replayed ${letter.topic} to ${letter.subscriber}: queued again with fresh attempts.`;
    });
  } else {
    act('Discarding the dead letter', async () => {
      await api('DELETE', path);
      return `Discarded ${letter.topic} for ${letter.subscriber}.`;
    });
  }
}
