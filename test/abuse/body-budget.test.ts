/**
 * Sidecar:Http:MaxBufferedBodyBytes through the built sidecar: the request bodies in flight hold at
 * most that much together. A body that would pass it is refused with 503
 * request_body_budget_exceeded and Retry-After before it is read; one that fits is served; and what
 * a body held is given back whether its request succeeded, failed or its client went away.
 */
import { expect } from 'chai';
import http, { type ClientRequest } from 'node:http';
import { assertNoSecrets, call, secretsOf } from '../helpers/e2e.js';
import { startEmulator } from '../../emulator/index.js';
import { assertAlive, eventually, scrape, sleep, startDownstream, startStack, userToken, type Downstream, type Stack } from '../faults/harness.js';

const MAX_BODY_BYTES = 64 * 1024;
/** Three bodies of 60 KiB fit; a fourth does not. */
const BUDGET_BYTES = 3 * MAX_BODY_BYTES;
const BODY = 60 * 1024;

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

describe('request body budget (built sidecar)', function () {
  this.timeout(60_000);
  let stack: Stack;
  let api: Downstream;
  let url: URL;

  before(async () => {
    api = await startDownstream();
    stack = await startStack({
      Sidecar__Http__MaxBodyBytes: String(MAX_BODY_BYTES),
      Sidecar__Http__MaxBufferedBodyBytes: String(BUDGET_BYTES),
      Sidecar__Outbound__TimeoutMs: '5000',
      DownstreamApis__items__BaseUrl: `${api.origin}/v1`,
      DownstreamApis__items__Scopes__0: 'api://downstream/.default',
      DownstreamApis__items__RequestAppToken: 'true',
      DownstreamApis__items__HttpMethod: 'POST',
    });
    expect(await eventually(async () => (await call(`${stack.management}/readyz`)).status === 200, 15_000), '/readyz 200').to.equal(true);
    url = new URL(`${stack.sidecar.url}/DownstreamApiUnauthenticated/items`);
  });
  after(async () => {
    await stack?.close();
    await api?.close();
    if (stack) assertNoSecrets(stack.sidecar.lines, secretsOf(stack.emu, stack.tokens));
  });

  /** Starts a POST declaring `declared` bytes (none: sent chunked) and sends `send` of them; `end` finishes it. */
  function post(declared: number | undefined, send: number): { req: ClientRequest; answer: Promise<Answer>; end(): void } {
    const req = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', ...(declared !== undefined ? { 'content-length': declared } : {}) },
    });
    const answer = new Promise<Answer>((resolve) => {
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
        res.on('error', () => resolve({ status: -1, headers: {}, text: '' }));
      });
      req.on('error', () => resolve({ status: -1, headers: {}, text: '' }));
    });
    req.flushHeaders();
    if (send > 0) req.write(Buffer.alloc(send, 0x61));
    return { req, answer, end: () => req.end(Buffer.alloc((declared ?? send) - send, 0x61)) };
  }

  /** A whole POST of `bytes`. */
  const whole = (bytes: number): Promise<Answer> => {
    const p = post(bytes, bytes);
    p.req.end();
    return p.answer;
  };

  /** Starts three POSTs that declare 60 KiB each and send 1 KiB, and waits until a fourth is refused (the three still open). */
  async function holdTheBudget(): Promise<Array<ReturnType<typeof post>>> {
    const held = [post(BODY, 1024), post(BODY, 1024), post(BODY, 1024)];
    let answered = 0;
    for (const h of held) void h.answer.then(() => answered++);
    // Each is reserved once its handler reads the body; until then a whole one may still fit (and is
    // served), so give the three a head start lest a probe take a place first.
    await sleep(500);
    expect(await eventually(async () => (await whole(BODY)).status === 503, 10_000), 'a fourth body refused while three are held').to.equal(true);
    expect(answered, 'the three held bodies were all taken in').to.equal(0);
    return held;
  }

  it('refuses a body that would pass the budget with 503 and Retry-After before reading it, and serves one that fits', async () => {
    const held = await holdTheBudget();
    try {
      // Headers only: the answer comes without the sidecar waiting for (or keeping) any of the body.
      const refused = post(BODY, 0);
      const answer = await Promise.race([refused.answer, sleep(5_000).then(() => undefined)]);
      refused.req.destroy();
      expect(answer, 'answered before the body was sent').to.not.equal(undefined);
      expect(answer!.status).to.equal(503);
      expect(answer!.headers['retry-after']).to.equal('1');
      expect(answer!.headers['content-type']).to.equal('application/problem+json');
      expect(JSON.parse(answer!.text)).to.include({ status: 503, code: 'request_body_budget_exceeded' });
      // 180 of 192 KiB are held: 8 KiB still fit.
      const seen = api.seen.length;
      const small = await whole(8 * 1024);
      expect(small.status, small.text).to.equal(200);
      expect(api.seen.length).to.equal(seen + 1);
      // Sent without a Content-Length, a body is reserved as it arrives and refused when it would
      // pass, with the same answer (the connection closed after it: the rest is not waited for).
      const chunked = post(undefined, 20 * 1024);
      chunked.end();
      const cut = await chunked.answer;
      expect(cut.status, cut.text).to.equal(503);
      expect(cut.headers['retry-after']).to.equal('1');
      expect(cut.headers.connection).to.equal('close');
      expect(JSON.parse(cut.text)).to.include({ status: 503, code: 'request_body_budget_exceeded' });
    } finally {
      for (const h of held) h.req.destroy();
    }
    await assertAlive(stack);
  });

  it('takes a client that goes away mid-body as its own doing: request_invalid, a 4xx, never internal', async () => {
    const fiveXx = async (): Promise<number> => {
      const line = (await scrape(stack)).split('\n').find((l) => l.startsWith('entra_sidecar_http_requests_total{') && l.includes('route="DownstreamApiUnauthenticated"') && l.includes('status_class="5xx"'));
      return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    const before = await fiveXx();
    const from = stack.sidecar.lines.length;
    // One declaring its length and one sent chunked, each gone after a first piece.
    for (const declared of [BODY, undefined]) {
      const p = post(declared, 1024);
      await sleep(300);
      p.req.destroy();
      await p.answer;
    }
    expect(await eventually(async () => stack.sidecar.lines.slice(from).filter((l) => l.includes('"code":"request_invalid"')).length >= 2, 5_000), 'two request_invalid lines').to.equal(true);
    expect(stack.sidecar.lines.slice(from).filter((l) => l.includes('"code":"internal"'))).to.deep.equal([]);
    expect((await fiveXx()) - before, 'no 5xx counted').to.equal(0);
    await assertAlive(stack);
  });

  it('gives a body back when its request succeeds, fails or its client goes away', async () => {
    // Whatever the test before left held is given back once those clients are gone.
    const [gone, served, failed] = await holdTheBudget();
    gone.req.destroy();
    served.end();
    expect((await served.answer).status).to.equal(200);
    api.behaviour = (_req, res) => res.socket?.destroy();
    failed.end();
    expect((await failed.answer).status, 'the downstream call failed').to.be.at.least(500);
    api.behaviour = (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end('{}');
    };
    // Nothing is held now: three bodies fit again, and only a fourth is refused.
    const again = await holdTheBudget();
    for (const h of again) h.req.destroy();
    expect(await eventually(async () => (await whole(BODY)).status === 200, 5_000), 'a body served once the clients are gone').to.equal(true);
    await assertAlive(stack);
  });
});

describe('a streamed body whose client left while the route authenticated (built sidecar)', function () {
  this.timeout(60_000);

  it('settles the request (request_invalid, counted) rather than waiting for ever on a stream already destroyed', async () => {
    const emu = await startEmulator();
    // The signing keys take 1.5 s to load: a request authenticating meanwhile waits for them.
    emu.fault({ route: 'jwks', sticky: true, delayMs: 1_500 });
    const api = await startDownstream();
    const stack = await startStack(
      {
        Sidecar__Outbound__TimeoutMs: '5000',
        DownstreamApis__items__BaseUrl: `${api.origin}/v1`,
        DownstreamApis__items__Scopes__0: 'api://downstream/.default',
        DownstreamApis__items__RequestAppToken: 'true',
        DownstreamApis__items__HttpMethod: 'POST',
      },
      emu,
    );
    try {
      const token = await userToken(stack);
      const url = new URL(`${stack.sidecar.url}/DownstreamApi/items`);
      const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' } });
      req.on('error', () => {});
      req.write(Buffer.alloc(1024, 0x61));
      await sleep(300);
      req.destroy();
      const counted = async (): Promise<boolean> => (await scrape(stack)).split('\n').some((l) => l.startsWith('entra_sidecar_http_requests_total{') && l.includes('route="DownstreamApi"') && l.includes('status_class="4xx"'));
      expect(await eventually(counted, 10_000), 'the request settled and was counted as a 4xx').to.equal(true);
      expect(stack.sidecar.lines.some((l) => l.includes('"code":"request_invalid"'))).to.equal(true);
      await assertAlive(stack);
    } finally {
      await stack.close();
      await api.close();
      await emu.close();
    }
  });
});
