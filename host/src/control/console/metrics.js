// The arithmetic on /metrics: Prometheus text as samples, sums per label,
// and per component the request rate, the share of 5xx answers and p50/p99
// between two samples. Functions of their arguments only: no page, no state.

/** An empty map: no inherited keys, so a component named `constructor` is
 * just a name. */
export const map = () => Object.create(null);

/** How much a counter grew between two samples; a counter lower than
 * before was reset (the host restarted): it grew by its new value. */
export const delta = (now, then) => (now >= then ? now - then : now);

/** Prometheus text as [{name, labels, value}]. */
export function parseMetrics(text) {
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
export function sumBy(metrics, name, by, keep = () => true) {
  const sums = map();
  for (const sample of metrics) {
    if (sample.name !== name || !keep(sample.labels)) continue;
    const key = sample.labels[by];
    sums[key] = (sums[key] || 0) + sample.value;
  }
  return sums;
}

/** Per component: requests, 5xx answers and latency buckets, as counters. */
export function trafficOf(metrics) {
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
export function quantile(before, after, q) {
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

/** Rates between the `samples` `span` apart, ending with the newest. */
export function rates(samples, component, span) {
  if (samples.length < 2) return null;
  return between(samples[Math.max(0, samples.length - 1 - span)], samples[samples.length - 1], component);
}

/** What `component` did between samples `first` and `last`: requests per
 * second, the share of them that were 5xx, p50 and p99 in ms. */
export function between(first, last, component) {
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
