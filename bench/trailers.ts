/**
 * Decodes an HPACK header block that bench/h2client.ts kept without decoding (it does not decode
 * HPACK on its hot path): the block is replayed, as the trailers of a one-request answer, to a
 * node:http2 client over a loopback socket, and node's own HPACK decoder (nghttp2) reads it. Run
 * once per connection after a load run (the reference trailers every successful call carried), so
 * its cost is not on any measured path.
 *
 * The block must be self-contained: h2client asks servers for a dynamic table of size 0, so every
 * field is a literal or a static-table reference.
 */
import { connect as h2connect, type IncomingHttpHeaders } from 'node:http2';
import { createServer, type AddressInfo } from 'node:net';

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(9 + payload.length);
  out.writeUIntBE(payload.length, 0, 3);
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(stream, 5);
  payload.copy(out, 9);
  return out;
}

const PREFACE_LENGTH = 24;
const HEADERS = 0x1;
const DATA = 0x0;
const SETTINGS = 0x4;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const ACK = 0x1;

/** The header fields `block` (one HPACK header block of trailers) decodes to. Rejects when node cannot decode it. */
export async function decodeTrailerBlock(block: Buffer, timeoutMs = 5000): Promise<IncomingHttpHeaders> {
  const server = createServer((socket) => {
    let got = Buffer.alloc(0);
    let answered = false;
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      if (answered) return;
      got = Buffer.concat([got, d]);
      for (let at = PREFACE_LENGTH; got.length - at >= 9; ) {
        const length = got.readUIntBE(at, 3);
        if (got.length - at < 9 + length) break;
        if (got[at + 3] === HEADERS && (got.readUInt32BE(at + 5) & 0x7fffffff) === 1) {
          answered = true;
          socket.write(
            Buffer.concat([
              frame(SETTINGS, 0, 0, Buffer.alloc(0)),
              frame(SETTINGS, ACK, 0, Buffer.alloc(0)),
              frame(HEADERS, END_HEADERS, 1, Buffer.from([0x88])), // :status 200 (static index 8)
              frame(DATA, 0, 1, Buffer.from([0, 0, 0, 0, 0])), // an empty gRPC message
              frame(HEADERS, END_HEADERS | END_STREAM, 1, block),
            ]),
          );
          return;
        }
        at += 9 + length;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const session = h2connect(`http://127.0.0.1:${port}`);
  try {
    return await new Promise<IncomingHttpHeaders>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no trailers decoded in time')), timeoutMs);
      session.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      const req = session.request({ ':method': 'POST', ':path': '/' });
      req.on('trailers', (t) => {
        clearTimeout(timer);
        resolve(t);
      });
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.on('close', () => {
        clearTimeout(timer);
        reject(new Error('the stream closed without trailers'));
      });
      req.resume();
      req.end();
    });
  } finally {
    session.destroy();
    server.close();
  }
}

/** Undefined when `block` decodes to trailers with `grpc-status: 0`, else why not. */
export async function trailersNotOk(block: Buffer): Promise<string | undefined> {
  try {
    const t = await decodeTrailerBlock(block);
    return t['grpc-status'] === '0' ? undefined : `reference trailers carry grpc-status ${String(t['grpc-status'])} (want 0)`;
  } catch (err) {
    return `reference trailers could not be decoded: ${(err as Error).message}`;
  }
}
