/**
 * The built sidecar runs without V8's allocation-site pretenuring (src/main.ts; bench/README.md
 * finding 36). Observed in the process itself: with `--trace-pretenuring-statistics` V8 prints a
 * `pretenuring:` line after each collection that processes pretenuring feedback, and none once the
 * feature is off. A plain Node process with the same flags and a tiny young generation shows the
 * lines on this runtime, so the absence in the sidecar is the sidecar's doing.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { collectLines, repoRoot, sidecarEntry } from '../helpers/sidecar.js';
import { call, sidecarEnv } from '../helpers/e2e.js';

const TRACE = '--trace-pretenuring-statistics';
/** A young generation of 1 MB: a few hundred requests mean many scavenges. */
const SMALL_YOUNG_GENERATION = '--max-semi-space-size=1';

/**
 * Runs `args` under node with the trace flag; resolves with its output lines once it has exited. With
 * `drive`, the process is stopped (SIGTERM) when `drive` is done; without, it runs to its end.
 */
async function traced(args: string[], env: Record<string, string>, drive?: (lines: string[]) => Promise<void>): Promise<string[]> {
  const child = spawn(process.execPath, [TRACE, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_ENV: 'test', NODE_OPTIONS: SMALL_YOUNG_GENERATION, ...env },
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  collectLines(child.stdout!, (l) => lines.push(l));
  collectLines(child.stderr!, (l) => lines.push(l));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  if (drive !== undefined) {
    try {
      await drive(lines);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    }
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(timer);
  return lines;
}

const pretenuringLines = (lines: string[]) => lines.filter((l) => l.includes('pretenuring:'));

describe('V8 flags of the built sidecar', function () {
  this.timeout(60_000);
  let emu: Emulator;
  before(async () => {
    emu = await startEmulator();
  });
  after(async () => {
    await emu?.close();
  });

  it('shows pretenuring feedback in a plain Node process on this runtime (the instrument works)', async () => {
    const churn = 'const keep = []; for (let i = 0; i < 300000; i++) { const o = { i, a: [i], s: "x" + i }; if (i % 3) keep.push(o); if (keep.length > 20000) keep.length = 0; }';
    const lines = await traced(['-e', churn], {});
    expect(pretenuringLines(lines).length).to.be.greaterThan(0);
  });

  it('turns allocation-site pretenuring off before its own code runs, and it stays off under load', async () => {
    const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
    let listening = -1;
    let served = 0;
    const lines = await traced([sidecarEntry], sidecarEnv(emu), async (out) => {
      const deadline = Date.now() + 15_000;
      while ((listening = out.findIndex((l) => l.includes('"event":"listening"'))) < 0) {
        if (Date.now() > deadline) throw new Error('sidecar did not start in time:\n' + out.join('\n'));
        await new Promise((r) => setTimeout(r, 20));
      }
      const { http } = JSON.parse(out[listening]) as { http: { host: string; port: number }[] };
      const url = `http://127.0.0.1:${http[0].port}/Validate`;
      for (let i = 0; i < 300; i++) if ((await call(url, { token })).status === 200) served++;
    });
    expect(served, 'every /Validate answered 200').to.equal(300);
    expect(listening).to.be.at.least(0);
    expect(pretenuringLines(lines), 'pretenuring feedback printed by the sidecar').to.deep.equal([]);
  });
});
