/**
 * The Envoy ext_authz protos, loaded once from the .proto files that @grpc/grpc-js-xds ships under
 * `deps/` (reference envoy-ext-authz §1.4: no hand-copied .proto files in this repository).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** Fully qualified name of the only ext_authz service Envoy calls (v3; v2 was removed in Envoy 1.18). */
export const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization';
/** The HTTP/2 path of Check, as Envoy hard-codes it. */
export const CHECK_PATH = `/${AUTHORIZATION_SERVICE}/Check`;

/** Options every loader of these protos must share so field names and value shapes match Envoy's docs. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = Object.freeze({
  keepCase: true,
  oneofs: true,
  enums: String,
  longs: String,
  defaults: false,
});

/** The directories of the grpc-js-xds package that hold the Envoy, xds, googleapis and validate protos. */
export function envoyProtoIncludeDirs(): string[] {
  const require = createRequire(import.meta.url);
  const root = path.dirname(require.resolve('@grpc/grpc-js-xds/package.json'));
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(root, 'deps', d));
}

export interface ExtAuthzProtos {
  readonly packageDefinition: protoLoader.PackageDefinition;
  readonly authorizationService: protoLoader.ServiceDefinition;
  /** `envoy.type.v3.StatusCode` number → enum name (what proto-loader with `enums: String` expects). */
  readonly httpStatusNames: ReadonlyMap<number, string>;
}

let loaded: ExtAuthzProtos | undefined;

/** Loads `envoy/service/auth/v3/external_auth.proto` and its imports; later calls return the same object. */
export function loadExtAuthzProtos(): ExtAuthzProtos {
  if (loaded) return loaded;
  const packageDefinition = protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', {
    ...PROTO_LOADER_OPTIONS,
    includeDirs: envoyProtoIncludeDirs(),
  });
  const authorizationService = packageDefinition[AUTHORIZATION_SERVICE] as protoLoader.ServiceDefinition;
  const statusEnum = packageDefinition['envoy.type.v3.StatusCode'] as protoLoader.EnumTypeDefinition;
  const enumType = statusEnum.type as { value: Array<{ name: string; number: number }> };
  const httpStatusNames = new Map<number, string>();
  for (const v of enumType.value) if (v.number !== 0) httpStatusNames.set(v.number, v.name);
  loaded = { packageDefinition, authorizationService, httpStatusNames };
  return loaded;
}

/** The client shape tests and tools use to call Check like Envoy does. */
export interface AuthorizationClient extends grpc.Client {
  Check(
    request: object,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (err: grpc.ServiceError | null, response?: Record<string, unknown>) => void,
  ): grpc.ClientUnaryCall;
  Check(request: object, callback: (err: grpc.ServiceError | null, response?: Record<string, unknown>) => void): grpc.ClientUnaryCall;
}

/** A grpc-js client for `envoy.service.auth.v3.Authorization`, built from the same protos the server serves. */
export function createAuthorizationClient(target: string, credentials = grpc.credentials.createInsecure()): AuthorizationClient {
  const Ctor = grpc.makeGenericClientConstructor(loadExtAuthzProtos().authorizationService as grpc.ServiceDefinition, 'Authorization');
  return new Ctor(target, credentials) as unknown as AuthorizationClient;
}
