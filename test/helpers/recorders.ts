/**
 * Preloads that record what a child process did, for tests that start the built sidecar or the
 * healthcheck probe: which of Node's built-in modules it loaded, and which environment variables it
 * read (bench/README.md findings 39 and 41). Each writes its log when the process exits.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface ChildRecorder {
  /** The node argument that installs the preload. */
  readonly nodeArg: string;
  /** What the process recorded, one entry per line of its log (read after it exited). */
  loaded(): string[];
}

/** Node's module load list as the process left it (`NativeModule http2`, `NativeModule internal/…`). */
export function builtinRecorder(dir: string, name: string): ChildRecorder {
  const log = path.join(dir, `${name}.log`);
  const preload = path.join(dir, `${name}.cjs`);
  writeFileSync(preload, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(log)}, process.moduleLoadList.join('\\n')));\n`);
  return { nodeArg: `--require=${preload}`, loaded: () => readFileSync(log, 'utf8').split('\n') };
}

/**
 * The names starting with `prefix` that the process read from `process.env` (a proxy in its place
 * sees every read by name; enumerating the environment is not a read of any one name).
 */
export function envReadRecorder(dir: string, name: string, prefix: string): ChildRecorder {
  const log = path.join(dir, `${name}.log`);
  const preload = path.join(dir, `${name}.cjs`);
  writeFileSync(
    preload,
    `const reads = new Set();
const prefix = ${JSON.stringify(prefix)};
process.env = new Proxy(process.env, { get(t, k) { if (typeof k === 'string' && k.startsWith(prefix)) reads.add(k); return Reflect.get(t, k); } });
process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(log)}, [...reads].join('\\n')));
`,
  );
  return { nodeArg: `--require=${preload}`, loaded: () => readFileSync(log, 'utf8').split('\n').filter(Boolean) };
}
