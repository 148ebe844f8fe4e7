/**
 * The outbound URL of a downstream API call, built exactly as Microsoft's DownstreamApi does
 * (reference sidecar-http-api §2.4 step 7): the host only ever comes from the configured BaseUrl.
 */
import { SidecarError } from '../errors.js';
import type { EffectiveApiOptions } from '../pipeline/types.js';

/** Percent-encodes everything except RFC 3986 unreserved characters (.NET `Uri.EscapeDataString`). */
export function escapeDataString(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

/**
 * `BaseUrl` without trailing `/` + `/` + `RelativePath` without leading `/`, then every
 * ExtraQueryParameters entry appended as `&k=v` (or `?k=v` when there is no query yet), escaped.
 */
export function buildDownstreamUrl(options: EffectiveApiOptions): string {
  const baseUrl = options.baseUrl?.trim();
  if (!baseUrl) {
    throw new SidecarError('misconfigured', `The downstream API '${options.apiName}' has no BaseUrl.`);
  }
  let url = baseUrl.replace(/\/+$/, '') + '/' + (options.relativePath ?? '').replace(/^\/+/, '');

  // A fragment is never sent; the query has to go in front of it to stay a query.
  const hashAt = url.indexOf('#');
  const fragment = hashAt >= 0 ? url.slice(hashAt) : '';
  if (hashAt >= 0) url = url.slice(0, hashAt);
  for (const [name, value] of Object.entries(options.extraQueryParameters ?? {})) {
    url += (url.includes('?') ? '&' : '?') + escapeDataString(name) + '=' + escapeDataString(value);
  }
  return url + fragment;
}
