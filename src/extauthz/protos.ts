/**
 * The Envoy ext_authz protos. Their source is the .proto tree that @grpc/grpc-js-xds ships under
 * `deps/` (reference envoy-ext-authz §1.4: no hand-copied .proto files in this repository).
 *
 * Parsing that tree at every start costs ≈100 ms and ≈25 MB (dozens of imported files, and
 * proto-loader builds descriptors for every type in them). So `npm run build` runs
 * `build-descriptor.ts`, which parses the tree once, keeps only the types the Authorization
 * service reaches, and writes them as a protobufjs JSON descriptor next to this module. At run time
 * `loadExtAuthzProtos()` reads that file with protobufjs's light build (no parser); without it (a
 * bare `tsc`), it builds the same descriptor from the .proto files. A test keeps the shipped file
 * equal to a fresh build.
 *
 * @grpc/grpc-js-xds is therefore a build-time (dev) dependency: the image's production
 * node_modules does not have it (23 MB with google-auth-library, gaxios and re2-wasm), and nothing
 * the sidecar runs reads a .proto file when the descriptor is there.
 *
 * Messages are converted exactly as @grpc/proto-loader converts them (`PROTO_LOADER_OPTIONS`), so
 * the object shapes are the ones Envoy's docs and our tests use. Server reflection, off by default,
 * serves file descriptors built on demand from the same JSON descriptor; a test keeps them equal to
 * the ones proto-loader builds from the .proto tree.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type * as Protobuf from 'protobufjs';
// protobufjs's reflection and codec without the .proto parser (the full build is loaded only to parse).
import protobuf from 'protobufjs/light.js';
import type * as ProtoLoader from '@grpc/proto-loader';

const require = createRequire(import.meta.url);

/** Fully qualified name of the only ext_authz service Envoy calls (v3; v2 was removed in Envoy 1.18). */
export const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization';
/** The HTTP/2 path of Check, as Envoy hard-codes it. */
export const CHECK_PATH = `/${AUTHORIZATION_SERVICE}/Check`;
/** The .proto file (relative to the include dirs) that declares the service. */
export const EXT_AUTHZ_PROTO = 'envoy/service/auth/v3/external_auth.proto';
/** Where `npm run build` writes the pruned descriptor (beside the compiled module). */
export const DESCRIPTOR_FILE = fileURLToPath(new URL('./envoy-ext-authz.descriptor.json', import.meta.url));

/** Options every loader of these protos must share so field names and value shapes match Envoy's docs. */
export const PROTO_LOADER_OPTIONS = Object.freeze({
  keepCase: true,
  oneofs: true,
  enums: String,
  longs: String,
  defaults: false,
});

/** The directories of the grpc-js-xds package that hold the Envoy, xds, googleapis and validate protos. */
export function envoyProtoIncludeDirs(): string[] {
  let manifest: string;
  try {
    manifest = require.resolve('@grpc/grpc-js-xds/package.json');
  } catch (err) {
    // A production install (npm ci --omit=dev) has no .proto tree; only a run without the build's
    // descriptor (a bare tsc) gets here.
    throw new Error('the Envoy .proto files come from @grpc/grpc-js-xds, a devDependency: run `npm run build`, which writes the ext_authz descriptor the sidecar runs from', { cause: err });
  }
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(path.dirname(manifest), 'deps', d));
}

/** A grpc-js service definition whose methods also carry their protobufjs types. */
export type ServiceDefinition = grpc.ServiceDefinition & Record<string, grpc.MethodDefinition<object, object> & { originalName: string }>;

/**
 * The CheckRequest fields the checker reads (src/extauthz/check.ts), by message. The server decodes
 * requests through a copy of the messages holding only these fields: protobufjs then skips the rest
 * (addresses, principals, timestamps, metadata, TLS session, body) on the wire instead of building
 * objects nobody reads, which was most of the decoding cost of a Check. The checker's `CheckRequest`
 * type lists the same fields; a test compares the two decodings.
 */
export const CHECK_REQUEST_FIELDS_READ: Readonly<Record<string, readonly string[]>> = Object.freeze({
  'envoy.service.auth.v3.CheckRequest': ['attributes'],
  'envoy.service.auth.v3.AttributeContext': ['request', 'context_extensions'],
  'envoy.service.auth.v3.AttributeContext.Request': ['http'],
  'envoy.service.auth.v3.AttributeContext.HttpRequest': ['method', 'headers', 'header_map', 'path', 'host'],
});

export interface ExtAuthzProtos {
  /** The full codec of every message (what clients, tools and the baseline use). */
  readonly authorizationService: ServiceDefinition;
  /** The same service, but Check requests are decoded to the fields the checker reads (the server's). */
  readonly serverService: ServiceDefinition;
  /** `envoy.type.v3.StatusCode` number → enum name (what `enums: String` objects carry). */
  readonly httpStatusNames: ReadonlyMap<number, string>;
  /** `envoy.service.auth.v3.CheckResponse`'s field names in field-number order (the order an encoder writes them). */
  readonly checkResponseFields: readonly string[];
  /** Where the descriptor came from: inlined in the bundle, the file `npm run build` wrote, or the .proto tree (no build step). */
  readonly source: 'inlined' | 'descriptor-file' | 'proto-files';
  /** The protobufjs JSON descriptor all of the above was built from (what reflection serves). */
  readonly descriptor: object;
}

type JsonNode = Record<string, unknown> & { nested?: Record<string, JsonNode>; fields?: Record<string, { options?: Record<string, unknown> }> };

/** The fully qualified names (no leading dot) of every type `root`'s `services` reach, and the services. */
function reachableNames(root: Protobuf.Root, services: readonly string[]): Set<string> {
  const keep = new Set<string>();
  const queue: Protobuf.ReflectionObject[] = [];
  const visit = (obj: Protobuf.ReflectionObject | null): void => {
    if (!obj) return;
    const name = obj.fullName.slice(1);
    if (keep.has(name)) return;
    keep.add(name);
    queue.push(obj);
  };
  for (const s of services) visit(root.lookupService(s));
  while (queue.length > 0) {
    const obj = queue.pop()!;
    if (obj instanceof protobuf.Service) {
      for (const m of obj.methodsArray) {
        m.resolve();
        visit(m.resolvedRequestType);
        visit(m.resolvedResponseType);
      }
    } else if (obj instanceof protobuf.Type) {
      for (const f of obj.fieldsArray) {
        f.resolve();
        visit(f.resolvedType);
      }
    }
  }
  return keep;
}

/** Keeps only the kept names (and the namespaces that hold them); drops custom (`(ext)`) options. */
function prune(nested: Record<string, JsonNode>, prefix: string, keep: ReadonlySet<string>): Record<string, JsonNode> | undefined {
  const out: Record<string, JsonNode> = {};
  for (const [name, node] of Object.entries(nested)) {
    const full = prefix ? `${prefix}.${name}` : name;
    const inner = node.nested ? prune(node.nested, full, keep) : undefined;
    if (keep.has(full)) {
      const copy: JsonNode = { ...node };
      delete copy.nested;
      delete copy.options;
      if (inner) copy.nested = inner;
      if (copy.fields) {
        const fields: Record<string, { options?: Record<string, unknown> }> = {};
        for (const [fname, field] of Object.entries(copy.fields)) {
          const options = Object.fromEntries(Object.entries(field.options ?? {}).filter(([k]) => !k.startsWith('(')));
          const f = { ...field };
          if (Object.keys(options).length > 0) f.options = options;
          else delete f.options;
          fields[fname] = f;
        }
        copy.fields = fields;
      }
      out[name] = copy;
    } else if (inner) {
      out[name] = { nested: inner };
    }
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Parses .proto files (relative to the include dirs) from @grpc/grpc-js-xds with protobufjs's full
 * build, field names kept as written, every reference resolved. google/protobuf/* comes from
 * protobufjs: its built-in well-known types, and the .proto files it ships (descriptor.proto).
 */
export function parseEnvoyProtos(files: string | string[]): Protobuf.Root {
  const full = require('protobufjs') as typeof Protobuf;
  const root = new full.Root();
  const includeDirs = [...envoyProtoIncludeDirs(), path.dirname(require.resolve('protobufjs/package.json'))];
  root.resolvePath = (_origin, target) => {
    for (const dir of includeDirs) {
      const candidate = path.join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return target;
  };
  root.loadSync(files, { keepCase: PROTO_LOADER_OPTIONS.keepCase });
  root.resolveAll();
  return root;
}

/**
 * A protobufjs JSON descriptor of the Authorization service and every type it reaches, parsed from
 * the Envoy .proto tree (what build-descriptor.ts writes).
 */
export function buildExtAuthzDescriptor(): object {
  const root = parseEnvoyProtos(EXT_AUTHZ_PROTO);
  const keep = reachableNames(root, [AUTHORIZATION_SERVICE]);
  const json = root.toJSON({ keepComments: false }) as JsonNode;
  return { nested: prune(json.nested ?? {}, '', keep) };
}

/** Encoder/decoder pair for one message type, as @grpc/proto-loader makes them. */
function codec(type: Protobuf.Type): { serialize: (value: object) => Buffer; deserialize: (bytes: Buffer) => object } {
  return {
    serialize: (value) => {
      if (Array.isArray(value)) throw new Error(`Failed to serialize message: expected object with ${type.name} structure, got array instead`);
      return type.encode(type.fromObject(value)).finish() as Buffer;
    },
    deserialize: (bytes) => type.toObject(type.decode(bytes), PROTO_LOADER_OPTIONS as Protobuf.IConversionOptions),
  };
}

/** A grpc-js service definition for `serviceName` in a protobufjs JSON descriptor. */
export function serviceDefinitionFromJson(json: object, serviceName: string): ServiceDefinition {
  const root = protobuf.Root.fromJSON(json as Protobuf.INamespace);
  return serviceDefinitionOf(root, serviceName);
}

function serviceDefinitionOf(root: Protobuf.Root, serviceName: string): ServiceDefinition {
  root.resolveAll();
  const service = root.lookupService(serviceName);
  const def: Record<string, grpc.MethodDefinition<object, object> & { originalName: string }> = {};
  for (const method of service.methodsArray) {
    const request = codec(method.resolvedRequestType!);
    const response = codec(method.resolvedResponseType!);
    def[method.name] = {
      path: `/${serviceName}/${method.name}`,
      requestStream: !!method.requestStream,
      responseStream: !!method.responseStream,
      requestSerialize: request.serialize,
      requestDeserialize: request.deserialize,
      responseSerialize: response.serialize,
      responseDeserialize: response.deserialize,
      originalName: method.name.charAt(0).toLowerCase() + method.name.slice(1),
    };
  }
  return def as ServiceDefinition;
}

/** A copy of a descriptor with some messages cut down to the named fields. */
function withFieldsOnly(json: object, keep: Readonly<Record<string, readonly string[]>>): object {
  const copy = structuredClone(json) as JsonNode;
  for (const [fullName, fields] of Object.entries(keep)) {
    let node: JsonNode | undefined = copy;
    for (const part of fullName.split('.')) node = node?.nested?.[part];
    if (!node?.fields) throw new Error(`ext_authz descriptor has no message ${fullName}`);
    for (const f of fields) if (!(f in node.fields)) throw new Error(`ext_authz descriptor: ${fullName} has no field ${f}`);
    node.fields = Object.fromEntries(Object.entries(node.fields).filter(([name]) => fields.includes(name)));
    const oneofs = node.oneofs as Record<string, { oneof: string[] }> | undefined;
    if (oneofs) {
      for (const [name, o] of Object.entries(oneofs)) {
        o.oneof = o.oneof.filter((f) => fields.includes(f));
        if (o.oneof.length === 0) delete oneofs[name];
      }
    }
  }
  return copy;
}

let loaded: ExtAuthzProtos | undefined;

/** The descriptor's JSON, inlined by the bundle (src/build-bundle.ts); not defined in the unbundled build. */
declare const __ENVOY_EXT_AUTHZ_DESCRIPTOR__: object | undefined;

/** The Authorization service and the status-code names; built once, later calls return the same object. */
export function loadExtAuthzProtos(): ExtAuthzProtos {
  if (loaded) return loaded;
  const inlined = typeof __ENVOY_EXT_AUTHZ_DESCRIPTOR__ === 'undefined' ? undefined : __ENVOY_EXT_AUTHZ_DESCRIPTOR__;
  const fromFile = inlined === undefined && existsSync(DESCRIPTOR_FILE);
  const json = inlined ?? (fromFile ? (JSON.parse(readFileSync(DESCRIPTOR_FILE, 'utf8')) as object) : buildExtAuthzDescriptor());
  const root = protobuf.Root.fromJSON(json as Protobuf.INamespace);
  const authorizationService = serviceDefinitionOf(root, AUTHORIZATION_SERVICE);
  const view = protobuf.Root.fromJSON(withFieldsOnly(json, CHECK_REQUEST_FIELDS_READ) as Protobuf.INamespace);
  view.resolveAll();
  const serverService = {
    ...authorizationService,
    Check: { ...authorizationService.Check, requestDeserialize: codec(view.lookupType('envoy.service.auth.v3.CheckRequest')).deserialize },
  } as ServiceDefinition;
  const httpStatusNames = new Map<number, string>();
  for (const [name, number] of Object.entries(root.lookupEnum('envoy.type.v3.StatusCode').values)) if (number !== 0) httpStatusNames.set(number, name);
  const checkResponseFields = Object.freeze(
    [...root.lookupType('envoy.service.auth.v3.CheckResponse').fieldsArray].sort((a, b) => a.id - b.id).map((f) => f.name),
  );
  const source = inlined !== undefined ? 'inlined' : fromFile ? 'descriptor-file' : 'proto-files';
  loaded = { authorizationService, serverService, httpStatusNames, checkResponseFields, source, descriptor: json };
  return loaded;
}

/**
 * proto-loader's package definition of the ext_authz service (file descriptors included), for
 * server reflection only, built from the same JSON descriptor as everything else: no .proto file is
 * read. It holds the service and every type it reaches, which is what a client (grpcurl) needs to
 * call Check; a file per package, as proto-loader makes them from .proto files too.
 */
export async function loadReflectionPackageDefinition(): Promise<ProtoLoader.PackageDefinition> {
  const protoLoader = await import('@grpc/proto-loader');
  return protoLoader.fromJSON(loadExtAuthzProtos().descriptor as Protobuf.INamespace, PROTO_LOADER_OPTIONS);
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
  const Ctor = grpc.makeGenericClientConstructor(loadExtAuthzProtos().authorizationService, 'Authorization');
  return new Ctor(target, credentials) as unknown as AuthorizationClient;
}
