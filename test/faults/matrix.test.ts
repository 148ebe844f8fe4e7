/**
 * The fault matrix (issue 9): every dependency (OpenID metadata, JWKS, Entra token endpoint,
 * managed-identity endpoint, downstream API) × every fault of FAULTS, through the BUILT sidecar's
 * front doors (identity HTTP routes and the ext_authz Check). For each cell: fail closed with the
 * documented status and code, bounded latency, the process alive (no crash, no unhandled
 * rejection), cached keys/tokens still served, Entra not hammered, and recovery once the fault clears.
 */
import { expect } from 'chai';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import type { FaultSpec } from '../../emulator/types.js';
import { call } from '../helpers/e2e.js';
import {
  FAULTS,
  OUTBOUND_TIMEOUT_MS,
  OK_BEHAVIOUR,
  assertAlive,
  checkWith,
  decision,
  downstreamFault,
  eventually,
  problemCode,
  sleep,
  startDownstream,
  startStack,
  timed,
  userToken,
  type Downstream,
  type FaultCase,
  type Stack,
} from './harness.js';
import { assertNoSecrets, secretsOf } from '../helpers/e2e.js';

/** A decision must arrive within this: one outbound deadline for metadata, one for the JWKS, and slack for a loaded CI box. */
const LATENCY_BOUND_MS = 2 * OUTBOUND_TIMEOUT_MS + 1_200;

/** What a client sees for a failure: HTTP status + code, ext_authz gRPC code + Envoy status + code. */
interface Expected {
  readonly httpStatus: number;
  readonly code: string;
  readonly grpcCode: number;
  readonly envoyStatus: string;
}

const THROTTLED: Expected = { httpStatus: 401, code: 'acquisition_throttled', grpcCode: 14, envoyStatus: 'ServiceUnavailable' };
const UPSTREAM_FAILED: Expected = { httpStatus: 401, code: 'acquisition_upstream_failed', grpcCode: 14, envoyStatus: 'ServiceUnavailable' };
const UNAVAILABLE: Expected = { httpStatus: 500, code: 'acquisition_unavailable', grpcCode: 14, envoyStatus: 'ServiceUnavailable' };

/**
 * Retry-After of the token-endpoint and managed-identity cells: these check that no request goes out
 * inside the window, so it must comfortably outlast the follow-up calls on a loaded machine (the
 * recovery wait is measured from the throttled answer, so the longer window costs little).
 */
const ACQ_RETRY_AFTER_SEC = 4;

/** A fault of FAULTS as the acquisition cells inject it (the longer Retry-After above). */
function acquisitionFault(fault: FaultCase): FaultCase {
  if (fault.kind !== 'throttledRetryAfter') return fault;
  return { ...fault, name: `429 with Retry-After: ${ACQ_RETRY_AFTER_SEC}`, spec: { ...fault.spec, retryAfter: ACQ_RETRY_AFTER_SEC } };
}

/** Sleeps until the Retry-After window opened no later than `throttledAt` (epoch ms) has passed. */
async function sleepPastWindow(throttledAt: number): Promise<void> {
  await sleep(Math.max(0, throttledAt + ACQ_RETRY_AFTER_SEC * 1000 + 100 - Date.now()));
}

/**
 * Entra's token endpoint: an error JSON body is an MsalServiceException (401 on the HTTP API, as
 * Microsoft's sidecar answers, reference sidecar-http-api §5.4), 429/503 are throttling, and no usable
 * answer at all (timeout, reset, not JSON, too big) is "unavailable" (500 / UNAVAILABLE).
 */
const TOKEN_ENDPOINT: Record<FaultCase['kind'], Expected> = {
  status500: UPSTREAM_FAILED,
  status502: UPSTREAM_FAILED,
  status503: THROTTLED,
  throttledRetryAfter: THROTTLED,
  throttled: THROTTLED,
  slow: UNAVAILABLE,
  drop: UNAVAILABLE,
  // msal-network turns a non-JSON body into an OAuth-shaped `invalid_response` error on purpose, so
  // msal reports it as a service error (MsalServiceException → 401 on HTTP, retryable 503 at Envoy).
  nonJson: UPSTREAM_FAILED,
  hugeBody: UNAVAILABLE,
};

function expectHttpFailure(r: { status: number; text: string; headers: Headers }, e: Expected, what: string): void {
  expect(r.status, `${what}: ${r.text}`).to.equal(e.httpStatus);
  expect(problemCode(r as Parameters<typeof problemCode>[0]), what).to.equal(e.code);
}

function expectDeny(res: Record<string, any>, e: Expected, what: string): void {
  expect(decision(res), what).to.equal(e.code);
  expect(res.status.code, what).to.equal(e.grpcCode);
  expect(res.denied_response.status.code, what).to.equal(e.envoyStatus);
}

describe('fault matrix: signing keys unavailable at startup (OpenID metadata, JWKS)', function () {
  this.timeout(30_000);
  let emu: Emulator;
  const closing: Promise<void>[] = [];
  const tokens: string[] = [];
  const lines: string[] = [];
  before(async () => {
    emu = await startEmulator();
  });
  after(async () => {
    await Promise.all(closing);
    assertNoSecrets(lines, secretsOf(emu, tokens));
    await emu?.close();
  });

  // Metadata is only read at startup (and on the daily refresh), so a cold start is where its faults
  // bite; the JWKS is covered warm below with every fault, so one cold case suffices here.
  const cells: Array<[FaultSpec['route'], FaultCase]> = [
    ...FAULTS.map((f) => ['metadata', f] as [FaultSpec['route'], FaultCase]),
    ...FAULTS.filter((f) => f.kind === 'hugeBody').map((f) => ['jwks', f] as [FaultSpec['route'], FaultCase]),
  ];
  for (const [route, fault] of cells) {
    it(`${route} ${fault.name}: 503 signing_keys_unavailable on both doors and /readyz, then recovers`, async () => {
      emu.clearFaults();
      emu.fault({ route, sticky: true, ...fault.spec });
      const stack = await startStack({}, emu);
      try {
        const token = await userToken(stack);
        tokens.push(token);
        const v = await timed(() => call(`${stack.sidecar.url}/Validate`, { token }));
        expect(v.value.status, v.value.text).to.equal(503);
        expect(problemCode(v.value)).to.equal('signing_keys_unavailable');
        expect(v.ms).to.be.lessThan(LATENCY_BOUND_MS);
        const c = await timed(() => checkWith(stack, { headers: { authorization: `Bearer ${token}` } }));
        expectDeny(c.value, { httpStatus: 503, code: 'signing_keys_unavailable', grpcCode: 14, envoyStatus: 'ServiceUnavailable' }, 'Check');
        expect(c.ms).to.be.lessThan(LATENCY_BOUND_MS);
        expect((await call(`${stack.management}/readyz`)).status).to.equal(503);
        await assertAlive(stack);

        emu.clearFaults();
        const recovered = await eventually(async () => (await call(`${stack.sidecar.url}/Validate`, { token })).status === 200, 6_000);
        expect(recovered, 'Validate recovers after the fault clears').to.equal(true);
        expect(decision(await checkWith(stack, { headers: { authorization: `Bearer ${token}` } }))).to.equal('allow');
        expect((await call(`${stack.management}/readyz`)).status).to.equal(200);
        await assertAlive(stack);
      } finally {
        lines.push(...stack.sidecar.lines);
        closing.push(stack.close());
      }
    });
  }
});

describe('fault matrix: JWKS re-fetch for a rotated key (warm sidecar)', function () {
  this.timeout(20_000);
  let stack: Stack;
  before(async () => {
    // No cooldown, so every case re-fetches at once; the cooldown itself is tested in test/abuse.
    stack = await startStack({ Sidecar__Validation__UnknownKidCooldownSec: '0' });
    expect(await eventually(async () => (await call(`${stack.management}/readyz`)).status === 200, 15_000), '/readyz 200 (signing keys loaded)').to.equal(true);
  });
  after(async () => {
    stack?.emu.clearFaults();
    await stack?.close();
    if (stack) assertNoSecrets(stack.sidecar.lines, secretsOf(stack.emu, stack.tokens));
  });

  for (const fault of FAULTS) {
    it(`${fault.name}: new-key tokens fail closed (401 token_key_unknown), known keys keep working, then recovers`, async () => {
      const { emu } = stack;
      const oldKey = [await userToken(stack), await userToken(stack)];
      emu.rotateKeys();
      const newKey = await userToken(stack);
      emu.fault({ route: 'jwks', sticky: true, ...fault.spec });
      const jwksBefore = emu.counters().jwks;

      const v = await timed(() => call(`${stack.sidecar.url}/Validate`, { token: newKey }));
      expect(v.value.status).to.equal(401);
      expect(v.value.headers.get('www-authenticate')).to.match(/^Bearer error="invalid_token"/);
      expect(v.ms).to.be.lessThan(LATENCY_BOUND_MS);
      const c = await checkWith(stack, { headers: { authorization: `Bearer ${newKey}` } });
      expectDeny(c, { httpStatus: 401, code: 'token_key_unknown', grpcCode: 16, envoyStatus: 'Unauthorized' }, 'Check');

      // Keys already loaded are still served while the JWKS endpoint is broken.
      expect((await call(`${stack.sidecar.url}/Validate`, { token: oldKey[0] })).status).to.equal(200);
      expect(decision(await checkWith(stack, { headers: { authorization: `Bearer ${oldKey[1]}` } }))).to.equal('allow');

      // Two failing requests, at most one JWKS fetch each (no hidden retries).
      expect(emu.counters().jwks - jwksBefore, 'JWKS fetches').to.be.at.most(2);
      await assertAlive(stack);

      emu.clearFaults();
      const recovered = await eventually(async () => (await call(`${stack.sidecar.url}/Validate`, { token: newKey })).status === 200, 5_000);
      expect(recovered, 'the new key is picked up once the JWKS answers again').to.equal(true);
      expect(decision(await checkWith(stack, { headers: { authorization: `Bearer ${newKey}` } }))).to.equal('allow');
      await assertAlive(stack);
    });
  }
});

describe('fault matrix: token acquisition (Entra token endpoint, managed identity, downstream API)', function () {
  this.timeout(20_000);
  let stack: Stack;
  let api: Downstream;
  let warmApp = '';
  let warmMi = '';
  before(async () => {
    api = await startDownstream();
    const emu = await startEmulator();
    const mi = emu.scenario.managedIdentities.userAssigned;
    stack = await startStack(
      {
        AZURE_POD_IDENTITY_AUTHORITY_HOST: emu.imdsOrigin,
        DownstreamApis__orders__Scopes__0: 'api://downstream/read',
        DownstreamApis__app__Scopes__0: 'api://downstream/.default',
        DownstreamApis__app__RequestAppToken: 'true',
        DownstreamApis__mi__Scopes__0: 'api://downstream/.default',
        DownstreamApis__mi__AcquireTokenOptions__ManagedIdentity__UserAssignedClientId: mi.clientId,
        DownstreamApis__items__BaseUrl: `${api.origin}/v1`,
        DownstreamApis__items__Scopes__0: 'api://downstream/.default',
        DownstreamApis__items__RequestAppToken: 'true',
        DownstreamApis__items__HttpMethod: 'Post',
        Sidecar__DownstreamApi__MaxResponseBytes: '65536',
        Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated: 'true',
      },
      emu,
    );
    expect(await eventually(async () => (await call(`${stack.management}/readyz`)).status === 200, 15_000), '/readyz 200 (signing keys loaded)').to.equal(true);
    const app = await call(`${stack.sidecar.url}/AuthorizationHeaderUnauthenticated/app`);
    expect(app.status, app.text).to.equal(200);
    warmApp = app.json().authorizationHeader;
    const m = await call(`${stack.sidecar.url}/AuthorizationHeaderUnauthenticated/mi`);
    expect(m.status, m.text).to.equal(200);
    warmMi = m.json().authorizationHeader;
    stack.tokens.push(warmApp.slice(7), warmMi.slice(7));
  });
  after(async () => {
    stack?.emu.clearFaults();
    await stack?.close();
    if (stack) assertNoSecrets(stack.sidecar.lines, secretsOf(stack.emu, stack.tokens));
    await stack?.emu.close();
    await api?.close();
  });
  afterEach(() => {
    stack.emu.clearFaults();
    api.behaviour = OK_BEHAVIOUR;
  });

  const forceRefresh = 'optionsOverride.AcquireTokenOptions.ForceRefresh=true';

  for (const fault of FAULTS.map(acquisitionFault)) {
    const e = TOKEN_ENDPOINT[fault.kind];
    it(`token endpoint ${fault.name}: ${e.httpStatus} ${e.code} / gRPC ${e.grpcCode}; cached tokens still served; recovers`, async () => {
      const { emu } = stack;
      const url = stack.sidecar.url;
      const [u1, u2, u3] = [await userToken(stack), await userToken(stack), await userToken(stack)];
      // Validate first so only acquisition is in play below.
      for (const u of [u1, u2, u3]) expect((await call(`${url}/Validate`, { token: u })).status).to.equal(200);
      emu.fault({ route: 'token', sticky: true, ...fault.spec });
      const before = emu.counters().token;

      const cached = await call(`${url}/AuthorizationHeaderUnauthenticated/app`);
      expect(cached.status).to.equal(200);
      expect(cached.json().authorizationHeader === warmApp, 'the cached app token is still served').to.equal(true);
      expect(emu.counters().token).to.equal(before);

      const obo = await timed(() => call(`${url}/AuthorizationHeader/orders`, { token: u1 }));
      expectHttpFailure(obo.value, e, 'OBO');
      expect(obo.ms).to.be.lessThan(LATENCY_BOUND_MS);
      const app = await call(`${url}/AuthorizationHeaderUnauthenticated/app?${forceRefresh}`);
      expectHttpFailure(app, e, 'app token');
      const chk = await timed(() => checkWith(stack, { headers: { authorization: `Bearer ${u2}` }, contextExtensions: { downstream_api: 'orders' } }));
      expectDeny(chk.value, e, 'Check');
      expect(chk.ms).to.be.lessThan(LATENCY_BOUND_MS);
      if (e.code === 'acquisition_throttled' && fault.kind === 'throttledRetryAfter') {
        expect(obo.value.headers.get('retry-after')).to.equal(String(ACQ_RETRY_AFTER_SEC));
      }

      // Not hammered: one call sends one request (no hidden retries); inside a Retry-After window none is sent.
      const sentBefore = emu.counters().token;
      expectHttpFailure(await call(`${url}/AuthorizationHeader/orders`, { token: u3 }), e, 'single call');
      // u3's Retry-After window (if any) opened before this point.
      const throttledAt = Date.now();
      expect(emu.counters().token - sentBefore, 'token requests for one call').to.equal(1);
      if (fault.kind === 'throttledRetryAfter') {
        const again = await Promise.all(Array.from({ length: 5 }, () => call(`${url}/AuthorizationHeader/orders`, { token: u3 })));
        for (const r of again) expectHttpFailure(r, THROTTLED, 'inside the Retry-After window');
        expect(emu.counters().token - sentBefore, 'no request inside the Retry-After window').to.equal(1);
      }
      await assertAlive(stack);

      emu.clearFaults();
      if (fault.kind === 'throttledRetryAfter') await sleepPastWindow(throttledAt);
      const ok = await call(`${url}/AuthorizationHeader/orders`, { token: u3 });
      expect(ok.status, ok.text).to.equal(200);
      stack.tokens.push(ok.json().authorizationHeader.slice(7));
      expect(decision(await checkWith(stack, { headers: { authorization: `Bearer ${u2}` }, contextExtensions: { downstream_api: 'orders' } }))).to.equal('allow');
      await assertAlive(stack);
    });
  }

  for (const fault of FAULTS.map(acquisitionFault)) {
    const e = TOKEN_ENDPOINT[fault.kind];
    it(`managed identity ${fault.name}: ${e.httpStatus} ${e.code}; the cached MI token is still served on both doors; recovers`, async () => {
      const { emu } = stack;
      const url = stack.sidecar.url;
      emu.fault({ route: 'imds', sticky: true, ...fault.spec });
      const before = emu.counters().imds;
      const cached = await call(`${url}/AuthorizationHeaderUnauthenticated/mi`);
      expect(cached.status).to.equal(200);
      expect(cached.json().authorizationHeader === warmMi, 'the cached MI token is still served').to.equal(true);
      expect(decision(await checkWith(stack, { contextExtensions: { validate: 'none', downstream_api: 'mi' } }))).to.equal('allow');
      expect(emu.counters().imds).to.equal(before);

      const fresh = await timed(() => call(`${url}/AuthorizationHeaderUnauthenticated/mi?${forceRefresh}`));
      // The MI token's Retry-After window (if any) opened before this point.
      const throttledAt = Date.now();
      expectHttpFailure(fresh.value, e, 'managed identity');
      expect(fresh.ms).to.be.lessThan(LATENCY_BOUND_MS);
      expect(emu.counters().imds - before, 'IMDS requests for one call (no hidden retries)').to.equal(1);
      const burst = await Promise.all(Array.from({ length: 5 }, () => call(`${url}/AuthorizationHeaderUnauthenticated/mi?${forceRefresh}`)));
      for (const r of burst) expectHttpFailure(r, e, 'burst');
      if (fault.kind === 'throttledRetryAfter') expect(emu.counters().imds - before, 'no IMDS request inside the Retry-After window').to.equal(1);
      else expect(emu.counters().imds - before).to.be.at.most(6);
      await assertAlive(stack);

      emu.clearFaults();
      if (fault.kind === 'throttledRetryAfter') await sleepPastWindow(throttledAt);
      const ok = await call(`${url}/AuthorizationHeaderUnauthenticated/mi?${forceRefresh}`);
      expect(ok.status, ok.text).to.equal(200);
      // The forced refresh replaced the cached token; the next case expects the new one.
      warmMi = ok.json().authorizationHeader;
      stack.tokens.push(warmMi.slice(7));
      await assertAlive(stack);
    });
  }

  /** Downstream failures are the API's answer, passed through in DownstreamApiResult (Microsoft's behaviour), unless there is no usable answer. */
  const DOWNSTREAM: Record<FaultCase['kind'], { passThrough: number } | { httpStatus: number; code: string }> = {
    status500: { passThrough: 500 },
    status502: { passThrough: 502 },
    status503: { passThrough: 503 },
    throttledRetryAfter: { passThrough: 429 },
    throttled: { passThrough: 429 },
    slow: { httpStatus: 500, code: 'dependency_timeout' },
    drop: { httpStatus: 500, code: 'downstream_unavailable' },
    nonJson: { passThrough: 200 },
    hugeBody: { httpStatus: 502, code: 'downstream_response_too_large' },
  };
  for (const fault of FAULTS) {
    const e = DOWNSTREAM[fault.kind];
    const says = 'passThrough' in e ? `200 with statusCode ${e.passThrough}, sent once` : `${e.httpStatus} ${e.code}`;
    it(`downstream API ${fault.name}: ${says}; ext_authz unaffected; recovers`, async () => {
      const url = stack.sidecar.url;
      const u = await userToken(stack);
      api.behaviour = downstreamFault(fault.kind);
      api.seen.length = 0;
      const r = await timed(() => call(`${url}/DownstreamApi/items`, { method: 'POST', token: u, body: '{}', headers: { 'content-type': 'application/json' } }));
      if ('passThrough' in e) {
        expect(r.value.status, r.value.text).to.equal(200);
        expect(r.value.json().statusCode).to.equal(e.passThrough);
        expect(api.seen.length, 'the sidecar never retries a downstream call by itself').to.equal(1);
      } else {
        expect(r.value.status, r.value.text).to.equal(e.httpStatus);
        expect(problemCode(r.value)).to.equal(e.code);
      }
      expect(r.ms).to.be.lessThan(LATENCY_BOUND_MS);
      expect(decision(await checkWith(stack, { headers: { authorization: `Bearer ${u}` } }))).to.equal('allow');
      await assertAlive(stack);

      api.behaviour = OK_BEHAVIOUR;
      const ok = await call(`${url}/DownstreamApi/items`, { method: 'POST', token: u, body: '{}', headers: { 'content-type': 'application/json' } });
      expect(ok.status).to.equal(200);
      expect(ok.json().statusCode).to.equal(200);
    });
  }
});
