/**
 * The bench's process bookkeeping (bench/processes.ts): an interrupted bench kills what it started,
 * including a server it had stopped (SIGSTOP) for another candidate's latency round.
 */
import { expect } from 'chai';
import { once } from 'node:events';
import { killAllChildren, rssFileMb, rssMb, spawnPinned } from '../../bench/processes.js';

describe('bench processes (killAllChildren)', () => {
  it('kills running and stopped children, and forgets the ones that already exited', async () => {
    const idle = () => spawnPinned([], [process.execPath, '-e', 'setInterval(() => {}, 1000)']);
    const running = idle();
    const stopped = idle();
    const done = spawnPinned([], [process.execPath, '-e', '']);
    await Promise.all([once(running, 'spawn'), once(stopped, 'spawn'), once(done, 'exit')]);
    process.kill(stopped.pid!, 'SIGSTOP');
    const exits = [once(running, 'exit'), once(stopped, 'exit')];
    killAllChildren();
    const [[, runningSignal], [, stoppedSignal]] = (await Promise.all(exits)) as Array<[number | null, NodeJS.Signals | null]>;
    expect(runningSignal).to.equal('SIGKILL');
    expect(stoppedSignal).to.equal('SIGKILL');
    expect(done.exitCode).to.equal(0);
    // Nothing is left to kill (a second call must not throw on the exited ones).
    killAllChildren();
  });
});

describe('bench processes (rssMb, rssFileMb)', () => {
  it("reads a live process's RSS and its file-backed part, and NaN for a process that is gone", async () => {
    const child = spawnPinned([], [process.execPath, '-e', 'globalThis.keep = Buffer.alloc(32 * 1024 * 1024, 1); setInterval(() => {}, 1000)']);
    await once(child, 'spawn');
    try {
      // Node's binary is mapped from disk (file-backed); the 32 MB buffer, once written, is anonymous.
      const anon = () => rssMb(child.pid!) - rssFileMb(child.pid!);
      const deadline = Date.now() + 10_000;
      while (!(anon() > 32) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(anon()).to.be.greaterThan(32);
      expect(rssFileMb(child.pid!)).to.be.greaterThan(1);
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    expect(rssMb(child.pid!)).to.be.NaN;
    expect(rssFileMb(child.pid!)).to.be.NaN;
  });
});
