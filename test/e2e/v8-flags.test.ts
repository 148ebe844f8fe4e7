/**
 * The built sidecar runs without V8's allocation-site pretenuring (src/main.ts; bench/README.md
 * finding 36). Observed in the process itself: with `--trace-pretenuring-statistics` V8 prints a
 * `pretenuring:` line after each collection that processes pretenuring feedback, and none once the
 * feature is off. A plain Node process with the same flags and a tiny young generation shows the
 * lines on this runtime, so the absence in the sidecar is the sidecar's doing.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { startSidecar } from '../helpers/sidecar.js';
import { call, sidecarEnv } from '../helpers/e2e.js';

const TRACE = '--trace-pretenuring-statistics';
/** A young generation of 1 MB: a few hundred requests mean many scavenges. */
const SMALL_YOUNG_GENERATION = '--max-semi-space-size=1';

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

  it('shows pretenuring feedback in a plain Node process on this runtime (the instrument works)', () => {
    const churn = 'const keep = []; for (let i = 0; i < 300000; i++) { const o = { i, a: [i], s: "x" + i }; if (i % 3) keep.push(o); if (keep.length > 20000) keep.length = 0; }';
    const run = spawnSync(process.execPath, [TRACE, '-e', churn], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_OPTIONS: SMALL_YOUNG_GENERATION },
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(run.status).to.equal(0);
    expect(pretenuringLines(run.stdout.split('\n')).length).to.be.greaterThan(0);
  });

  it('turns allocation-site pretenuring off before its own code runs, and it stays off under load', async () => {
    const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
    const s = await startSidecar(sidecarEnv(emu, { NODE_OPTIONS: SMALL_YOUNG_GENERATION }), { nodeArgs: [TRACE] });
    let served = 0;
    try {
      for (let i = 0; i < 300; i++) if ((await call(`${s.url}/Validate`, { token })).status === 200) served++;
    } finally {
      expect(await s.stop()).to.equal(0);
    }
    expect(served, 'every /Validate answered 200').to.equal(300);
    expect(pretenuringLines(s.lines), 'pretenuring feedback printed by the sidecar').to.deep.equal([]);
  });
});
