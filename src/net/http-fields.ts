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

/**
 * True when `value` can be sent as a header value in a proto3 string (an ext_authz answer): no
 * forbidden character, and well-formed UTF-16. A lone surrogate (JSON's `"\ud800"` in a claim) has
 * no UTF-8 form: protobufjs writes one in a string under 40 characters as the invalid bytes
 * ED A0 80, which Envoy refuses in a proto3 string (the whole answer becomes an RPC error), and
 * leaves longer strings to Node, which writes U+FFFD instead: a value the token does not hold.
 */
export function isValidFieldValue(value: string): boolean {
  return !FORBIDDEN_IN_VALUE.test(value) && value.isWellFormed();
}
