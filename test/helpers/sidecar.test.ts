/**
 * The test helper that starts the built sidecar: a sidecar that misses the start deadline must not
 * outlive the failed start (an orphan would hold its ports and keep the test run alive).
 */
import { expect } from 'chai';
import { startSidecar } from './sidecar.js';

/** A configuration that starts without an emulator (signing keys load in the background and fail). */
const ENV = {
  AzureAd__Instance: 'https://127.0.0.1:9/',
  AzureAd__TenantId: '72f988bf-86f1-41af-91ab-2d7cd011db47',
  AzureAd__ClientId: '11111111-2222-3333-4444-555555555555',
  Sidecar__Http__Url: 'http://127.0.0.1:0',
  Sidecar__ExtAuthz__Address: '127.0.0.1:0',
  Sidecar__Management__Url: 'http://127.0.0.1:0',
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

describe('startSidecar (test helper)', function () {
  this.timeout(20_000);

  it('kills a sidecar that has not logged its listening line in time, and rejects once it is gone', async () => {
    // 1 ms: no sidecar is listening that soon, however fast the machine.
    const err = await startSidecar(ENV, { timeoutMs: 1 }).then(
      () => expect.fail('started within 1 ms'),
      (e: unknown) => e as Error & { pid?: number },
    );
    expect(err.message).to.match(/did not start within 1 ms and was killed/);
    expect(err.pid).to.be.a('number');
    expect(alive(err.pid!), `sidecar pid ${err.pid} still running after the failed start`).to.equal(false);
  });
});
