/**
 * Process entry point. Turns on Node's on-disk compile cache where the runtime has it (Node ≥ 22.1;
 * the Docker image's Node 24 does), which roughly halves module loading on every later start; loads
 * the sidecar: the one-file bundle `npm run build` writes beside this file (src/build-bundle.ts), or
 * the compiled modules when there is no bundle or it is older than they are (a later plain `tsc` run
 * must not leave a stale bundle in charge); sets the one V8 flag the sidecar runs with (below); and
 * starts it. The cache lives under the OS temp dir; when that is not writable Node simply runs
 * without it.
 */
import { statSync } from 'node:fs';
import module from 'node:module';
import v8 from 'node:v8';

(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
const bundle = new URL('./sidecar.bundle.js', import.meta.url);
const modules = new URL('./sidecar.js', import.meta.url);
const modifiedMs = (file: URL): number => statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Number.NEGATIVE_INFINITY;
const bundleMs = modifiedMs(bundle);
const sidecar = (await import(bundleMs !== Number.NEGATIVE_INFINITY && bundleMs >= modifiedMs(modules) ? bundle.href : modules.href)) as typeof import('./sidecar.js');

// No allocation-site pretenuring (bench/README.md finding 36). After a burst of load V8 (Node ≥ 24)
// decides to allocate grpc-js's and node:http2's per-call objects straight in the old generation;
// from there each one keeps the young objects it points to alive through every scavenge until the
// next mark-compact, so at 1,000 Checks/s a third of the young generation survived, scavenges took
// 5–10 ms and a mark-compact ran every second (p99 11–14 ms instead of 3). It changes when objects
// move, never what the program computes. Node accepts no V8 heuristics in NODE_OPTIONS, so it is set
// here: once the modules are loaded, because a flag set at run time changes the hash V8 checks code
// caches against, and Node's own modules (http2, tls, zlib, …) loaded after it are compiled from
// source instead of from the cache built into the binary (finding 39: 40–50 ms of a start on Node
// 24); before the sidecar reads its configuration, builds anything or serves a request.
v8.setFlagsFromString('--no-allocation-site-pretenuring');
await sidecar.main();
