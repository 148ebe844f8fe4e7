/**
 * The load generator's client for the TCP echo floor (baseline-echo.ts): each call writes 8 bytes
 * (a sequence number) and completes when the same 8 bytes come back. It has the shape of
 * GrpcH2Connection (`call`, `close`), so the open loop measures both the same way. An echo that
 * differs from what was sent fails the connection: the stream is out of step from then on.
 */
import { connect, type Socket } from 'node:net';
import type { CallDone } from './h2client.js';

/** Bytes per echo message: a marker and the call's sequence number. */
export const ECHO_MESSAGE_BYTES = 8;
const ECHO_MAGIC = 0x45434830; // "ECH0"

export class EchoConnection {
  private readonly socket: Socket;
  /** Calls in the order their messages were written (TCP keeps that order). */
  private readonly waiting: Array<{ seq: number; keepBody: boolean; done: CallDone }> = [];
  private partial = Buffer.alloc(0);
  private nextSeq = 0;
  private failure: string | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.once('error', (err) => this.fail(`socket error: ${err.message}`));
    socket.on('close', () => this.fail('connection closed'));
  }

  /** Connects to `host:port`; rejects on error or after `timeoutMs`. */
  static open(host: string, port: number, timeoutMs = 5000): Promise<EchoConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection to ${host}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new EchoConnection(socket));
      });
    });
  }

  /** Sends one message; `done` gets a copy of the echo (when `keepBody`) or an error. `message` is ignored: the bytes are a sequence number. */
  call(_message: Buffer, keepBody: boolean, done: CallDone): void {
    if (this.failure !== undefined) {
      done(this.failure, undefined);
      return;
    }
    const seq = this.nextSeq++;
    const out = Buffer.allocUnsafe(ECHO_MESSAGE_BYTES);
    out.writeUInt32BE(ECHO_MAGIC, 0);
    out.writeUInt32BE(seq >>> 0, 4);
    this.waiting.push({ seq, keepBody, done });
    this.socket.write(out);
  }

  /** Closes the connection; calls still waiting fail. */
  close(): void {
    this.fail('connection closed by the client');
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let data = this.partial.length > 0 ? Buffer.concat([this.partial, chunk]) : chunk;
    let at = 0;
    while (data.length - at >= ECHO_MESSAGE_BYTES && this.failure === undefined) {
      const call = this.waiting.shift();
      if (call === undefined) {
        this.fail('an echo arrived for no call');
        return;
      }
      const echo = data.subarray(at, at + ECHO_MESSAGE_BYTES);
      at += ECHO_MESSAGE_BYTES;
      if (echo.readUInt32BE(0) !== ECHO_MAGIC || echo.readUInt32BE(4) !== call.seq >>> 0) {
        this.waiting.unshift(call);
        this.fail('the echo differs from the message sent');
        return;
      }
      call.done(undefined, call.keepBody ? Buffer.from(echo) : undefined);
    }
    data = data.subarray(at);
    this.partial = data.length > 0 ? Buffer.from(data) : Buffer.alloc(0);
  }

  private fail(why: string): void {
    if (this.failure !== undefined) return;
    this.failure = why;
    for (const call of this.waiting.splice(0)) call.done(why, undefined);
  }
}
