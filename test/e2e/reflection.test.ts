/**
 * gRPC server reflection on the ext_authz port: off by default (UNIMPLEMENTED), on with
 * Sidecar:ExtAuthz:Reflection=true, listing the Authorization service (what grpcurl asks first) and
 * serving the file descriptors a client builds a Check from (what grpcurl asks next).
 */
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { AUTHORIZATION_SERVICE } from '../../src/extauthz/protos.js';
import { withEmulatorAndSidecars } from '../helpers/e2e.js';
import { reflectionClient, unresolvedTypes } from '../helpers/reflection.js';

/** ServerReflectionRequest{list_services: ""} (field 7, string), hand-encoded. */
const LIST_SERVICES = Buffer.from([0x3a, 0x00]);

function listServices(address: string): Promise<string> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const call = client.makeBidiStreamRequest('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', (b: Buffer) => b, (b: Buffer) => b, { deadline: Date.now() + 3000 });
    call.on('data', (b: Buffer) => {
      // The response is protobuf; service names appear in it as UTF-8 strings.
      resolve(b.toString('latin1'));
      call.end();
      client.close();
    });
    call.on('error', (err) => {
      client.close();
      reject(err);
    });
    call.write(LIST_SERVICES);
  });
}

describe('gRPC reflection on the ext_authz port (built sidecar)', function () {
  this.timeout(30_000);
  const suite = withEmulatorAndSidecars();

  it('is off by default: the reflection service answers UNIMPLEMENTED', async () => {
    const s = await suite.start();
    try {
      await listServices(`127.0.0.1:${s.listening.extAuthz!.port}`);
      expect.fail('reflection answered');
    } catch (err) {
      expect((err as grpc.ServiceError).code).to.equal(grpc.status.UNIMPLEMENTED);
    }
  });

  it('lists envoy.service.auth.v3.Authorization when Sidecar:ExtAuthz:Reflection is true', async () => {
    const s = await suite.start({ Sidecar__ExtAuthz__Reflection: 'true' });
    const answer = await listServices(`127.0.0.1:${s.listening.extAuthz!.port}`);
    expect(answer).to.include('envoy.service.auth.v3.Authorization');
  });

  it('serves the Authorization service with every type Check reaches, and NOT_FOUND for a symbol it does not have', async () => {
    const s = await suite.start({ Sidecar__ExtAuthz__Reflection: 'true' });
    const client = reflectionClient(`127.0.0.1:${s.listening.extAuthz!.port}`);
    try {
      const files = await client.fileContainingSymbol(AUTHORIZATION_SERVICE);
      expect(unresolvedTypes(files, AUTHORIZATION_SERVICE, 'Check')).to.deep.equal([]);
      expect((await client.fileContainingSymbol('envoy.service.auth.v3.CheckRequest')).map((f) => f.package)).to.include('envoy.service.auth.v3');
      try {
        await client.fileContainingSymbol('envoy.service.auth.v3.NoSuchMessage');
        expect.fail('reflection found a symbol that does not exist');
      } catch (err) {
        expect((err as Error).message).to.match(new RegExp(`^reflection: ${grpc.status.NOT_FOUND} `));
      }
    } finally {
      client.close();
    }
  });
});
