// A picked component: the button that picks it (in the components and
// undeployed tables), its version history, and what can be done to it:
// roll back, serve any kept version, undeploy after confirming.
import { api } from './client.js';
import { $, el, labelCells, replaceKeeping, say } from './dom.js';
import { bytes, when } from './format.js';
import { act, loadVersions } from './poll.js';
import { render } from './render.js';
import { state } from './state.js';

/** The row header naming a component: a button that opens its versions. */
export function selectCell(name) {
  return el(
    'th',
    { scope: 'row' },
    el(
      'button',
      {
        type: 'button',
        class: 'link',
        'data-role': 'select',
        'aria-pressed': state.selected === name ? 'true' : 'false',
        onclick: () => select(name),
      },
      name,
    ),
  );
}

async function select(name) {
  state.selected = name;
  state.confirmUndeploy = false;
  $('deploy-name').value = name;
  try {
    await loadVersions(name);
    render();
    $('detail-title').focus();
  } catch (error) {
    say(error.message);
  }
}

export function renderDetail() {
  const detail = $('detail');
  detail.hidden = !state.selected || !state.versions;
  if (detail.hidden) return;
  const name = state.selected;
  $('detail-title').textContent = `${name}: versions`;
  $('undeploy-yes').textContent = `Yes, undeploy ${name}`;
  // An undeployed name can only be served again, from a version's button.
  const serving = state.versions.active !== null;
  $('undeploy-confirm').hidden = !serving || !state.confirmUndeploy;
  $('undeploy').hidden = !serving || state.confirmUndeploy;
  $('rollback').hidden = !serving;
  const versions = [...state.versions.versions].reverse();
  replaceKeeping($('versions').tBodies[0],
    versions.map((v) =>
      el(
        'tr',
        { 'data-version': v.version },
        el('th', { scope: 'row', class: 'num' }, `v${v.version}`),
        el('td', {}, v.version === state.versions.active ? 'active' : v.withdrawn ? 'withdrawn' : ''),
        el('td', { class: 'nowrap' }, when(v.deployed_at)),
        el('td', { class: 'num' }, bytes(v.size)),
        el('td', {}, el('code', { title: v.digest }, v.digest.slice(0, 12))),
        el(
          'td',
          {},
          v.version === state.versions.active
            ? ''
            : el('button', { type: 'button', class: 'activate', onclick: () => activate(name, v.version) }, `Serve v${v.version}`),
        ),
      ),
    ),
  );
  labelCells($('versions'));
}

/** Serve `version` of `name`: forward after a rollback, or any kept version. */
function activate(name, version) {
  act(`Activating ${name} version ${version}`, async () => {
    const path = `/admin/components/${encodeURIComponent(name)}/versions/${version}/activate`;
    const answer = await api('POST', path);
    return `${name} version ${answer.version} is active.`;
  });
}

export function rollback() {
  const name = state.selected;
  act(`Rolling back ${name}`, async () => {
    const answer = await api('POST', `/admin/components/${encodeURIComponent(name)}/rollback`);
    return `${name} rolled back: version ${answer.version} is active.`;
  });
}

/** The undeploy button asks first: it shows the confirmation instead. */
export function askToUndeploy() {
  state.confirmUndeploy = true;
  renderDetail();
  $('undeploy-yes').focus();
}

export function keepDeployed() {
  state.confirmUndeploy = false;
  renderDetail();
  $('undeploy').focus();
}

export function undeploy() {
  const name = state.selected;
  state.confirmUndeploy = false;
  act(`Undeploying ${name}`, async () => {
    await api('DELETE', `/admin/components/${encodeURIComponent(name)}`);
    state.selected = null;
    $('components-title').focus();
    return `${name} was undeployed. Its keyspace is kept; deploy it again to serve it.`;
  });
}
