/**
 * The do-nothing ext_authz server the sidecar is measured against: grpc-js, the same Envoy protos
 * (src/extauthz/protos.ts), and a Check that answers OK without looking at the request. Run as its
 * own process (pinned like the sidecar) so the ratio compares servers, not event loops.
 *
 * Prints one JSON line `{"event":"listening","port":N}` on stdout once bound to 127.0.0.1.
 */
import * as grpc from '@grpc/grpc-js';
import { loadExtAuthzProtos } from '../src/extauthz/protos.js';

const OK_RESPONSE = Object.freeze({ status: Object.freeze({ code: 0 }) });

/** Starts the NOP Check server on `127.0.0.1:port`; resolves with the bound port. */
export async function startBaselineGrpc(port = 0): Promise<{ port: number; server: grpc.Server }> {
  const protos = loadExtAuthzProtos();
  const server = new grpc.Server();
  server.addService(protos.authorizationService, {
    Check(_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
      callback(null, OK_RESPONSE);
    },
  });
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return { port: bound, server };
}

const { port } = await startBaselineGrpc(Number(process.argv[2] ?? 0));
process.stdout.write(JSON.stringify({ event: 'listening', port }) + '\n');
process.on('SIGTERM', () => process.exit(0));
