/**
 * Every outbound call (OpenID metadata, JWKS, Entra token endpoint, managed identity, Key Vault,
 * downstream APIs) goes through an undici Agent made here: TLS trust from the system store plus
 * NODE_EXTRA_CA_CERTS plus `Sidecar:Outbound:CaFile`, connect/headers/body timeouts, keep-alive
 * pools, an egress proxy when the environment names one (proxy.ts), and a response-size cap
 * enforced while reading.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import type { Dispatcher } from 'undici';
import { Agent, DecoratorHandler, request } from './undici.js';
import { SidecarError } from '../errors.js';
import type { OutboundTarget } from '../metrics.js';
import { createProxiedAgent, type OutboundProxy } from './proxy.js';

export interface OutboundOptions {
  /** PEM files to trust in addition to the system store (NODE_EXTRA_CA_CERTS, Sidecar:Outbound:CaFile). */
  readonly extraCaFiles: readonly string[];
  /** An egress proxy (the proxy variables of the environment); absent: every call goes direct. */
  readonly proxy?: OutboundProxy;
  readonly connectTimeoutMs: number;
  /** Bound on waiting for response headers and on each gap while reading the body. */
  readonly timeoutMs: number;
}

/** Called once per outbound request when it ends: its kind, the status (or 'error') and its duration. */
export type OutboundObserver = (target: OutboundTarget, status: number | 'error', seconds: number) => void;

/**
 * What an identity request is, from its path alone (bounded label set; never the URL itself):
 * OpenID metadata, signing keys, the token endpoint, a managed-identity endpoint, Key Vault, or
 * anything else. Downstream API calls are labelled by their own dispatcher (observeOutbound).
 */
export function outboundTarget(path: string): OutboundTarget {
  if (path.includes('/.well-known/openid-configuration')) return 'metadata';
  if (path.includes('/discovery/')) return path.includes('/discovery/instance') ? 'metadata' : 'jwks';
  if (/\/oauth2\/(v2\.0\/)?token/.test(path)) return 'token';
  if (path.includes('/metadata/identity/') || path.includes('/msi/token')) return 'managed_identity';
  if (path.includes('/secrets/')) return 'key_vault';
  return 'downstream';
}

type ResponseStart = NonNullable<Dispatcher.DispatchHandler['onResponseStart']>;
type ResponseEnd = NonNullable<Dispatcher.DispatchHandler['onResponseEnd']>;
type ResponseError = NonNullable<Dispatcher.DispatchHandler['onResponseError']>;
/** undici 7's DecoratorHandler speaks the new handler API at run time; its published types still describe the old one. */
interface DecoratedHandler {
  onResponseStart(...args: Parameters<ResponseStart>): ReturnType<ResponseStart>;
  onResponseEnd(...args: Parameters<ResponseEnd>): ReturnType<ResponseEnd>;
  onResponseError(...args: Parameters<ResponseError>): ReturnType<ResponseError>;
}
const DecoratorBase = DecoratorHandler as unknown as new (handler: Dispatcher.DispatchHandler) => DecoratedHandler;

/** Reports each request's status and duration to the observer (undici interceptor). */
class ObservingHandler extends DecoratorBase {
  private status: number | 'error' = 'error';
  private readonly done: (status: number | 'error') => void;
  constructor(handler: Dispatcher.DispatchHandler, done: (status: number | 'error') => void) {
    super(handler);
    this.done = done;
  }
  override onResponseStart(...args: Parameters<ResponseStart>): ReturnType<ResponseStart> {
    this.status = args[1];
    return super.onResponseStart(...args);
  }
  override onResponseEnd(...args: Parameters<ResponseEnd>): ReturnType<ResponseEnd> {
    this.done(this.status);
    return super.onResponseEnd(...args);
  }
  override onResponseError(...args: Parameters<ResponseError>): ReturnType<ResponseError> {
    this.done('error');
    return super.onResponseError(...args);
  }
}

/**
 * Wraps a dispatcher so every request it sends is reported to `observe` (for outbound metrics).
 * `target` fixes the label (the downstream calls' own dispatcher: a downstream path such as
 * `/secrets/…` or `/oauth2/token` must not count as Key Vault or Entra); otherwise it comes from the path.
 */
export function observeOutbound(agent: Dispatcher, observe: OutboundObserver, target?: OutboundTarget): Dispatcher {
  return agent.compose((dispatch) => (dispatchOpts, handler) => {
    const kind = target ?? outboundTarget(dispatchOpts.path);
    const started = process.hrtime.bigint();
    return dispatch(dispatchOpts, new ObservingHandler(handler, (status) => observe(kind, status, Number(process.hrtime.bigint() - started) / 1e9)));
  });
}

/** The native half of a SecureContext: Node's own `ca` handling calls addCACert on it for each PEM. */
interface NativeContext {
  addCACert?: (pem: string) => void;
}

/**
 * One TLS secure context that trusts Node's root store plus `extraPems`. NODE_EXTRA_CA_CERTS must be
 * among `extraPems` (the configuration puts it there): Node 20 leaves it out of a context that gets
 * CAs of its own (test/core/outbound-trust.test.ts).
 *
 * Adding the PEMs to a default context makes Node copy its already-parsed root store into a store of
 * the context's own (≈ 1 ms). The public route, `ca: [...rootCertificates, ...extra]`, parses the
 * ~140 bundled PEM roots again (≈ 30 ms of CPU at start-up pinned to one core, 1.7 MB; profiled) and
 * puts that list in place of whatever root store Node was started with. It remains the fallback
 * should a Node release drop the native method.
 */
export function outboundSecureContext(extraPems: readonly string[], opts: { preferNative?: boolean } = {}): SecureContext {
  if (opts.preferNative ?? true) {
    const context = createSecureContext();
    const native = (context as SecureContext & { context?: NativeContext }).context;
    if (typeof native?.addCACert === 'function') {
      for (const pem of extraPems) native.addCACert(pem);
      return context;
    }
  }
  return createSecureContext({ ca: [...rootCertificates, ...extraPems] });
}

/**
 * Creates a keep-alive undici Agent with the configured trust and timeouts. With extra CA files the
 * trust store is built into one TLS secure context here, once: passing `ca` per connection would make
 * Node parse the ~140 system roots again for every new connection (45–85 ms of CPU each, profiled).
 */
export function createOutboundAgent(opts: OutboundOptions): Dispatcher {
  const secureContext = opts.extraCaFiles.length === 0 ? undefined : outboundSecureContext(opts.extraCaFiles.map((f) => readFileSync(f, 'utf8')));
  const pools = { headersTimeout: opts.timeoutMs, bodyTimeout: opts.timeoutMs, keepAliveTimeout: 30_000, connections: 64 };
  if (opts.proxy !== undefined) return createProxiedAgent({ proxy: opts.proxy, agent: pools, connectTimeoutMs: opts.connectTimeoutMs, ...(secureContext ? { secureContext } : {}) });
  return new Agent({ ...pools, connect: { timeout: opts.connectTimeoutMs, ...(secureContext ? { secureContext } : {}) } });
}

export interface OutboundResponse {
  readonly status: number;
  /** Lower-case names; repeated headers joined with ", " (set-cookie kept as array by undici is joined too). */
  readonly headers: Record<string, string>;
  readonly rawHeaders: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

export interface OutboundRequest {
  readonly method?: Dispatcher.HttpMethod;
  readonly headers?: Record<string, string>;
  readonly body?: string | Buffer;
  /** Whole-call deadline in ms (connect + headers + body). */
  readonly deadlineMs: number;
  readonly maxResponseBytes: number;
  readonly signal?: AbortSignal;
}

/**
 * Stops reading an undici body and closes its connection. undici reports a body destroyed before its
 * end as an 'error' event; with no listener that event would be an uncaught exception, so one that
 * ignores it is attached first (the caller has already decided what to report).
 */
export function abandon(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => {});
  body.destroy();
}

/** Reads an undici body up to `max` bytes; beyond that the stream is destroyed and a SidecarError thrown. */
export async function readCapped(body: Dispatcher.ResponseData['body'], max: number, code: 'downstream_response_too_large' | 'dependency_timeout' = 'downstream_response_too_large'): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > max) {
      abandon(body);
      throw new SidecarError(code === 'downstream_response_too_large' ? 'downstream_response_too_large' : 'dependency_timeout', `The response exceeded ${max} bytes.`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size);
}

/** Flattens undici's header record to lower-case single strings. */
export function flattenHeaders(raw: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (v === undefined) continue;
    out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/**
 * Why a request failed at the transport, for an error's detail: undici's error code, or what an egress
 * proxy answered when it would not open the tunnel (a 407 or 403 there is the proxy's configuration,
 * not the destination's, and the operator needs to tell the two apart).
 */
export function transportFailure(err: unknown): string {
  const proxied = /^Proxy response \((\d{3})\)/.exec(String((err as Error | undefined)?.message ?? ''));
  if (proxied) return `the egress proxy answered ${proxied[1]} to the tunnel request`;
  return transportCode(err);
}

/** undici's (or Node's) code for a transport failure: the error's own, its cause's, or its name. */
export function transportCode(err: unknown): string {
  return String((err as { code?: unknown } | undefined)?.code ?? (err as { cause?: { code?: unknown } } | undefined)?.cause?.code ?? (err as Error | undefined)?.name ?? 'UNKNOWN');
}

/**
 * Sends one request with a hard deadline and a response-size cap. Transport failures and the
 * deadline surface as `dependency_timeout`/`downstream_unavailable` SidecarErrors with a safe detail.
 */
export async function send(agent: Dispatcher, url: string, req: OutboundRequest): Promise<OutboundResponse> {
  const deadline = AbortSignal.timeout(req.deadlineMs);
  const signal = req.signal ? AbortSignal.any([deadline, req.signal]) : deadline;
  try {
    const res = await request(url, {
      dispatcher: agent,
      method: req.method ?? 'GET',
      headers: req.headers,
      body: req.body,
      signal,
    });
    const body = await readCapped(res.body, req.maxResponseBytes);
    return { status: res.statusCode, headers: flattenHeaders(res.headers), rawHeaders: res.headers, body };
  } catch (err) {
    if (err instanceof SidecarError) throw err;
    if (deadline.aborted) throw new SidecarError('dependency_timeout', `No answer from ${new URL(url).host} within ${req.deadlineMs} ms.`, { cause: err });
    throw new SidecarError('downstream_unavailable', `Request to ${new URL(url).host} failed (${transportFailure(err)}).`, { cause: err });
  }
}
