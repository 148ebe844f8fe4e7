/**
 * Abuse and limits through the built sidecar (issue 9): oversized headers, tokens and bodies are
 * refused early with bounded memory; slow (slowloris) requests are timed out; an unknown-kid flood
 * costs at most one JWKS fetch per cooldown; a flood of distinct tokens cannot grow the caches past
 * their bounds; identical concurrent cold requests share one call to Entra; an ext_authz connection
 * announces a bound on its open calls.
 */
import { expect } from 'chai';
import http from 'node:http';
import { connect, type Socket } from 'node:net';
import http2 from 'node:http2';
import { call, assertNoSecrets, secretsOf } from '../helpers/e2e.js';
import { waitForLine } from '../helpers/sidecar.js';
import { MAX_TOKEN_LENGTH } from '../../src/pipeline/credential.js';
import { ERROR_TABLE } from '../../src/errors.js';
import { assertAlive, checkWith, decision, eventually, problemCode, sample, scrape, sleep, startStack, userToken, type Stack } from '../faults/harness.js';

const HEADERS_TIMEOUT_MS = 1_000;
const REQUEST_TIMEOUT_MS = 2_000;
/** Above MAX_TOKEN_LENGTH (64 KiB) plus the other headers, so the token limit is reachable over HTTP. */
const MAX_HEADER_BYTES = MAX_TOKEN_LENGTH + 8 * 1024;
const MAX_BODY_BYTES = 64 * 1024;
const CACHE_BOUND = 50;

/** Opens a raw TCP connection to `url`'s host:port. */
function rawSocket(url: string): Promise<Socket> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves the first bytes the server sends and when the socket closed (ms after `t0`). */
function watch(s: Socket, t0: number): Promise<{ head: string; closedAfterMs: number }> {
  let head = '';
  s.on('data', (d: Buffer) => (head += d.toString('latin1')));
  s.on('error', () => {});
  return new Promise((resolve) => s.once('close', () => resolve({ head, closedAfterMs: Date.now() - t0 })));
}

/**
 * POSTs a text body without a Content-Length, 256 KiB at a time, until the answer arrives or `upTo`
 * bytes are sent; resolves the answer and how much was sent.
 */
function streamUntilAnswered(url: string, token: string, upTo: number): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string; sent: number }> {
  const u = new URL(url);
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' } });
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    req.on('response', (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, sent });
      });
    });
    const pump = (): void => {
      while (!answered && sent < upTo) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      if (!answered) req.end();
    };
    pump();
  });
}

/** Sidecar RSS from /metrics (prom-client process metrics), in bytes. */
async function rss(stack: Stack): Promise<number> {
  const v = sample(await scrape(stack), 'process_resident_memory_bytes');
  expect(v, 'process_resident_memory_bytes').to.be.a('number');
  return v!;
}

describe('abuse and limits (built sidecar)', function () {
  this.timeout(60_000);
  let stack: Stack;
  before(async () => {
    stack = await startStack({
      // The emulator shares this process with the flood's token minting; give it time to answer.
      Sidecar__Outbound__TimeoutMs: '5000',
      Sidecar__Http__HeadersTimeoutMs: String(HEADERS_TIMEOUT_MS),
      Sidecar__Http__RequestTimeoutMs: String(REQUEST_TIMEOUT_MS),
      Sidecar__Http__MaxHeaderBytes: String(MAX_HEADER_BYTES),
      Sidecar__Http__MaxBodyBytes: String(MAX_BODY_BYTES),
      Sidecar__Validation__VerifiedTokenCacheSize: String(CACHE_BOUND),
      Sidecar__TokenCache__MaxEntries: String(CACHE_BOUND),
      Sidecar__ExtAuthz__MaxReceiveMessageBytes: String(128 * 1024),
      DownstreamApis__orders__Scopes__0: 'api://downstream/read',
      DownstreamApis__sink__BaseUrl: 'http://127.0.0.1:9/',
      DownstreamApis__sink__Scopes__0: 'api://downstream/.default',
      DownstreamApis__sink__RequestAppToken: 'true',
      // Never sent (a reserved name): one start-up warning, not one per call.
      'DownstreamApis__sink__ExtraHeaderParameters__X-Forwarded-For': '192.0.2.1',
    });
    expect(await eventually(async () => (await call(`${stack.management}/readyz`)).status === 200, 15_000), '/readyz 200 (signing keys loaded)').to.equal(true);
  });
  after(async () => {
    stack?.emu.clearFaults();
    await stack?.close();
    if (stack) assertNoSecrets(stack.sidecar.lines, secretsOf(stack.emu, stack.tokens));
  });

  it('answers 431 to a header block over Sidecar:Http:MaxHeaderBytes and closes the connection', async () => {
    const s = await rawSocket(stack.sidecar.url);
    const seen = watch(s, Date.now());
    s.write(`GET /Validate HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(MAX_HEADER_BYTES * 2)}\r\n\r\n`);
    const { head, closedAfterMs } = await seen;
    expect(head).to.match(/^HTTP\/1\.1 431 /);
    expect(closedAfterMs).to.be.lessThan(2_000);
    await assertAlive(stack);
  });

  it('refuses a bearer token over MAX_TOKEN_LENGTH before any parsing (401 credential_malformed) on both doors', async () => {
    // One character over the limit, JWT-shaped, with the header block still under Sidecar:Http:MaxHeaderBytes.
    const jwtShaped = (length: number) => 'eyJ' + 'A'.repeat(length - 3 - 202) + '.' + 'B'.repeat(100) + '.' + 'C'.repeat(100);
    const big = jwtShaped(MAX_TOKEN_LENGTH + 1);
    expect(big).to.have.length(MAX_TOKEN_LENGTH + 1);
    const r = await call(`${stack.sidecar.url}/Validate`, { token: big });
    expect(r.status, r.text).to.equal(401);
    // The HTTP API answers 401 with no body, as Microsoft's does; the challenge names the code's message.
    expect(r.headers.get('www-authenticate')).to.equal(`Bearer error="invalid_token", error_description="${ERROR_TABLE.credential_malformed.message}"`);
    expect(decision(await checkWith(stack, { headers: { authorization: `Bearer ${big}` } }))).to.equal('credential_malformed');
    // At the limit the token is parsed (and refused for what it is, not for its size).
    const atLimit = jwtShaped(MAX_TOKEN_LENGTH);
    const r2 = await call(`${stack.sidecar.url}/Validate`, { token: atLimit });
    expect(r2.status, r2.text).to.equal(401);
    expect(r2.headers.get('www-authenticate')).to.match(/^Bearer error="invalid_token"/).and.not.contain(ERROR_TABLE.credential_malformed.message);
    expect(decision(await checkWith(stack, { headers: { authorization: `Bearer ${atLimit}` } }))).to.match(/^token_/);
    await assertAlive(stack);
  });

  it('denies a Check over Sidecar:ExtAuthz:MaxReceiveMessageBytes in band (431), without a crash', async () => {
    // A failed RPC would be an error to Envoy, which failure_mode_allow turns into an allow.
    const headers: Record<string, string> = {};
    for (let i = 0; i < 300; i++) headers[`x-pad-${i}`] = 'p'.repeat(500);
    expect(decision(await checkWith(stack, { headers }))).to.equal('request_headers_too_large');
    // Beyond grpc-js's own 16 MiB the RPC fails (no Envoy sends that much: its header limit is 8 MiB).
    let failedWith: number | undefined;
    try {
      await checkWith(stack, { headers: { 'x-pad': 'p'.repeat(17 * 1024 * 1024) } });
    } catch (err) {
      failedWith = (err as { code: number }).code;
    }
    expect(failedWith, 'RESOURCE_EXHAUSTED').to.equal(8);
    await assertAlive(stack);
  });

  it('announces a bound on the Checks one ext_authz connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS 1000)', async () => {
    // Node's and grpc-js's default is 2^32-1: a client could open calls on one connection without end.
    const session = http2.connect(`http://127.0.0.1:${stack.sidecar.listening.extAuthz!.port}`);
    session.on('error', () => {});
    try {
      await new Promise((resolve) => session.once('remoteSettings', resolve));
      expect(session.remoteSettings.maxConcurrentStreams, 'SETTINGS_MAX_CONCURRENT_STREAMS').to.equal(1000);
    } finally {
      session.destroy();
    }
    expect(decision(await checkWith(stack, { headers: { authorization: 'Bearer not.a.token' } }))).to.match(/^(credential|token)_/);
  });

  it('answers 413 to a declared or streamed body over Sidecar:Http:MaxBodyBytes, with bounded memory', async () => {
    const token = await userToken(stack);
    const declared = await call(`${stack.sidecar.url}/DownstreamApi/sink`, { method: 'POST', token, body: 'x'.repeat(MAX_BODY_BYTES + 1), headers: { 'content-type': 'text/plain' } });
    expect(declared.status).to.equal(413);
    expect(problemCode(declared)).to.equal('request_body_too_large');

    const before = await rss(stack);
    // Up to 32 MiB streamed without a Content-Length: the sidecar stops buffering at the limit, and
    // its 413 reaches a client still sending.
    const streamed = await streamUntilAnswered(`${stack.sidecar.url}/DownstreamApi/sink`, token, 32 * 1024 * 1024);
    expect(streamed.status, 'answered while the body was still being sent').to.equal(413);
    expect(JSON.parse(streamed.text)).to.include({ code: 'request_body_too_large' });
    expect(streamed.headers.connection, 'the rest of the body is not waited for').to.equal('close');
    expect(streamed.sent, 'the answer came long before the whole body was sent').to.be.lessThan(32 * 1024 * 1024);
    const after = await rss(stack);
    expect(after - before, 'RSS growth while refusing 32 MiB').to.be.lessThan(24 * 1024 * 1024);
    await assertAlive(stack);
  });

  it('times out slowloris clients (headers and body dribbled) and keeps serving others', async () => {
    const t0 = Date.now();
    const sockets = await Promise.all(Array.from({ length: 40 }, () => rawSocket(stack.sidecar.url)));
    const results = sockets.map((s) => watch(s, t0));
    sockets.forEach((s, i) => s.write(i % 2 === 0 ? 'GET /healthz HTTP/1.1\r\nHost: x\r\n' : 'POST /DownstreamApi/sink HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n'));
    const drip = setInterval(() => {
      sockets.forEach((s, i) => {
        if (!s.destroyed) s.write(i % 2 === 0 ? 'X-Drip: 1\r\n' : 'x');
      });
    }, 200);
    try {
      // Meanwhile the sidecar answers everyone else.
      await sleep(300);
      expect((await call(`${stack.sidecar.url}/healthz`)).status).to.equal(200);
      const outcomes = await Promise.race([Promise.all(results), sleep(10_000).then(() => undefined)]);
      expect(outcomes, 'every slow connection was closed by the sidecar').to.not.equal(undefined);
      for (const o of outcomes!) {
        expect(o.closedAfterMs).to.be.lessThan(REQUEST_TIMEOUT_MS + 2_500);
        if (o.head !== '') expect(o.head).to.match(/^HTTP\/1\.1 (408|400|401) /);
      }
    } finally {
      clearInterval(drip);
      for (const s of sockets) s.destroy();
    }
    await assertAlive(stack);
  });

  it('times out a slowloris client on the management listener too (it listens on all interfaces)', async () => {
    const t0 = Date.now();
    const s = await rawSocket(stack.management);
    const seen = watch(s, t0);
    s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
    const drip = setInterval(() => !s.destroyed && s.write('X-Drip: 1\r\n'), 200);
    try {
      const outcome = await Promise.race([seen, sleep(9_000).then(() => undefined)]);
      expect(outcome, 'the management listener closed the slow connection').to.not.equal(undefined);
      // Its fixed header timeout is 5 s.
      expect(outcome!.closedAfterMs).to.be.lessThan(5_000 + 2_000);
    } finally {
      clearInterval(drip);
      s.destroy();
    }
  });

  it('fetches the JWKS at most once per cooldown for a flood of unknown-kid tokens on both doors', async () => {
    const before = stack.emu.counters().jwks;
    const tokens = await Promise.all(Array.from({ length: 150 }, () => stack.emu.mint({ kind: 'user', signWith: 'unknown-key' })));
    const answers = await Promise.all(
      tokens.map((t, i) => (i % 2 === 0 ? call(`${stack.sidecar.url}/Validate`, { token: t }).then((r) => String(r.status)) : checkWith(stack, { headers: { authorization: `Bearer ${t}` } }).then(decision))),
    );
    for (const a of answers) expect(['401', 'token_key_unknown', 'token_signature_invalid']).to.include(a);
    expect(stack.emu.counters().jwks - before, 'JWKS fetches for 150 unknown-kid tokens').to.be.at.most(1);
    await assertAlive(stack);
  });

  it('writes at most 10 lines a second per failure code on each door for a flood of bad tokens, says how many it held back, and counts every one', async () => {
    const valid = await userToken(stack);
    // The token with its signature's last character changed: well-formed, verified, refused.
    const forged = valid.slice(0, -2) + (valid.at(-2) === 'A' ? 'B' : 'A') + valid.at(-1);
    const failures = async () => sample(await scrape(stack), 'entra_sidecar_token_validation_failures_total{reason="token_signature_invalid"}') ?? 0;
    const countBefore = await failures();
    const linesBefore = stack.sidecar.lines.length;
    const t0 = Date.now();
    const answers = await Promise.all(
      Array.from({ length: 120 }, (_, i) => (i % 2 === 0 ? call(`${stack.sidecar.url}/Validate`, { token: forged }).then((r) => String(r.status)) : checkWith(stack, { headers: { authorization: `Bearer ${forged}` } }).then(decision))),
    );
    const seconds = Math.ceil((Date.now() - t0) / 1000);
    for (const a of answers) expect(['401', 'token_signature_invalid']).to.include(a);
    await sleep(1_100);
    // One more on each door, after the window: its line carries the count held back.
    const afterWindow = stack.sidecar.lines.length;
    expect((await call(`${stack.sidecar.url}/Validate`, { token: forged })).status).to.equal(401);
    expect(decision(await checkWith(stack, { headers: { authorization: `Bearer ${forged}` } }))).to.equal('token_signature_invalid');
    // Log lines reach our pipe after the answers may have: wait for both doors' lines.
    for (const msg of ['request failed', 'ext_authz deny']) {
      const line = new RegExp(`^(?=.*"code":"token_signature_invalid")(?=.*"msg":"${msg}")`);
      expect(await waitForLine(stack.sidecar, line, 3_000, afterWindow), `the ${msg} line after the window`).to.equal(true);
    }
    const lines = stack.sidecar.lines.slice(linesBefore).filter((l) => l.includes('"code":"token_signature_invalid"'));
    const http = lines.filter((l) => l.includes('request failed'));
    const grpc = lines.filter((l) => l.includes('ext_authz deny'));
    for (const door of [http, grpc]) {
      expect(door.length).to.be.at.least(2).and.at.most(10 * (seconds + 1) + 1).and.below(61);
      const held = JSON.parse(door.at(-1)!).suppressed as number;
      expect(held).to.be.a('number').and.at.least(60 - (door.length - 1));
    }
    expect((await failures()) - countBefore).to.be.at.least(122);
  });

  it('writes at most 10 "token acquisition failed" lines a second for a flood of acquisitions a caller makes fail', async () => {
    const user = await userToken(stack);
    const linesBefore = stack.sidecar.lines.length;
    const t0 = Date.now();
    // Sixty distinct unknown resources: no single-flight or cache folds them, each is refused by Entra (500011).
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) => call(`${stack.sidecar.url}/AuthorizationHeader/orders?optionsOverride.Scopes=${encodeURIComponent(`api://unknown-${i}/read`)}`, { token: user }).then((r) => r.status)),
    );
    const seconds = Math.ceil((Date.now() - t0) / 1000);
    expect(new Set(answers).size, String(answers)).to.equal(1);
    expect(answers[0]).to.be.at.least(400);
    await sleep(300);
    const failed = stack.sidecar.lines.slice(linesBefore).filter((l) => l.includes('"msg":"token acquisition failed"'));
    expect(failed.length).to.be.at.least(1).and.at.most(10 * (seconds + 1)).and.below(60);
  });

  /** The lines after `from` whose JSON has `"event":<event>`, parsed. */
  const eventLines = (from: number, event: string) => stack.sidecar.lines.slice(from).filter((l) => l.includes(`"event":"${event}"`)).map((l) => JSON.parse(l) as Record<string, unknown>);

  it('writes at most 10 PopValidationFailed lines a second for a flood of junk PoP credentials on /Validate, and says how many it held back', async () => {
    const junkPop = (i: number) => call(`${stack.sidecar.url}/Validate`, { headers: { authorization: `PoP junk${i}`, 'original-method': 'GET', 'original-uri': 'https://api.contoso.test/x' } });
    const linesBefore = stack.sidecar.lines.length;
    const t0 = Date.now();
    const answers = await Promise.all(Array.from({ length: 120 }, (_, i) => junkPop(i)));
    const seconds = Math.ceil((Date.now() - t0) / 1000);
    for (const a of answers) expect(a.status).to.equal(401);
    await sleep(1_100);
    const afterWindow = stack.sidecar.lines.length;
    expect((await junkPop(-1)).status).to.equal(401);
    expect(await waitForLine(stack.sidecar, '"event":"PopValidationFailed"', 3_000, afterWindow), 'the line after the window').to.equal(true);
    const lines = eventLines(linesBefore, 'PopValidationFailed');
    expect(lines.length).to.be.at.least(2).and.at.most(10 * (seconds + 1) + 1).and.below(61);
    expect(lines.at(-1)!.suppressed).to.be.a('number').and.at.least(120 - (lines.length - 1));
  });

  it('writes at most 10 ExtraHeaderParametersSkipped lines a second for a flood of skipped header overrides, each naming at most 8 headers cut to 64 characters', async () => {
    const token = await userToken(stack);
    // A reserved name of 5,000 characters first, then 300 reserved Sec-<i> names: 301 skipped per call.
    const names = [`X-Forwarded-${'a'.repeat(5_000)}`, ...Array.from({ length: 300 }, (_, i) => `Sec-${i}`)];
    const query = names.map((n) => `optionsOverride.ExtraHeaderParameters.${n}=1`).join('&');
    const flood = () => call(`${stack.sidecar.url}/DownstreamApi/sink?${query}`, { method: 'POST', token });
    const linesBefore = stack.sidecar.lines.length;
    const t0 = Date.now();
    const answers = await Promise.all(Array.from({ length: 40 }, flood));
    const seconds = Math.ceil((Date.now() - t0) / 1000);
    // The sink refuses connections: the calls fail after the headers were chosen.
    for (const a of answers) expect(a.status, a.text).to.equal(500);
    await sleep(1_100);
    const afterWindow = stack.sidecar.lines.length;
    expect((await flood()).status).to.equal(500);
    expect(await waitForLine(stack.sidecar, '"event":"ExtraHeaderParametersSkipped"', 3_000, afterWindow), 'the line after the window').to.equal(true);
    const raw = stack.sidecar.lines.slice(linesBefore).filter((l) => l.includes('"event":"ExtraHeaderParametersSkipped"'));
    expect(raw.length).to.be.at.least(2).and.at.most(10 * (seconds + 1) + 1).and.below(41);
    for (const text of raw) {
      expect(text.length).to.be.below(2_000);
      const line = JSON.parse(text) as { level: string; apiName: string; skipped: { name: string; reason: string }[]; skippedCount: number };
      expect(line).to.include({ level: 'warn', apiName: 'sink', skippedCount: 301 });
      expect(line.skipped).to.have.length(8);
      expect(line.skipped[0]).to.deep.equal({ name: `X-Forwarded-${'a'.repeat(52)}…`, reason: 'reserved' });
      expect(line.skipped[1]).to.deep.equal({ name: 'Sec-0', reason: 'reserved' });
    }
    expect(JSON.parse(raw.at(-1)!).suppressed).to.be.a('number').and.at.least(40 - (raw.length - 1));
  });

  it('reports a reserved header name set in configuration once, at start-up, and not on each call', async () => {
    const warnings = stack.sidecar.lines.filter((l) => l.includes('"event":"config_warning"') && l.includes('DownstreamApis:sink:ExtraHeaderParameters:X-Forwarded-For'));
    expect(warnings, stack.sidecar.lines.join('\n')).to.have.length(1);
    expect(warnings[0]).to.include('is never sent').and.not.include('192.0.2.1');
    const token = await userToken(stack);
    const linesBefore = stack.sidecar.lines.length;
    for (let i = 0; i < 3; i++) expect((await call(`${stack.sidecar.url}/DownstreamApi/sink`, { method: 'POST', token })).status).to.equal(500);
    expect(await waitForLine(stack.sidecar, '"code":"downstream_unavailable"', 3_000, linesBefore)).to.equal(true);
    expect(eventLines(linesBefore, 'ExtraHeaderParametersSkipped')).to.deep.equal([]);
  });

  it('shares one Entra request among 50 identical concurrent cold requests', async () => {
    const token = await userToken(stack);
    expect((await call(`${stack.sidecar.url}/Validate`, { token })).status).to.equal(200);
    stack.emu.fault({ route: 'token', delayMs: 300, count: 5 });
    const before = stack.emu.counters().token;
    const answers = await Promise.all(Array.from({ length: 50 }, () => call(`${stack.sidecar.url}/AuthorizationHeader/orders`, { token })));
    for (const a of answers) expect(a.status, a.text).to.equal(200);
    stack.tokens.push(answers[0].json().authorizationHeader.slice(7));
    expect(stack.emu.counters().token - before).to.equal(1);
    stack.emu.clearFaults();
  });

  it('keeps the caches within their bounds under a flood of distinct tokens (RSS bounded, token cache ≤ bound)', async () => {
    // Warm up, then measure.
    for (let i = 0; i < 50; i++) await call(`${stack.sidecar.url}/Validate`, { token: await userToken(stack) });
    const before = await rss(stack);
    for (let round = 0; round < 10; round++) {
      const batch = await Promise.all(Array.from({ length: 60 }, () => stack.emu.mint({ kind: 'user', scp: 'access_as_user' })));
      stack.tokens.push(...batch);
      const rs = await Promise.all(batch.map((t, i) => (i < 12 ? call(`${stack.sidecar.url}/AuthorizationHeader/orders`, { token: t }) : call(`${stack.sidecar.url}/Validate`, { token: t }))));
      for (const r of rs) expect(r.status, r.text).to.equal(200);
    }
    const text = await scrape(stack);
    const entries = sample(text, 'entra_sidecar_token_cache_entries');
    expect(entries).to.be.a('number');
    expect(entries!).to.be.at.most(CACHE_BOUND);
    expect(sample(text, 'entra_sidecar_token_cache_evictions_total')!).to.be.greaterThan(0);
    const after = await rss(stack);
    expect(after - before, 'RSS growth after 600 distinct tokens').to.be.lessThan(40 * 1024 * 1024);
    await assertAlive(stack);
  });
});

/**
 * context_extensions are route configuration, but any peer that reaches the gRPC port sends its own,
 * up to MaxReceiveMessageBytes (1 MiB by default, as here). Once, a map was cached by its full text
 * and its API name quoted whole in the deny and the log line: 300 Checks with a distinct 900 KiB
 * value pinned over 500 MiB of heap and answered 900 KB denies.
 */
describe('context_extensions over their bounds (built sidecar)', function () {
  this.timeout(120_000);
  const LARGE = 'a'.repeat(900 * 1024);
  /** What a deny or log line may quote of a name, with room for the words around it. */
  const MAX_ANSWER_CHARS = 512;
  let stack: Stack;
  let token: string;
  before(async () => {
    stack = await startStack({
      Sidecar__Outbound__TimeoutMs: '5000',
      DownstreamApis__orders__Scopes__0: 'api://downstream/read',
    });
    expect(await eventually(async () => (await call(`${stack.management}/readyz`)).status === 200, 15_000), '/readyz 200 (signing keys loaded)').to.equal(true);
    token = await userToken(stack);
  });
  after(async () => {
    await stack?.close();
    if (stack) assertNoSecrets(stack.sidecar.lines, secretsOf(stack.emu, stack.tokens));
  });

  /** Sidecar heap in use from /metrics, in bytes. */
  async function heapUsed(): Promise<number> {
    const v = sample(await scrape(stack), 'nodejs_heap_size_used_bytes');
    expect(v, 'nodejs_heap_size_used_bytes').to.be.a('number');
    return v!;
  }

  /** A Check with `ext` as its context_extensions; its deny code, and the lengths of what it quotes. */
  async function checkExt(ext: Record<string, string>): Promise<{ code: string; message: string; body: string }> {
    const res = await checkWith(stack, { headers: { authorization: `Bearer ${token}` }, contextExtensions: ext }, 10_000);
    return { code: decision(res), message: res.status?.message ?? '', body: res.denied_response?.body ?? '' };
  }

  it('denies a value over 4,096 characters, a key over 64 and a map over 16,384 with misconfigured, in a short answer and a short log line', async () => {
    const cases: Array<Record<string, string>> = [
      { agent_identity: LARGE },
      { downstream_api: LARGE },
      { [`unknown_${'k'.repeat(100)}`]: 'v' },
      { unknown: LARGE },
      { agent_identity: 'a'.repeat(4096), agent_username: 'u'.repeat(4096), agent_user_id: 'i'.repeat(4096), required_scopes: 's'.repeat(4096), validate: 'optional' },
    ];
    for (const ext of cases) {
      const r = await checkExt(ext);
      expect(r.code, Object.keys(ext).join()).to.equal('misconfigured');
      expect(r.message.length + r.body.length).to.be.below(MAX_ANSWER_CHARS);
    }
    // At the bounds a map is read as usual.
    expect((await checkExt({ agent_identity: 'a'.repeat(4096), validate: 'optional' })).code).to.not.equal('misconfigured');
    await sleep(200);
    const longest = Math.max(...stack.sidecar.lines.map((l) => l.length));
    expect(longest, 'longest log line').to.be.below(2048);
    await assertAlive(stack);
  });

  it('quotes at most 128 characters of an API name that is not configured, never half a surrogate pair', async () => {
    const r = await checkExt({ downstream_api: 'n'.repeat(4000) });
    expect(r.code).to.equal('api_not_configured');
    expect(r.message.length).to.be.below(200);
    expect(r.body.length).to.be.below(MAX_ANSWER_CHARS);
    // An emoji across the cut goes whole: a lone half has no UTF-8 form (protobufjs writes a short
    // string's as invalid UTF-8, which Envoy refuses; Node a long one's as U+FFFD).
    const emoji = await checkExt({ downstream_api: `${'n'.repeat(127)}\u{1F600}tail` });
    expect(emoji.code).to.equal('api_not_configured');
    expect(emoji.message).to.equal(`The downstream API "${'n'.repeat(127)}…" is not configured.`);
    await sleep(200);
    expect(Math.max(...stack.sidecar.lines.map((l) => l.length)), 'longest log line').to.be.below(2048);
  });

  it('keeps nothing of 150 Checks each with a distinct 900 KiB value (heap bounded)', async () => {
    const before = await heapUsed();
    for (let i = 0; i < 150; i++) {
      // Distinct values, so no cache could answer a second one; three kinds a cache could have kept.
      const value = `${i}-${LARGE}`;
      const ext: Record<string, string> = i % 3 === 0 ? { agent_identity: value, validate: 'optional' } : i % 3 === 1 ? { downstream_api: value } : { [`k${i}`]: value };
      expect((await checkExt(ext)).code).to.equal('misconfigured');
    }
    // Ordinary Checks, so the collector runs and what was garbage is gone.
    for (let i = 0; i < 400; i++) await checkWith(stack, { headers: { authorization: `Bearer ${token}`, 'x-pad': 'p'.repeat(200 * 1024) } });
    await sleep(500);
    const after = await heapUsed();
    expect(after - before, `heap ${before} -> ${after}`).to.be.below(64 * 1024 * 1024);
    await assertAlive(stack);
  });
});
