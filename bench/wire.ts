/**
 * The gRPC wire format the load generators speak: Envoy-shaped CheckRequests (reference
 * envoy-ext-authz §1.2) encoded once into length-prefixed gRPC frames, and the decoding of a
 * CheckResponse for correctness checks. Serialisation uses the same protos the sidecar serves.
 */
import { CHECK_PATH, loadExtAuthzProtos } from '../src/extauthz/protos.js';

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
  ok_response?: { headers?: Array<{ header?: { key?: string; value?: string } }> };
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

/**
 * Whether a decoded response is what a warm allow must look like: gRPC-level OK inside the message
 * (status.code 0) and, when `injectedHeader` is given, that header set to a non-empty value.
 */
export function isExpectedAllow(response: DecodedCheckResponse | undefined, injectedHeader: string | undefined): boolean {
  if (response === undefined) return false;
  if ((response.status?.code ?? 0) !== 0) return false;
  if (injectedHeader === undefined) return true;
  const headers = response.ok_response?.headers ?? [];
  return headers.some((h) => h.header?.key === injectedHeader && (h.header.value ?? '').length > 0);
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
