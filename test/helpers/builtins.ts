/**
 * Records which of Node's built-in modules a child process loaded: a `--require` preload that writes
 * `process.moduleLoadList` when the process exits (bench/README.md finding 39).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface BuiltinRecorder {
  /** The node argument that installs the preload. */
  readonly nodeArg: string;
  /** Node's module load list as the process left it (`NativeModule http2`, `NativeModule internal/…`). */
  loaded(): string[];
}

/** A recorder writing its files into `dir` under `name`. */
export function builtinRecorder(dir: string, name: string): BuiltinRecorder {
  const log = path.join(dir, `${name}.log`);
  const preload = path.join(dir, `${name}.cjs`);
  writeFileSync(preload, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(log)}, process.moduleLoadList.join('\\n')));\n`);
  return { nodeArg: `--require=${preload}`, loaded: () => readFileSync(log, 'utf8').split('\n') };
}
