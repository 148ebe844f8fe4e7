/**
 * A minimal HTTP/2 client for unary gRPC calls, written for the load generator. node:http2's
 * client builds a stream object (a Duplex with its own state and listeners) for every request and
 * hands each socket read to JS as a 64 KB buffer; at 1,000 requests a second that kept the load
 * generator's garbage collector busy 2–5 % of the time, in pauses of up to 10 ms, and an open-loop
 * client charges its own pauses to the server (bench/README finding 30). This client speaks the
 * protocol over a plain TCP socket instead: each request is two frames written from pre-encoded
 * bytes and a small per-stream record, and answers are parsed where they arrive.
 *
 * What it implements of RFC 9113: the connection preface and SETTINGS exchange, PING replies,
 * flow control in both directions (it opens its own receive windows wide and honours the server's
 * connection window), HEADERS (with PADDED, PRIORITY and CONTINUATION), DATA, RST_STREAM and
 * GOAWAY. Request headers are HPACK literals without indexing or Huffman coding (RFC 7541 §6.2.2).
 * It asks the server for an HPACK dynamic table of size 0 (SETTINGS_HEADER_TABLE_SIZE), so every
 * header block the server sends is self-contained and the same field list always has the same
 * bytes: that is what the checks below rest on, since this client does not decode HPACK.
 *
 * A call succeeds when its answer is response headers starting with `:status 200`, at least one
 * DATA frame, and trailers (a HEADERS frame with END_STREAM). A gRPC server answers an error
 * "trailers-only" (no DATA), so those fail. The trailers of every successful call on a connection
 * must also be byte-for-byte the same block as the first one's (the reference block: `grpc-status:
 * 0` and nothing that varies). This client does not decode HPACK on the hot path, so the reference
 * block is kept (`referenceTrailers`) and the load generator decodes it once, after the run
 * (trailers.ts), failing every call of the connection unless it says `grpc-status: 0`.
 *
 * With an `inspect` function, the gRPC message of EVERY answer is handed to it (a view of the
 * received bytes, no copy when the message arrived in one DATA frame) and a call whose message it
 * rejects fails with its reason: that is how an ext_authz deny, which is a successful gRPC call
 * (grpc-status 0) carrying a CheckResponse with a non-zero status, counts as an error. An answer
 * with a compressed message, no complete message or more than one message fails as well.
 */
import { connect, type Socket } from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Frame types (RFC 9113 §6). */
const FrameType = {
  Data: 0x0,
  Headers: 0x1,
  RstStream: 0x3,
  Settings: 0x4,
  Ping: 0x6,
  GoAway: 0x7,
  WindowUpdate: 0x8,
  Continuation: 0x9,
} as const;
/** SETTINGS parameters this client sends or reads (RFC 9113 §6.5.2). */
const Setting = {
  HeaderTableSize: 0x1,
  EnablePush: 0x2,
  InitialWindowSize: 0x4,
  MaxFrameSize: 0x5,
} as const;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;

/** The largest flow-control window (RFC 9113 §6.9.1). */
const MAX_WINDOW = 0x7fffffff;
const DEFAULT_WINDOW = 65_535;
/** HPACK `:status: 200`, static table index 8, as an indexed field (RFC 7541 Appendix A). */
const STATUS_200 = 0x88;

/** The outcome of one call: `error` is undefined on success; `body` is the DATA when asked for. */
export type CallDone = (error: string | undefined, body: Buffer | undefined) => void;

/** Judges one answer's gRPC message, `buf[start, end)` (without its 5-byte prefix): undefined when acceptable, else why not. */
export type MessageInspector = (buf: Buffer, start: number, end: number) => string | undefined;

/** How far an answer has come: nothing yet, its response headers, then at least one DATA frame. */
type Stage = 'awaiting-headers' | 'headers' | 'data';

interface Call {
  done: CallDone;
  /** The DATA received so far, when the caller asked for the body. */
  chunks: Buffer[] | undefined;
  stage: Stage;
  /** The header block being assembled across CONTINUATION frames. */
  block: Buffer[] | undefined;
  /** The HEADERS frame of that block carried END_STREAM. */
  ended: boolean;
  /** With an inspector: null until the message was inspected, then its verdict (undefined: acceptable). */
  verdict: string | undefined | null;
  /** With an inspector: the start of a message split across DATA frames. */
  parts: Buffer[] | undefined;
}

function frameHeader(target: Buffer, at: number, length: number, type: number, flags: number, stream: number): void {
  target.writeUIntBE(length, at, 3);
  target[at + 3] = type;
  target[at + 4] = flags;
  target.writeUInt32BE(stream, at + 5);
}

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(9 + payload.length);
  frameHeader(out, 0, payload.length, type, flags, stream);
  payload.copy(out, 9);
  return out;
}

/** An HPACK integer with an n-bit prefix whose high bits are `first` (RFC 7541 §5.1). */
function hpackInt(value: number, prefixBits: number, first: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

function hpackString(s: string): number[] {
  const bytes = Buffer.from(s, 'latin1');
  return [...hpackInt(bytes.length, 7, 0), ...bytes];
}

/** HPACK static-table index of `content-type` (RFC 7541 Appendix A). */
const CONTENT_TYPE_INDEX = 31;

/**
 * The request header block of a POST to `path`: pseudo-headers first, then `headers`, each a
 * literal without indexing (by static-table name for content-type, by literal name otherwise).
 */
function requestHeaderBlock(authority: string, path: string, headers: Readonly<Record<string, string>>): Buffer {
  const out: number[] = [0x83, 0x86]; // :method POST (index 3), :scheme http (index 6)
  out.push(...hpackInt(4, 4, 0), ...hpackString(path)); // :path, name index 4
  out.push(...hpackInt(1, 4, 0), ...hpackString(authority)); // :authority, name index 1
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (lower === 'content-type') out.push(...hpackInt(CONTENT_TYPE_INDEX, 4, 0));
    else out.push(0x00, ...hpackString(lower));
    out.push(...hpackString(value));
  }
  return Buffer.from(out);
}

/** Skips HPACK dynamic table size updates (`001xxxxx`, RFC 7541 §6.3) at the start of a block. */
function afterSizeUpdates(block: Buffer): number {
  let i = 0;
  while (i < block.length && (block[i] & 0xe0) === 0x20) {
    // A 5-bit prefix integer: one byte, or more while the continuation bit is set.
    if ((block[i] & 0x1f) === 0x1f) {
      i++;
      while (i < block.length && block[i] & 0x80) i++;
    }
    i++;
  }
  return i;
}

/** One HTTP/2 connection making unary gRPC calls. */
export class GrpcH2Connection {
  private readonly socket: Socket;
  private readonly headerBlock: Buffer;
  private nextStream = 1;
  private readonly calls = new Map<number, Call>();
  private pending: Buffer | undefined;
  /** The server's connection-level window for our DATA. */
  private sendWindow = DEFAULT_WINDOW;
  private peerStreamWindow = DEFAULT_WINDOW;
  private peerMaxFrame = 16_384;
  /** Calls waiting for the server to open its connection window. */
  private readonly blocked: Array<[Buffer, Call]> = [];
  private received = 0;
  private trailers: Buffer | undefined;
  private readonly inspect: MessageInspector | undefined;
  /** Calls that succeeded on this connection (all of them rest on the reference trailers). */
  succeeded = 0;
  private failure: string | undefined;
  private corked = false;
  /** Settles `ready`: with no error on the server's SETTINGS, with one if the socket fails first. */
  private settle: (err?: Error) => void = () => {};
  /** Resolves once the server's SETTINGS arrived (and were acknowledged). */
  private readonly ready: Promise<void>;

  private constructor(host: string, port: number, path: string, headers: Readonly<Record<string, string>>, inspect: MessageInspector | undefined) {
    this.inspect = inspect;
    this.headerBlock = requestHeaderBlock(`${host}:${port}`, path, headers);
    this.socket = connect({ host, port, noDelay: true });
    this.ready = new Promise<void>((resolve, reject) => {
      this.settle = (err) => (err ? reject(err) : resolve());
    });
    this.socket.once('error', (err) => {
      this.settle(err);
      this.fail(`socket error: ${err.message}`);
    });
    this.socket.on('close', () => {
      this.settle(new Error('connection closed before the server sent its SETTINGS'));
      this.fail('connection closed');
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    const settings = Buffer.alloc(18);
    settings.writeUInt16BE(Setting.HeaderTableSize, 0);
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(Setting.EnablePush, 6);
    settings.writeUInt32BE(0, 8);
    settings.writeUInt16BE(Setting.InitialWindowSize, 12);
    settings.writeUInt32BE(MAX_WINDOW, 14);
    const windowUpdate = Buffer.alloc(4);
    windowUpdate.writeUInt32BE(MAX_WINDOW - DEFAULT_WINDOW, 0);
    this.socket.write(Buffer.concat([PREFACE, frame(FrameType.Settings, 0, 0, settings), frame(FrameType.WindowUpdate, 0, 0, windowUpdate)]));
  }

  /**
   * Connects to `host:port`; calls go to `path` with `headers` (lower-case names). Rejects when the
   * server has not sent its SETTINGS within `timeoutMs`. `inspect` judges every answer's message.
   */
  static async open(host: string, port: number, path: string, headers: Readonly<Record<string, string>>, timeoutMs = 5000, inspect?: MessageInspector): Promise<GrpcH2Connection> {
    const c = new GrpcH2Connection(host, port, path, headers, inspect);
    const timer = setTimeout(() => c.socket.destroy(), timeoutMs);
    try {
      await c.ready;
    } finally {
      clearTimeout(timer);
    }
    return c;
  }

  /**
   * Sends one call with `message` (a whole length-prefixed gRPC frame) as its body. Several calls
   * made in one turn of the event loop leave in one write.
   */
  call(message: Buffer, keepBody: boolean, done: CallDone): void {
    if (this.failure !== undefined) {
      done(this.failure, undefined);
      return;
    }
    if (message.length > this.peerMaxFrame || message.length > this.peerStreamWindow) {
      done(`request body of ${message.length} bytes exceeds the server's frame size or stream window`, undefined);
      return;
    }
    const c: Call = { done, chunks: keepBody ? [] : undefined, stage: 'awaiting-headers', block: undefined, ended: false, verdict: null, parts: undefined };
    if (this.sendWindow < message.length || this.blocked.length > 0) {
      this.blocked.push([message, c]);
      return;
    }
    this.send(message, c);
  }

  private send(message: Buffer, c: Call): void {
    const id = this.nextStream;
    this.nextStream += 2;
    if (id > MAX_WINDOW) {
      c.done('stream identifiers exhausted on this connection', undefined);
      return;
    }
    this.calls.set(id, c);
    this.sendWindow -= message.length;
    const block = this.headerBlock;
    const head = Buffer.allocUnsafe(9 + block.length + 9);
    frameHeader(head, 0, block.length, FrameType.Headers, END_HEADERS, id);
    block.copy(head, 9);
    frameHeader(head, 9 + block.length, message.length, FrameType.Data, END_STREAM, id);
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(head);
    this.socket.write(message);
  }

  /**
   * The trailer block every successful call on this connection carried (HPACK, self-contained:
   * the dynamic table is 0), undefined before the first success; decode it with trailers.ts.
   */
  get referenceTrailers(): Buffer | undefined {
    return this.trailers;
  }

  /** Closes the connection; calls still open fail. */
  close(): void {
    this.fail('connection closed by the client');
    this.socket.destroy();
  }

  private fail(why: string): void {
    if (this.failure !== undefined) return;
    this.failure = why;
    for (const c of this.calls.values()) c.done(why, undefined);
    this.calls.clear();
    for (const [, c] of this.blocked) c.done(why, undefined);
    this.blocked.length = 0;
  }

  private onData(chunk: Buffer): void {
    let buf = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    let at = 0;
    while (buf.length - at >= 9) {
      const length = buf.readUIntBE(at, 3);
      if (buf.length - at < 9 + length) break;
      const type = buf[at + 3];
      const flags = buf[at + 4];
      const stream = buf.readUInt32BE(at + 5) & MAX_WINDOW;
      this.onFrame(type, flags, stream, buf.subarray(at + 9, at + 9 + length));
      at += 9 + length;
    }
    if (at === buf.length) this.pending = undefined;
    else {
      buf = buf.subarray(at);
      // Keep a copy of a partial frame, not a view that would hold the whole read.
      this.pending = Buffer.from(buf);
    }
  }

  private onFrame(type: number, flags: number, stream: number, payload: Buffer): void {
    switch (type) {
      case FrameType.Data: {
        this.received += payload.length;
        if (this.received >= 1 << 30) {
          const inc = Buffer.allocUnsafe(4);
          inc.writeUInt32BE(this.received, 0);
          this.socket.write(frame(FrameType.WindowUpdate, 0, 0, inc));
          this.received = 0;
        }
        const c = this.calls.get(stream);
        if (c === undefined) return;
        let data = payload;
        if (flags & PADDED) data = payload.subarray(1, payload.length - payload[0]);
        if (c.stage === 'awaiting-headers') return this.finish(stream, c, 'DATA before response headers');
        c.stage = 'data';
        if (c.chunks !== undefined) c.chunks.push(Buffer.from(data));
        if (this.inspect !== undefined) this.inspectData(c, data);
        if (flags & END_STREAM) this.finish(stream, c, 'answer ended without trailers (no grpc-status)');
        return;
      }
      case FrameType.Headers:
      case FrameType.Continuation: {
        const c = this.calls.get(stream);
        if (c === undefined) return;
        let fragment = payload;
        if (type === FrameType.Headers) {
          let start = 0;
          let end = payload.length;
          if (flags & PADDED) {
            start = 1;
            end -= payload[0];
          }
          if (flags & PRIORITY) start += 5;
          fragment = payload.subarray(start, end);
          // END_STREAM rides on the HEADERS frame even when CONTINUATION frames follow.
          c.block = [fragment];
          c.ended = (flags & END_STREAM) !== 0;
        } else if (c.block !== undefined) c.block.push(fragment);
        else return this.finish(stream, c, 'CONTINUATION without HEADERS');
        if (!(flags & END_HEADERS)) return;
        const block = c.block.length === 1 ? c.block[0] : Buffer.concat(c.block);
        c.block = undefined;
        return this.onHeaderBlock(stream, c, block);
      }
      case FrameType.RstStream: {
        const c = this.calls.get(stream);
        if (c !== undefined) this.finish(stream, c, `RST_STREAM (error code ${payload.length >= 4 ? payload.readUInt32BE(0) : '?'})`);
        return;
      }
      case FrameType.Settings: {
        if (flags & ACK) return;
        for (let i = 0; i + 6 <= payload.length; i += 6) {
          const id = payload.readUInt16BE(i);
          const value = payload.readUInt32BE(i + 2);
          if (id === Setting.InitialWindowSize) this.peerStreamWindow = value;
          else if (id === Setting.MaxFrameSize) this.peerMaxFrame = value;
        }
        this.socket.write(frame(FrameType.Settings, ACK, 0, Buffer.alloc(0)));
        this.settle();
        return;
      }
      case FrameType.Ping:
        if (!(flags & ACK)) this.socket.write(frame(FrameType.Ping, ACK, 0, payload));
        return;
      case FrameType.WindowUpdate:
        if (stream === 0 && payload.length >= 4) {
          this.sendWindow += payload.readUInt32BE(0) & MAX_WINDOW;
          while (this.blocked.length > 0 && this.sendWindow >= this.blocked[0][0].length) {
            const [message, c] = this.blocked.shift()!;
            this.send(message, c);
          }
        }
        return;
      case FrameType.GoAway:
        this.fail(`GOAWAY (error code ${payload.length >= 8 ? payload.readUInt32BE(4) : '?'})`);
        return;
      default:
        return; // PRIORITY, PUSH_PROMISE (disabled) and unknown frame types are ignored (RFC 9113 §5.5)
    }
  }

  private onHeaderBlock(stream: number, c: Call, block: Buffer): void {
    if (c.stage === 'awaiting-headers') {
      if (block[afterSizeUpdates(block)] !== STATUS_200) return this.finish(stream, c, 'HTTP status other than 200');
      if (c.ended) return this.finish(stream, c, 'trailers-only answer (a gRPC error status)');
      c.stage = 'headers';
      return;
    }
    if (!c.ended) return this.finish(stream, c, 'a second header block without END_STREAM');
    if (c.stage !== 'data') return this.finish(stream, c, 'trailers without a message');
    if (this.inspect !== undefined) {
      if (c.verdict === null) return this.finish(stream, c, 'answer ended inside its gRPC message');
      if (c.verdict !== undefined) return this.finish(stream, c, c.verdict);
    }
    const trailers = block.subarray(afterSizeUpdates(block));
    if (this.trailers === undefined) this.trailers = Buffer.from(trailers);
    else if (!this.trailers.equals(trailers)) return this.finish(stream, c, 'trailers differ from the first successful call (grpc-status not 0?)');
    this.succeeded++;
    this.finish(stream, c, undefined);
  }

  /** Feeds one DATA payload of a call to the inspector once its gRPC message is complete. */
  private inspectData(c: Call, data: Buffer): void {
    if (c.verdict !== null) {
      // Anything after the (complete) message is a second message: not a unary answer.
      if (c.verdict === undefined && data.length > 0) c.verdict = 'more than one gRPC message in the answer';
      return;
    }
    let buf = data;
    if (c.parts !== undefined) {
      c.parts.push(Buffer.from(data));
      buf = Buffer.concat(c.parts);
    }
    if (buf.length < 5 || buf.length < 5 + buf.readUInt32BE(1)) {
      if (c.parts === undefined) c.parts = [Buffer.from(data)];
      return;
    }
    c.parts = undefined;
    const end = 5 + buf.readUInt32BE(1);
    if (buf[0] !== 0) c.verdict = 'compressed gRPC message (not expected)';
    else if (buf.length > end) c.verdict = 'more than one gRPC message in the answer';
    else c.verdict = this.inspect!(buf, 5, end);
  }

  private finish(stream: number, c: Call, error: string | undefined): void {
    this.calls.delete(stream);
    c.done(error, error === undefined && c.chunks !== undefined ? Buffer.concat(c.chunks) : undefined);
  }
}
