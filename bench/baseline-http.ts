/**
 * The bare node:http server the identity HTTP API is measured against: it answers every request
 * with a fixed JSON body of the size given on the command line (the size of the sidecar's real
 * answer), with the same content-type and cache-control headers, and does nothing else.
 *
 * Usage: node baseline-http.js <bodyBytes>. Prints `{"event":"listening","port":N}` once bound.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const bodyBytes = Math.max(2, Number(process.argv[2] ?? 1024));
// A JSON object whose serialised form is exactly bodyBytes long: {"pad":"xxxx…"} (10 bytes of framing).
const body = Buffer.from(JSON.stringify({ pad: 'x'.repeat(Math.max(0, bodyBytes - 10)) }));

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
  process.stdout.write(JSON.stringify({ event: 'listening', port: (server.address() as AddressInfo).port, bodyBytes: body.length }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
