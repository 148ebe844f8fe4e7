/**
 * Starts the BUILT sidecar (`<outDir>/src/main.js`) as a child process configured only through
 * environment variables, waits for its "listening" log line, and captures every log line so tests
 * can assert on them (including that no secret ever appears).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { cpSync, existsSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The compiled output root (the folder that holds src/, test/, emulator/). */
export const outRoot = fileURLToPath(new URL('../../', import.meta.url));
/** The repository root (the folder with package.json), found by walking up from outRoot. */
export const repoRoot = (() => {
  let dir = outRoot;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('package.json not found above ' + outRoot);
    dir = up;
  }
  return dir;
})();
export const sidecarEntry = path.join(outRoot, 'src', 'main.js');

/**
 * A copy of the built sidecar under `dir` whose compiled modules are newer than its bundle, as a
 * bare `tsc` after a build leaves them: main.js passes the bundle over. The real dist/ is never
 * touched, so a run killed midway cannot leave later runs on the compiled modules. Returns the
 * copy's main.js, sidecar.js and bundle.
 */
export function staleBundleCopy(dir: string): { entry: string; modules: string; bundle: string } {
  const copy = path.join(dir, 'stale');
  cpSync(path.join(outRoot, 'src'), path.join(copy, 'src'), { recursive: true });
  writeFileSync(path.join(copy, 'package.json'), JSON.stringify({ type: 'module' }));
  symlinkSync(path.join(repoRoot, 'node_modules'), path.join(copy, 'node_modules'), 'dir');
  const modules = path.join(copy, 'src', 'sidecar.js');
  const bundle = path.join(copy, 'src', 'sidecar.bundle.js');
  if (!existsSync(bundle)) throw new Error(`the built sidecar has no bundle (${bundle}): run npm run build`);
  const saved = statSync(modules);
  utimesSync(modules, saved.atime, new Date(statSync(bundle).mtimeMs + 60_000));
  return { entry: path.join(copy, 'src', 'main.js'), modules, bundle };
}

export interface ListeningLine {
  http: { host: string; port: number }[];
  extAuthz: { host: string; port: number } | null;
  management?: { host: string; port: number } | null;
  /** Whether the sidecar runs from the one-file bundle (false: the compiled modules). */
  bundle?: boolean;
}

export interface RunningSidecar {
  readonly child: ChildProcess;
  /** `http://127.0.0.1:PORT` of the first identity API listener. */
  readonly url: string;
  readonly listening: ListeningLine;
  /** Every stdout and stderr line so far (all of them once stop() has resolved). */
  readonly lines: string[];
  /** Resolves with the exit code after SIGTERM (or SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<number | null>;
}

/** Base env for a child: PATH and nothing else of ours, so only what the test passes configures it. */
function baseEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_ENV: 'test' };
}

/** Spawns the sidecar (`nodeArgs` go to node, `args` to the sidecar) and resolves once it logged its listening line (rejects if it exits first). */
export async function startSidecar(
  env: Record<string, string>,
  /** `entry`: another copy of main.js to run (default: the built one). `uid`/`gid`: run as that user (needs root). */
  opts: { args?: string[]; nodeArgs?: string[]; timeoutMs?: number; cwd?: string; entry?: string; uid?: number; gid?: number } = {},
): Promise<RunningSidecar> {
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), opts.entry ?? sidecarEntry, ...(opts.args ?? [])], {
    env: { ...baseEnv(), ...env },
    cwd: opts.cwd ?? repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  });
  const lines: string[] = [];
  // 'close', not 'exit': it comes once stdout and stderr are drained too, so `lines` is complete
  // when stop() resolves (a test that reads them then, e.g. for secrets, sees every line).
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const listening = await new Promise<ListeningLine>((resolve, reject) => {
    const timeoutMs = opts.timeoutMs ?? 15_000;
    // A sidecar that has not started in time is killed, and the promise rejects once it is gone:
    // left running it would hold its ports (and keep the test run alive) as an orphan.
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const onLine = (line: string) => {
      lines.push(line);
      if (line.includes('"event":"listening"')) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as ListeningLine);
      }
    };
    collectLines(child.stdout!, onLine);
    collectLines(child.stderr!, (l) => lines.push(l));
    void exited.then((code) => {
      clearTimeout(timer);
      // A no-op once the listening line resolved the promise.
      if (timedOut) reject(Object.assign(new Error(`sidecar did not start within ${timeoutMs} ms and was killed (pid ${child.pid}):\n${lines.join('\n')}`), { pid: child.pid }));
      else reject(new Error(`sidecar exited with ${code} before listening:\n${lines.join('\n')}`));
    });
  });
  const first = listening.http[0];
  return {
    child,
    url: `http://${first.host.includes(':') ? `[${first.host}]` : first.host}:${first.port}`,
    listening,
    lines,
    async stop(graceMs = 12_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Runs the sidecar to completion (for config-error tests): exit code and output lines. */
export async function runSidecarToExit(
  env: Record<string, string>,
  args: string[] = [],
  timeoutMs = 15_000,
  /** Called once the process is spawned, e.g. to signal it at the right moment. */
  whileRunning?: (child: ChildProcess) => void,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [sidecarEntry, ...args], { env: { ...baseEnv(), ...env }, cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  whileRunning?.(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  // 'close' rather than 'exit': the output may still be in the pipes when the process exits.
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Calls onLine for each complete line of a stream. */
export function collectLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buf = '';
  stream.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
}

/**
 * Waits until a captured line matches (log lines are written asynchronously, and reach our pipe
 * after the HTTP answer may have); false on timeout. `from`: only lines captured at or after this
 * index count (`sidecar.lines.length` taken before the action), so an older line cannot answer.
 */
export async function waitForLine(sidecar: RunningSidecar, pattern: RegExp | string, timeoutMs = 3_000, from = 0): Promise<boolean> {
  const matches = (l: string) => (typeof pattern === 'string' ? l.includes(pattern) : pattern.test(l));
  const found = () => {
    for (let i = from; i < sidecar.lines.length; i++) if (matches(sidecar.lines[i])) return true;
    return false;
  };
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (found()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return found();
}
