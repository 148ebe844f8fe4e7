/**
 * Calls a configured downstream API on behalf of the caller (POST /DownstreamApi*, reference
 * sidecar-http-api §2.4): builds the URL from BaseUrl only, attaches the acquired token, forwards
 * the inbound body byte-exact, follows redirects only when allowed (never carrying the token to
 * another origin), retries once on a claims challenge, and returns `{ statusCode, headers, content }`.
 * docs/downstream-api.md lists where this deliberately differs from Microsoft's sidecar.
 */
import type { Dispatcher } from 'undici';
import { request } from '../net/undici.js';
import { SidecarError } from '../errors.js';
import { clip, type Logger } from '../log.js';
import type { LogLimiter } from '../log-limit.js';
import { abandon, readCapped, transportCode, transportFailure } from '../net/outbound.js';
import type { AcquireRequest, AcquiredToken, EffectiveApiOptions, TokenAcquirer, ValidatedToken } from '../pipeline/types.js';
import { claimsFromWwwAuthenticate } from './claims-challenge.js';
import { isTextualMediaType, isToken, parseMediaType } from './media-type.js';
import { addExtraHeaders, isCredentialLikeHeaderName, isValidHeaderValue, type SkippedHeader } from './request-headers.js';
import { decodeContent, selectResponseHeaders, type RawResponseHeaders } from './response.js';
import { buildDownstreamUrl } from './url.js';
import { httpRequestSignerOf, type HttpRequestSigner } from '../pop/signer.js';

export { buildDownstreamUrl } from './url.js';

export interface DownstreamCallDeps {
  /** The shared outbound Agent (per-origin keep-alive pools, TLS trust, connect timeout). */
  agent: Dispatcher;
  acquirer: TokenAcquirer;
  settings: {
    /** `Sidecar:AllowOutboundRedirects`. */
    allowOutboundRedirects: boolean;
    returnAllResponseHeaders: boolean;
    maxResponseBytes: number;
    maxRedirects: number;
    /** Bound on one downstream exchange: connect, redirects, headers and the whole body. */
    timeoutMs: number;
  };
  logger: Logger;
  /** Bounds the warnings a caller can cause (skipped `optionsOverride.ExtraHeaderParameters.*`). */
  logLimiter: LogLimiter;
  /** The sidecar's PoP signer for SignHttpRequest APIs; defaults to the acquirer's (src/pop/signer.ts). */
  httpRequestSigner?: HttpRequestSigner;
}

/** The inbound request body; forwarded only when contentType is a non-blank parseable media type. */
export interface InboundBody {
  contentType?: string;
  body: Buffer;
}

/** Microsoft's DownstreamApiResult, plus `contentEncoding` when `content` is base64 of a binary body. */
export interface DownstreamResult {
  statusCode: number;
  headers: Record<string, string[]>;
  content: string | null;
  contentEncoding?: 'base64';
}

export interface DownstreamCallRequest {
  options: EffectiveApiOptions;
  user?: ValidatedToken;
  agent?: AcquireRequest['agent'];
  inbound: InboundBody;
  signal?: AbortSignal;
  correlationId?: string;
}

/** Methods .NET knows by name; matched case-insensitively and sent upper-case. */
const KNOWN_METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'TRACE']);

/** Normalises `HttpMethod` (default GET); any other valid token is sent as written. CONNECT is refused. */
export function normaliseHttpMethod(httpMethod: string | undefined): string {
  const trimmed = (httpMethod ?? '').trim();
  if (trimmed === '') return 'GET';
  const upper = trimmed.toUpperCase();
  if (KNOWN_METHODS.has(upper)) return upper;
  if (upper === 'CONNECT' || !isToken(trimmed)) {
    throw new SidecarError('request_invalid', 'The HttpMethod of the downstream API is not a usable HTTP method.');
  }
  return trimmed;
}

interface ForwardedBody {
  readonly contentType: string;
  readonly bytes: Buffer;
}

/**
 * Whether a request with this Content-Type has its body forwarded: only a non-blank, parseable one
 * (reference §2.4 step 6). The route asks before reading the body, so a body that is not forwarded
 * is not read either (Microsoft never reads it).
 */
export function forwardsBody(contentType: string | undefined): boolean {
  return parseMediaType(contentType) !== undefined;
}

/**
 * The body to forward: the exact inbound bytes, only with a Content-Type that forwardsBody accepts;
 * `charset=utf-8` is added to textual types that declare none, as Microsoft does.
 */
export function forwardedBody(inbound: InboundBody): ForwardedBody | undefined {
  const type = parseMediaType(inbound.contentType);
  if (type === undefined || inbound.contentType === undefined) return undefined;
  let contentType = inbound.contentType.trim();
  if (isTextualMediaType(type) && !type.parameters.has('charset')) contentType += '; charset=utf-8';
  return { contentType, bytes: inbound.body };
}

interface Hop {
  readonly url: URL;
  readonly method: string;
  readonly body: ForwardedBody | undefined;
}

interface Exchange {
  readonly statusCode: number;
  readonly headers: RawResponseHeaders;
  readonly body: Buffer;
  /** Whether the final response came from the BaseUrl's origin (the token's audience). */
  readonly fromBaseOrigin: boolean;
}

const EMPTY = Buffer.alloc(0);
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** Calls the downstream API described by `options` and returns Microsoft's result shape. */
export async function callDownstreamApi(deps: DownstreamCallDeps, req: DownstreamCallRequest): Promise<DownstreamResult> {
  const { options } = req;
  const { settings, logger } = deps;
  const url = buildDownstreamUrl(options); // throws misconfigured without a BaseUrl
  const baseOrigin = parseHttpUrl(options.baseUrl!.trim(), 'misconfigured', `The BaseUrl of '${options.apiName}' is not an absolute http(s) URL.`).origin;
  const target = parseHttpUrl(url, 'request_invalid', 'The downstream URL is not a valid http(s) URL.');
  if (target.origin !== baseOrigin) {
    // Unreachable by construction (RelativePath is appended after a '/'); kept as a fail-closed guard.
    throw new SidecarError('request_invalid', 'The RelativePath must stay on the BaseUrl origin.');
  }
  const method = normaliseHttpMethod(options.httpMethod);
  const body = forwardedBody(req.inbound);

  const baseHeaders: Record<string, string> = {};
  if (options.acceptHeader && options.acceptHeader.trim() !== '') {
    if (!isValidHeaderValue(options.acceptHeader)) throw new SidecarError('request_invalid', 'The AcceptHeader contains characters not allowed in a header.');
    baseHeaders['Accept'] = options.acceptHeader;
  }
  // Reserve the names the sidecar sets itself, so ExtraHeaderParameters can never replace them.
  const extraHeaders: Record<string, string> = { ...baseHeaders };
  warnSkippedHeaders(deps, options.apiName, addExtraHeaders(extraHeaders, options.extraHeaderParameters ?? {}));

  const scopes = (options.scopes ?? []).filter((s) => s.trim() !== '');
  // SignHttpRequest (ours, src/pop): the token is bound to the sidecar's key and the request is signed with it.
  const signer = options.signHttpRequest === true ? requireHttpRequestSigner(deps) : undefined;
  const acquire = async (claims?: string): Promise<string> => {
    const acquired: AcquiredToken = await deps.acquirer.acquire({
      options: signer ? await signer.bindOptions(options) : options,
      ...(req.user ? { user: req.user } : {}),
      ...(req.agent ? { agent: req.agent } : {}),
      ...(req.correlationId ? { correlationId: req.correlationId } : {}),
      ...(claims !== undefined ? { claims } : {}),
      ...(req.signal ? { signal: req.signal } : {}),
    });
    const value = signer ? `PoP ${await signedHttpRequest(signer, acquired, method, target)}` : `${acquired.scheme} ${acquired.token}`;
    if (!isValidHeaderValue(value)) throw new SidecarError('internal', 'The acquired token cannot be sent in an Authorization header.');
    return value;
  };

  const exchange = async (authorization: string | undefined): Promise<Exchange> => {
    const started = Date.now();
    const deadline = AbortSignal.timeout(settings.timeoutMs);
    const signal = req.signal ? AbortSignal.any([deadline, req.signal]) : deadline;
    let hop: Hop = { url: target, method, body };
    try {
      for (let redirects = 0; ; redirects++) {
        const fromBaseOrigin = hop.url.origin === baseOrigin;
        const res = await request(hop.url, {
          dispatcher: deps.agent,
          method: hop.method as Dispatcher.HttpMethod,
          headers: hopHeaders(extraHeaders, authorization, hop.body, fromBaseOrigin),
          body: hop.body?.bytes,
          signal,
          headersTimeout: settings.timeoutMs,
          bodyTimeout: settings.timeoutMs,
        });
        const next = settings.allowOutboundRedirects && redirects < settings.maxRedirects ? redirectTarget(hop, res.statusCode, res.headers) : undefined;
        if (next === undefined) {
          // A HEAD, 204 or 304 answer has no body whatever Content-Length says (RFC 9110 §9.3.2,
          // §15.3.5, §15.4.5): its length is the resource's, returned as a header, not read.
          const bodiless = hop.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304;
          const declared = bodiless ? Number.NaN : Number(firstValue(res.headers['content-length']));
          if (Number.isFinite(declared) && declared > settings.maxResponseBytes) {
            abandon(res.body);
            throw new SidecarError('downstream_response_too_large', `The response declared ${declared} bytes; the limit is ${settings.maxResponseBytes}.`);
          }
          // undici reads a 304's informative Content-Length (RFC 9110 §8.6) as a promised body and fails
          // the empty one, so a bodiless answer's body is drained, never read.
          const bytes = bodiless ? (await discard(res.body), EMPTY) : await readCapped(res.body, settings.maxResponseBytes);
          logger.debug({ apiName: options.apiName, method: hop.method, host: hop.url.host, statusCode: res.statusCode, redirects, ms: Date.now() - started }, 'Downstream API answered.');
          return { statusCode: res.statusCode, headers: res.headers, body: bytes, fromBaseOrigin };
        }
        await discard(res.body);
        logger.debug({ apiName: options.apiName, statusCode: res.statusCode, from: hop.url.host, to: next.url.host, crossOrigin: next.url.origin !== baseOrigin }, 'Following a downstream redirect.');
        hop = next;
      }
    } catch (err) {
      throw transportError(err, deadline, req.signal, hop.url.host, settings.timeoutMs);
    }
  };

  let authorization = scopes.length > 0 ? await acquire() : undefined;
  let result = await exchange(authorization);
  if (result.statusCode === 401 && authorization !== undefined && result.fromBaseOrigin) {
    const claims = claimsFromWwwAuthenticate(result.headers['www-authenticate']);
    if (claims !== undefined) {
      // One re-acquisition with the challenge's claims and one retry; the second answer is final.
      logger.info({ apiName: options.apiName }, 'Downstream API sent a claims challenge; acquiring a new token and retrying once.');
      authorization = await acquire(claims);
      result = await exchange(authorization);
    }
  }

  const decoded = decodeContent(result.body, firstValue(result.headers['content-type']), joined(result.headers['content-encoding']));
  return {
    statusCode: result.statusCode,
    headers: selectResponseHeaders(result.headers, settings.returnAllResponseHeaders, result.body.length),
    content: decoded.content,
    ...(decoded.contentEncoding ? { contentEncoding: decoded.contentEncoding } : {}),
  };
}

/** Most skipped headers one line names; the rest are only counted (`skippedCount`). */
const MAX_SKIPPED_HEADERS_LOGGED = 8;
/** Longest header name a log line carries: the caller chooses the names (a query key has no bound of its own). */
const MAX_LOGGED_HEADER_NAME = 64;
const SKIPPED_HEADERS_EVENT = 'ExtraHeaderParametersSkipped';

/**
 * One warning per call that skipped ExtraHeaderParameters entries. Configured entries that can
 * never be sent are dropped at start-up (src/config/load.ts), so these come from the caller's
 * `optionsOverride.ExtraHeaderParameters.*`: the caller decides how often, how many and how long
 * the names are, so the line goes through the log limiter and carries a bounded list of cut names.
 */
function warnSkippedHeaders(deps: DownstreamCallDeps, apiName: string, skipped: readonly SkippedHeader[]): void {
  if (skipped.length === 0 || !deps.logLimiter.allow(SKIPPED_HEADERS_EVENT)) return;
  const listed = skipped.slice(0, MAX_SKIPPED_HEADERS_LOGGED).map((h) => ({
    name: clip(h.name, MAX_LOGGED_HEADER_NAME),
    reason: h.reason,
  }));
  deps.logger.warn(
    { event: SKIPPED_HEADERS_EVENT, apiName, skipped: listed, skippedCount: skipped.length, ...deps.logLimiter.suppressed(SKIPPED_HEADERS_EVENT) },
    'Skipped ExtraHeaderParameters entries the downstream request cannot carry.',
  );
}

/** The signer for SignHttpRequest APIs: the one wired into the deps, else the acquirer's own. */
function requireHttpRequestSigner(deps: DownstreamCallDeps): HttpRequestSigner {
  const signer = deps.httpRequestSigner ?? httpRequestSignerOf(deps.acquirer);
  if (!signer) throw new SidecarError('misconfigured', 'SignHttpRequest is set but this sidecar has no PoP signing key.');
  return signer;
}

/** The SHR over the first hop's method and URL; fails closed unless the token is PoP-bound (an app token). */
async function signedHttpRequest(signer: HttpRequestSigner, acquired: AcquiredToken, method: string, target: URL): Promise<string> {
  if (acquired.scheme.toLowerCase() !== 'pop') {
    throw new SidecarError('misconfigured', 'SignHttpRequest needs a PoP-bound app token (RequestAppToken=true, no AgentIdentity).');
  }
  return signer.sign(acquired.token, method, target);
}

/** Request headers for one hop; off the BaseUrl origin the token and credential-like headers stay home. */
function hopHeaders(extra: Record<string, string>, authorization: string | undefined, body: ForwardedBody | undefined, fromBaseOrigin: boolean): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(extra)) {
    if (fromBaseOrigin || !isCredentialLikeHeaderName(name)) headers[name] = value;
  }
  if (authorization !== undefined && fromBaseOrigin) headers['Authorization'] = authorization;
  if (body !== undefined) headers['Content-Type'] = body.contentType;
  return headers;
}

/**
 * The next hop for a followable redirect, or undefined to return the 3xx as is: no Location,
 * a non-http(s) target, userinfo in the target, or an https → http downgrade (.NET refuses it too).
 * 303 (and 301/302 after POST) becomes a GET without body; 307/308 keep method and body.
 */
function redirectTarget(hop: Hop, statusCode: number, headers: RawResponseHeaders): Hop | undefined {
  if (!REDIRECT_STATUSES.has(statusCode)) return undefined;
  const location = firstValue(headers['location']);
  if (location === undefined || location.trim() === '') return undefined;
  let url: URL;
  try {
    url = new URL(location.trim(), hop.url);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.username !== '' || url.password !== '') return undefined;
  if (hop.url.protocol === 'https:' && url.protocol === 'http:') return undefined;
  url.hash = '';
  const toGet = (statusCode === 303 && hop.method !== 'HEAD') || ((statusCode === 301 || statusCode === 302) && hop.method === 'POST');
  return toGet ? { url, method: 'GET', body: undefined } : { url, method: hop.method, body: hop.body };
}

function parseHttpUrl(text: string, code: 'request_invalid' | 'misconfigured', detail: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch (err) {
    throw new SidecarError(code, detail, { cause: err });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new SidecarError(code, detail);
  return url;
}

/** Drains a little of a body we do not return so the connection can be reused; bigger ones are dropped. */
async function discard(body: Dispatcher.ResponseData['body']): Promise<void> {
  try {
    await body.dump({ limit: 64 * 1024 });
  } catch {
    // the connection is closed instead; nothing to report
  }
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

/** Maps a transport failure to a stable code; the detail names the host, never the URL or a header. */
function transportError(err: unknown, deadline: AbortSignal, callerSignal: AbortSignal | undefined, host: string, timeoutMs: number): SidecarError {
  if (err instanceof SidecarError) return err;
  const code = transportCode(err);
  if (deadline.aborted || TIMEOUT_CODES.has(code)) {
    return new SidecarError('dependency_timeout', `No complete answer from ${host} within ${timeoutMs} ms.`, { cause: err });
  }
  if (callerSignal?.aborted) {
    return new SidecarError('dependency_timeout', `The call to ${host} was cancelled.`, { cause: err });
  }
  if (code === 'UND_ERR_INVALID_ARG') {
    return new SidecarError('request_invalid', 'The downstream request could not be built.', { cause: err });
  }
  return new SidecarError('downstream_unavailable', `Request to ${host} failed (${transportFailure(err)}).`, { cause: err });
}

function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function joined(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}
