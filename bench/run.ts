/**
 * `npm run bench`: the sidecar against do-nothing baselines, side by side on loopback, in one
 * invocation. Prints a table and writes bench/results/<UTC time>-<full|quick>.json (and .md);
 * a full run of every scenario also replaces bench/results/latest.json and latest.md.
 *
 *   node dist/bench/run.js [--quick] [--scenario <name>]… [--list]
 *
 * Method and targets: bench/README.md. Never part of `npm test`.
 */
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { spawnSync } from 'node:child_process';
import { startEmulator } from '../emulator/index.js';
import { hasCommand, killAllChildren, placement, repoRoot, sidecarEntry } from './processes.js';
import { renderTop, topSelfTime } from './profile.js';
import { renderMarkdown, renderText, type BenchReport, type ScenarioResult } from './report.js';
import { SCENARIOS, SharedFixtures } from './scenarios.js';
import { FULL, QUICK, imageEnv, makeScratch, type BenchContext } from './setup.js';
import { existsSync, rmSync } from 'node:fs';

interface Args {
  quick: boolean;
  scenarios: string[];
  list: boolean;
  cpuProf: boolean;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { quick: false, scenarios: [], list: false, cpuProf: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') out.quick = true;
    else if (a === '--list') out.list = true;
    else if (a === '--cpu-prof') out.cpuProf = true;
    else if (a === '--scenario') out.scenarios.push(...(argv[++i] ?? '').split(',').filter(Boolean));
    else if (a.startsWith('--scenario=')) out.scenarios.push(...a.slice('--scenario='.length).split(',').filter(Boolean));
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: npm run bench -- [--quick] [--scenario <name>[,<name>]] [--cpu-prof] [--list]\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (try --help)`);
  }
  const known = new Set(SCENARIOS.map((s) => s.name));
  for (const s of out.scenarios) if (!known.has(s)) throw new Error(`unknown scenario "${s}"; known: ${[...known].join(', ')}`);
  return out;
}

function cpuModel(): string {
  const lscpu = spawnSync('lscpu', [], { encoding: 'utf8' });
  const m = /^Model name:\s+(.+)$/m.exec(lscpu.stdout ?? '');
  return m ? m[1].trim() : (cpus()[0]?.model ?? 'unknown');
}

function toolVersion(argv: string[]): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  return ((r.stdout || r.stderr || '').split('\n')[0] ?? '').trim() || 'unknown';
}

/** `git rev-parse HEAD` of the repository and whether its tree has changes (null/null without git). */
function gitState(): { commit: string | null; dirty: boolean | null } {
  const head = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' });
  if (head.status !== 0 || !head.stdout) return { commit: null, dirty: null };
  const status = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot, encoding: 'utf8' });
  return { commit: head.stdout.trim(), dirty: status.status === 0 ? status.stdout.trim().length > 0 : null };
}

function load(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(', ');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.list) {
    for (const s of SCENARIOS) process.stdout.write(s.name + '\n');
    return;
  }
  if (!existsSync(sidecarEntry)) throw new Error(`built sidecar not found at ${sidecarEntry}; run npm run build first`);
  for (const tool of ['h2load', 'wrk']) {
    if (!hasCommand(tool)) throw new Error(`${tool} is not installed: apt-get install -y ${tool === 'h2load' ? 'nghttp2-client' : 'wrk'}`);
  }
  const selected = SCENARIOS.filter((s) => args.scenarios.length === 0 || args.scenarios.includes(s.name));
  const cores = cpus().length;
  const place = placement(cores);
  const started = performance.now();
  const report: BenchReport = {
    startedAt: new Date().toISOString(),
    mode: args.quick ? 'quick' : 'full',
    provenance: { ...gitState(), argv: [...process.argv.slice(1).map((a, i) => (i === 0 ? path.relative(repoRoot, a) : a))], node: process.version },
    machine: {
      cpuModel: cpuModel(),
      cores,
      node: process.version,
      platform: `${process.platform} ${process.arch}`,
      loadBefore: load(),
      loadAfter: '',
      placement: `${place.description}; sidecar environment as in the Dockerfile: ${Object.entries(imageEnv()).map(([k, v]) => `${k}=${v}`).join(' ') || '(none)'}`,
      tools: { h2load: toolVersion(['h2load', '--version']), wrk: toolVersion(['wrk', '-v']) },
    },
    scenarios: [],
    errors: [],
    durationSec: 0,
  };
  const log = (m: string) => process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${m}\n`);
  log(`${report.mode} run: ${selected.map((s) => s.name).join(', ')}; load average ${report.machine.loadBefore}`);

  const dir = path.join(repoRoot, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const profileDir = args.cpuProf ? await mkdtemp(path.join(dir, 'cpu-prof-')) : undefined;
  const scratch = await makeScratch();
  // Interrupted (Ctrl-C, a CI timeout): no server, load generator or token file is left behind.
  const interrupted = (signal: NodeJS.Signals) => {
    killAllChildren();
    rmSync(scratch.dir, { recursive: true, force: true });
    process.stderr.write(`\nbench interrupted by ${signal}: its processes were killed\n`);
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const emu = await startEmulator();
  const ctx: BenchContext = { budget: args.quick ? QUICK : FULL, quick: args.quick, emu, place, scratch: scratch.dir, log, ...(profileDir ? { profileDir } : {}) };
  const shared = new SharedFixtures(ctx);
  try {
    for (const s of selected) {
      const t0 = performance.now();
      log(`scenario ${s.name}`);
      try {
        const result = await s.run(shared);
        const full: ScenarioResult = { ...result, durationSec: (performance.now() - t0) / 1000 };
        report.scenarios.push(full);
      } catch (err) {
        const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
        log(`scenario ${s.name} failed: ${message}`);
        report.errors.push({ scenario: s.name, message });
      }
    }
  } finally {
    await shared.close();
    await emu.close();
    await scratch.remove();
  }
  report.machine.loadAfter = load();
  report.durationSec = (performance.now() - started) / 1000;

  if (profileDir) {
    // The shared sidecar (scenarios 1–4) wrote its profile when it exited.
    for (const f of (await readdir(profileDir)).filter((n) => n.endsWith('.cpuprofile'))) {
      const file = path.join(profileDir, f);
      const top = topSelfTime(file, 25);
      report.profile = { file, totalMs: top.totalMs, top: top.entries };
      process.stdout.write(`\nCPU profile of the sidecar (${file}), top self time:\n${renderTop(top)}\n`);
    }
  }
  // Every run keeps its own report; only a full run of every scenario stands as "latest".
  const stamp = report.startedAt.replace(/[:.]/g, '-');
  const base = path.join(dir, `${stamp}-${report.mode}${selected.length < SCENARIOS.length ? '-partial' : ''}`);
  const json = JSON.stringify(report, null, 2) + '\n';
  const md = renderMarkdown(report) + '\n';
  await writeFile(base + '.json', json);
  await writeFile(base + '.md', md);
  const isLatest = !args.quick && selected.length === SCENARIOS.length;
  if (isLatest) {
    await writeFile(path.join(dir, 'latest.json'), json);
    await writeFile(path.join(dir, 'latest.md'), md);
  }
  process.stdout.write(renderText(report) + '\n');
  process.stdout.write(`\nreport: ${base}.json${isLatest ? ` (also ${path.join(dir, 'latest.json')})` : ' (latest.json is left alone: not a full run of every scenario)'}\n`);
  const missed = report.scenarios.flatMap((s) => s.targets).filter((t) => t.met === false).length;
  if (missed) process.stdout.write(`${missed} target(s) not met (see bench/README.md "Findings").\n`);
  if (report.errors.length) process.exitCode = 1;
}

await main();
