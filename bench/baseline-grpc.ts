/**
 * The do-nothing ext_authz server the sidecar is measured against: grpc-js, the same Envoy protos
 * (src/extauthz/protos.ts), and a Check that answers OK without looking at the request. Run as its
 * own process (pinned like the sidecar) so the ratio compares servers, not event loops.
 *
 * With a JWKS file as second argument it is the verify-only reference of the first-sight scenario
 * instead: per Check it reads the bearer token, decodes its header and payload (base64url + JSON)
 * and verifies its RS256 signature with the key its `kid` names, then answers OK (or
 * UNAUTHENTICATED for a bad signature or an expired token). That is the least any server must do
 * for a token it has not seen; it applies none of the other rules and sends no downstream token.
 *
 * Prints one JSON line `{"event":"listening","port":N}` on stdout once bound to 127.0.0.1.
 */
import { readFileSync } from 'node:fs';
import { createPublicKey, verify, type JsonWebKey, type KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { loadExtAuthzProtos } from '../src/extauthz/protos.js';

const OK_RESPONSE = Object.freeze({ status: Object.freeze({ code: 0 }) });
const UNAUTHENTICATED = Object.freeze({ status: Object.freeze({ code: 16 }) });

type Handler = grpc.handleUnaryCall<unknown, unknown>;

const doNothing: Handler = (_call, callback) => callback(null, OK_RESPONSE);

interface ReadCheck {
  attributes?: { request?: { http?: { headers?: Record<string, string> } } };
}

/** The verify-only Check over the RS256 keys of a JWKS (by kid). */
function verifyOnly(jwksFile: string): Handler {
  const jwks = JSON.parse(readFileSync(jwksFile, 'utf8')) as { keys: Array<JsonWebKey & { kid: string }> };
  const keys = new Map<string, KeyObject>(jwks.keys.map((k) => [k.kid, createPublicKey({ key: k, format: 'jwk' })]));
  return (call, callback) => {
    const authorization = (call.request as ReadCheck).attributes?.request?.http?.headers?.authorization ?? '';
    const jws = authorization.startsWith('Bearer ') ? authorization.slice(7) : '';
    const firstDot = jws.indexOf('.');
    const lastDot = jws.lastIndexOf('.');
    let ok = false;
    try {
      const header = JSON.parse(Buffer.from(jws.slice(0, firstDot), 'base64url').toString('utf8')) as { alg?: unknown; kid?: unknown };
      const claims = JSON.parse(Buffer.from(jws.slice(firstDot + 1, lastDot), 'base64url').toString('utf8')) as { exp?: unknown };
      const key = typeof header.kid === 'string' ? keys.get(header.kid) : undefined;
      ok =
        header.alg === 'RS256' &&
        key !== undefined &&
        typeof claims.exp === 'number' &&
        claims.exp > Date.now() / 1000 &&
        verify('sha256', Buffer.from(jws.slice(0, lastDot), 'latin1'), key, Buffer.from(jws.slice(lastDot + 1), 'base64url'));
    } catch {
      ok = false;
    }
    callback(null, ok ? OK_RESPONSE : UNAUTHENTICATED);
  };
}

/** Starts the Check server on `127.0.0.1:port` (verify-only with a JWKS file); resolves with the bound port. */
export async function startBaselineGrpc(port = 0, jwksFile?: string): Promise<{ port: number; server: grpc.Server }> {
  const protos = loadExtAuthzProtos();
  const server = new grpc.Server();
  server.addService(protos.authorizationService, { Check: jwksFile ? verifyOnly(jwksFile) : doNothing });
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return { port: bound, server };
}

const { port } = await startBaselineGrpc(Number(process.argv[2] ?? 0), process.argv[3]);
process.stdout.write(JSON.stringify({ event: 'listening', port }) + '\n');
process.on('SIGTERM', () => process.exit(0));
