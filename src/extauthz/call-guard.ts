/**
 * Bounds the request bytes ext_authz calls hold before their CheckRequest is whole.
 *
 * grpc-js collects the pieces of a message until its last byte arrives, for as long as the call
 * stays open, and one connection may have MAX_CONCURRENT_STREAMS calls open: a peer that starts
 * many large CheckRequests and never finishes them holds up to the transport's 16 MiB per call
 * (100 such calls took a sidecar from 67 MB to 1.3 GB of RSS; bench/README.md finding 47). Envoy
 * sends each CheckRequest at once, so only a client speaking gRPC to the port itself does this.
 *
 * grpc-js has no hook per call or per connection (a listener on every stream cost ~10 % of a warm
 * Check's CPU, finding 47). What it has is one method every server call runs for each DATA frame it
 * receives (`BaseServerInterceptingCall.handleDataFrame`, grpc-js 1.14), which looks only at the
 * call's own decoder. The guard wraps that method and reads the decoder after it: a call whose
 * message arrived in one frame (every Check that carries headers only; a frame holds 16 KiB) pays
 * one property read. A message split over frames is tracked until it is whole or its call ends:
 * - together such messages may hold `budgetBytes`; past it, the oldest are answered in band with
 *   a 503 `request_body_budget_exceeded` deny (never a failed RPC, which Envoy's
 *   `failure_mode_allow` would turn into an allow) and the rest of their request is refused with
 *   RST_STREAM NO_ERROR, as RFC 9113 §8.1 provides for a response sent before the request ended;
 * - one still unfinished `receiveTimeoutMs` after its first frame is reset (RST_STREAM CANCEL):
 *   any Envoy waiting for it has long given up (its ext_authz timeout is 200 ms by default).
 */
import type { ServerHttp2Stream } from 'node:http2';
import { constants as http2Constants } from 'node:http2';
import { BaseServerInterceptingCall } from '@grpc/grpc-js/build/src/server-interceptors.js';

/** grpc-js's StreamDecoder state while a message's bytes are arriving (ReadState.READING_MESSAGE). */
const READING_MESSAGE = 2;

/** What the guard reads of a grpc-js server call (private fields in grpc-js 1.14). */
interface ServerCall {
  readonly stream: ServerHttp2Stream;
  readonly decoder?: { readState: number; readMessageSize: number; readMessageRemaining: number };
  /** grpc-js skips a cancelled call's frames, reads and answers. */
  cancelled?: boolean;
  /** The call's entry once a message of it came in pieces; null when no guard owns its server. */
  [TRACKED]?: Entry | null;
}

const TRACKED = Symbol('entra-sidecar.call-guard');

interface Entry {
  readonly guard: Guard;
  readonly call: ServerCall;
  /** Bytes of the unfinished message counted in the guard's total (0 when not counted). */
  bytes: number;
  /** When the message's first piece arrived (performance.now()). */
  started: number;
  counted: boolean;
  /** Answered in band: the rest of its request is dropped unread until its stream is reset. */
  answered: boolean;
}

interface Guard {
  owns(stream: ServerHttp2Stream): boolean;
  update(entry: Entry): void;
  release(entry: Entry): void;
}

/** What a guard needs from the server it bounds. */
export interface CallGuardOptions {
  /** Bytes unfinished messages may hold together. */
  readonly budgetBytes: number;
  /** How long a message may take to arrive whole after its first piece. */
  readonly receiveTimeoutMs: number;
  /** Whether a connection belongs to the guarded server. */
  readonly ownsSession: (session: unknown) => boolean;
  /** The deny sent in band to a call shed for the budget: one gRPC length-prefixed message. */
  readonly denyFrame: Buffer;
  /** A call was answered with the deny (`bytes` it held). */
  readonly onShed: (bytes: number) => void;
  /** A call was reset for taking longer than receiveTimeoutMs (`bytes` it held). */
  readonly onTimeout: (bytes: number) => void;
}

export interface CallGuard {
  /** Stops guarding (the server is closing). */
  close(): void;
}

const guards = new Set<Guard>();
let installed: boolean | undefined;

/**
 * Guards one grpc-js server's calls. Returns undefined when this grpc-js release does not have the
 * method the guard wraps (a test fails then; the server runs on unguarded).
 */
export function guardCalls(options: CallGuardOptions): CallGuard | undefined {
  if (!install()) return undefined;
  /** Calls with an unfinished message, in the order their message began. */
  const entries = new Map<ServerCall, Entry>();
  let held = 0;
  let sweep: NodeJS.Timeout | undefined;

  const guard: Guard = {
    owns: (stream) => options.ownsSession(stream.session),
    update(entry) {
      const decoder = entry.call.decoder;
      const stream = entry.call.stream;
      const bytes = decoder !== undefined && decoder.readState === READING_MESSAGE && !stream.closed ? decoder.readMessageSize - decoder.readMessageRemaining : 0;
      if (bytes <= 0) {
        guard.release(entry);
        return;
      }
      if (!entry.counted) {
        entry.counted = true;
        entry.started = performance.now();
        entries.set(entry.call, entry);
        sweep ??= setInterval(timeOut, Math.max(10, Math.min(1000, options.receiveTimeoutMs / 2))).unref();
      }
      held += bytes - entry.bytes;
      entry.bytes = bytes;
      if (held > options.budgetBytes) shed();
    },
    release(entry) {
      if (!entry.counted) return;
      entry.counted = false;
      entries.delete(entry.call);
      held -= entry.bytes;
      entry.bytes = 0;
      if (entries.size === 0 && sweep !== undefined) {
        clearInterval(sweep);
        sweep = undefined;
      }
    },
  };

  /** Answers the oldest unfinished calls in band until the rest fit the budget. */
  const shed = (): void => {
    for (const entry of entries.values()) {
      if (held <= options.budgetBytes) break;
      const bytes = entry.bytes;
      guard.release(entry);
      entry.answered = true;
      answerInBand(entry.call.stream, options.denyFrame);
      // grpc-js must not answer this call too (a half-close of its request would make it send
      // UNIMPLEMENTED headers on a stream that has answered, which throws): to it, the call is over.
      entry.call.cancelled = true;
      options.onShed(bytes);
    }
  };

  const timeOut = (): void => {
    const deadline = performance.now() - options.receiveTimeoutMs;
    for (const entry of entries.values()) {
      if (entry.started > deadline) break;
      const bytes = entry.bytes;
      guard.release(entry);
      reset(entry.call.stream, http2Constants.NGHTTP2_CANCEL);
      options.onTimeout(bytes);
    }
  };

  guards.add(guard);
  return {
    close() {
      guards.delete(guard);
      for (const entry of entries.values()) guard.release(entry);
    },
  };
}

/** Wraps grpc-js's per-frame method once per process; false when it is not there. */
function install(): boolean {
  if (installed !== undefined) return installed;
  const prototype = (BaseServerInterceptingCall as unknown as { prototype?: Record<string, unknown> } | undefined)?.prototype;
  const handleDataFrame = prototype?.handleDataFrame;
  if (prototype === undefined || typeof handleDataFrame !== 'function') return (installed = false);
  prototype.handleDataFrame = function guardedHandleDataFrame(this: ServerCall, data: Buffer): void {
    const entry = this[TRACKED];
    if (entry === undefined) {
      // Every Check whose message is whole in its frame: one call and one property read more.
      handleDataFrame.call(this, data);
      if (this.decoder?.readState === READING_MESSAGE) observe(this);
      return;
    }
    if (entry?.answered === true) return;
    handleDataFrame.call(this, data);
    observe(this);
  };
  return (installed = true);
}

/** After a frame of a message that came in pieces (or of a call that had one). */
function observe(call: ServerCall): void {
  let entry = call[TRACKED];
  if (entry === undefined) {
    entry = null;
    for (const guard of guards) {
      if (!guard.owns(call.stream)) continue;
      const created: Entry = { guard, call, bytes: 0, started: 0, counted: false, answered: false };
      call.stream.once('close', () => guard.release(created));
      entry = created;
      break;
    }
    call[TRACKED] = entry;
  }
  if (entry !== null) entry.guard.update(entry);
}

/** How long an answered call's trailers may take to leave before its stream is reset anyway. */
const ANSWER_FLUSH_MS = 1_000;

/**
 * Sends `frame` as the whole gRPC response (status OK) and then refuses the rest of the request
 * with RST_STREAM NO_ERROR (RFC 9113 §8.1), which also ends grpc-js's reading of it. The reset
 * waits until the trailers have left (nghttp2 sends a reset ahead of queued DATA, and the answer
 * would be lost); a client that does not read its answer within ANSWER_FLUSH_MS is reset anyway.
 */
function answerInBand(stream: ServerHttp2Stream, frame: Buffer): void {
  if (stream.closed || stream.destroyed) return;
  if (stream.headersSent) {
    // Not for a call still receiving its request (grpc-js answers once it is whole); kept safe.
    reset(stream, http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
    return;
  }
  try {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => {
      try {
        stream.sendTrailers({ 'grpc-status': '0' });
      } catch {
        reset(stream, http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
        return;
      }
      const giveUp = performance.now() + ANSWER_FLUSH_MS;
      const resetOnceSent = (): void => {
        if (stream.closed || stream.destroyed) return;
        // localClose: nghttp2 has sent the END_STREAM (the trailers).
        if (stream.state.localClose === 1) reset(stream, http2Constants.NGHTTP2_NO_ERROR);
        else if (performance.now() > giveUp) reset(stream, http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
        else setTimeout(resetOnceSent, 1).unref();
      };
      setImmediate(resetOnceSent).unref();
    });
    stream.end(frame);
  } catch {
    // The connection went away in between: nothing left to answer.
    reset(stream, http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

/** RST_STREAM with `code`, unless the stream has ended already. Runs inside grpc-js's data handler or a timer, so it never throws. */
function reset(stream: ServerHttp2Stream, code: number): void {
  try {
    if (!stream.closed && !stream.destroyed) stream.close(code);
  } catch {
    stream.destroy();
  }
}
