/**
 * The pure pieces of the ext_authz adapter: route policy, header normalisation, claim values, the
 * shared deadline signals and the clamp on the deadline a caller chooses.
 */
import { expect } from 'chai';
import { SidecarError } from '../../src/errors.js';
import { claimHeaderValue, createChecker, DeadlineSignals, denyReason, inboundHeaders, MAX_DEADLINE_OUTBOUND_TIMEOUTS, type Checker, type CheckRequest, type CheckResponse } from '../../src/extauthz/check.js';
import { defaultPolicy, routePolicy } from '../../src/extauthz/policy.js';
import { loadExtAuthzProtos } from '../../src/extauthz/protos.js';
import { envoyCheckRequest, extAuthzOptions, FakeAcquirer, FakeValidator, memoryLogger, resolveFromTable } from './fixtures.js';

describe('ext_authz route policy', function () {
  const defaults = defaultPolicy(extAuthzOptions({ requiredScopes: ['access_as_user'], downstreamApi: 'graph' }));

  it('uses the Sidecar:ExtAuthz defaults when a route sets no context_extensions', function () {
    expect(routePolicy(defaults, undefined)).to.equal(defaults);
    expect(routePolicy(defaults, {})).to.equal(defaults);
    expect(defaults).to.include({ validate: 'required', downstreamApi: 'graph', injectHeader: 'authorization', requireAll: false });
  });

  it('overrides per key, and an empty downstream_api turns injection off', function () {
    const p = routePolicy(defaults, { required_scopes: 'a  b', downstream_api: '', require_all: 'TRUE', inject_header: 'X-Token' });
    expect(p.requiredScopes).to.deep.equal(['a', 'b']);
    expect(p.downstreamApi).to.equal(undefined);
    expect(p.requireAll).to.equal(true);
    expect(p.injectHeader).to.equal('x-token');
    expect(p.validate).to.equal('required');
  });

  it('builds the agent selection only with agent_identity', function () {
    expect(routePolicy(defaults, { agent_identity: 'a', agent_user_id: 'u' }).agent).to.deep.equal({ agentIdentity: 'a', userId: 'u' });
    expect(() => routePolicy(defaults, { agent_username: 'x@y' })).to.throw(SidecarError).with.property('code', 'misconfigured');
  });

  it('rejects unknown keys, bad values and an invalid inject_header', function () {
    const bad: Array<Record<string, string>> = [{ scopes: 'x' }, { validate: 'Required' }, { strip_inbound_authorization: '1' }, { inject_header: 'bad header' }];
    for (const ext of bad) {
      expect(() => routePolicy(defaults, ext), JSON.stringify(ext)).to.throw(SidecarError).with.property('code', 'misconfigured');
    }
  });

  it('resolves context_extensions over a rule key by key: each key from ext, else the rule, else the defaults', function () {
    const rule = { validate: 'optional', downstream_api: 'partner', inject_header: 'x-partner', agent_identity: 'a1', agent_username: 'u@x' };
    const p = routePolicy(defaults, { inject_header: 'x-other', require_all: 'true' }, rule);
    expect(p).to.deep.include({ validate: 'optional', downstreamApi: 'partner', injectHeader: 'x-other', requireAll: true, requiredScopes: ['access_as_user'] });
    expect(p.agent).to.deep.equal({ agentIdentity: 'a1', username: 'u@x' });
    // A route's agent user replaces the rule's, whichever of the two keys either names.
    expect(routePolicy(defaults, { agent_user_id: 'oid' }, rule).agent).to.deep.equal({ agentIdentity: 'a1', userId: 'oid' });
    expect(routePolicy(defaults, { agent_username: '' }, rule).agent).to.deep.equal({ agentIdentity: 'a1' });
    expect(routePolicy(defaults, { agent_identity: 'a2' }, rule).agent).to.deep.equal({ agentIdentity: 'a2', username: 'u@x' });
    // Set but empty over a rule's API: no token.
    expect(routePolicy(defaults, { downstream_api: '' }, rule).downstreamApi).to.equal(undefined);
    expect(routePolicy(defaults, undefined, rule)).to.deep.equal(routePolicy(defaults, rule));
  });

  it('drops only the scopes and roles of the layers under the one that says validate none', function () {
    const none = { validate: 'none' };
    // A Validate=none rule drops the defaults; a route that validates again brings them back.
    expect(routePolicy(defaults, undefined, none).requiredScopes).to.deep.equal([]);
    expect(routePolicy(defaults, { validate: 'required' }, none).requiredScopes).to.deep.equal(['access_as_user']);
    expect(routePolicy(defaults, { validate: 'optional', required_roles: 'R' }, none)).to.deep.include({ requiredScopes: ['access_as_user'], requiredRoles: ['R'] });
    // A rule's own scopes survive a route that does not name them, and drop under one that says none.
    const scoped = { required_scopes: 'orders.read' };
    expect(routePolicy(defaults, { inject_header: 'x-t' }, scoped).requiredScopes).to.deep.equal(['orders.read']);
    expect(routePolicy(defaults, none, scoped)).to.deep.include({ validate: 'none', requiredScopes: [], requiredRoles: [] });
    // Scopes a route names on a route that validates nothing are still a mistake.
    expect(() => routePolicy(defaults, { required_scopes: 'x' }, none)).to.throw(SidecarError).with.property('code', 'misconfigured');
    expect(() => routePolicy(defaults, { agent_username: 'u@x' }, { downstream_api: 'graph' })).to.throw(SidecarError).with.property('code', 'misconfigured');
  });

  it('refuses defaults that require scopes without validating tokens', function () {
    expect(() => defaultPolicy(extAuthzOptions({ validate: 'none', requiredRoles: ['Admin'] }))).to.throw(SidecarError);
  });
});

describe('ext_authz request headers', function () {
  it("returns Envoy's lower-cased headers map as is", function () {
    const headers = { ':path': '/x', authorization: 'Bearer t' };
    expect(inboundHeaders({ headers })).to.equal(headers);
  });

  it('lower-cases and comma-joins a headers map with upper-case names', function () {
    expect({ ...inboundHeaders({ headers: { Authorization: 'Bearer t', 'X-A': '1', 'x-a': '2' } }) }).to.deep.equal({ authorization: 'Bearer t', 'x-a': '1,2' });
  });

  it('decodes header_map raw_value bytes and prefers header_map over headers', function () {
    const out = inboundHeaders({
      headers: { ignored: 'yes' },
      header_map: { headers: [{ key: 'X-Raw', raw_value: new Uint8Array([0x61, 0xe9]) }, { key: 'x-raw', value: 'b' }, { key: '' }] },
    });
    expect({ ...out }).to.deep.equal({ 'x-raw': 'a\u00e9,b' });
  });
});

describe('ext_authz claim header values', function () {
  it('keeps strings, stringifies numbers and booleans, space-joins arrays, skips objects', function () {
    expect(claimHeaderValue('x')).to.equal('x');
    expect(claimHeaderValue(42)).to.equal('42');
    expect(claimHeaderValue(true)).to.equal('true');
    expect(claimHeaderValue(['a', 'b', 3])).to.equal('a b 3');
    expect(claimHeaderValue({ a: 1 })).to.equal(undefined);
    expect(claimHeaderValue([{ a: 1 }])).to.equal(undefined);
    expect(claimHeaderValue(undefined)).to.equal(undefined);
  });
});

describe('ext_authz deadline signals', function () {
  it('shares one signal per 50 ms slice and never aborts before the requested time', async function () {
    const signals = new DeadlineSignals();
    const t = Date.now();
    const slice = Math.ceil((t + 120) / 50) * 50;
    const a = signals.lease(slice - 10).signal;
    const b = signals.lease(slice - 40).signal;
    const c = signals.lease(slice + 10).signal;
    expect(a).to.equal(b);
    expect(a).not.to.equal(c);
    const abortedAt = await new Promise<number>((resolve) => a.addEventListener('abort', () => resolve(Date.now())));
    expect(abortedAt).to.be.at.least(slice - 10);
    expect(c.aborted).to.equal(false);
  });

  it('keeps a slice only while an acquisition holds it, whatever deadlines callers chose', function () {
    const signals = new DeadlineSignals();
    // One past a whole second, so that `far` and `far + 1` fall in the same slice (a slice ends on a
    // multiple of its width: an unaligned `far` made the test fail one run in fifty).
    const far = Math.floor((Date.now() + 10 * 86_400_000) / 1000) * 1000 + 1;
    // 20,000 distinct far-off deadlines (a slice each), each given back once its acquisition is over.
    const leases = Array.from({ length: 20_000 }, (_, i) => signals.lease(far + i * 50));
    expect(signals.size).to.equal(20_000);
    for (const lease of leases) signals.release(lease);
    expect(signals.size, 'slices left once no acquisition holds them').to.equal(0);
    // A slice shared by two holders stays until the second lets go, and its signal never aborts after.
    const first = signals.lease(far);
    const second = signals.lease(far + 1);
    expect(second).to.equal(first);
    signals.release(first);
    expect(signals.size).to.equal(1);
    signals.release(second);
    expect(signals.size).to.equal(0);
    expect(first.signal.aborted).to.equal(false);
  });

  it('gives a slice that has fired back without touching the next one in its place', async function () {
    const signals = new DeadlineSignals();
    const soon = Date.now() + 5;
    const fired = signals.lease(soon);
    await new Promise<void>((resolve) => fired.signal.addEventListener('abort', () => resolve()));
    expect(signals.size).to.equal(0);
    // A later lease of the same (past) slice is a new one; the late release of the old must not drop it.
    const next = signals.lease(soon);
    expect(next).not.to.equal(fired);
    signals.release(fired);
    expect(signals.size).to.equal(1);
    await new Promise<void>((resolve) => (next.signal.aborted ? resolve() : next.signal.addEventListener('abort', () => resolve())));
    signals.release(next);
    expect(signals.size).to.equal(0);
  });
});

describe('ext_authz deadline clamp', function () {
  /** A checker over an acquirer that never answers, with Sidecar:Outbound:TimeoutMs = `outboundTimeoutMs`. */
  function hangingChecker(outboundTimeoutMs: number): { checker: Checker; acquirer: FakeAcquirer } {
    const validator = new FakeValidator();
    validator.add('alice.token', { oid: 'alice' });
    const acquirer = new FakeAcquirer();
    acquirer.hang = true;
    const checker = createChecker({ options: extAuthzOptions(), validator, acquirer, resolveApiOptions: resolveFromTable, logger: memoryLogger().logger, httpStatusNames: loadExtAuthzProtos().httpStatusNames, outboundTimeoutMs });
    return { checker, acquirer };
  }
  const request = envoyCheckRequest({ headers: { authorization: 'Bearer alice.token' }, contextExtensions: { downstream_api: 'graph' } }) as CheckRequest;

  it(`answers a Check whose deadline is days away once ${MAX_DEADLINE_OUTBOUND_TIMEOUTS} outbound timeouts have passed, and releases the acquirer's wait`, async function () {
    const outboundTimeoutMs = 50;
    const clamp = MAX_DEADLINE_OUTBOUND_TIMEOUTS * outboundTimeoutMs;
    const { checker, acquirer } = hangingChecker(outboundTimeoutMs);
    const started = Date.now();
    const answer = await Promise.race([checker.check(request, started + 10 * 86_400_000), new Promise<'still waiting'>((r) => setTimeout(() => r('still waiting'), clamp + 2_000))]);
    expect(answer, 'answered within the clamped deadline').to.not.equal('still waiting');
    expect(denyReason(answer as CheckResponse)).to.equal('dependency_timeout');
    // The deny goes out a margin (10 % of the time left, here 30 ms) before the clamped deadline.
    expect(Date.now() - started).to.be.at.least(clamp * 0.9 - 5);
    const by = Date.now() + 2_000;
    while (acquirer.abortedCount === 0 && Date.now() < by) await new Promise((r) => setTimeout(r, 10));
    expect(acquirer.abortedCount, "the acquirer's wait was released").to.equal(1);
  });
});
