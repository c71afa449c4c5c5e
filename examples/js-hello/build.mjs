// Builds app.js into a component: node build.mjs OUT.wasm
// Uses componentize-js's JS API rather than `jco componentize`: jco 1.35's
// CLI fails on `--wit` with "failed to get path metadata".
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs OUT.wasm');
  process.exit(2);
}

const { component } = await componentize({
  sourcePath: resolve(here, 'app.js'),
  witPath: resolve(here, '../../wit/platform.wit'),
  worldName: 'service',
  // A pitstop service needs neither fetch() nor the fetch-event handler.
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(resolve(out), component);
console.log(`wrote ${resolve(out)} (${component.length} bytes)`);
