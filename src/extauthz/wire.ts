/**
 * What an oversized CheckRequest is made of, read from its encoding without decoding it. A request
 * over Sidecar:ExtAuthz:MaxReceiveMessageBytes is denied without being decoded (decoding is the
 * cost the limit bounds), but the deny should still say what was too large: the headers (431), or
 * the body Envoy forwards with `with_request_body` (Istio: `includeRequestBodyInCheck`), a 413.
 *
 * Only the length prefixes on the way to the body are read; every other field is skipped by its
 * length. Field numbers are those of envoy/service/auth/v3/{external_auth,attribute_context}.proto
 * in @grpc/grpc-js-xds.
 */

/** CheckRequest.attributes → AttributeContext.request → AttributeContext.Request.http. */
const PATH_TO_HTTP_REQUEST = [1, 4, 2] as const;
/** AttributeContext.HttpRequest.body (string) and raw_body (bytes, `pack_as_bytes`). */
const BODY_FIELDS: ReadonlySet<number> = new Set([11, 12]);
const LENGTH_DELIMITED = 2;

/** A varint at `at` as [value, next offset]; next is -1 when it runs past `end` or is over 2^53. */
export function varint(buf: Uint8Array, at: number, end: number): [number, number] {
  let value = 0;
  let scale = 1;
  while (at < end) {
    const b = buf[at++];
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, at];
    scale *= 128;
    if (scale > 2 ** 53) return [value, -1];
  }
  return [value, -1];
}

/** The offset after the value of a field of wire type `wt` that starts at `at`; -1 when malformed. */
export function skip(buf: Uint8Array, wt: number, at: number, end: number): number {
  switch (wt) {
    case 0:
      return varint(buf, at, end)[1];
    case 1:
      return at + 8 <= end ? at + 8 : -1;
    case 2: {
      const [len, next] = varint(buf, at, end);
      return next >= 0 && next + len <= end ? next + len : -1;
    }
    case 5:
      return at + 4 <= end ? at + 4 : -1;
    default:
      return -1; // groups are not used by these messages
  }
}

/**
 * Bytes (tags and length prefixes included) that the request body fields take in an encoded
 * CheckRequest. A sub-message may occur more than once on the wire (the parser merges them), so every
 * occurrence is followed. Malformed input counts what was found before the fault.
 */
export function checkRequestBodyBytes(buf: Uint8Array): number {
  return scan(buf, 0, buf.length, 0);
}

function scan(buf: Uint8Array, start: number, end: number, depth: number): number {
  let total = 0;
  let at = start;
  while (at < end) {
    const fieldStart = at;
    const [tag, afterTag] = varint(buf, at, end);
    if (afterTag < 0) return total;
    const field = Math.floor(tag / 8);
    const wt = tag % 8;
    const next = skip(buf, wt, afterTag, end);
    if (next < 0) return total;
    if (wt === LENGTH_DELIMITED) {
      if (depth < PATH_TO_HTTP_REQUEST.length) {
        if (field === PATH_TO_HTTP_REQUEST[depth]) {
          const valueStart = varint(buf, afterTag, end)[1];
          total += scan(buf, valueStart, next, depth + 1);
        }
      } else if (BODY_FIELDS.has(field)) {
        total += next - fieldStart;
      }
    }
    at = next;
  }
  return total;
}
