/**
 * The checker's synchronous warm path (src/extauthz/check.ts decide): a caller the validator has
 * cached, with a downstream token the acquirer has cached, is answered without a promise or a
 * deadline timer, and with exactly the answer the full (asynchronous) path gives. Any step that
 * must wait sends the Check down the full path.
 */
import { expect } from 'chai';
import type { Dispatcher } from 'undici';
import { createChecker, type CheckRequest, type CheckResponse, type Checker } from '../../src/extauthz/check.js';
import { loadExtAuthzProtos } from '../../src/extauthz/protos.js';
import type { AcquiredToken, AcquireRequest, TokenAcquirer } from '../../src/pipeline/types.js';
import { createLogger } from '../../src/log.js';
import { createTokenValidator, type TokenValidatorWithStats } from '../../src/validation/validator.js';
import { buildAzureAd, buildValidationSettings, mint, startFakeEntraWithAgent, type FakeEntra, type TestSigningKey } from '../validation/fixtures.js';
import { envoyCheckRequest, extAuthzOptions, FakeValidator, headerMap, memoryLogger, resolveFromTable } from './fixtures.js';

/** One token per API and caller, cached until refresh(); cached() answers like the real acquirer's warm peek. */
class CachingAcquirer implements TokenAcquirer {
  private readonly tokens = new Map<string, AcquiredToken>();
  syncCache = true;
  acquisitions = 0;
  private who(req: AcquireRequest): string {
    return `${req.options.apiName}.${req.user && !req.options.requestAppToken ? (req.user.claims.oid as string) : 'app'}`;
  }
  acquire(req: AcquireRequest): Promise<AcquiredToken> {
    this.acquisitions++;
    const who = this.who(req);
    let t = this.tokens.get(who);
    if (t === undefined) this.tokens.set(who, (t = Object.freeze({ scheme: 'Bearer', token: `downstream.${who}`, expiresOn: 0 })));
    return Promise.resolve(t);
  }
  cached(req: AcquireRequest): AcquiredToken | undefined {
    return this.syncCache ? this.tokens.get(this.who(req)) : undefined;
  }
  refresh(): void {
    this.tokens.clear();
  }
  close(): void {}
}

const plain = (r: CheckResponse): unknown => JSON.parse(JSON.stringify(r));

describe('ext_authz warm path (synchronous Check)', function () {
  let validator: FakeValidator;
  let acquirer: CachingAcquirer;
  let checker: Checker;
  const make = (): Checker =>
    createChecker({ options: extAuthzOptions(), validator, acquirer, resolveApiOptions: resolveFromTable, logger: memoryLogger().logger, httpStatusNames: loadExtAuthzProtos().httpStatusNames, outboundTimeoutMs: 10_000 });
  const request = (token: string, ext: Record<string, string> = { downstream_api: 'graph' }) =>
    envoyCheckRequest({ path: '/api/items', headers: { authorization: `Bearer ${token}` }, contextExtensions: ext }) as CheckRequest;

  beforeEach(function () {
    validator = new FakeValidator();
    validator.syncCache = true;
    acquirer = new CachingAcquirer();
    checker = make();
  });

  it('answers a warm caller synchronously, with the response the full path gives', async function () {
    const token = validator.add('alice.token', { oid: 'alice' });
    const first = checker.check(request(token), Date.now() + 1000);
    expect(first, 'first sight: the validator has to verify').to.be.instanceOf(Promise);
    const firstResponse = await first;
    const warm = checker.check(request(token), Date.now() + 1000);
    expect(warm, 'warm: no promise').to.not.be.instanceOf(Promise);
    expect(validator.calls, 'the warm Check did not go through validate()').to.equal(1);
    expect(acquirer.acquisitions, 'nor through acquire()').to.equal(1);
    expect(headerMap((warm as CheckResponse).ok_response?.headers).authorization).to.equal('Bearer downstream.graph.alice');
    expect(plain(warm as CheckResponse)).to.deep.equal(plain(firstResponse));

    // The same caller through a checker whose dependencies have no warm path: the same answer.
    validator.syncCache = false;
    acquirer.syncCache = false;
    const full = make().check(request(token), Date.now() + 1000);
    expect(full).to.be.instanceOf(Promise);
    expect(plain(await full)).to.deep.equal(plain(warm as CheckResponse));
  });

  it('without a deadline too, and for an app token route', async function () {
    const token = validator.add('bob.token', { oid: 'bob' });
    await checker.check(request(token, { downstream_api: 'partner-api' }));
    const warm = checker.check(request(token, { downstream_api: 'partner-api' }));
    expect(warm).to.not.be.instanceOf(Promise);
    expect((warm as CheckResponse).status.code).to.equal(0);
  });

  it('takes the full path when the downstream token is not cached any more', async function () {
    const token = validator.add('carol.token', { oid: 'carol' });
    await checker.check(request(token));
    expect(checker.check(request(token))).to.not.be.instanceOf(Promise);
    acquirer.refresh();
    const again = checker.check(request(token));
    expect(again).to.be.instanceOf(Promise);
    expect(headerMap((await again).ok_response?.headers).authorization).to.equal('Bearer downstream.graph.carol');
    expect(acquirer.acquisitions).to.equal(2);
  });

  it('denies a warm caller synchronously with the deny the full path renders', async function () {
    const token = validator.add('dave.token', { oid: 'dave', scp: 'read' });
    const ext = { downstream_api: 'graph', required_scopes: 'write' };
    const first = await checker.check(request(token, ext));
    expect(first.status.code).to.equal(7);
    const warm = checker.check(request(token, ext));
    expect(warm).to.not.be.instanceOf(Promise);
    expect(plain(warm as CheckResponse)).to.deep.equal(plain(first));
    expect(acquirer.acquisitions, 'a deny acquires nothing').to.equal(0);
  });

  it('never answers a token the validator has not cached from the warm path', async function () {
    validator.add('erin.token', { oid: 'erin' });
    const unknown = await checker.check(request('mallory.token'));
    expect(unknown.status.code).to.equal(16);
    const again = checker.check(request('mallory.token'));
    expect(again, 'an invalid token is verified (and denied) every time').to.be.instanceOf(Promise);
    expect((await again).status.code).to.equal(16);
  });
});

describe('ext_authz first sight with the real validator (synchronous Check)', function () {
  let entra: FakeEntra;
  let key: TestSigningKey;
  let agent: Dispatcher;
  let validator: TokenValidatorWithStats;
  let acquirer: CachingAcquirer;
  const make = (v: TokenValidatorWithStats): Checker =>
    createChecker({ options: extAuthzOptions(), validator: v, acquirer, resolveApiOptions: resolveFromTable, logger: memoryLogger().logger, httpStatusNames: loadExtAuthzProtos().httpStatusNames, outboundTimeoutMs: 10_000 });
  const request = (token: string) => envoyCheckRequest({ path: '/api/items', headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'graph' } }) as CheckRequest;
  const newValidator = (): TokenValidatorWithStats =>
    createTokenValidator({
      azureAd: buildAzureAd(entra.instance),
      settings: buildValidationSettings(),
      outbound: { agent, timeoutMs: 2000, maxResponseBytes: 1 << 20 },
      logger: createLogger('silent'),
    });

  let closeEntra: () => Promise<void>;

  before(async function () {
    ({ entra, key, agent, close: closeEntra } = await startFakeEntraWithAgent());
  });
  after(async function () {
    await closeEntra();
  });
  beforeEach(async function () {
    validator = newValidator();
    await validator.start();
    acquirer = new CachingAcquirer();
  });
  afterEach(function () {
    validator.close();
  });

  it('verifies a new token and answers in the same tick once the downstream token is cached', async function () {
    const checker = make(validator);
    // The first Check of the route acquires the downstream token (a promise); it is cached after.
    expect((await checker.check(request(await mint(entra, { key, claims: { uti: 'a' } })), Date.now() + 1000)).status.code).to.equal(0);
    const verifies = validator.stats().signatureVerifications;
    const fresh = await mint(entra, { key, claims: { uti: 'b' } });
    const now = checker.check(request(fresh), Date.now() + 1000);
    expect(now, 'first sight, keys loaded, downstream token cached: no promise').to.not.be.instanceOf(Promise);
    expect(validator.stats().signatureVerifications, 'and the signature was checked').to.equal(verifies + 1);
    expect(headerMap((now as CheckResponse).ok_response?.headers).authorization).to.equal(`Bearer downstream.graph.${'5d2f7b0a-0000-4000-8000-000000000001'}`);
  });

  it('denies an invalid new token in the same tick, with the deny the full path renders', async function () {
    const checker = make(validator);
    const expired = await mint(entra, { key, nowSec: Math.floor(Date.now() / 1000) - 7200 });
    const [h, p] = expired.split('.');
    const forged = `${h}.${p}.${Buffer.alloc(256, 1).toString('base64url')}`;
    for (const token of [expired, forged]) {
      const now = checker.check(request(token), Date.now() + 1000);
      expect(now).to.not.be.instanceOf(Promise);
      expect((now as CheckResponse).status.code).to.equal(16);
      // A validator whose keys are still loading takes the full path: the same deny, as a promise.
      const loading = newValidator();
      const started = loading.start();
      const full = make(loading).check(request(token), Date.now() + 1000);
      expect(full).to.be.instanceOf(Promise);
      expect(plain(await full)).to.deep.equal(plain(now as CheckResponse));
      await started;
      loading.close();
    }
  });
});
