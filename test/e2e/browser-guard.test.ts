/**
 * What only a web browser sends, refused by the built sidecar: a Host that could be a DNS-rebinding
 * name (a page on rebind.attacker.example re-pointed at 127.0.0.1 reads the answers as its own
 * origin; outside Development only loopback names pass, in Development IP literals and compose
 * service names too) and the marks browsers put on requests a page makes (Origin, Sec-Fetch-Site,
 * Sec-Fetch-Mode: navigate). Also the start-up warning for Development on a non-loopback listener,
 * where every peer may call. The requests go through node:http and raw sockets, since fetch will not
 * send a Host of our choosing.
 */
import { expect } from 'chai';
import { request } from 'node:http';
import { connect } from 'node:net';
import { withEmulatorAndSidecars, call } from '../helpers/e2e.js';
import { waitForLine, type RunningSidecar } from '../helpers/sidecar.js';

const TOKEN_ROUTE = '/AuthorizationHeaderUnauthenticated/app';

/** One GET with exactly these headers (`host` included); status and body. */
function get(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', headers, setHost: false, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Writes `head` (a request without body) on a fresh connection and returns the status line's code. */
function raw(port: number, head: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(head));
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf);
      if (m) {
        resolve(Number(m[1]));
        s.destroy();
      }
    });
    s.on('error', reject);
    s.on('end', () => reject(new Error('no answer: ' + buf)));
  });
}

function portOf(s: RunningSidecar): number {
  return s.listening.http[0].port;
}

describe('browser requests and DNS rebinding (built sidecar)', function () {
  this.timeout(40_000);
  const env = withEmulatorAndSidecars(() => ({
    DownstreamApis__app__Scopes__0: 'api://downstream/.default',
    DownstreamApis__app__RequestAppToken: 'true',
    Sidecar__Http__AllowedHosts__0: 'Sidecar.Internal',
  }));
  let production: RunningSidecar;
  let port = 0;
  before(async () => {
    production = await env.start();
    port = portOf(production);
  });
  const tokenRequests = () => env.emu().requests().filter((r) => r.form.grant_type === 'client_credentials').length;

  describe('Host (outside Development)', () => {
    it('refuses a Host that names another host with 400 and an empty body, before any token is requested', async () => {
      const before = tokenRequests();
      for (const host of [
        `rebind.attacker.example:${port}`,
        'rebind.attacker.example',
        `localhost.attacker.example:${port}`,
        `127.0.0.1.nip.io:${port}`,
        `localhost:${port}@attacker.example`,
        `localhost:${port}/x`,
        'localhost.',
        '128.0.0.1',
        '127.0.0.256',
        '[::2]',
        '[::ffff:127.0.0.1]',
        'sidecar.internal.attacker.example',
        '',
      ]) {
        const r = await get(port, TOKEN_ROUTE, { host, 'sec-fetch-site': 'same-origin' });
        expect(r, host).to.deep.equal({ status: 400, body: '' });
      }
      expect(tokenRequests(), 'token requests').to.equal(before);
    });

    it('serves the loopback names whatever the port and case: localhost, *.localhost, 127.0.0.0/8, [::1]', async () => {
      for (const host of [`localhost:${port}`, 'LocalHost', `foo.localhost:${port}`, `a.b.localhost`, `127.0.0.1:${port}`, '127.10.20.30:80', `[::1]:${port}`, '[::1]']) {
        const r = await get(port, TOKEN_ROUTE, { host });
        expect(r.status, `${host}: ${r.body}`).to.equal(200);
        expect(JSON.parse(r.body).authorizationHeader).to.match(/^Bearer ey/);
      }
    });

    it('serves a Sidecar:Http:AllowedHosts entry (any case, any port) and no other name', async () => {
      expect((await get(port, TOKEN_ROUTE, { host: `SIDECAR.internal:${port}` })).status).to.equal(200);
      expect((await get(port, TOKEN_ROUTE, { host: 'sidecar.internal' })).status).to.equal(200);
      expect((await get(port, TOKEN_ROUTE, { host: 'other.internal' })).status).to.equal(400);
    });

    it('refuses a request without Host (HTTP/1.0), with two Host headers, or for another host in absolute form', async () => {
      expect(await raw(port, `GET ${TOKEN_ROUTE} HTTP/1.0\r\n\r\n`)).to.equal(400);
      expect(await raw(port, `GET ${TOKEN_ROUTE} HTTP/1.1\r\nHost: localhost\r\nHost: rebind.attacker.example\r\nConnection: close\r\n\r\n`)).to.equal(400);
      expect(await raw(port, `GET http://rebind.attacker.example${TOKEN_ROUTE} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`)).to.equal(400);
      expect(await raw(port, `GET http://localhost:${port}${TOKEN_ROUTE} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`)).to.equal(200);
      expect(await raw(port, `GET ${TOKEN_ROUTE} HTTP/1.0\r\nHost: localhost\r\n\r\n`)).to.equal(200);
    });
  });

  describe('browser marks (everywhere)', () => {
    it('refuses Origin, Sec-Fetch-Site other than none, and Sec-Fetch-Mode: navigate with 403 and an empty body', async () => {
      const before = tokenRequests();
      const marks: Record<string, string>[] = [
        { origin: 'https://attacker.example' },
        { origin: 'null' },
        { 'sec-fetch-site': 'cross-site' },
        { 'sec-fetch-site': 'same-site' },
        { 'sec-fetch-site': 'same-origin' },
        { 'Sec-Fetch-Site': 'Cross-Site' },
        { 'sec-fetch-site': 'none', 'sec-fetch-mode': 'navigate' },
      ];
      for (const headers of marks) {
        const r = await get(port, TOKEN_ROUTE, { host: `localhost:${port}`, ...headers });
        expect(r, JSON.stringify(headers)).to.deep.equal({ status: 403, body: '' });
      }
      expect(tokenRequests(), 'token requests').to.equal(before);
    });

    it('serves a request the user started (Sec-Fetch-Site: none) and Node\'s fetch (Sec-Fetch-Mode: cors)', async () => {
      expect((await get(port, TOKEN_ROUTE, { host: 'localhost', 'sec-fetch-site': 'none', 'sec-fetch-mode': 'cors' })).status).to.equal(200);
      expect((await call(`${production.url}${TOKEN_ROUTE}`)).status).to.equal(200);
    });

    it('still answers /healthz to a probe with any Host, and with browser marks', async () => {
      const r = await get(port, '/healthz', { host: '10.1.2.3:5000', origin: 'https://attacker.example', 'sec-fetch-site': 'cross-site' });
      expect(r).to.deep.equal({ status: 200, body: 'Healthy' });
    });

    it('refuses browser marks on /openapi/v1.json outside Development, where the route does not exist', async () => {
      expect(await get(port, '/openapi/v1.json', { host: 'localhost', 'sec-fetch-site': 'none', 'sec-fetch-mode': 'navigate' })).to.deep.equal({ status: 403, body: '' });
      expect((await get(port, '/openapi/v1.json', { host: 'localhost' })).status).to.equal(404);
    });

    it('counts the refusals under route="unrouted" and logs each with its code', async () => {
      // A sidecar of its own: the tests above refuse enough in one second that the log limiter
      // (10 lines per code per second) could hold these lines back on a fast machine.
      const fresh = await env.start();
      const p = portOf(fresh);
      const metrics = async () => {
        const text = (await call(`http://127.0.0.1:${fresh.listening.management!.port}/metrics`)).text;
        return Number(/^entra_sidecar_http_requests_total\{route="unrouted",status_class="4xx"\} (\d+)$/m.exec(text)?.[1] ?? 0);
      };
      const from = await metrics();
      const lines = fresh.lines.length;
      await get(p, TOKEN_ROUTE, { host: 'rebind.attacker.example' });
      await get(p, TOKEN_ROUTE, { host: 'localhost', origin: 'https://attacker.example' });
      expect(await metrics()).to.equal(from + 2);
      // The log lines reach our pipe after the answers do: wait for the second before reading both.
      const refusedLine = /"code":"request_from_browser".*refused a request a web browser sent/;
      expect(await waitForLine(fresh, refusedLine, 5_000, lines), fresh.lines.join('\n')).to.equal(true);
      const logged = fresh.lines.slice(lines).filter((l) => l.includes('refused a request a web browser sent'));
      expect(logged.map((l) => JSON.parse(l).code)).to.deep.equal(['host_not_allowed', 'request_from_browser']);
    });
  });

  describe('in Development', () => {
    let development: RunningSidecar;
    before(async () => {
      development = await env.start({ ASPNETCORE_ENVIRONMENT: 'Development' });
    });

    it('refuses a rebinding Host with 400 even with no browser headers at all, before any token is requested', async () => {
      // Over plain http a browser sends no Sec-Fetch-* (only potentially trustworthy URLs get
      // them) and a same-origin GET no Origin: the Host is all a rebinding page gives away.
      const p = portOf(development);
      const before = tokenRequests();
      for (const host of [`rebind.attacker.example:${p}`, 'rebind.attacker.example', `127.0.0.1.nip.io:${p}`, 'sidecar.attacker.example', 'sidecar.', '0x7f.0.0.1', 'localhost.', '[::1']) {
        const r = await raw(p, `GET ${TOKEN_ROUTE} HTTP/1.1\r\nHost: ${host}\r\nAccept: */*\r\nUser-Agent: Mozilla/5.0 Firefox/140.0\r\nConnection: close\r\n\r\n`);
        expect(r, host).to.equal(400);
      }
      expect(await raw(p, `GET http://rebind.attacker.example${TOKEN_ROUTE} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n`), 'absolute form').to.equal(400);
      expect(tokenRequests(), 'token requests').to.equal(before);
    });

    it('serves compose service names, IP literals, loopback names and Sidecar:Http:AllowedHosts entries', async () => {
      const p = portOf(development);
      for (const host of ['sidecar:5000', 'entra-sidecar', 'my_sidecar:8080', '10.1.2.3:5000', '172.17.0.2', '[fd00::7]:5000', `localhost:${p}`, `127.0.0.1:${p}`, 'Sidecar.Internal']) {
        const r = await get(p, TOKEN_ROUTE, { host });
        expect(r.status, `${host}: ${r.body}`).to.equal(200);
        expect(JSON.parse(r.body).authorizationHeader).to.match(/^Bearer ey/);
      }
    });

    it('still refuses browser marks', async () => {
      const p = portOf(development);
      expect(await get(p, TOKEN_ROUTE, { host: 'localhost', origin: 'https://attacker.example' })).to.deep.equal({ status: 403, body: '' });
      expect(await get(p, TOKEN_ROUTE, { host: 'sidecar', 'sec-fetch-site': 'none', 'sec-fetch-mode': 'navigate' })).to.deep.equal({ status: 403, body: '' });
    });

    it('serves /openapi/v1.json to a browser tab (Sec-Fetch-Mode: navigate), as Microsoft does, but not to a rebinding Host', async () => {
      const p = portOf(development);
      const tab = { 'sec-fetch-site': 'none', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document' };
      const r = await get(p, '/openapi/v1.json', { host: `localhost:${p}`, ...tab });
      expect(r.status, r.body).to.equal(200);
      expect(JSON.parse(r.body).openapi).to.be.a('string');
      expect((await get(p, '/OpenAPI/v1.json', { host: `localhost:${p}`, origin: `http://localhost:${p}` })).status).to.equal(200);
      expect(await get(p, '/openapi/v1.json', { host: `rebind.attacker.example:${p}`, ...tab })).to.deep.equal({ status: 400, body: '' });
      // The exemption is that one document: its neighbours keep the browser rule.
      expect((await get(p, '/openapi/v2.json', { host: 'localhost', ...tab })).status).to.equal(403);
      expect((await get(p, '/openapi/v1.json/', { host: 'localhost', ...tab })).status).to.equal(403);
    });
  });
});

describe('start-up warning: Development with a listener that is not loopback (built sidecar)', function () {
  this.timeout(40_000);
  const env = withEmulatorAndSidecars();
  const warnings = (s: RunningSidecar) => s.lines.filter((l) => l.includes('"config_warning"') && l.includes('Development') && l.includes('loopback'));

  it('names the environment and the listener setting (Sidecar:Http:Url)', async () => {
    const s = await env.start({ ASPNETCORE_ENVIRONMENT: 'Development', Sidecar__Http__Url: 'http://+:0' });
    const w = warnings(s);
    expect(w, s.lines.join('\n')).to.have.length(1);
    expect(w[0]).to.include('ASPNETCORE_ENVIRONMENT').and.include('Sidecar:Http:Url').and.include('get tokens as this app');
    expect(JSON.parse(w[0]).level).to.equal('warn');
  });

  it('names ASPNETCORE_URLS when that is where the listener comes from', async () => {
    const s = await env.start({ ASPNETCORE_ENVIRONMENT: 'Development', Sidecar__Http__Url: '', ASPNETCORE_URLS: 'http://0.0.0.0:0' });
    const w = warnings(s);
    expect(w, s.lines.join('\n')).to.have.length(1);
    expect(w[0]).to.include('ASPNETCORE_URLS');
  });

  it('is written at every log level, None included, while ordinary warnings keep to the level', async () => {
    for (const level of ['Error', 'None']) {
      // AzureAd:Unknown is an ordinary warning: at these levels it stays out.
      const s = await env.start({ ASPNETCORE_ENVIRONMENT: 'Development', Sidecar__Http__Url: 'http://+:0', Sidecar__LogLevel: level, AzureAd__Unknown: 'x' });
      const w = warnings(s);
      expect(w, `${level}:\n${s.lines.join('\n')}`).to.have.length(1);
      expect(JSON.parse(w[0])).to.include({ level: 'warn', event: 'config_warning', service: 'entra-sidecar' });
      expect(JSON.parse(w[0]).msg).to.match(/^SECURITY: /);
      expect(s.lines.filter((l) => l.includes('AzureAd:Unknown')), level).to.deep.equal([]);
    }
  });

  it('stays silent in Production on every interface, and in Development on loopback', async () => {
    expect(warnings(await env.start({ Sidecar__Http__Url: 'http://+:0' }))).to.deep.equal([]);
    expect(warnings(await env.start({ ASPNETCORE_ENVIRONMENT: 'Development', Sidecar__Http__Url: 'http://127.0.0.1:0;http://localhost:0' }))).to.deep.equal([]);
  });
});
