// The traffic cards' line charts: a small SVG per series, in a figure that
// says in words what it shows (current value, scale, time axis).
import { el } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';

/**
 * A small line chart of `series` ([[values...], class]) over the last
 * `minutes`, in a figure that says what it shows: its title with the
 * current value, the value scale (0 and the top), and the time axis from
 * `since` (e.g. "5 min ago") to now. A bucket without requests (null) is a
 * gap, not a zero; one slower than the last latency bucket (Infinity) is
 * drawn at the top. `format` writes a value.
 */
export function chart(title, series, format, since) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('viewBox', '0 0 100 40');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('aria-hidden', 'true');
  const axis = document.createElementNS(SVG, 'line');
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
      const line = document.createElementNS(SVG, 'polyline');
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
