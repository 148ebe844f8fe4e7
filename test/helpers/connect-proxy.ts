/**
 * A forward proxy for tests, as a corporate egress proxy behaves: CONNECT tunnels for https://
 * destinations, absolute-form requests for http:// ones, optional Basic proxy authentication. It
 * is also the tests' DNS: the emulator's host name and its regional names (`<region>.` in front)
 * resolve to 127.0.0.1 here and nowhere else, so a call that reaches the emulator by name went
 * through the proxy.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { EMULATOR_HOST_NAME } from '../../emulator/index.js';

export interface ProxiedCall {
  /** 'CONNECT' (a tunnel) or the method of an absolute-form request. */
  readonly method: string;
  /** `host:port` for a tunnel, the absolute URL otherwise. */
  readonly target: string;
  readonly proxyAuthorization: string | undefined;
  /** The status the proxy answered (200 for a tunnel it opened). */
  readonly status: number;
}

export interface TestProxy {
  readonly port: number;
  readonly url: string;
  readonly calls: ProxiedCall[];
  /** Answer every CONNECT with this status instead of tunnelling (e.g. 403 for a denied destination). */
  refuseWith: number | undefined;
  close(): Promise<void>;
}

/** Where the proxy sends a host name: the emulator's names to loopback, anything else as it is. */
function resolve(host: string): string {
  return host === EMULATOR_HOST_NAME || host.endsWith(`.${EMULATOR_HOST_NAME}`) ? '127.0.0.1' : host;
}

function splitHostPort(target: string): { host: string; port: number } {
  const i = target.lastIndexOf(':');
  return { host: target.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(target.slice(i + 1)) };
}

/** Starts the proxy on 127.0.0.1; with `credentials` ("user:password") it answers 407 to anything else. */
export async function startTestProxy(opts: { credentials?: string } = {}): Promise<TestProxy> {
  const expected = opts.credentials === undefined ? undefined : `Basic ${Buffer.from(opts.credentials).toString('base64')}`;
  const sockets = new Set<Socket>();
  const calls: ProxiedCall[] = [];
  const authorized = (req: IncomingMessage): boolean => expected === undefined || req.headers['proxy-authorization'] === expected;
  const server: Server = createServer((req, res) => {
    // An absolute-form request for an http:// destination.
    const status = authorized(req) ? 0 : 407;
    let target: URL | undefined;
    try {
      target = new URL(req.url ?? '');
    } catch {
      target = undefined;
    }
    if (status !== 0 || target === undefined || target.protocol !== 'http:') {
      const s = status || 400;
      calls.push({ method: req.method ?? '', target: req.url ?? '', proxyAuthorization: req.headers['proxy-authorization'], status: s });
      res.writeHead(s, s === 407 ? { 'proxy-authenticate': 'Basic realm="test"' } : {}).end();
      return;
    }
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    delete headers['proxy-connection'];
    const upstream = httpRequest({ host: resolve(target.hostname), port: Number(target.port) || 80, path: target.pathname + target.search, method: req.method, headers }, (up) => {
      calls.push({ method: req.method ?? '', target: req.url ?? '', proxyAuthorization: req.headers['proxy-authorization'], status: up.statusCode ?? 0 });
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    const target = req.url ?? '';
    const refuse = (status: number, extra = ''): void => {
      calls.push({ method: 'CONNECT', target, proxyAuthorization: req.headers['proxy-authorization'], status });
      client.end(`HTTP/1.1 ${status} Refused\r\n${extra}Content-Length: 0\r\n\r\n`);
    };
    if (!authorized(req)) return refuse(407, 'Proxy-Authenticate: Basic realm="test"\r\n');
    if (proxy.refuseWith !== undefined) return refuse(proxy.refuseWith);
    const { host, port } = splitHostPort(target);
    const upstream = connect(port, resolve(host), () => {
      calls.push({ method: 'CONNECT', target, proxyAuthorization: req.headers['proxy-authorization'], status: 200 });
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => refuse(502));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const proxy: TestProxy = {
    port,
    url: `http://127.0.0.1:${port}`,
    calls,
    refuseWith: undefined,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  return proxy;
}
