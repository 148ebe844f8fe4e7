/**
 * The bench's process bookkeeping (bench/processes.ts): an interrupted bench kills what it started,
 * including a server it had stopped (SIGSTOP) for another candidate's latency round.
 */
import { expect } from 'chai';
import { once } from 'node:events';
import { killAllChildren, spawnPinned } from '../../bench/processes.js';

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
