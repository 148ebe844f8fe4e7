/**
 * The syntax of HTTP header fields, in one place for every check the sidecar makes: names it is
 * configured or told to set (config, ext_authz route policies and claim headers, token-request
 * headers) and values it writes (claim headers, injected tokens, WWW-Authenticate parameters,
 * configured token-request headers).
 */

/** RFC 9110 §5.6.2 `token`: what a field name (and a method) may be. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * What a field value may not hold: NUL, CR, LF and every other control character but HTAB, and DEL
 * (RFC 9110 §5.5). Envoy refuses such a value in a header it is told to set
 * (HeaderUtility::headerValueIsValid), Node refuses it in a request, and CR or LF would split one.
 */
const FORBIDDEN_IN_VALUE = /[\0-\x08\n-\x1f\x7f]/;

/** True when `text` is an RFC 9110 token (a valid header field name or method). */
export function isToken(text: string): boolean {
  return TOKEN.test(text);
}

/** True when `value` holds a character no header value may hold. */
export function hasForbiddenValueChar(value: string): boolean {
  return FORBIDDEN_IN_VALUE.test(value);
}
