/**
 * Durations at their maximum through the built sidecar (src/config/defaults.ts `max`): every timer
 * they become stays within what Node keeps (src/timer-delay.ts), so none fires at once. Beyond the
 * maximum the start fails (test/config/startup.test.ts).
 */
import { expect } from 'chai';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { CONFIG_KEYS } from '../../src/config/defaults.js';
import { createAuthorizationClient } from '../../src/extauthz/protos.js';
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js';
import { call, sidecarEnv } from '../helpers/e2e.js';
import { check, envoyCheckRequest } from '../extauthz/fixtures.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('durations at their maximum (built sidecar)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let sidecar: RunningSidecar | undefined;
  before(async () => {
    emu = await startEmulator();
  });
  after(async () => {
    await sidecar?.stop();
    await emu?.close();
  });

  it('becomes ready, answers on both doors and fetches the signing keys once, with every duration at its maximum', async () => {
    const atMaximum = Object.fromEntries(CONFIG_KEYS.filter((d) => d.max !== undefined).map((d) => [d.key.replace(/:/g, '__'), String(d.max)]));
    const s = (sidecar = await startSidecar(sidecarEnv(emu, {
      ...atMaximum,
      Sidecar__LogLevel: 'info',
      DownstreamApis__app__Scopes__0: 'api://downstream/.default',
      DownstreamApis__app__RequestAppToken: 'true',
    })));
    const readyz = `http://127.0.0.1:${s.listening.management!.port}/readyz`;
    const readyBy = Date.now() + 15_000;
    while ((await call(readyz)).status !== 200 && Date.now() < readyBy) await sleep(50);
    expect((await call(readyz)).status, 'readyz').to.equal(200);
    // Outbound calls under the longest outbound timeout, and a Check whose deadline is days away
    // (clamped to 6 × that timeout).
    expect((await call(`${s.url}/AuthorizationHeaderUnauthenticated/app`)).status).to.equal(200);
    const client = createAuthorizationClient(`127.0.0.1:${s.listening.extAuthz!.port}`);
    try {
      const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      const allowed = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'app' } }), 10 * 86_400_000);
      expect(allowed.status?.code ?? 0).to.equal(0);
    } finally {
      client.close();
    }
    // A refresh timer that overflowed would fire after 1 ms, and again after every load. (Counted
    // from here: the token requests above read the authority's metadata too, through msal.)
    const loaded = emu.counters();
    await sleep(1_500);
    const later = emu.counters();
    expect({ metadata: later.metadata - loaded.metadata, jwks: later.jwks - loaded.jwks }, 'signing key fetches after the first load').to.deep.equal({ metadata: 0, jwks: 0 });
    expect(later.jwks).to.equal(1);
    expect(s.lines.join('\n')).not.to.include('TimeoutOverflowWarning');
  });
});
