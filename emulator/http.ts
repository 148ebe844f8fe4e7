/** Small HTTP helpers shared by the emulator's routes: JSON replies, body reading, faults. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { AadstsError, aadstsBody } from './aadsts.js';
import type { EmulatorCore } from './core.js';
import type { EmulatorRoute, FaultSpec } from './types.js';

/** Maximum request body the emulator reads (§9.3 step 1). */
export const MAX_BODY_BYTES = 1024 * 1024;

/** One request/response pair as the routes see it. */
export interface Exchange {
  core: EmulatorCore;
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  route: EmulatorRoute;
  body: Buffer;
  bodyTooLarge: boolean;
  /** Parsed form body (only for application/x-www-form-urlencoded). */
  form: Record<string, string>;
  isForm: boolean;
  /** client-request-id from the query, body or headers, else a fresh GUID (echoed as correlation_id). */
  correlationId: string;
}

/** Reads the request body up to `MAX_BODY_BYTES`; the rest is drained and discarded. */
export function readBody(req: IncomingMessage): Promise<{ body: Buffer; tooLarge: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) tooLarge = true;
      else chunks.push(chunk);
    });
    req.on('end', () => resolve({ body: Buffer.concat(chunks), tooLarge }));
    req.on('error', reject);
  });
}

/** Sends a JSON reply with Entra's standard headers (every response carries x-ms-request-id, §9.2). */
export function sendJson(ex: Exchange, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (ex.res.headersSent || ex.res.destroyed) return;
  const payload = Buffer.from(JSON.stringify(body), 'utf8');
  ex.res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(payload.length),
    'x-ms-request-id': ex.core.newRequestId(),
    ...headers,
  });
  ex.res.end(payload);
}

/** Sends an AADSTS error body (§2.8). */
export function sendAadsts(ex: Exchange, err: AadstsError, headers: Record<string, string> = {}): void {
  sendJson(ex, err.status, aadstsBody(err, ex.correlationId, ex.core.nowDate()), {
    'cache-control': 'no-store, no-cache',
    pragma: 'no-cache',
    ...headers,
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Default OAuth error name for a fault's status. */
function errorForStatus(status: number): string {
  if (status === 429 || status >= 500) return 'temporarily_unavailable';
  if (status === 401) return 'invalid_client';
  return 'invalid_request';
}

/**
 * Applies an injected fault. Returns true when the fault answered the request (or dropped it),
 * false when it only delayed it and normal handling should continue.
 */
export async function applyFault(ex: Exchange, fault: FaultSpec): Promise<boolean> {
  if (fault.delayMs) await sleep(fault.delayMs);
  if (fault.drop) {
    ex.req.socket.destroy();
    return true;
  }
  const answers = fault.status !== undefined || fault.error !== undefined || fault.aadsts !== undefined || fault.nonJson || fault.hugeBody || fault.emptyBody;
  if (!answers) return false;
  const headers: Record<string, string> = {};
  if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter);
  if (fault.nonJson) {
    const status = fault.status ?? 502;
    const html = Buffer.from('<html><head><title>502 Bad Gateway</title></head><body>upstream unavailable</body></html>');
    ex.res.writeHead(status, { 'content-type': 'text/html', 'content-length': String(html.length), 'x-ms-request-id': ex.core.newRequestId(), ...headers });
    ex.res.end(html);
    return true;
  }
  if (fault.emptyBody) {
    ex.res.writeHead(fault.status ?? 503, { 'content-length': '0', 'x-ms-request-id': ex.core.newRequestId(), ...headers });
    ex.res.end();
    return true;
  }
  if (fault.hugeBody) {
    sendJson(ex, fault.status ?? 200, { padding: 'x'.repeat(4 * 1024 * 1024) }, headers);
    return true;
  }
  const status = fault.status ?? (fault.error === 'invalid_client' ? 401 : 400);
  const error = fault.error ?? errorForStatus(status);
  if (ex.route === 'imds' || ex.route === 'appservice' || ex.route === 'keyvault') {
    sendJson(ex, status, { error, error_description: fault.aadsts ? `AADSTS${fault.aadsts}: injected fault` : 'injected fault' }, headers);
    return true;
  }
  const code = fault.aadsts ?? (status === 429 ? 50196 : status >= 500 ? 90006 : 90002);
  const err = new AadstsError(error, code, 'Injected fault.', { status, suberror: fault.suberror, claims: fault.claims });
  sendAadsts(ex, err, headers);
  return true;
}
