/**
 * Rendering of errors on the identity HTTP API: RFC 9457 ProblemDetails with the .NET 8+ type URIs
 * Microsoft's sidecar emits (reference sidecar-http-api §1.4), empty bodies where Microsoft sends
 * none (401 challenges, 403 loopback, 404, 405), and the no-cache headers on 2xx (§1.3 step 5).
 */
import type { ServerResponse } from 'node:http';
import { SidecarError, wwwAuthenticate } from '../errors.js';

const PROBLEM_TYPES: Readonly<Record<number, [type: string, title: string]>> = {
  400: ['https://tools.ietf.org/html/rfc9110#section-15.5.1', 'Bad Request'],
  401: ['https://tools.ietf.org/html/rfc9110#section-15.5.2', 'Unauthorized'],
  403: ['https://tools.ietf.org/html/rfc9110#section-15.5.4', 'Forbidden'],
  404: ['https://tools.ietf.org/html/rfc9110#section-15.5.5', 'Not Found'],
  408: ['https://tools.ietf.org/html/rfc9110#section-15.5.9', 'Request Timeout'],
  413: ['https://tools.ietf.org/html/rfc9110#section-15.5.14', 'Content Too Large'],
  431: ['https://tools.ietf.org/html/rfc6585#section-5', 'Request Header Fields Too Large'],
  500: ['https://tools.ietf.org/html/rfc9110#section-15.6.1', 'An error occurred while processing your request.'],
  501: ['https://tools.ietf.org/html/rfc9110#section-15.6.2', 'Not Implemented'],
  502: ['https://tools.ietf.org/html/rfc9110#section-15.6.3', 'Bad Gateway'],
  503: ['https://tools.ietf.org/html/rfc9110#section-15.6.4', 'Service Unavailable'],
};

const NO_CACHE: ReadonlyArray<[string, string]> = [
  ['Cache-Control', 'no-cache, no-store, must-revalidate'],
  ['Expires', '0'],
  ['Pragma', 'no-cache'],
];

/** Writes a JSON 2xx body with Microsoft's no-cache headers. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  sendJsonText(res, status, JSON.stringify(body));
}

/**
 * Writes an already serialised JSON body with Microsoft's no-cache headers on 2xx. One writeHead
 * with every header (node:http's fast path) instead of a setHeader per header: this is the answer
 * of every successful /Validate and /AuthorizationHeader call. The memoised answers are Buffers: a
 * string body is measured and encoded to UTF-8 again inside every socket write. The names are
 * lower case (field names are case-insensitive, RFC 9110 §5.1): node:http lower-cases every name
 * it writes to look for the ones it treats specially, and a name already in lower case costs it no
 * new string (bench/README.md finding 37).
 */
export function sendJsonText(res: ServerResponse, status: number, text: string | Buffer): void {
  const length = typeof text === 'string' ? Buffer.byteLength(text) : text.length;
  res.writeHead(
    status,
    status >= 200 && status < 300
      ? { 'content-type': JSON_TYPE, 'content-length': length, 'cache-control': NO_CACHE[0][1], expires: NO_CACHE[1][1], pragma: NO_CACHE[2][1] }
      : { 'content-type': JSON_TYPE, 'content-length': length },
  );
  res.end(text);
}

const JSON_TYPE = 'application/json; charset=utf-8';

/** Writes a plain-text body (healthz, IDW10203); `contentType` when the answer it mirrors names no charset. */
export function sendText(res: ServerResponse, status: number, text: string, contentType = 'text/plain; charset=utf-8'): void {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Content-Length', Buffer.byteLength(text));
  if (status >= 200 && status < 300) for (const [k, v] of NO_CACHE) res.setHeader(k, v);
  res.end(text);
}

/** Writes a status with an empty body. */
export function sendEmpty(res: ServerResponse, status: number, headers: Record<string, string> = {}): void {
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader('Content-Length', 0);
  res.end();
}

/** Writes a ProblemDetails body for a SidecarError; `code` is our stable extension member. */
export function sendProblem(res: ServerResponse, err: SidecarError): void {
  const status = err.spec.httpStatus;
  const [type, title] = PROBLEM_TYPES[status] ?? PROBLEM_TYPES[500];
  const body = JSON.stringify({ type, title, status, detail: err.publicMessage, code: err.code });
  res.statusCode = status;
  // Microsoft's sidecar answers acquisition failures with a bare ProblemDetails; only a claims
  // challenge (conditional access) is worth a WWW-Authenticate, so the app can pass it on.
  const challenge = err.spec.challenge === 'insufficient_claims' && !err.claims ? undefined : wwwAuthenticate(err);
  if (challenge) res.setHeader('WWW-Authenticate', challenge);
  if (err.retryAfterSec !== undefined) res.setHeader('Retry-After', String(err.retryAfterSec));
  res.setHeader('Content-Type', 'application/problem+json');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

/** The 401 JwtBearer challenge: no body, only WWW-Authenticate (reference §1.4). */
export function sendChallenge(res: ServerResponse, err: SidecarError): void {
  const challenge = wwwAuthenticate(err) ?? 'Bearer';
  sendEmpty(res, 401, { 'WWW-Authenticate': challenge });
}
