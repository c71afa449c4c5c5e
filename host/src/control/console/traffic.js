// The Traffic page: a card per component with its request rate, 5xx share,
// p50/p99 and breaker, and charts of each over the samples the page took
// (the last 5 minutes at most).
import { chart } from './chart.js';
import { $, el, replaceKeeping } from './dom.js';
import { ms } from './format.js';
import { between, rates } from './metrics.js';
import { state } from './state.js';

export function renderTraffic() {
  const names = state.components.map((c) => c.name);
  const samples = state.samples;
  const span = samples.length > 1 ? (samples[samples.length - 1].t - samples[0].t) / 1000 : 0;
  const since = span < 120 ? `${Math.round(span)} s ago` : `${Math.round(span / 60)} min ago`;
  const cards = names.map((name) => {
    const now = rates(samples, name, 5); // the last ~10 s
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
