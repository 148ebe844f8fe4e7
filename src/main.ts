/**
 * Process entry point. Turns on Node's on-disk compile cache where the runtime has it (Node ≥ 22.1;
 * the Docker image's Node 24 does), which roughly halves module loading on every later start, then
 * loads the sidecar: the one-file bundle `npm run build` writes beside this file (src/build-bundle.ts),
 * or the compiled modules when there is no bundle (a plain `tsc` build). The cache lives under the OS
 * temp dir; when that is not writable Node simply runs without it.
 */
import { existsSync } from 'node:fs';
import module from 'node:module';

(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
const bundle = new URL('./sidecar.bundle.js', import.meta.url);
await import(existsSync(bundle) ? bundle.href : './sidecar.js');
