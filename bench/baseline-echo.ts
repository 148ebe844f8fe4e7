/**
 * The latency floor the open-loop figures are read against: a Node process that echoes every byte
 * it receives on a TCP connection and does nothing else. No HTTP/2, no gRPC, no handler: what is
 * left is the host (scheduling, loopback TCP) and Node's event loop. Pinned like the other
 * servers; driven by the load generator's echo mode (echo.ts).
 *
 * Prints one JSON line `{"event":"listening","port":N}` on stdout once bound to 127.0.0.1.
 */
import { createServer, type AddressInfo } from 'node:net';

const server = createServer((socket) => {
  socket.setNoDelay(true);
  socket.on('data', (chunk) => socket.write(chunk));
  socket.on('error', () => socket.destroy());
});
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ event: 'listening', port: (server.address() as AddressInfo).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
