/**
 * src/net/undici.ts loads undici's Agent, request API and DecoratorHandler from undici's own module
 * files instead of its index (which loads fetch, WebSocket, caches and mocks too). These tests fail
 * when an undici upgrade moves those files or changes what they export, and drive a real request
 * through the slim entry.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { Agent, DecoratorHandler, DispatcherClass, ProxyAgent, request } from '../../src/net/undici.js';

const undici = createRequire(import.meta.url)('undici') as typeof import('undici');

describe('undici, loaded part by part (src/net/undici.ts)', () => {
  it('exports the very classes undici exports', () => {
    expect(Agent).to.equal(undici.Agent);
    expect(DecoratorHandler).to.equal(undici.DecoratorHandler);
    expect(ProxyAgent).to.equal(undici.ProxyAgent);
    expect(DispatcherClass).to.equal(undici.Dispatcher);
  });

  it('gives dispatchers the request API without loading undici\'s index (a fresh process)', () => {
    const script = `
      import { createRequire } from 'node:module';
      const { Agent } = await import(${JSON.stringify(new URL('../../src/net/undici.js', import.meta.url).href)});
      const a = new Agent();
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes('/undici/'));
      console.log(JSON.stringify({
        api: ['request', 'stream', 'pipeline', 'connect', 'upgrade'].map((m) => typeof a[m]),
        index: loaded.some((f) => f.endsWith('/undici/index.js')),
        fetch: loaded.some((f) => f.includes('/lib/web/')),
      }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.deep.equal({ api: ['function', 'function', 'function', 'function', 'function'], index: false, fetch: false });
  });

  it('sends a request with method, headers, body and query through the given agent', async () => {
    const seen: Array<{ method?: string; url?: string; header?: string | string[]; body: string }> = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ method: req.method, url: req.url, header: req.headers['x-probe'], body });
        res.end('pong');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const agent = new Agent();
    try {
      const { port } = server.address() as AddressInfo;
      const res = await request(`http://127.0.0.1:${port}/a/b?x=1&y=%20`, { dispatcher: agent, method: 'POST', headers: { 'x-probe': 'yes' }, body: 'ping' });
      expect(res.statusCode).to.equal(200);
      expect(await res.body.text()).to.equal('pong');
      const plain = await request(new URL(`http://127.0.0.1:${port}/`), { dispatcher: agent });
      await plain.body.text();
      expect(seen).to.deep.equal([
        { method: 'POST', url: '/a/b?x=1&y=%20', header: 'yes', body: 'ping' },
        { method: 'GET', url: '/', header: undefined, body: '' },
      ]);
    } finally {
      await agent.close();
      server.close();
    }
  });
});
