// The Components page's undeployed table: names undeployed with their
// versions kept (until a purge); picking one serves a version again.
import { selectCell } from './detail.js';
import { $, el, labelCells, replaceKeeping } from './dom.js';
import { when } from './format.js';
import { state } from './state.js';

export function renderUndeployed() {
  $('undeployed-section').hidden = state.undeployed.length === 0;
  const rows = state.undeployed.map((u) =>
    el(
      'tr',
      { 'data-component': u.name, 'data-key': u.name },
      selectCell(u.name),
      el('td', { class: 'num' }, `v${u.last_version}`),
      el('td', { class: 'num' }, String(u.versions)),
      el('td', { class: 'nowrap' }, when(u.deployed_at)),
    ),
  );
  replaceKeeping($('undeployed').tBodies[0], rows);
  labelCells($('undeployed'));
}
