/**
 * The gRPC wire format the load generators speak: Envoy-shaped CheckRequests (reference
 * envoy-ext-authz §1.2) encoded once into length-prefixed gRPC frames, and the decoding of a
 * CheckResponse for correctness checks. Serialisation uses the same protos the sidecar serves.
 */
import { CHECK_PATH, loadExtAuthzProtos } from '../src/extauthz/protos.js';
// The server's own protobuf wire readers (varints, field skipping), for the answers scanned here.
import { skip as skipField, varint } from '../src/extauthz/wire.js';

export { CHECK_PATH };

/** The deadline Envoy would send (`grpc-timeout`); the reference recommends a filter timeout ≥ 1 s. */
export const GRPC_TIMEOUT = '1000m';

/** Request headers of a unary gRPC call, as h2load and the Node load generator send them. */
export const GRPC_REQUEST_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-type': 'application/grpc',
  te: 'trailers',
  'grpc-timeout': GRPC_TIMEOUT,
});

export interface EnvoyCheckInit {
  /** The inbound compact token sent as `Authorization: Bearer …`; omitted when undefined. */
  token?: string;
  contextExtensions?: Record<string, string>;
  path?: string;
}

/** A CheckRequest shaped like the one Envoy's HTTP ext_authz filter sends for a GET through an Istio sidecar. */
export function envoyCheckRequest(init: EnvoyCheckInit): Record<string, unknown> {
  const path = init.path ?? '/api/items?page=2';
  const headers: Record<string, string> = {
    ':authority': 'app.example.test',
    ':method': 'GET',
    ':path': path,
    ':scheme': 'http',
    accept: 'application/json',
    'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) bench/1.0',
    'x-forwarded-proto': 'http',
    'x-request-id': '3c6e1b7e-3f2a-4a4e-9b51-6f7d1a2b9c0d',
    'x-envoy-internal': 'true',
  };
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  return {
    attributes: {
      source: { address: { socket_address: { address: '10.244.0.12', port_value: 53422 } }, principal: 'spiffe://cluster.local/ns/default/sa/frontend' },
      destination: { address: { socket_address: { address: '10.244.0.7', port_value: 8080 } } },
      request: {
        time: { seconds: String(Math.floor(Date.now() / 1000)), nanos: 123000000 },
        http: { id: '13359530607844510314', method: 'GET', headers, path, host: 'app.example.test', scheme: 'http', size: '0', protocol: 'HTTP/1.1' },
      },
      ...(init.contextExtensions ? { context_extensions: init.contextExtensions } : {}),
    },
  };
}

/** One gRPC message frame: a 0 (not compressed) byte, the 4-byte big-endian length, the message. */
export function grpcFrame(message: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

/** Serialises a CheckRequest with the service definition's own serializer and frames it. */
export function encodeCheckFrame(request: Record<string, unknown>): Buffer {
  const check = loadExtAuthzProtos().authorizationService.Check;
  return grpcFrame(check.requestSerialize(request) as Buffer);
}

export interface DecodedCheckResponse {
  status?: { code?: number; message?: string };
  ok_response?: { headers?: Array<{ header?: { key?: string; value?: string }; append_action?: string }> };
  denied_response?: unknown;
}

/** Decodes the first gRPC frame of a response body into a CheckResponse (undefined if incomplete). */
export function decodeCheckFrame(body: Buffer): DecodedCheckResponse | undefined {
  if (body.length < 5) return undefined;
  const length = body.readUInt32BE(1);
  if (body.length < 5 + length) return undefined;
  const check = loadExtAuthzProtos().authorizationService.Check;
  return check.responseDeserialize(body.subarray(5, 5 + length)) as DecodedCheckResponse;
}

/** What an allow must inject: the header's name and, when known, its exact value. */
export interface ExpectedInjection {
  header: string;
  /** The exact value (e.g. `Bearer <the downstream token>`); undefined: any non-empty value. */
  value?: string;
}

/** The append_action the sidecar sets on every injected header (reference envoy-ext-authz §1.3). */
export const EXPECTED_APPEND_ACTION = 'OVERWRITE_IF_EXISTS_OR_ADD';

/**
 * Why a decoded response is not what a warm allow must look like, or undefined when it is:
 * gRPC-level OK inside the message (status.code 0), no denied_response, and, when `expected` is
 * given, exactly one such header with append_action OVERWRITE_IF_EXISTS_OR_ADD and the expected
 * value (any non-empty value when none is known).
 */
export function allowMismatch(response: DecodedCheckResponse | undefined, expected: ExpectedInjection | undefined): string | undefined {
  if (response === undefined) return 'no complete CheckResponse in the answer';
  if ((response.status?.code ?? 0) !== 0) return `CheckResponse status code ${response.status?.code}`;
  if (response.denied_response !== undefined && response.denied_response !== null) return 'denied_response set';
  if (expected === undefined) return undefined;
  const found = (response.ok_response?.headers ?? []).filter((h) => h.header?.key === expected.header);
  if (found.length !== 1) return `${found.length} ${expected.header} headers in ok_response (want 1)`;
  const [h] = found;
  if (h.append_action !== EXPECTED_APPEND_ACTION) return `${expected.header} append_action ${h.append_action ?? '(unset: APPEND_IF_EXISTS_OR_ADD)'} (want ${EXPECTED_APPEND_ACTION})`;
  const value = h.header?.value ?? '';
  if (value.length === 0) return `${expected.header} injected empty`;
  if (expected.value !== undefined && value !== expected.value) return `${expected.header} injected a value other than the expected downstream token`;
  return undefined;
}

/** Whether a decoded response is the expected allow (allowMismatch() found nothing). */
export function isExpectedAllow(response: DecodedCheckResponse | undefined, expected: ExpectedInjection | undefined): boolean {
  return allowMismatch(response, expected) === undefined;
}


/**
 * A scan of the top-level fields of an encoded envoy.service.auth.v3.CheckResponse in
 * `buf[start, end)`, cheap enough for every answer of a load run (no decoding, no allocation):
 * undefined for an allow, else why not. A deny is `status` (field 1, google.rpc.Status whose field 1
 * is `code`) with a non-zero code, or the `denied_response` oneof (field 2) set; `ok_response` (3)
 * and `dynamic_metadata` (4) are skipped. Field numbers: external_auth.proto in @grpc/grpc-js-xds.
 */
export function scanCheckResponse(buf: Buffer, start: number, end: number): string | undefined {
  let at = start;
  while (at < end) {
    const [tag, afterTag] = varint(buf, at, end);
    if (afterTag < 0) return 'malformed CheckResponse';
    const field = Math.floor(tag / 8);
    const wt = tag & 7;
    if (field === 2) return 'denied (denied_response set)';
    if (field === 1 && wt === 2) {
      const [len, inner] = varint(buf, afterTag, end);
      if (inner < 0 || inner + len > end) return 'malformed CheckResponse';
      // google.rpc.Status: code = 1 (int32 varint), message = 2, details = 3.
      let p = inner;
      while (p < inner + len) {
        const [t, v] = varint(buf, p, inner + len);
        if (v < 0) return 'malformed CheckResponse status';
        if (t === 8) {
          const [code, next] = varint(buf, v, inner + len);
          if (next < 0) return 'malformed CheckResponse status';
          if (code !== 0) return `denied (status code ${code > 2 ** 31 ? code - 2 ** 64 : code})`;
          p = next;
        } else {
          p = skipField(buf, t & 7, v, inner + len);
          if (p < 0) return 'malformed CheckResponse status';
        }
      }
      at = inner + len;
      continue;
    }
    at = skipField(buf, wt, afterTag, end);
    if (at < 0) return 'malformed CheckResponse';
  }
  return undefined;
}

/** Splits a buffer of concatenated gRPC frames into one Buffer per frame. */
export function splitFrames(data: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  let at = 0;
  while (at + 5 <= data.length) {
    const len = data.readUInt32BE(at + 1);
    frames.push(data.subarray(at, at + 5 + len));
    at += 5 + len;
  }
  return frames;
}
