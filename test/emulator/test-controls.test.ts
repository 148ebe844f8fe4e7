/**
 * The emulator's test controls: fault injection, clock offset, counters, the redacted request
 * log, the `/_emulator/*` admin API and the CLI.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Agent } from 'undici';
import { redactionFingerprint, startEmulator } from '../../emulator/index.js';
import type { Emulator } from '../../emulator/index.js';
import { call, decodePart } from './helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

describe('emulator: test controls', function () {
  let emu: Emulator;
  let agent: Agent;
  let tid: string;
  let tokenUrl: string;
  let secretForm: Record<string, string>;

  before(async function () {
    this.timeout(30_000);
    emu = await startEmulator({ admin: true });
    agent = new Agent({ connect: { ca: emu.caPem } });
    tid = emu.scenario.tenants.primary.id;
    tokenUrl = `${emu.origin}/${tid}/oauth2/v2.0/token`;
    secretForm = { grant_type: 'client_credentials', client_id: emu.scenario.apps.sidecarApi.appId, client_secret: emu.scenario.apps.sidecarApi.secrets[0].value, scope: 'api://downstream/.default' };
  });
  after(async () => {
    await agent?.close();
    await emu?.close();
  });
  afterEach(() => emu.reset());

  describe('faults', () => {
    it('answers the next matching token request with 503, Retry-After and AADSTS, then recovers', async () => {
      emu.fault({ route: 'token', status: 503, retryAfter: 7, client_id: emu.scenario.apps.sidecarApi.appId });
      const faulted = await call(agent, tokenUrl, { form: secretForm });
      expect(faulted.status).to.equal(503);
      expect(faulted.headers['retry-after']).to.equal('7');
      expect(faulted.json.error).to.equal('temporarily_unavailable');
      expect(faulted.json.error_codes).to.deep.equal([90006]);
      const next = await call(agent, tokenUrl, { form: secretForm });
      expect(next.status).to.equal(200);
      expect(emu.counters().token).to.equal(2);
    });

    it('matches faults by grant type and counts them down; sticky faults last until cleared', async () => {
      emu.fault({ route: 'token', grant_type: 'refresh_token', status: 500 });
      expect((await call(agent, tokenUrl, { form: secretForm })).status).to.equal(200);
      emu.fault({ route: 'metadata', count: 2, status: 500 });
      const meta = `${emu.origin}/${tid}/v2.0/.well-known/openid-configuration`;
      expect((await call(agent, meta)).status).to.equal(500);
      expect((await call(agent, meta)).status).to.equal(500);
      expect((await call(agent, meta)).status).to.equal(200);
      emu.fault({ route: 'jwks', sticky: true, status: 404, error: 'not_found' });
      for (let i = 0; i < 3; i++) expect((await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`)).status).to.equal(404);
      emu.clearFaults();
      expect((await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`)).status).to.equal(200);
    });

    it('injects a Conditional Access challenge with suberror and claims', async () => {
      const claims = '{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}';
      emu.fault({ route: 'token', error: 'interaction_required', aadsts: 50079, suberror: 'basic_action', claims });
      const r = await call(agent, tokenUrl, { form: secretForm });
      expect(r.status).to.equal(400);
      expect(r.json.error).to.equal('interaction_required');
      expect(r.json.error_codes).to.deep.equal([50079]);
      expect(r.json.suberror).to.equal('basic_action');
      expect(r.json.claims).to.equal(claims);
    });

    it('drops the connection, answers non-JSON or an empty body, sends a huge body, or delays', async () => {
      emu.fault({ route: 'token', drop: true });
      let dropped: unknown;
      try {
        await call(agent, tokenUrl, { form: secretForm });
      } catch (err) {
        dropped = err;
      }
      expect(dropped).to.be.instanceOf(Error);
      emu.fault({ route: 'token', nonJson: true });
      const html = await call(agent, tokenUrl, { form: secretForm });
      expect(html.status).to.equal(502);
      expect(html.headers['content-type']).to.equal('text/html');
      emu.fault({ route: 'token', emptyBody: true });
      const empty = await call(agent, tokenUrl, { form: secretForm });
      expect([empty.status, empty.text]).to.deep.equal([503, '']);
      emu.fault({ route: 'jwks', hugeBody: true });
      const huge = await call(agent, `${emu.origin}/${tid}/discovery/v2.0/keys`);
      expect(huge.text.length).to.be.greaterThan(4 * 1024 * 1024);
      emu.fault({ route: 'imds', delayMs: 300 });
      const started = Date.now();
      const delayed = await call(agent, `${emu.imdsOrigin}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com`, { headers: { Metadata: 'true' } });
      expect(Date.now() - started).to.be.greaterThanOrEqual(290);
      expect(delayed.status).to.equal(200);
    });
  });

  describe('clock, counters and the request log', () => {
    it('shifts token times with the clock offset and expires OBO assertions', async () => {
      const userToken = await emu.mint({ kind: 'user', expiresInSec: 120 });
      emu.setClockOffset(3600);
      const now = Math.floor(Date.now() / 1000);
      const r = await call(agent, tokenUrl, { form: secretForm });
      expect(decodePart(r.json.access_token as string, 1).iat as number).to.be.closeTo(now + 3600, 5);
      const obo = await call(agent, tokenUrl, { form: { ...secretForm, grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', assertion: userToken, scope: 'api://downstream/read' } });
      expect(obo.json.error_codes).to.deep.equal([500133]);
    });

    it('counts per route and per grant and resets', async () => {
      await call(agent, tokenUrl, { form: secretForm });
      await call(agent, tokenUrl, { form: { ...secretForm, grant_type: 'refresh_token', refresh_token: 'x' } });
      await call(agent, `${emu.origin}/${tid}/discovery/keys`);
      const c = emu.counters();
      expect(c.token).to.equal(2);
      expect(c['token:client_credentials']).to.equal(1);
      expect(c['token:refresh_token']).to.equal(1);
      expect(c.jwks).to.equal(1);
      expect(c.metadata).to.equal(0);
      emu.reset();
      expect(emu.counters().token).to.equal(0);
      expect(emu.requests()).to.have.length(0);
    });

    it('never records a secret, assertion or token, but keeps a fingerprint of each', async () => {
      const secret = emu.scenario.apps.sidecarApi.secrets[0].value;
      const userToken = await emu.mint({ kind: 'user' });
      const fed = await emu.mintFederatedAssertion();
      const first = await call(agent, tokenUrl, { form: { ...secretForm, grant_type: JWT_BEARER, requested_token_use: 'on_behalf_of', assertion: userToken, scope: 'api://downstream/read offline_access' } });
      const rt = first.json.refresh_token as string;
      await call(agent, tokenUrl, { form: { ...secretForm, grant_type: 'refresh_token', refresh_token: rt, scope: 'api://downstream/read' } });
      await call(agent, tokenUrl, { form: { grant_type: 'client_credentials', client_id: emu.scenario.apps.sidecarApi.appId, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: fed, scope: 'api://downstream/.default' } });
      const basic = Buffer.from(`${emu.scenario.apps.sidecarApi.appId}:${secret}`).toString('base64');
      await call(agent, tokenUrl, { form: { grant_type: 'client_credentials', scope: 'api://downstream/.default' }, headers: { authorization: `Basic ${basic}` } });
      const log = emu.requests();
      const text = JSON.stringify(log);
      for (const sensitive of [secret, userToken, fed, rt, basic, first.json.access_token as string]) {
        expect(text).not.to.contain(sensitive);
      }
      expect(log[0].form.assertion).to.equal(`[redacted] ${redactionFingerprint(userToken)}`);
      expect(log[0].form.client_secret).to.equal(`[redacted] ${redactionFingerprint(secret)}`);
      expect(log[2].form.client_assertion).to.contain(redactionFingerprint(fed));
      expect(log[3].headers.authorization).to.match(/^\[redacted\] sha256:/);
      expect(log.map((r) => r.status)).to.deep.equal([200, 200, 200, 200]);
      expect(log[0].route).to.equal('token');
      expect(log[0].at).to.match(/^\d{4}-/);
    });
  });

  describe('admin HTTP API', () => {
    const admin = (path: string, method = 'GET', body?: unknown) =>
      call(agent, `${emu.origin}/_emulator/${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { 'content-type': 'application/json' } });

    it('mints tokens, rotates keys, shifts the clock and reads counters and requests', async () => {
      const minted = await admin('tokens', 'POST', { kind: 'user', expiresInSec: -30 });
      expect(minted.status).to.equal(200);
      expect(decodePart(minted.json.token as string, 1).exp as number).to.be.lessThan(Date.now() / 1000);
      const rotated = await admin('keys/rotate', 'POST', {});
      expect(rotated.json.kids as string[]).to.include(rotated.json.activeKid as string).and.have.length(3);
      expect((await admin('clock', 'POST', { offsetSec: 60 })).status).to.equal(200);
      expect((await admin('faults', 'POST', { route: 'token', status: 429, retryAfter: 1 })).status).to.equal(200);
      const throttled = await call(agent, tokenUrl, { form: secretForm });
      expect(throttled.status).to.equal(429);
      expect((await admin('counters')).json.token).to.equal(1);
      expect(((await admin('requests')).json.requests as unknown[]).length).to.equal(1);
      expect((await admin('reset', 'POST', {})).status).to.equal(200);
      expect((await admin('counters')).json.token).to.equal(0);
      expect((await admin('tokens', 'POST', { kind: 'robot' })).status).to.equal(400);
    });

    it('sets and clears the Conditional Access state (unsatisfied authentication contexts)', async () => {
      const sidecar = emu.scenario.apps.sidecarApi;
      const obo = async () => call(agent, tokenUrl, { form: {
        client_id: sidecar.appId, client_secret: sidecar.secrets[0].value, grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', requested_token_use: 'on_behalf_of',
        assertion: await emu.mint({ kind: 'user' }), scope: 'api://downstream/read', claims: '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}',
      } });
      expect((await admin('conditional-access', 'POST', { unsatisfiedAcrs: ['c1'], users: [emu.scenario.users.normal.upn] })).status).to.equal(200);
      const refused = await obo();
      expect(refused.status).to.equal(400);
      expect(refused.json.error).to.equal('interaction_required');
      expect((await admin('conditional-access', 'DELETE')).status).to.equal(200);
      expect((await obo()).status).to.equal(200);
      expect((await admin('conditional-access', 'POST', { unsatisfiedAcrs: 'c1' })).status).to.equal(400);
      expect((await admin('conditional-access', 'POST', { unsatisfiedAcrs: ['c1'], users: [7] })).status).to.equal(400);
    });

    it('is off unless enabled', async () => {
      const plain = await startEmulator();
      const plainAgent = new Agent({ connect: { ca: plain.caPem } });
      try {
        const r = await call(plainAgent, `${plain.origin}/_emulator/counters`);
        expect(r.status).to.equal(404);
        const mint = await call(plainAgent, `${plain.origin}/_emulator/tokens`, { method: 'POST', body: '{"kind":"app"}' });
        expect(mint.status).to.equal(404);
      } finally {
        await plainAgent.close();
        await plain.close();
      }
    });
  });

  describe('CLI', () => {
    it('prints one JSON line with origin, instance, caFile, imdsOrigin, tenant and sidecar app id, and no secrets', async function () {
      this.timeout(20_000);
      const cli = join(here, '..', '..', 'emulator', 'cli.js');
      const child = spawn(process.execPath, [cli, '--admin'], { stdio: ['ignore', 'pipe', 'pipe'] });
      try {
        const line = await new Promise<string>((resolve, reject) => {
          let out = '';
          child.stdout.on('data', (d: Buffer) => {
            out += d.toString();
            if (out.includes('\n')) resolve(out.split('\n')[0]);
          });
          child.once('exit', (code) => reject(new Error(`cli exited ${code}`)));
        });
        const info = JSON.parse(line) as Record<string, string>;
        expect(info.origin).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
        expect(info.instance).to.equal(`${info.origin}/`);
        expect(info.imdsOrigin).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
        expect(info.tenantId).to.equal(tid);
        expect(info.sidecarAppId).to.equal(emu.scenario.apps.sidecarApi.appId);
        expect(existsSync(info.caFile)).to.equal(true);
        expect(line).not.to.match(/emu~|PRIVATE KEY/);
        const cliAgent = new Agent({ connect: { ca: (await import('node:fs')).readFileSync(info.caFile, 'utf8') } });
        try {
          expect((await call(cliAgent, `${info.origin}/_emulator/counters`)).status).to.equal(200);
        } finally {
          await cliAgent.close();
        }
        const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        expect(await exited).to.equal(0);
        expect(existsSync(info.caFile)).to.equal(false);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    });
  });
});
