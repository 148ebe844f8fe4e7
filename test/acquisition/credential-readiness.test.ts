/**
 * createClientCredentialReadiness over stand-in credential sources: when readiness holds, what is
 * loaded at start, how failed loads are retried and logged. The built sidecar's side of it (/readyz,
 * gRPC health, real certificates and Key Vault) is in test/e2e/client-credential-readiness.test.ts.
 */
import { expect } from 'chai';
import { createClientCredentialReadiness } from '../../src/acquisition/credential-readiness.js';
import type { ClientCredentialSource, MsalCredential } from '../../src/acquisition/credentials.js';
import { SidecarError } from '../../src/errors.js';
import { memoryLogger } from '../helpers/logger.js';

const FAST_RETRY = { initialMs: 10, maxMs: 20 };

/** A source that needs nothing loaded (a secret). */
function secret(index: number): ClientCredentialSource {
  return { index, sourceType: 'ClientSecret', label: `${index}:ClientSecret`, load: async () => ({ clientSecret: 's' }), usable: () => true, reset: () => false };
}

/** A certificate whose loads fail while `failing()` holds; counts its loads. */
function certificate(index: number, failing: () => boolean): ClientCredentialSource & { loads: number } {
  let loaded = false;
  const source = {
    index,
    sourceType: 'Path' as const,
    label: `${index}:Path`,
    loads: 0,
    async load(): Promise<MsalCredential> {
      source.loads++;
      if (failing()) throw new SidecarError('misconfigured', `The certificate at '/certs/${index}.pfx' could not be read (ENOENT).`);
      loaded = true;
      return { clientSecret: 'stand-in' };
    },
    usable: () => loaded,
    reset: () => false,
  };
  return source;
}

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('client credential readiness', () => {
  it('holds with no client credential configured (validation or managed identity only)', () => {
    const r = createClientCredentialReadiness([], { logger: memoryLogger().logger });
    expect(r.usable()).to.equal(true);
  });

  it('holds at once when a credential needs nothing loaded, and leaves a certificate behind it lazy', async () => {
    const log = memoryLogger();
    const behind = certificate(1, () => true);
    const r = createClientCredentialReadiness([secret(0), behind], { logger: log.logger, retry: FAST_RETRY });
    expect(r.usable()).to.equal(true);
    r.start();
    await settle(80);
    expect(behind.loads, 'not loaded until acquisition needs it').to.equal(0);
    expect(log.lines.filter((l) => l.includes('"event":"client_credential_unusable"'))).to.have.length(0);
    r.close();
  });

  it('loads in configured order and stops at the first usable one, warning about a bad one before it', async () => {
    const log = memoryLogger();
    const bad = certificate(0, () => true);
    const good = certificate(1, () => false);
    const behind = certificate(2, () => false);
    const r = createClientCredentialReadiness([bad, good, behind], { logger: log.logger, retry: FAST_RETRY });
    r.start();
    await settle(80);
    expect(r.usable()).to.equal(true);
    expect([bad.loads, good.loads, behind.loads]).to.deep.equal([1, 1, 0]);
    expect(log.lines.filter((l) => l.includes('"event":"client_credential_unusable"'))).to.have.length(1);
    r.close();
  });

  it('does not hold before start() has loaded a certificate', async () => {
    const good = certificate(0, () => false);
    const r = createClientCredentialReadiness([good], { logger: memoryLogger().logger });
    expect(r.usable()).to.equal(false);
    r.start();
    r.start();
    await settle(0);
    expect(r.usable()).to.equal(true);
    expect(good.loads, 'start() twice loads once').to.equal(1);
  });

  it('retries failed certificates with backoff until one loads, warning once per credential, then stops', async () => {
    const log = memoryLogger();
    let down = true;
    const a = certificate(0, () => down);
    const b = certificate(1, () => true);
    const r = createClientCredentialReadiness([a, b], { logger: log.logger, retry: FAST_RETRY });
    r.start();
    await settle(60);
    expect(r.usable()).to.equal(false);
    expect(a.loads).to.be.greaterThan(1);
    const warnings = log.lines.filter((l) => l.includes('"level":"warn"'));
    expect(warnings).to.have.length(2);
    expect(warnings.join('')).to.include('/certs/0.pfx').and.to.include('/certs/1.pfx');
    down = false;
    await settle(60);
    expect(r.usable()).to.equal(true);
    expect(log.text()).to.include('"event":"client_credential_loaded"');
    const loadsOnceReady = b.loads;
    await settle(60);
    expect(b.loads, 'no retries once a credential is usable').to.equal(loadsOnceReady);
    r.close();
  });

  it('stops retrying on close()', async () => {
    const bad = certificate(0, () => true);
    const r = createClientCredentialReadiness([bad], { logger: memoryLogger().logger, retry: FAST_RETRY });
    r.start();
    await settle(30);
    r.close();
    const loads = bad.loads;
    await settle(60);
    expect(bad.loads).to.equal(loads);
    expect(r.usable()).to.equal(false);
  });
});
