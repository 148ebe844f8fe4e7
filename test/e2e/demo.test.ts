/**
 * `npm run demo` (dist/scripts/demo.js) as a newcomer's first command runs it: without a terminal
 * the walk-through succeeds and the process ends by itself; stopped by SIGTERM or Ctrl-C (SIGINT) at
 * any step, it leaves neither temporary files (its own, the emulator's CA) nor a sidecar behind.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { collectLines, outRoot, repoRoot } from '../helpers/sidecar.js';

const DEMO = path.join(outRoot, 'scripts', 'demo.js');

interface DemoRun {
  code: number | null;
  lines: string[];
}

/**
 * Runs the demo with its own TMPDIR and no terminal; `signalWhen` says, for each output line,
 * which signal to send the demo then (once), if any.
 */
function runDemo(tmp: string, signalWhen?: (line: string) => NodeJS.Signals | undefined): Promise<DemoRun> {
  const child = spawn(process.execPath, [DEMO], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TMPDIR: tmp }, cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let signalled = false;
  collectLines(child.stdout, (line) => {
    lines.push(line);
    const signal = signalled ? undefined : signalWhen?.(line);
    if (signal) {
      signalled = true;
      child.kill(signal);
    }
  });
  collectLines(child.stderr, (line) => lines.push(line));
  const timer = setTimeout(() => child.kill('SIGKILL'), 40_000);
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, lines });
    });
  });
}

async function refusesConnections(port: number): Promise<boolean> {
  try {
    await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2_000) });
    return false;
  } catch (err) {
    return /ECONNREFUSED/.test(String((err as { cause?: unknown }).cause));
  }
}

describe('npm run demo (dist/scripts/demo.js, no terminal)', function () {
  this.timeout(60_000);
  let tmp: string;
  beforeEach(() => {
    tmp = mkdtempSync(path.join(tmpdir(), 'es-demo-test-'));
  });
  afterEach(() => rmSync(tmp, { recursive: true, force: true }));

  it('walks through every step, prints the curl commands, ends by itself with 0 and leaves no temporary file', async () => {
    const run = await runDemo(tmp);
    expect(run.code, run.lines.join('\n')).to.equal(0);
    expect(run.lines).to.include('Demo finished: every step succeeded.');
    expect(run.lines.filter((l) => l.startsWith('  FAIL')), 'failed steps').to.deep.equal([]);
    expect(run.lines.some((l) => /^ {2}curl -s http:\/\/127\.0\.0\.1:\d+\/Validate /.test(l)), 'a curl command').to.equal(true);
    expect(readdirSync(tmp), 'left in TMPDIR').to.deep.equal([]);
  });

  for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
    it(`stops the sidecar and removes every temporary file on ${signal} mid-walk-through (exit ${code})`, async () => {
      let port = 0;
      const run = await runDemo(tmp, (line) => {
        const m = /identity API http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
        if (!m) return undefined;
        port = Number(m[1]);
        return signal;
      });
      expect(port, 'the sidecar started').to.be.greaterThan(0);
      expect(run.code, run.lines.join('\n')).to.equal(code);
      expect(readdirSync(tmp), 'left in TMPDIR').to.deep.equal([]);
      expect(await refusesConnections(port), `the sidecar on port ${port} is gone`).to.equal(true);
    });
  }

  it('removes the emulator\'s temporary folder on SIGTERM while the emulator is starting (exit 143)', async () => {
    const run = await runDemo(tmp, (line) => (line.includes('Starting the local Entra ID emulator') ? 'SIGTERM' : undefined));
    expect(run.code, run.lines.join('\n')).to.equal(143);
    expect(readdirSync(tmp), 'left in TMPDIR').to.deep.equal([]);
  });
});
