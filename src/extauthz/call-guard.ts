/**
 * Bounds what the callers of the ext_authz port can make the sidecar hold, where grpc-js has no
 * option for it. grpc-js reads a request message chunk by chunk into memory until the whole message
 * (up to the 16 MiB transport limit, server.ts) has arrived, with no limit on how long that takes
 * and none across calls: one connection with 40 calls each sending 15 MiB and never finishing held
 * 600 MiB for as long as it stayed open. Envoy sends a CheckRequest in one burst and ends its side
 * at once, so both bounds below only ever touch a caller that is not Envoy:
 *
 * - Held bytes. Every open call counts CALL_CHARGE_BYTES (its own objects), its headers and every
 *   request byte it has received, until the call closes. A call that would take the total over
 *   `maxHeldBytes` makes room by resetting the calls still receiving their request, oldest first
 *   (those are the ones that hold a partial message; an Envoy call is done receiving within a
 *   millisecond), with ENHANCE_YOUR_CALM (gRPC clients read RESOURCE_EXHAUSTED). A new call that
 *   finds no such call to reset is refused with REFUSED_STREAM (nothing was processed; a client
 *   may retry).
 * - Receive time. A call whose request has not ended `receiveTimeoutMs` after it opened is reset
 *   with CANCEL, so a partial message is never held for longer than that.
 *
 * A reset or refused call is a failed RPC, which Envoy would count as an error (and
 * failure_mode_allow as an allow), but only a client that holds calls open or floods the port
 * directly can cause one; the default address is loopback, so that is a process in the pod.
 */
import { constants as http2Constants, type ServerHttp2Stream } from 'node:http2';
import type { EventEmitter } from 'node:events';

/**
 * What one open call costs besides its headers and request bytes: grpc-js's call, Node's
 * Http2Stream and the metadata measured 3.4–9.4 KiB of RSS each with 5,000–20,000 calls open. At
 * the default 24 MiB that is ~3,000 calls at once, three times Envoy's default circuit breaker
 * (max_requests 1,024 per cluster), which caps the Checks one Envoy has in flight.
 */
export const CALL_CHARGE_BYTES = 8 * 1024;

/** How often receive times are checked: a call is reset between `receiveTimeoutMs` and one tick later. */
const TICK_MS = 1_000;

export interface CallGuardOptions {
  /** The most the open calls may hold together: CALL_CHARGE_BYTES each plus their headers and request bytes. */
  readonly maxHeldBytes: number;
  /** How long a call's request may take to arrive in full. */
  readonly receiveTimeoutMs: number;
}

export interface CallGuard {
  /** Bytes the open calls hold now, as counted here. */
  readonly heldBytes: number;
  /** Stops the receive-time sweep (the listeners go with the servers). */
  stop(): void;
}

/** Guards every call the given http2 servers (grpc-js's) accept from now on. */
export function guardCalls(http2Servers: Iterable<EventEmitter>, options: CallGuardOptions): CallGuard {
  const { maxHeldBytes } = options;
  const timeoutTicks = Math.max(1, Math.ceil(options.receiveTimeoutMs / TICK_MS));
  /** Bytes each open call holds. */
  const held = new Map<ServerHttp2Stream, number>();
  /** The tick each call opened at, while its request has not ended; oldest first (insertion order). */
  const receiving = new Map<ServerHttp2Stream, number>();
  let heldBytes = 0;
  let tick = 0;

  function release(stream: ServerHttp2Stream): void {
    const bytes = held.get(stream);
    if (bytes !== undefined) {
      heldBytes -= bytes;
      held.delete(stream);
    }
    receiving.delete(stream);
  }

  function reset(stream: ServerHttp2Stream, code: number): void {
    release(stream);
    stream.close(code);
  }

  /** Resets calls still receiving, oldest first, until `extra` more bytes fit; false when they do not. */
  function makeRoom(extra: number): boolean {
    for (const stream of receiving.keys()) {
      if (heldBytes + extra <= maxHeldBytes) break;
      if (stream.readableEnded) receiving.delete(stream);
      else reset(stream, http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
    }
    return heldBytes + extra <= maxHeldBytes;
  }

  // Shared listeners (`this` is the stream), so a call costs no closures.
  function onData(this: ServerHttp2Stream, chunk: Buffer): void {
    const bytes = held.get(this);
    if (bytes === undefined) return;
    held.set(this, bytes + chunk.length);
    heldBytes += chunk.length;
    if (heldBytes > maxHeldBytes) makeRoom(0);
  }
  function onClose(this: ServerHttp2Stream): void {
    release(this);
  }
  function onStream(stream: ServerHttp2Stream, _headers: unknown, _flags: unknown, rawHeaders: readonly string[] | undefined): void {
    if (stream.destroyed) return;
    // Headers up to node:http2's maxHeaderListSize (64 KiB by default) each, so they count too.
    let bytes = CALL_CHARGE_BYTES;
    if (rawHeaders !== undefined) for (let i = 0; i < rawHeaders.length; i++) bytes += rawHeaders[i].length;
    if (heldBytes + bytes > maxHeldBytes && !makeRoom(bytes)) {
      stream.close(http2Constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    held.set(stream, bytes);
    heldBytes += bytes;
    if (!stream.readableEnded) receiving.set(stream, tick);
    // grpc-js has paused the stream, so this listener does not start its flow.
    stream.on('data', onData);
    stream.on('close', onClose);
  }

  const sweep = setInterval(() => {
    tick++;
    for (const [stream, opened] of receiving) {
      if (stream.readableEnded) receiving.delete(stream);
      else if (tick - opened > timeoutTicks) reset(stream, http2Constants.NGHTTP2_CANCEL);
      else break; // the rest opened later
    }
  }, TICK_MS);
  sweep.unref();

  for (const server of http2Servers) server.on('stream', onStream);
  return {
    get heldBytes() {
      return heldBytes;
    },
    stop() {
      clearInterval(sweep);
    },
  };
}
