#!/usr/bin/env node
// evos-js-build: build an evos plugin component from JavaScript or
// TypeScript with the pinned componentize-js.
//
//   evos-js-build <entry.js|entry.ts> --kind <policy|agent|connector|model-adapter> -o <out.wasm> [--http]
//   evos-js-build <entry.js|entry.ts> --wit <dir> --world <name> -o <out.wasm> [--http]
//
// The entry and what it imports (relative modules, `@evos/sdk`) are bundled
// into one module with rolldown (TypeScript types are stripped), then
// componentize-js builds the component against a world: the kind's world
// of the WIT this package ships (`--kind`), or a given one (`evos build`
// passes the world of exactly what the manifest grants: componentize-js
// imports every interface of its world, used or not). `wasi:http`
// (`fetch`) is left out unless --http is given: only a plugin whose
// manifest grants `http` can use it.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const KINDS = ['policy', 'agent', 'connector', 'model-adapter'];
const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');

function usage(message) {
  console.error(`evos-js-build: ${message}`);
  console.error('usage: evos-js-build <entry.js|entry.ts> (--kind <policy|agent|connector|model-adapter> | --wit <dir> --world <name>) -o <out.wasm> [--http]');
  process.exit(2);
}

function parseArgs(argv) {
  const args = { http: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--kind') args.kind = argv[++i];
    else if (a === '--wit') args.wit = argv[++i];
    else if (a === '--world') args.world = argv[++i];
    else if (a === '-o' || a === '--out') args.out = argv[++i];
    else if (a === '--http') args.http = true;
    else if (a.startsWith('-')) usage(`unknown option ${a}`);
    else if (args.entry) usage(`one entry file is built at a time (got ${args.entry} and ${a})`);
    else args.entry = a;
  }
  if (!args.entry) usage('no entry file given');
  if (args.wit || args.world) {
    if (!args.wit || !args.world) usage('--wit and --world go together');
    if (args.kind) usage('give --kind or --wit/--world, not both');
  } else if (!KINDS.includes(args.kind)) {
    usage(`--kind must be one of ${KINDS.join(', ')} (got ${args.kind ?? 'nothing'})`);
  }
  if (!args.out) usage('no output given (-o <out.wasm>)');
  return args;
}

const args = parseArgs(process.argv.slice(2));
const work = await mkdtemp(join(tmpdir(), 'evos-js-build-'));
try {
  const { rolldown } = await import('rolldown');
  const bundle = await rolldown({
    input: resolve(args.entry),
    external: (id) => id.startsWith('evos:') || id.startsWith('wasi:'),
    resolve: { alias: { '@evos/sdk': join(root, 'src') } },
    // A plugin's tsconfig.json maps `@evos/sdk` to the type declarations
    // for tsc; the bundle takes the SDK's code.
    tsconfig: false,
    logLevel: 'warn',
  });
  const bundled = join(work, 'plugin.js');
  await bundle.write({ file: bundled, format: 'esm', codeSplitting: false });
  await bundle.close();

  const { componentize } = await import('@bytecodealliance/componentize-js');
  const { component } = await componentize({
    sourcePath: bundled,
    witPath: args.wit ? resolve(args.wit) : join(root, 'wit'),
    worldName: args.world ?? args.kind,
    disableFeatures: args.http ? [] : ['http', 'fetch-event'],
  });
  await writeFile(resolve(args.out), component);
} catch (e) {
  console.error(`evos-js-build: building ${args.entry} failed: ${e && e.message ? e.message : e}`);
  process.exitCode = 1;
} finally {
  await rm(work, { recursive: true, force: true });
}
