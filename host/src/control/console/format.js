// Values in words, as the tables and cards show them: times (UTC), sizes
// and latencies.

/** An RFC 3339 time as `YYYY-MM-DD HH:MM:SS UTC`. */
export function when(time) {
  return `${String(time).replace('T', ' ').replace(/\.\d+/, '').replace(/Z$/, '')} UTC`;
}

export function bytes(size) {
  if (size >= 1 << 20) return `${(size / (1 << 20)).toFixed(1)} MiB`;
  if (size >= 1 << 10) return `${(size / (1 << 10)).toFixed(1)} KiB`;
  return `${size} B`;
}

export function ms(value) {
  if (value === null || value === undefined) return 'no requests';
  if (value === Infinity) return 'over 26 s';
  return value < 1 ? `${value.toFixed(2)} ms` : `${value.toFixed(1)} ms`;
}
