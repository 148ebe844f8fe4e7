/**
 * The bench measures the sidecar the image runs (bench/setup.ts startBenchSidecar): the one-file
 * bundle. A bare tsc after a build leaves the compiled modules newer than the bundle, and main.js
 * then runs them (slower to start, more heap); the bench refuses that sidecar instead of measuring it.
 */
import { expect } from 'chai';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { placement } from '../../bench/processes.js';
import { startBenchSidecar } from '../../bench/setup.js';
import { staleBundleCopy } from '../helpers/sidecar.js';

/** Pids of the processes whose command line names `file`. */
function processesRunning(file: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').includes(file)) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

describe('bench sidecar (startBenchSidecar)', function () {
  this.timeout(60_000);
  let emu: Emulator;
  let dir: string;
  const place = placement(1);
  before(async () => {
    emu = await startEmulator();
    dir = mkdtempSync(path.join(tmpdir(), 'bench-sidecar-'));
  });
  after(async () => {
    await emu?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts the built sidecar from its bundle', async () => {
    const s = await startBenchSidecar({ emu, place });
    try {
      expect(s.listening.bundle).to.equal(true);
      expect(s.grpcUrl).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  it('refuses a sidecar that runs its compiled modules, and leaves no process behind', async () => {
    const { entry } = staleBundleCopy(dir);
    const err = await startBenchSidecar({ emu, place }, {}, [], entry).then(
      (s) => void s.child.kill('SIGKILL'),
      (e: unknown) => e as Error,
    );
    expect(err?.message).to.match(/^the sidecar ran its compiled modules, not dist\/src\/sidecar\.bundle\.js .*run npm run build/);
    const deadline = Date.now() + 5_000;
    while (processesRunning(entry).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(processesRunning(entry)).to.deep.equal([]);
  });
});
