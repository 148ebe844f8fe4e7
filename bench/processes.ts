/**
 * Child processes of the bench: the built sidecar, the baselines and the load generators, each
 * pinned to its own core with `taskset` when it exists (server on core 0, load on core 1), plus
 * RSS readings from /proc and the paths of the built files.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { collectLines } from '../test/helpers/sidecar.js';

/** The compiled output root (holds src/, bench/, emulator/): this file is `<outRoot>/bench/processes.js`. */
export const outRoot = fileURLToPath(new URL('../', import.meta.url));
export const sidecarEntry = path.join(outRoot, 'src', 'main.js');
export const benchDir = path.join(outRoot, 'bench');
/** The repository root (the folder with package.json above outRoot). */
export const repoRoot = (() => {
  let dir = outRoot;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
  return dir;
})();

/** Whether a command is on PATH. */
export function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** CPU placement: servers on core 0, load generators on core 1 (when there are two cores and taskset). */
export interface Placement {
  server: string[];
  load: string[];
  /** Human-readable description for the report. */
  description: string;
}

/** Decides where processes run; without taskset or with one core nothing is pinned. */
export function placement(cores: number): Placement {
  if (cores >= 2 && hasCommand('taskset')) {
    return { server: ['taskset', '-c', '0'], load: ['taskset', '-c', '1'], description: 'servers pinned to CPU 0, load generators to CPU 1 (taskset)' };
  }
  return { server: [], load: [], description: 'not pinned (taskset missing or a single core)' };
}

/** Every child spawned here that has not exited yet, for killAllChildren(). */
const children = new Set<ChildProcess>();

/** Spawns `argv` behind a pinning prefix. */
export function spawnPinned(prefix: string[], argv: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
  const full = [...prefix, ...argv];
  const child = spawn(full[0], full.slice(1), { env: opts.env ?? process.env, cwd: opts.cwd ?? repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  // 'close' comes after 'exit', and also after the 'error' of a spawn that failed, which is left
  // unhandled here as before (it must stay loud, not turn into a wait for an 'exit' that never comes).
  child.once('close', () => children.delete(child));
  return child;
}

/**
 * Kills every child still running, synchronously (for an interrupted bench, which must not leave
 * servers or load generators behind). SIGKILL also ends a child stopped for a latency round.
 */
export function killAllChildren(): void {
  for (const child of children) child.kill('SIGKILL');
}


/** A server child that printed a JSON "listening" line. */
export interface RunningServer {
  readonly child: ChildProcess;
  readonly pid: number;
  /** The parsed listening line. */
  readonly listening: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** ms from spawn() to the listening line. */
  readonly listeningAfterMs: number;
  /** performance.now() at spawn. */
  readonly spawnedAt: number;
  readonly lines: string[];
  stop(): Promise<void>;
}

/** Spawns a server and resolves once it prints a line containing `"event":"listening"`. */
export async function startServer(prefix: string[], argv: string[], env: NodeJS.ProcessEnv, timeoutMs = 20_000): Promise<RunningServer> {
  const spawnedAt = performance.now();
  const child = spawnPinned(prefix, argv, { env });
  const lines: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${argv.join(' ')} did not start in time:\n${lines.slice(-20).join('\n')}`)), timeoutMs);
    collectLines(child.stdout!, (line) => {
      if (lines.length < 10_000) lines.push(line);
      if (line.includes('"event":"listening"')) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as Record<string, unknown>);
      }
    });
    collectLines(child.stderr!, (line) => {
      if (lines.length < 10_000) lines.push(line);
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`${argv.join(' ')} exited before listening:\n${lines.slice(-20).join('\n')}`));
    });
  });
  const listeningAfterMs = performance.now() - spawnedAt;
  return {
    child,
    pid: child.pid as number,
    listening,
    listeningAfterMs,
    spawnedAt,
    lines,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 12_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** One `kB` field of /proc/<pid>/status in decimal MB, 10^6 bytes (the kernel's kB are KiB); NaN once the process is gone. */
function statusMb(pid: number, field: 'VmRSS' | 'RssFile'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? (Number(m[1]) * 1024) / 1e6 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/**
 * Resident set size of a process in decimal MB, 10^6 bytes (VmRSS). With a taskset prefix the pid is still node's,
 * because taskset execs the command in place.
 */
export function rssMb(pid: number): number {
  return statusMb(pid, 'VmRSS');
}

/**
 * The file-backed part of a process's RSS in decimal MB (RssFile: Node's binary and the shared libraries
 * mapped from disk). The kernel can drop those pages under memory pressure and read them back, and
 * every Node process on the host shares them; the anonymous rest (the V8 heap, malloc) it cannot.
 */
export function rssFileMb(pid: number): number {
  return statusMb(pid, 'RssFile');
}

/** User+system CPU seconds a process has used so far (from /proc/<pid>/stat). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after "(comm) state".
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** Runs a command to completion and returns stdout, stderr and the exit code. */
export function runToEnd(prefix: string[], argv: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawnPinned(prefix, argv);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Sleeps. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
