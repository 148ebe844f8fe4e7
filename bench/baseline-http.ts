/**
 * The bare node:http server the identity HTTP API is measured against: it answers every request
 * with a fixed JSON body of the size given on the command line (the size of the sidecar's real
 * answer), with the same content-type and cache-control headers, and does nothing else.
 *
 * Packages named after the size are imported first and kept (bench/setup.ts names the ones the
 * sidecar loads at start): the same bare server in a process of the sidecar's weight, without a
 * line of the sidecar's own code on the request path (bench/README.md finding 37).
 *
 * Usage: node baseline-http.js <bodyBytes> [package ...]. Prints
 * `{"event":"listening","port":N,"bodyBytes":N,"dependencies":N,"heapUsedBytes":N}` once bound.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const bodyBytes = Math.max(2, Number(process.argv[2] ?? 1024));
// A JSON object whose serialised form is exactly bodyBytes long: {"pad":"xxxx…"} (10 bytes of framing).
const body = Buffer.from(JSON.stringify({ pad: 'x'.repeat(Math.max(0, bodyBytes - 10)) }));

const loaded: unknown[] = await Promise.all(process.argv.slice(3).map((name) => import(name) as Promise<unknown>));

const server = createServer((_req, res) => {
  res.writeHead(200, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-cache, no-store, must-revalidate',
    'content-length': body.length,
  });
  res.end(body);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const listening = { event: 'listening', port: (server.address() as AddressInfo).port, bodyBytes: body.length, dependencies: loaded.length, heapUsedBytes: process.memoryUsage().heapUsed };
  process.stdout.write(JSON.stringify(listening) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
