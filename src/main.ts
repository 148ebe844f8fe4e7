/**
 * Process entry point. Turns on Node's on-disk compile cache where the runtime has it (Node ≥ 22.1;
 * the Docker image's Node 24 does), which roughly halves module loading on every later start, then
 * loads the sidecar. The cache lives under the OS temp dir; when that is not writable Node simply
 * runs without it.
 */
import module from 'node:module';

(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
await import('./sidecar.js');
