/**
 * msal-node's INetworkModule on undici (reference entra-protocol §1.8 option A). msal-node 7's own
 * client (global fetch) has no timeout on token POSTs and no response-size cap; this one sends every
 * call through src/net/outbound.ts (the process's trust store, a hard deadline, a size cap).
 *
 * Contract with msal: resolve `{ status, headers, body }` with the parsed JSON for EVERY status (msal
 * reads `error` bodies from 4xx/5xx) and throw only on transport failure.
 *
 * Two deliberate adjustments, both on token POSTs only:
 * - The real status, `Retry-After` and a transport failure are written to the current acquisition's
 *   observation (AsyncLocalStorage), so the acquirer can map errors exactly (429/503 → throttled with
 *   the server's Retry-After, timeout → unavailable) although msal hides them. So is Entra's
 *   refusal of an authority metadata GET (an unknown tenant's openid-configuration, or instance
 *   discovery), which msal reports only as `endpoints_resolution_error`.
 * - msal keeps its own client-side throttle (entra-protocol §2.8): after a 429/5xx, or any non-2xx
 *   with Retry-After, it refuses identical requests for Retry-After seconds (60 s when the header
 *   is absent), keyed WITHOUT the user. Our token cache owns that decision per key and honours the
 *   server's value (up to msal's own bound, MAX_RETRY_AFTER_SEC), so a 429/5xx is reported to msal as 400 (the body, and therefore msal's
 *   ServerError, is unchanged) and no failed token POST passes Retry-After on to msal.
 * - A non-JSON body is turned into an OAuth-shaped error body instead of msal's opaque
 *   `token_parsing_error`, and so is an empty or non-object body of a non-2xx answer (see parseBody).
 *
 * One addition: the acquisition's extra headers (`AcquireTokenOptions:ExtraHeadersParameters`, which
 * Microsoft.Identity.Web hands to MSAL's WithExtraHttpHeaders) travel in the same slot and are added
 * to its token POSTs; msal-node's request types have no per-request headers.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Dispatcher } from 'undici';
import type { INetworkModule, NetworkRequestOptions, NetworkResponse } from '@azure/msal-node';
import { send, type OutboundResponse } from '../net/outbound.js';
import { boundedRetryAfterSec, SidecarError } from '../errors.js';

/**
 * The slot the acquirer and the network module share for one acquisition: the headers to add to its
 * token POSTs, and what the network module saw while msal served it (never logged as a whole).
 */
export interface AcquisitionObservation {
  /** Extra headers for this acquisition's token POSTs (AcquireTokenOptions:ExtraHeadersParameters). */
  readonly extraHeaders?: Readonly<Record<string, string>>;
  /** Real HTTP status of the last token-endpoint/MI response. */
  status?: number;
  /** Retry-After of the last non-2xx response, in seconds. */
  retryAfterSec?: number;
  /** The last transport failure (timeout, refused, TLS), already a safe SidecarError. */
  transportError?: SidecarError;
  /** `refresh_token` of the last successful token response (long-running OBO sessions need it). */
  refreshToken?: string;
  /**
   * Entra's refusal of the last authority metadata GET (the tenant's openid-configuration, or
   * instance discovery): msal turns it into an opaque `endpoints_resolution_error`, so the OAuth
   * error it carried is kept here for the acquirer. Other GETs (msal's IMDS region probe) never set
   * it: msal recovers from their refusals, and a later failure must not be reported with their text.
   */
  discoveryRefusal?: { readonly status: number; readonly error: string; readonly description: string };
}

/** The per-acquisition observation slot; the acquirer runs each msal call through `withObservation`. */
export const observation = new AsyncLocalStorage<AcquisitionObservation>();

let observing = 0;

/**
 * Runs one acquisition with `seen` as its observation slot. While any AsyncLocalStorage is enabled,
 * Node (before 24) runs a hook on every promise in the process, which made each warm Check ≈5 %
 * slower after the first acquisition; so the storage is disabled again whenever no acquisition is
 * running (run() re-enables it).
 */
export async function withObservation<T>(seen: AcquisitionObservation, run: () => Promise<T>): Promise<T> {
  observing++;
  try {
    return await observation.run(seen, run);
  } finally {
    if (--observing === 0) observation.disable();
  }
}

export interface MsalNetworkOptions {
  /** Whole-call deadline for each request, ms. */
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
  /** Called once per token request leaving the process (token POST, managed-identity GET). */
  readonly onTokenRequest?: () => void;
  /** Count GETs as token requests (the managed-identity application's client). */
  readonly countGets?: boolean;
}

/** Parses `Retry-After` (delta-seconds or HTTP-date) into whole seconds up to MAX_RETRY_AFTER_SEC, or undefined. */
export function parseRetryAfter(value: string | undefined, nowMs: number = Date.now()): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return boundedRetryAfterSec(Number(v));
  const date = Date.parse(v);
  if (Number.isNaN(date)) return undefined;
  return boundedRetryAfterSec(Math.ceil((date - nowMs) / 1000));
}

/**
 * The body msal reads. A non-2xx answer always comes out as an OAuth error: msal's managed-identity
 * sources and token client take a body without `error` for a token response whatever the status,
 * so an empty 503 from IMDS became a "successful" result with an empty access token. 429 and 5xx
 * keep the throttling/outage meaning (`temporarily_unavailable`), anything else is `invalid_response`,
 * as for a body that is not JSON. A 2xx body that is empty or not a JSON object is msal's to refuse
 * (every caller of msal also refuses a result without an access token).
 */
function parseBody(res: OutboundResponse, host: string): Record<string, unknown> {
  const ok = res.status >= 200 && res.status < 300;
  const failed = (what: string) => ({ error: res.status === 429 || res.status >= 500 ? 'temporarily_unavailable' : 'invalid_response', error_description: `HTTP ${res.status} from ${host} with ${what}.` });
  const text = res.body.toString('utf8');
  if (text.trim() === '') return ok ? {} : failed('an empty body');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return ok ? { error: 'invalid_response', error_description: `The response from ${host} was not JSON.` } : failed('a non-JSON body');
  }
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) return body as Record<string, unknown>;
  return ok ? { error: 'invalid_response', error_description: `The response from ${host} was not a JSON object.` } : failed('a body that is not a JSON object');
}

/**
 * The OAuth error of a 4xx answer to a metadata GET, when the body is Entra's JSON error shape: an
 * unknown or malformed tenant gets 400 `invalid_tenant` with AADSTS90002/900023 (entra-protocol §1.2,
 * §2.9). 429 is throttling, not a refusal; a non-JSON 4xx (a proxy's page) is not Entra speaking.
 */
function discoveryRefusal(res: OutboundResponse): AcquisitionObservation['discoveryRefusal'] {
  if (res.status < 400 || res.status >= 500 || res.status === 429) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(res.body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null) return undefined;
  const { error, error_description: description } = body as Record<string, unknown>;
  if (typeof error !== 'string' || error === '') return undefined;
  return { status: res.status, error, description: typeof description === 'string' && description !== '' ? description : error };
}

/**
 * Whether msal fetches `url` to resolve an authority's endpoints: OpenID metadata
 * (`…/.well-known/openid-configuration`, v2 and v1) or instance discovery
 * (`https://login.microsoftonline.com/common/discovery/instance?…`, msal-common's
 * AAD_INSTANCE_DISCOVERY_ENDPT), the GETs whose refusal ends in `endpoints_resolution_error`.
 */
export function isAuthorityMetadataUrl(url: string): boolean {
  let path: string;
  try {
    path = new URL(url).pathname.toLowerCase();
  } catch {
    return false;
  }
  return path.endsWith('/.well-known/openid-configuration') || path === '/common/discovery/instance';
}

/**
 * `protocol` plus the `extra` headers whose names it does not already have (case-insensitively): an
 * extra header never replaces one the token client writes. The config loader refuses the names the
 * protocol needs; this keeps the rule true whatever reaches here.
 */
export function withExtraHeaders(protocol: Readonly<Record<string, string>> | undefined, extra: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const out: Record<string, string> = { ...protocol };
  if (extra === undefined) return out;
  const taken = new Set(Object.keys(out).map((n) => n.toLowerCase()));
  for (const [name, value] of Object.entries(extra)) {
    if (!taken.has(name.toLowerCase())) out[name] = value;
  }
  return out;
}

/** Creates the INetworkModule msal-node uses for every call (metadata, token, managed identity). */
export function createMsalNetworkClient(agent: Dispatcher, opts: MsalNetworkOptions): INetworkModule {
  async function call<T>(method: 'GET' | 'POST', url: string, options: NetworkRequestOptions | undefined, timeoutMs: number | undefined): Promise<NetworkResponse<T>> {
    const slot = observation.getStore();
    const isTokenRequest = method === 'POST' || opts.countGets === true;
    if (isTokenRequest) opts.onTokenRequest?.();
    const host = new URL(url).host;
    let res: OutboundResponse;
    try {
      res = await send(agent, url, {
        method,
        headers: method === 'POST' && slot?.extraHeaders !== undefined ? withExtraHeaders(options?.headers, slot.extraHeaders) : options?.headers,
        body: method === 'POST' ? options?.body ?? '' : undefined,
        deadlineMs: timeoutMs !== undefined && timeoutMs > 0 ? Math.min(timeoutMs, opts.timeoutMs) : opts.timeoutMs,
        maxResponseBytes: opts.maxResponseBytes,
      });
    } catch (err) {
      const safe = err instanceof SidecarError ? err : new SidecarError('acquisition_unavailable', `Request to ${host} failed.`, { cause: err });
      if (slot) slot.transportError = safe;
      throw safe;
    }
    const body = parseBody(res, host);
    const headers = { ...res.headers };
    let status = res.status;
    if (slot) {
      slot.status = res.status;
      if (res.status < 200 || res.status >= 300) slot.retryAfterSec = parseRetryAfter(res.headers['retry-after']);
      else if (typeof body.refresh_token === 'string' && body.refresh_token !== '') slot.refreshToken = body.refresh_token;
      // The last metadata answer decides: a success, or a 5xx after an earlier refusal, clears it.
      if (!isTokenRequest && isAuthorityMetadataUrl(url)) slot.discoveryRefusal = discoveryRefusal(res);
    }
    if (method === 'POST' && (status < 200 || status >= 300)) {
      // See the module comment: our cache, not msal's per-app throttle, decides when to call again.
      // msal throttles on any non-2xx that carries Retry-After, keyed without the user, so the
      // header goes from every failed token POST, not only from 429 and 5xx.
      if (status === 429 || status >= 500) status = 400;
      for (const name of Object.keys(headers)) if (name.toLowerCase() === 'retry-after') delete headers[name];
    }
    return { status, headers, body: body as T };
  }
  return {
    sendGetRequestAsync: <T>(url: string, options?: NetworkRequestOptions, timeout?: number) => call<T>('GET', url, options, timeout),
    sendPostRequestAsync: <T>(url: string, options?: NetworkRequestOptions) => call<T>('POST', url, options, undefined),
  };
}
