/**
 * The validator against the local Entra emulator over TLS: real discovery documents, real key
 * rotation, fault injection and emulator-minted broken tokens.
 */
import { expect } from 'chai';
import type { Dispatcher } from 'undici';
import { startEmulator } from '../../emulator/index.js';
import type { Emulator } from '../../emulator/types.js';
import type { AzureAdConfig } from '../../src/config/types.js';
import { SidecarError, type ErrorCode } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { createOutboundAgent } from '../../src/net/outbound.js';
import { loadDecryptionKeys } from '../../src/validation/decryption.js';
import { createTokenValidator, type TokenValidatorWithStats, type ValidatorDeps } from '../../src/validation/validator.js';
import { buildAzureAd, buildValidationSettings } from './fixtures.js';

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(SidecarError);
    expect((err as SidecarError).code, (err as SidecarError).detail).to.equal(code);
    return;
  }
  throw new Error(`expected ${code}`);
}

describe('token validator against the Entra emulator', function () {
  let emu: Emulator;
  let agent: Dispatcher;
  const validators: TokenValidatorWithStats[] = [];

  before(async function () {
    this.timeout(30_000);
    emu = await startEmulator();
    agent = createOutboundAgent({ extraCaFiles: [emu.caFile], connectTimeoutMs: 2000, timeoutMs: 3000 });
  });
  after(async function () {
    await agent?.close();
    await emu?.close();
  });
  afterEach(function () {
    for (const v of validators.splice(0)) v.close();
    emu.clearFaults();
  });

  function deps(azure: Partial<AzureAdConfig> = {}, extra: Partial<ValidatorDeps> = {}): ValidatorDeps {
    return {
      azureAd: buildAzureAd(emu.instance, { tenantId: emu.scenario.tenants.primary.id, ...azure, clientId: emu.scenario.apps.sidecarApi.appId }),
      settings: buildValidationSettings(),
      outbound: { agent, timeoutMs: 3000, maxResponseBytes: 1 << 20 },
      logger: createLogger('silent'),
      keyLoadRetry: { initialMs: 20, maxMs: 100 },
      ...extra,
    };
  }

  async function started(azure: Partial<AzureAdConfig> = {}, extra: Partial<ValidatorDeps> = {}): Promise<TokenValidatorWithStats> {
    const v = createTokenValidator(deps(azure, extra));
    validators.push(v);
    await v.start();
    return v;
  }

  it('accepts emulator-issued v2 user tokens and v1 app tokens for the sidecar API', async function () {
    const v = await started();
    expect(v.ready()).to.equal(true);
    const user = await v.validate(await emu.mint({ kind: 'user' }));
    expect(user.version).to.equal('2.0');
    expect(user.tenantId).to.equal(emu.scenario.tenants.primary.id);
    const app = await v.validate(await emu.mint({ kind: 'app', version: 1, audience: `api://${emu.scenario.apps.sidecarApi.appId}` }));
    expect(app.version).to.equal('1.0');
  });

  it('rejects the broken variants the emulator mints', async function () {
    const v = await started();
    await expectCode(v.validate(await emu.mint({ kind: 'user', expiresInSec: -600 })), 'token_expired');
    await expectCode(v.validate(await emu.mint({ kind: 'user', notBeforeOffsetSec: 600 })), 'token_not_yet_valid');
    await expectCode(v.validate(await emu.mint({ kind: 'user', signWith: 'none' })), 'token_alg_not_allowed');
    await expectCode(v.validate(await emu.mint({ kind: 'user', signWith: 'hs256-public-key' })), 'token_alg_not_allowed');
    await expectCode(v.validate(await emu.mint({ kind: 'user', signWith: 'unknown-key' })), 'token_key_unknown');
    await expectCode(v.validate(await emu.mint({ kind: 'user', audience: 'api://someone-else' })), 'token_audience_invalid');
  });

  it('rejects another tenant on a single-tenant configuration and accepts it on common', async function () {
    const other = await emu.mint({ kind: 'user', tenant: emu.scenario.tenants.secondary.id, user: 'secondaryUser' });
    await expectCode((await started()).validate(other), 'token_issuer_invalid');
    const common = await started({ tenantId: 'common' });
    expect((await common.validate(other)).tenantId).to.equal(emu.scenario.tenants.secondary.id);
  });

  it('re-fetches the JWKS once after a key rotation and then accepts tokens signed with the new key', async function () {
    const v = await started();
    const before = v.stats().jwksFetches;
    emu.rotateKeys();
    const fresh = await emu.mint({ kind: 'user' });
    await Promise.all(Array.from({ length: 20 }, () => v.validate(fresh)));
    expect(v.stats().jwksFetches - before).to.equal(1);
  });

  it('is not ready while the JWKS fails and becomes ready once it answers again', async function () {
    emu.fault({ route: 'jwks', sticky: true, status: 500 });
    const v = await started();
    expect(v.ready()).to.equal(false);
    await expectCode(v.validate(await emu.mint({ kind: 'user' })), 'signing_keys_unavailable');
    emu.clearFaults();
    const deadline = Date.now() + 5000;
    while (!v.ready() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(v.ready()).to.equal(true);
    await v.validate(await emu.mint({ kind: 'user' }));
  });

  it('decrypts emulator JWEs with the API encryption certificate from TokenDecryptionCredentials', async function () {
    const cert = emu.scenario.apps.sidecarApi.encryptionCertificate!;
    const decryptionKeys = await loadDecryptionKeys([
      { sourceType: 'Base64Encoded', base64EncodedValue: Buffer.from(`${cert.certPem}\n${cert.keyPem}`).toString('base64'), tokenExchangeUrl: 'api://AzureADTokenExchange', skip: false },
    ]);
    const v = await started({}, { decryptionKeys });
    const jwe = await emu.mint({ kind: 'user', encrypt: true });
    expect(jwe.split('.')).to.have.length(5);
    const r = await v.validate(jwe);
    expect(r.raw).to.equal(jwe);
    expect(r.jws.split('.')).to.have.length(3);
    await expectCode((await started()).validate(jwe), 'token_decryption_failed');
  });
});
