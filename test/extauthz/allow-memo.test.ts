/**
 * The checker's allow memo (src/extauthz/check.ts memoisedAllow): the same caller with the same
 * downstream token on the same route gets one frozen response object (whose encoding the server
 * keeps). Only callers the validator has cached (a frozen ValidatedToken, from a token's second
 * request on) are kept, so a one-off caller leaves nothing behind.
 */
import { expect } from 'chai';
import { createChecker, type CheckRequest, type Checker } from '../../src/extauthz/check.js';
import { loadExtAuthzProtos } from '../../src/extauthz/protos.js';
import type { AcquiredToken, AcquireRequest, TokenAcquirer, TokenValidator } from '../../src/pipeline/types.js';
import { envoyCheckRequest, extAuthzOptions, FakeValidator, headerMap, memoryLogger, resolveFromTable, validatedToken } from './fixtures.js';

/** Hands out one token object per (API, caller; per API for app tokens) until refresh() (as the real acquirer's cache does). */
class StableAcquirer implements TokenAcquirer {
  private readonly tokens = new Map<string, AcquiredToken>();
  private generation = 0;
  acquire(req: AcquireRequest): Promise<AcquiredToken> {
    const who = `${req.options.apiName}.${req.user && !req.options.requestAppToken ? (req.user.claims.oid as string) : 'app'}`;
    let t = this.tokens.get(who);
    if (t === undefined) this.tokens.set(who, (t = Object.freeze({ scheme: 'Bearer', token: `downstream.${who}.${this.generation}`, expiresOn: 0 })));
    return Promise.resolve(t);
  }
  /** No warm path: the memo is exercised through acquire(). */
  cached(): undefined {
    return undefined;
  }
  refresh(): void {
    this.generation++;
    this.tokens.clear();
  }
  close(): void {}
}

describe('ext_authz allow memo', function () {
  let validator: FakeValidator;
  let acquirer: StableAcquirer;
  let checker: Checker;
  const request = (token: string, path = '/api/items') =>
    envoyCheckRequest({ path, headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'graph' } }) as CheckRequest;

  beforeEach(function () {
    validator = new FakeValidator();
    acquirer = new StableAcquirer();
    checker = createChecker({
      options: extAuthzOptions(),
      validator,
      acquirer,
      resolveApiOptions: resolveFromTable,
      logger: memoryLogger().logger,
      httpStatusNames: loadExtAuthzProtos().httpStatusNames,
      outboundTimeoutMs: 10_000,
    });
  });

  it("builds a caller's first allow without keeping it, then keeps one frozen response and reuses it", async function () {
    const token = validator.add('alice.token', { oid: 'alice' });
    const first = await checker.check(request(token));
    const second = await checker.check(request(token));
    const third = await checker.check(request(token));
    expect(first.status.code).to.equal(0);
    expect(Object.isFrozen(first), 'first sight (validator did not cache the caller): not kept, so not frozen for the encoding cache').to.equal(false);
    expect(Object.isFrozen(second)).to.equal(true);
    expect(third).to.equal(second);
    expect(JSON.parse(JSON.stringify(first))).to.deep.equal(JSON.parse(JSON.stringify(second)));
    expect(headerMap(second.ok_response?.headers).authorization).to.equal('Bearer downstream.graph.alice.0');
  });

  it('keeps nothing for callers the validator did not cache', async function () {
    // A validator with its cache off: every request gets a fresh, unfrozen token object.
    const uncached: TokenValidator = {
      validate: (compact) => Promise.resolve(validatedToken(compact, { oid: 'carol' })),
      validateNow: () => undefined,
      ready: () => true,
      start: () => Promise.resolve(),
      close() {},
    };
    const c = createChecker({
      options: extAuthzOptions(),
      validator: uncached,
      acquirer,
      resolveApiOptions: resolveFromTable,
      logger: memoryLogger().logger,
      httpStatusNames: loadExtAuthzProtos().httpStatusNames,
      outboundTimeoutMs: 10_000,
    });
    const responses = [];
    for (let i = 0; i < 3; i++) responses.push(await c.check(request('carol.token')));
    for (const r of responses) {
      expect(r.status.code).to.equal(0);
      expect(Object.isFrozen(r)).to.equal(false);
      expect(headerMap(r.ok_response?.headers).authorization).to.equal('Bearer downstream.graph.carol.0');
    }
    expect(responses[1]).to.not.equal(responses[0]);
  });

  it('shares one frozen OkHttpResponse between callers only when no claim becomes a header', async function () {
    const make = (claimsToHeaders?: Record<string, string>) =>
      createChecker({
        options: extAuthzOptions(claimsToHeaders ? { claimsToHeaders } : {}),
        validator,
        acquirer,
        resolveApiOptions: resolveFromTable,
        logger: memoryLogger().logger,
        httpStatusNames: loadExtAuthzProtos().httpStatusNames,
        outboundTimeoutMs: 10_000,
      });
    const app = (c: Checker, token: string) => c.check(envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'partner-api' } }) as CheckRequest);
    const carol = validator.add('carol.token', { oid: 'carol', name: 'Carol' });
    const dave = validator.add('dave.token', { oid: 'dave', name: 'Dave' });

    const bare = make({});
    const c1 = await app(bare, carol); // first sight: built for this call
    const d1 = await app(bare, dave);
    expect(c1).to.not.equal(d1);
    expect(c1.ok_response).to.equal(d1.ok_response);
    expect(Object.isFrozen(c1.ok_response)).to.equal(true);
    expect(c1.dynamic_metadata?.fields['entra.oid'].stringValue).to.equal('carol');
    expect(d1.dynamic_metadata?.fields['entra.oid'].stringValue).to.equal('dave');

    const withClaims = make({ 'x-entra-name': 'name' });
    validator.add('carol.token', { oid: 'carol', name: 'Carol' });
    validator.add('dave.token', { oid: 'dave', name: 'Dave' });
    const c2 = await app(withClaims, carol);
    const d2 = await app(withClaims, dave);
    expect(c2.ok_response).to.not.equal(d2.ok_response);
    expect(headerMap(c2.ok_response?.headers)['x-entra-name']).to.equal('Carol');
    expect(headerMap(d2.ok_response?.headers)['x-entra-name']).to.equal('Dave');
  });

  it('keeps responses per caller, per downstream token and per token-in-query form', async function () {
    const alice = validator.add('alice.token', { oid: 'alice' });
    const bob = validator.add('bob.token', { oid: 'bob' });
    for (let i = 0; i < 2; i++) {
      await checker.check(request(alice));
      await checker.check(request(bob));
    }
    const a = await checker.check(request(alice));
    const b = await checker.check(request(bob));
    expect(a).to.not.equal(b);
    expect(headerMap(b.ok_response?.headers).authorization).to.equal('Bearer downstream.graph.bob.0');
    expect(b.dynamic_metadata?.fields['entra.oid'].stringValue).to.equal('bob');

    // access_token in the query: its own response, which also strips that parameter.
    await checker.check(request(alice, '/api/items?access_token=x'));
    const q = await checker.check(request(alice, '/api/items?access_token=x'));
    expect(q).to.not.equal(a);
    expect(q.ok_response?.query_parameters_to_remove).to.deep.equal(['access_token']);
    expect(await checker.check(request(alice))).to.equal(a);

    // A refreshed downstream token replaces the caller's entry: never the old token again.
    acquirer.refresh();
    const refreshed = await checker.check(request(alice));
    expect(headerMap(refreshed.ok_response?.headers).authorization).to.equal('Bearer downstream.graph.alice.1');
    const again = await checker.check(request(alice));
    expect(headerMap(again.ok_response?.headers).authorization).to.equal('Bearer downstream.graph.alice.1');
    expect(await checker.check(request(alice))).to.equal(again);
  });

  it('shares a bounded number of kept callers between route policies (16,384 in all, 4,096 at most each)', async function () {
    // 20 routes (policies differ by inject_header): each keeps floor(16384 / 20) = 819 callers.
    const routed = (token: string, route: number) =>
      envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'graph', inject_header: `x-route-${route}` } }) as CheckRequest;
    const warm = async (token: string, route: number) => {
      await checker.check(routed(token, route)); // first sight: not kept
      return checker.check(routed(token, route)); // cached by the validator: kept
    };
    const opener = validator.add('opener.token', { oid: 'opener' });
    for (let r = 1; r < 20; r++) await warm(opener, r);
    const first = validator.add('caller-0.token', { oid: 'caller-0' });
    const kept = await warm(first, 0);
    expect(await checker.check(routed(first, 0))).to.equal(kept);
    for (let i = 1; i < 900; i++) await warm(validator.add(`caller-${i}.token`, { oid: `caller-${i}` }), 0);
    // 900 callers on route 0 with room for 819: the first one's response was dropped and is made anew.
    const after = await checker.check(routed(first, 0));
    expect(after).to.not.equal(kept);
    expect(JSON.parse(JSON.stringify(after))).to.deep.equal(JSON.parse(JSON.stringify(kept)));
    // With one route a caller stays kept among 900 others (4,096 per route).
    const single = createChecker({ options: extAuthzOptions(), validator, acquirer, resolveApiOptions: resolveFromTable, logger: memoryLogger().logger, httpStatusNames: loadExtAuthzProtos().httpStatusNames, outboundTimeoutMs: 10_000 });
    const one = await single.check(routed(first, 0));
    const oneKept = await single.check(routed(first, 0));
    expect(oneKept).to.equal(one);
    for (let i = 1; i < 900; i++) await single.check(routed(`caller-${i}.token`, 0));
    expect(await single.check(routed(first, 0))).to.equal(oneKept);
  });
});
