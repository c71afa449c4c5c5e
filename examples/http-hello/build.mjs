// Builds app.js into a wasi:http/proxy component: node build.mjs OUT.wasm
// Uses componentize-js's JS API rather than `jco componentize`: jco 1.35's
// CLI fails on `--wit` with "failed to get path metadata".
import { componentize } from '@bytecodealliance/componentize-js';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs OUT.wasm');
  process.exit(2);
}

// The WASI packages come from the jco npm package (WASI 0.2.12), with their
// version rewritten to 0.2.10, the one the StarlingMonkey engine inside
// componentize-js 0.23 was built against (see wit/world.wit): the
// interfaces the proxy world uses did not change between the two.
const wasi = resolve(here, 'node_modules/@bytecodealliance/jco/lib/wit/builtin/0.2.12');
const wit = await mkdtemp(join(tmpdir(), 'http-hello-wit-'));
await cp(resolve(here, 'wit/world.wit'), join(wit, 'world.wit'));
for (const pkg of await readdir(wasi)) {
  await mkdir(join(wit, 'deps', pkg), { recursive: true });
  for (const file of await readdir(join(wasi, pkg))) {
    const text = await readFile(join(wasi, pkg, file), 'utf8');
    await writeFile(join(wit, 'deps', pkg, file), text.replaceAll('@0.2.12', '@0.2.10'));
  }
}

const { component } = await componentize({
  sourcePath: resolve(here, 'app.js'),
  // The world `hello` includes wasi:http/proxy@0.2.10.
  witPath: wit,
  worldName: 'hello',
  // The default features: `fetch-event` makes StarlingMonkey export
  // wasi:http/incoming-handler and dispatch to addEventListener('fetch').
});
await rm(wit, { recursive: true });
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(resolve(out), component);
console.log(`wrote ${resolve(out)} (${component.length} bytes)`);
