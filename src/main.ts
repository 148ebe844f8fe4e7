/**
 * Process entry point. Turns on Node's on-disk compile cache where the runtime has it (Node ≥ 22.1;
 * the Docker image's Node 24 does), which roughly halves module loading on every later start, then
 * loads the sidecar: the one-file bundle `npm run build` writes beside this file (src/build-bundle.ts),
 * or the compiled modules when there is no bundle or it is older than they are (a later plain `tsc`
 * run must not leave a stale bundle in charge). The cache lives under the OS temp dir; when that is
 * not writable Node simply runs without it.
 */
import { statSync } from 'node:fs';
import module from 'node:module';

(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
const bundle = new URL('./sidecar.bundle.js', import.meta.url);
const modules = new URL('./sidecar.js', import.meta.url);
const modifiedMs = (file: URL): number => statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Number.NEGATIVE_INFINITY;
const bundleMs = modifiedMs(bundle);
await import(bundleMs !== Number.NEGATIVE_INFINITY && bundleMs >= modifiedMs(modules) ? bundle.href : modules.href);
