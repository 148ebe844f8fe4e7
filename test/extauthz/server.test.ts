/**
 * The ext_authz listener itself: health per service, legacy v2 names, message size limit, shutdown.
 */
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { healthServiceDefinition } from '../../src/extauthz/health.js';
import { loadExtAuthzProtos } from '../../src/extauthz/protos.js';
import { check, envoyCheckRequest, headerMap, startHarness, type Harness } from './fixtures.js';

type HealthClient = grpc.Client & {
  Check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
  List(req: object, cb: (err: grpc.ServiceError | null, res?: { statuses: Record<string, { status: string }> }) => void): void;
  Watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
};

function healthClient(port: number): HealthClient {
  const Ctor = grpc.makeGenericClientConstructor(healthServiceDefinition(), 'Health');
  return new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as HealthClient;
}

function healthCheck(client: HealthClient, service: string): Promise<string> {
  return new Promise((resolve, reject) => client.Check({ service }, (err, res) => (err ? reject(err) : resolve(res!.status))));
}

describe('ext_authz gRPC server', function () {
  let h: Harness;
  let health: HealthClient;

  beforeEach(async function () {
    h = await startHarness();
    health = healthClient(h.server.port);
  });
  afterEach(async function () {
    health.close();
    await h.close();
  });

  it('listens on 127.0.0.1 with the port chosen for port 0', function () {
    expect(h.server.port).to.be.above(0);
    expect(h.server.address).to.equal(`127.0.0.1:${h.server.port}`);
  });

  it('reports the Authorization service NOT_SERVING until the validator is ready, the server overall SERVING', async function () {
    h.validator.isReady = false;
    expect(await healthCheck(health, '')).to.equal('SERVING');
    expect(await healthCheck(health, 'envoy.service.auth.v3.Authorization')).to.equal('NOT_SERVING');
    h.validator.isReady = true;
    expect(await healthCheck(health, 'envoy.service.auth.v3.Authorization')).to.equal('SERVING');
  });

  it('answers NOT_FOUND for a service it does not serve and lists the ones it does', async function () {
    const err = await healthCheck(health, 'no.such.Service').then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    expect(err?.code).to.equal(grpc.status.NOT_FOUND);
    const list = await new Promise<Record<string, { status: string }>>((resolve, reject) =>
      health.List({}, (e, res) => (e ? reject(e) : resolve(res!.statuses))),
    );
    expect(Object.keys(list)).to.have.members(['', 'envoy.service.auth.v3.Authorization']);
  });

  it('streams status changes to Watch: NOT_SERVING → SERVING when keys load, NOT_SERVING on drain', async function () {
    h.validator.isReady = false;
    const seen: string[] = [];
    const stream = health.Watch({ service: 'envoy.service.auth.v3.Authorization' });
    const done = new Promise<void>((resolve) => {
      stream.on('data', (m: { status: string }) => {
        seen.push(m.status);
        if (seen.length === 1) h.validator.isReady = true; // picked up by the readiness poll
        if (seen.length === 2) h.server.setServing(false);
        if (seen.length === 3) resolve();
      });
    });
    stream.on('error', () => {});
    await done;
    stream.cancel();
    expect(seen).to.deep.equal(['NOT_SERVING', 'SERVING', 'NOT_SERVING']);
    expect(await healthCheck(health, '')).to.equal('NOT_SERVING');
  });

  for (const legacy of ['envoy.service.auth.v2.Authorization', 'envoy.service.auth.v2alpha.Authorization']) {
    it(`answers UNIMPLEMENTED for the removed ${legacy}/Check`, async function () {
      const svc = loadExtAuthzProtos().authorizationService.Check;
      const client = new grpc.Client(`127.0.0.1:${h.server.port}`, grpc.credentials.createInsecure());
      try {
        const err = await new Promise<grpc.ServiceError | null>((resolve) => {
          client.makeUnaryRequest(`/${legacy}/Check`, svc.requestSerialize, svc.responseDeserialize, envoyCheckRequest(), (e) => resolve(e));
        });
        expect(err?.code).to.equal(grpc.status.UNIMPLEMENTED);
      } finally {
        client.close();
      }
    });
  }

  it('does not serve gRPC reflection', async function () {
    const client = new grpc.Client(`127.0.0.1:${h.server.port}`, grpc.credentials.createInsecure());
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) => {
        const call = client.makeBidiStreamRequest('/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo', (b: Buffer) => b, (b: Buffer) => b);
        call.on('error', (e: grpc.ServiceError) => resolve(e));
        call.on('data', () => {});
        call.write(Buffer.alloc(0));
        call.end();
      });
      expect(err?.code).to.equal(grpc.status.UNIMPLEMENTED);
    } finally {
      client.close();
    }
  });

  for (const [label, overrides] of [
    ['with ClaimsToHeaders', {}],
    ['without ClaimsToHeaders (the OkHttpResponse shared by callers)', { claimsToHeaders: {} }],
  ] as const) {
    it(`sends every allow byte-identical to a whole encoding, whether built for one call, shared in parts or kept whole (${label})`, async function () {
      const harness = await startHarness(overrides);
      // A raw client: the response bytes exactly as the server wrote them.
      const { authorizationService } = loadExtAuthzProtos();
      const Raw = grpc.makeGenericClientConstructor({ Check: { ...authorizationService.Check, responseDeserialize: (b: Buffer) => b } }, 'Authorization');
      const raw = new Raw(`127.0.0.1:${harness.server.port}`, grpc.credentials.createInsecure()) as unknown as {
        Check(req: object, cb: (err: grpc.ServiceError | null, res?: Buffer) => void): void;
        close(): void;
      };
      const rawCheck = (req: object) => new Promise<Buffer>((resolve, reject) => raw.Check(req, (err, res) => (err ? reject(err) : resolve(res!))));
      // One app token object for every caller (as the acquirer's cache hands it out).
      const appToken = Object.freeze({ scheme: 'Bearer', token: 'downstream.partner-api.app', expiresOn: 0 });
      harness.acquirer.acquire = () => Promise.resolve(appToken);
      const alice = harness.validator.add('alice.token', { oid: 'alice', name: 'Alice' });
      const bob = harness.validator.add('bob.token', { oid: 'bob', name: 'Bob' });
      const req = (token: string) => envoyCheckRequest({ headers: { authorization: `Bearer ${token}` }, contextExtensions: { downstream_api: 'partner-api' } });
      try {
        // alice ×3 (first sight: built for the call around the shared parts; then kept whole; then
        // its kept encoding), bob once (his own fields around the same shared parts).
        for (const [token, oid, name] of [[alice, 'alice', 'Alice'], [alice, 'alice', 'Alice'], [alice, 'alice', 'Alice'], [bob, 'bob', 'Bob']]) {
          const bytes = await rawCheck(req(token));
          const decoded = authorizationService.Check.responseDeserialize(bytes) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
          expect(decoded.status.code ?? 0).to.equal(0);
          const headers = headerMap(decoded.ok_response.headers);
          expect(headers.authorization).to.equal('Bearer downstream.partner-api.app');
          // A caller's claims never travel in another caller's allow.
          expect(headers['x-entra-name']).to.equal('claimsToHeaders' in overrides ? undefined : name);
          expect(decoded.dynamic_metadata.fields['entra.oid'].stringValue).to.equal(oid);
          expect(bytes.equals(authorizationService.Check.responseSerialize(decoded)), `${oid}: not the canonical encoding`).to.equal(true);
        }
      } finally {
        raw.close();
        await harness.close();
      }
    });
  }

  it('denies a CheckRequest larger than MaxReceiveMessageBytes in band (431), not with a failed RPC', async function () {
    // A failed RPC is an error to Envoy, and failure_mode_allow turns errors into allows.
    h.validator.add('t.t.t');
    const big = envoyCheckRequest({ headers: { authorization: 'Bearer t.t.t', cookie: 'x'.repeat(80 * 1024) } });
    const res = await check(h.client, big);
    expect(res.status.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(res.denied_response?.status?.code).to.equal('RequestHeaderFieldsTooLarge');
    expect(JSON.parse(res.denied_response?.body ?? '{}')).to.include({ code: 'request_headers_too_large' });
    // The same request under the limit is allowed.
    expect((await check(h.client, envoyCheckRequest({ headers: { authorization: 'Bearer t.t.t' } }))).status.code).to.equal(0);
  });

  it('cuts a Check still in flight when the grace runs out, rather than waiting for it', async function () {
    // A harness of its own: the close ends its server.
    const own = await startHarness();
    try {
      own.validator.add('t.t.t');
      own.validator.delayMs = 5_000;
      const started = Date.now();
      const inflight = check(own.client, envoyCheckRequest({ headers: { authorization: 'Bearer t.t.t' } })).then(
        () => 'answered',
        (err: grpc.ServiceError) => `failed: ${grpc.status[err.code]}`,
      );
      await new Promise((r) => setTimeout(r, 50));
      await own.server.close(100);
      // The connection is gone at the end of the grace, not when the slow Check would have finished.
      expect(await inflight).to.match(/^failed: (CANCELLED|UNAVAILABLE|INTERNAL)$/);
      expect(Date.now() - started).to.be.below(2_000);
    } finally {
      await own.close();
    }
  });

  it('lets an in-flight Check finish on close, then stops listening', async function () {
    h.validator.add('t.t.t');
    h.validator.delayMs = 100;
    const inflight = check(h.client, envoyCheckRequest({ headers: { authorization: 'Bearer t.t.t' } }));
    await new Promise((r) => setTimeout(r, 20));
    await h.server.close(2000);
    expect((await inflight).status.code).to.equal(0);
  });
});
