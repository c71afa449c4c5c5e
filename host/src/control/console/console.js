// The pitstop console: plain JavaScript, no dependencies, no build step.
//
// Everything it shows comes from the token-protected admin API and from
// /metrics, polled every POLL_MS. Data is only ever put into the page as
// text (textContent, attributes), never parsed as markup: component names
// and dead letters' payloads are other people's input.
'use strict';

const TOKEN_KEY = 'pitstop-admin-token';
const POLL_MS = 2000;
/** A poll's calls give up after this long, so a hung call cannot stop polling. */
const CALL_TIMEOUT_MS = 10000;
const WINDOW_MS = 5 * 60 * 1000;
const PAGES = ['components', 'traffic', 'events', 'health'];

const state = {
  timer: null,
  polling: false,
  pollAgain: false, // an action asked for a poll while one ran
  pollError: null, // the message the last failed poll showed
  selected: null,
  confirmUndeploy: false,
  samples: [],      // [{t, traffic: {component: {requests, errors, buckets}}}]
  metrics: null,    // the last parsed /metrics
  components: [],
  undeployed: [],   // names undeployed, their versions kept
  versions: null,
  letters: [],
  moreLetters: null,
  ready: null,
};

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Set a live region's text only when it changes, so that screen readers
 * hear a change once, not every poll. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function say(message) {
  setText($('status'), message);
}

/** An empty map: no inherited keys, so a component named `constructor` is
 * just a name. */
const map = () => Object.create(null);

/** How much a counter grew between two samples; a counter lower than
 * before was reset (the host restarted): it grew by its new value. */
const delta = (now, then) => (now >= then ? now - then : now);

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** What an answer of `status` with `body` means, in plain words. */
function plainError(status, body) {
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
async function call(method, path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
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
    signOut('The admin token was refused. Sign in again.');
    throw new ApiError(401, plainError(401, parsed));
  }
  return { status: response.status, body: parsed };
}

/** One call that must succeed (2xx); throws an ApiError in plain words. */
async function api(method, path, body) {
  const answer = await call(method, path, body);
  if (answer.status < 200 || answer.status > 299) {
    throw new ApiError(answer.status, plainError(answer.status, answer.body));
  }
  return answer.body;
}

// ------------------------------------------------------------- /metrics

/** Prometheus text as [{name, labels, value}]. */
function parseMetrics(text) {
  const samples = [];
  for (const line of String(text).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    const pairs = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let pair;
    while ((pair = pairs.exec(match[3] || '')) !== null) {
      labels[pair[1]] = pair[2].replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
    }
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

/** Sum of `name`'s samples per value of label `by`. */
function sumBy(metrics, name, by, keep = () => true) {
  const sums = map();
  for (const sample of metrics) {
    if (sample.name !== name || !keep(sample.labels)) continue;
    const key = sample.labels[by];
    sums[key] = (sums[key] || 0) + sample.value;
  }
  return sums;
}

/** Per component: requests, 5xx answers and latency buckets, as counters. */
function trafficOf(metrics) {
  const traffic = map();
  const of = (name) => (traffic[name] = traffic[name] || { requests: 0, errors: 0, buckets: map() });
  for (const sample of metrics) {
    const component = sample.labels.component;
    if (!component) continue;
    if (sample.name === 'pitstop_requests_total') {
      of(component).requests += sample.value;
      if (Number(sample.labels.status) >= 500) of(component).errors += sample.value;
    } else if (sample.name === 'pitstop_request_duration_seconds_bucket') {
      const buckets = of(component).buckets;
      buckets[sample.labels.le] = (buckets[sample.labels.le] || 0) + sample.value;
    }
  }
  return traffic;
}

/** The `q` quantile in ms of what the buckets counted between two samples. */
function quantile(before, after, q) {
  const bound = (le) => (le === '+Inf' ? Infinity : Number(le));
  const bounds = Object.keys(after).sort((a, b) => bound(a) - bound(b));
  const counts = bounds.map((le) => delta(after[le], (before && before[le]) || 0));
  const total = counts[counts.length - 1] || 0;
  if (total <= 0) return null;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i] >= q * total) return bound(bounds[i]) * 1000;
  }
  return null;
}

/** Rates between the samples `span` apart, ending with the newest. */
function rates(component, span) {
  const samples = state.samples;
  if (samples.length < 2) return null;
  return between(samples[Math.max(0, samples.length - 1 - span)], samples[samples.length - 1], component);
}

/** What `component` did between samples `first` and `last`: requests per
 * second, the share of them that were 5xx, p50 and p99 in ms. */
function between(first, last, component) {
  const none = { requests: 0, errors: 0, buckets: map() };
  const now = last.traffic[component] || none; // no request yet
  const then = first.traffic[component] || none;
  const seconds = (last.t - first.t) / 1000;
  const requests = delta(now.requests, then.requests);
  return {
    requests,
    perSecond: seconds > 0 ? requests / seconds : 0,
    errorRate: requests > 0 ? delta(now.errors, then.errors) / requests : 0,
    p50: quantile(then.buckets, now.buckets, 0.5),
    p99: quantile(then.buckets, now.buckets, 0.99),
  };
}

// ------------------------------------------------------------- polling

/** One round of calls, then render. A poll asked for while one runs (after
 * an action) runs right after it, so the page shows the action's effect. */
async function poll() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  if (state.polling) {
    state.pollAgain = true;
    return;
  }
  state.polling = true;
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
    if (state.pollError && $('status').textContent === state.pollError) say('');
    state.pollError = null;
  } catch (error) {
    if (error.status !== 401) {
      state.pollError = `${error.message} Showing what was last read.`;
      say(state.pollError);
    }
  } finally {
    state.polling = false;
  }
  if (state.pollAgain) {
    state.pollAgain = false;
    await poll();
  }
}

async function loadVersions(name) {
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

function startPolling() {
  stopPolling();
  poll();
  state.timer = setInterval(poll, POLL_MS);
}

function stopPolling() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

// ------------------------------------------------------------- rendering

function render() {
  renderBanner();
  renderComponents();
  renderDetail();
  renderTraffic();
  renderEvents();
  renderHealth();
}

function failingChecks() {
  const checks = (state.ready && state.ready.checks) || {};
  return Object.entries(checks).filter(([, result]) => result !== 'ok');
}

function renderBanner() {
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

/** An RFC 3339 time as `YYYY-MM-DD HH:MM:SS UTC`. */
function when(time) {
  return `${String(time).replace('T', ' ').replace(/\.\d+/, '').replace(/Z$/, '')} UTC`;
}

function bytes(size) {
  if (size >= 1 << 20) return `${(size / (1 << 20)).toFixed(1)} MiB`;
  if (size >= 1 << 10) return `${(size / (1 << 10)).toFixed(1)} KiB`;
  return `${size} B`;
}

/** Replace `parent`'s children with `children`, keeping keyboard focus: a
 * focused control inside a keyed row (or card) is focused again in the new
 * row with the same key, so a poll never throws the focus away. */
function replaceKeeping(parent, children) {
  const focused = document.activeElement;
  const keyed = focused && parent.contains(focused) ? focused.closest('[data-key]') : null;
  const key = keyed && keyed.getAttribute('data-key');
  const role = focused && focused.getAttribute('data-role');
  parent.replaceChildren(...children);
  if (key === null || key === undefined) return;
  for (const node of parent.querySelectorAll('[data-key]')) {
    if (node.getAttribute('data-key') !== key) continue;
    const again = role ? node.querySelector(`[data-role="${role}"]`) : null;
    if (again) again.focus();
  }
}

/** Each body cell of `table` labelled with its column's header, which the
 * narrow layout shows beside the value (rows become stacked blocks). */
function labelCells(table) {
  const headers = [...table.tHead.rows[0].cells].map((cell) => cell.textContent);
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((cell, i) => {
      if (headers[i] && !cell.hasAttribute('colspan')) cell.setAttribute('data-label', headers[i]);
    });
  }
}

/** The row header naming a component: a button that opens its versions. */
function selectCell(name) {
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

function renderComponents() {
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
  renderUndeployed();
}

/** Names undeployed with their versions kept: select one to serve it again. */
function renderUndeployed() {
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

function renderDetail() {
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

/**
 * A small line chart of `series` ([[values...], class]) over the last
 * `minutes`, in a figure that says what it shows: its title with the
 * current value, the value scale (0 and the top), and the time axis from
 * `since` (e.g. "5 min ago") to now. A bucket without requests (null) is a
 * gap, not a zero; one slower than the last latency bucket (Infinity) is
 * drawn at the top. `format` writes a value.
 */
function chart(title, series, format, since) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('viewBox', '0 0 100 40');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('aria-hidden', 'true');
  const axis = document.createElementNS('http://www.w3.org/2000/svg', 'line');
  for (const [name, value] of [['x1', 0], ['y1', 38], ['x2', 100], ['y2', 38], ['class', 'axis']]) {
    axis.setAttribute(name, value);
  }
  svg.append(axis);
  const known = series.flatMap(([values]) => values.filter(Number.isFinite));
  const top = Math.max(...known, 1e-9);
  for (const [values, kind] of series) {
    const step = values.length > 1 ? 100 / (values.length - 1) : 100;
    // One polyline per run of buckets that had requests.
    let run = [];
    const runs = [run];
    values.forEach((v, i) => {
      if (v === null || v === undefined || Number.isNaN(v)) {
        run = [];
        runs.push(run);
        return;
      }
      const y = v === Infinity ? 2 : 38 - (v / top) * 36;
      run.push(`${(i * step).toFixed(2)},${y.toFixed(2)}`);
    });
    for (const points of runs.filter((r) => r.length > 0)) {
      // A lone bucket is a short dash, so that it shows.
      if (points.length === 1) {
        const [x, y] = points[0].split(',').map(Number);
        points.push(`${(x < 99 ? x + 1.5 : x - 1.5).toFixed(2)},${y.toFixed(2)}`);
      }
      const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
      line.setAttribute('class', kind);
      line.setAttribute('points', points.join(' '));
      svg.append(line);
    }
  }
  const last = series.map(([values]) => values[values.length - 1]);
  const now = last.every((v) => v === null || v === undefined) ? 'no requests' : last.map(format).join(' / ');
  const scale = known.length ? `0 to ${format(top)}` : 'no requests yet';
  return el(
    'figure',
    { class: 'chart-figure', 'aria-label': `${title}: now ${now}; scale ${scale}; from ${since} to now` },
    el('figcaption', {}, el('span', {}, title), el('span', { class: 'now' }, `now ${now}`)),
    svg,
    el(
      'div',
      { class: 'chart-axis' },
      el('span', {}, since),
      el('span', { class: 'scale' }, scale),
      el('span', {}, 'now'),
    ),
  );
}

function ms(value) {
  if (value === null || value === undefined) return 'no requests';
  if (value === Infinity) return 'over 26 s';
  return value < 1 ? `${value.toFixed(2)} ms` : `${value.toFixed(1)} ms`;
}

function renderTraffic() {
  const names = state.components.map((c) => c.name);
  const samples = state.samples;
  const span = samples.length > 1 ? (samples[samples.length - 1].t - samples[0].t) / 1000 : 0;
  const since = span < 120 ? `${Math.round(span)} s ago` : `${Math.round(span / 60)} min ago`;
  const cards = names.map((name) => {
    const now = rates(name, 5); // the last ~10 s
    const series = { rate: [], errors: [], p50: [], p99: [] };
    for (let i = 1; i < state.samples.length; i++) {
      const step = between(state.samples[i - 1], state.samples[i], name);
      series.rate.push(step.perSecond);
      // No requests: no error rate (a gap), where 0 req/s is a rate.
      series.errors.push(step.requests > 0 ? 100 * step.errorRate : null);
      series.p50.push(step.p50);
      series.p99.push(step.p99);
    }
    const component = state.components.find((c) => c.name === name);
    const breaker = component && component.breaker ? component.breaker.state : 'none';
    const perSecond = now ? `${now.perSecond.toFixed(1)} req/s` : 'measuring…';
    const errorRate = now ? `${(now.errorRate * 100).toFixed(1)}%` : 'measuring…';
    return el(
      'section',
      { class: 'card', 'data-component': name, 'data-key': name, 'aria-label': `${name} traffic` },
      el('h3', {}, name),
      el(
        'dl',
        {},
        el('dt', {}, 'Requests'), el('dd', { class: 'rate' }, perSecond),
        el('dt', {}, 'Errors (5xx)'), el('dd', { class: 'error-rate' }, errorRate),
        el('dt', {}, 'p50 / p99'),
        el('dd', {}, !now ? 'measuring…' : now.p50 === null ? 'no requests' : `${ms(now.p50)} / ${ms(now.p99)}`),
        el('dt', {}, 'Breaker'),
        el('dd', { class: `state state-${breaker}` }, breaker === 'open' ? 'OPEN' : breaker),
      ),
      chart('Requests per second', [[series.rate, 'rate']], (v) => `${v.toFixed(1)}/s`, since),
      chart('Errors (5xx), percent', [[series.errors, 'errors']], (v) => `${v.toFixed(1)}%`, since),
      chart('Latency p50 (solid) / p99 (dashed)', [[series.p50, 'p50'], [series.p99, 'p99']], ms, since),
    );
  });
  if (cards.length === 0) cards.push(el('p', {}, 'No component is deployed.'));
  replaceKeeping($('traffic'), cards);
}

function renderEvents() {
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

function renderHealth() {
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

// ------------------------------------------------------------- actions

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

async function act(what, work) {
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

/** Serve `version` of `name`: forward after a rollback, or any kept version. */
function activate(name, version) {
  act(`Activating ${name} version ${version}`, async () => {
    const path = `/admin/components/${encodeURIComponent(name)}/versions/${version}/activate`;
    const answer = await api('POST', path);
    return `${name} version ${answer.version} is active.`;
  });
}

function rollback() {
  const name = state.selected;
  act(`Rolling back ${name}`, async () => {
    const answer = await api('POST', `/admin/components/${encodeURIComponent(name)}/rollback`);
    return `${name} rolled back: version ${answer.version} is active.`;
  });
}

function undeploy() {
  const name = state.selected;
  state.confirmUndeploy = false;
  act(`Undeploying ${name}`, async () => {
    await api('DELETE', `/admin/components/${encodeURIComponent(name)}`);
    state.selected = null;
    $('components-title').focus();
    return `${name} was undeployed. Its keyspace is kept; deploy it again to serve it.`;
  });
}

async function deploy(event) {
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

// ------------------------------------------------------------- pages

function show(page, focus) {
  const signedIn = Boolean(sessionStorage.getItem(TOKEN_KEY));
  if (!signedIn) page = 'sign-in';
  else if (!PAGES.includes(page)) page = 'components';
  for (const section of document.querySelectorAll('main > section')) {
    section.hidden = section.id !== `page-${page}`;
  }
  $('nav').hidden = !signedIn;
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

async function signIn(event) {
  event.preventDefault();
  const token = $('token').value.trim();
  $('sign-in-error').textContent = '';
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    const answer = await call('GET', '/admin/components');
    if (answer.status !== 200) throw new ApiError(answer.status, plainError(answer.status, answer.body));
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
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

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  state.samples = [];
  state.selected = null;
  state.components = [];
  state.letters = [];
  state.metrics = null;
  state.ready = null;
  render();
  show('sign-in', true);
  if (typeof message === 'string') $('sign-in-error').textContent = message;
}

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => signOut('Signed out.'));
  $('deploy').addEventListener('submit', deploy);
  $('rollback').addEventListener('click', rollback);
  $('undeploy').addEventListener('click', () => {
    state.confirmUndeploy = true;
    renderDetail();
    $('undeploy-yes').focus();
  });
  $('undeploy-no').addEventListener('click', () => {
    state.confirmUndeploy = false;
    renderDetail();
    $('undeploy').focus();
  });
  $('undeploy-yes').addEventListener('click', undeploy);
  document.querySelector('.skip').addEventListener('click', (event) => {
    event.preventDefault(); // the hash names pages: stay on this one
    $('main').focus();
  });
  window.addEventListener('hashchange', () => show(location.hash.slice(1), true));
  show(location.hash.slice(1), false);
  if (sessionStorage.getItem(TOKEN_KEY)) startPolling();
});
