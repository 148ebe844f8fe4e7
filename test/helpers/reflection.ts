/**
 * A gRPC server-reflection client (grpc.reflection.v1, what grpcurl asks) for tests: lists services
 * and fetches the file descriptors that declare a symbol, and checks that those descriptors are
 * enough to call a method, as a client building requests from them needs.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type * as Protobuf from 'protobufjs';

const require = createRequire(import.meta.url);
const descriptorTypes = require('protobufjs/ext/descriptor') as { FileDescriptorProto: Protobuf.Type };

/** The parts of a decoded google.protobuf.FileDescriptorProto the checks read. */
export interface FileDescriptor {
  name: string;
  package?: string;
  messageType?: MessageDescriptor[];
  enumType?: { name: string }[];
  service?: { name: string; method?: { name: string; inputType: string; outputType: string }[] }[];
}
interface MessageDescriptor {
  name: string;
  field?: { name: string; typeName?: string }[];
  nestedType?: MessageDescriptor[];
  enumType?: { name: string }[];
}

/** A ServerReflectionResponse as proto-loader decodes it (keepCase, oneofs). */
interface ReflectionAnswer {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}
type ReflectionStream = grpc.ClientDuplexStream<Record<string, unknown>, ReflectionAnswer>;
type ReflectionPackage = { grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } } };

export interface ReflectionClient {
  /** `list_services`: the fully qualified names of the services the server reflects. */
  listServices(): Promise<string[]>;
  /** `file_containing_symbol`: the file that declares `symbol` and the files it depends on. */
  fileContainingSymbol(symbol: string): Promise<FileDescriptor[]>;
  close(): void;
}

/** A reflection client for `address`; each question goes on its own stream, with a 3 s deadline. */
export function reflectionClient(address: string): ReflectionClient {
  const proto = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto', 'grpc', 'reflection', 'v1', 'reflection.proto');
  const definition = protoLoader.loadSync(proto, { keepCase: true, oneofs: true, defaults: false });
  const Ctor = (grpc.loadPackageDefinition(definition) as unknown as ReflectionPackage).grpc.reflection.v1.ServerReflection;
  const client = new Ctor(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & { ServerReflectionInfo(options: grpc.CallOptions): ReflectionStream };
  const ask = (request: Record<string, unknown>): Promise<ReflectionAnswer> =>
    new Promise((resolve, reject) => {
      const call = client.ServerReflectionInfo({ deadline: Date.now() + 3000 });
      call.once('data', (answer: ReflectionAnswer) => {
        call.end();
        if (answer.error_response) reject(new Error(`reflection: ${answer.error_response.error_code} ${answer.error_response.error_message}`));
        else resolve(answer);
      });
      call.once('error', reject);
      call.write(request);
    });
  return {
    async listServices() {
      const answer = await ask({ list_services: '' });
      return (answer.list_services_response?.service ?? []).map((s) => s.name);
    },
    async fileContainingSymbol(symbol) {
      const answer = await ask({ file_containing_symbol: symbol });
      return decodeFileDescriptors(answer.file_descriptor_response?.file_descriptor_proto ?? []);
    },
    close: () => client.close(),
  };
}

/** Decodes google.protobuf.FileDescriptorProto bytes (what reflection sends, and proto-loader's `fileDescriptorProtos`). */
export function decodeFileDescriptors(files: readonly Uint8Array[]): FileDescriptor[] {
  return files.map((bytes) => descriptorTypes.FileDescriptorProto.toObject(descriptorTypes.FileDescriptorProto.decode(bytes), { arrays: false }) as FileDescriptor);
}

/** Every message, enum and service the files declare, by fully qualified name (empty option sets dropped). */
export function declaredSymbols(files: readonly FileDescriptor[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  const normal = (d: unknown): unknown => JSON.parse(JSON.stringify(d, (_k, v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0 ? undefined : v)));
  const message = (scope: string, m: MessageDescriptor) => {
    const name = `${scope}.${m.name}`;
    out.set(name, normal(m));
    for (const n of m.nestedType ?? []) message(name, n);
  };
  for (const f of files) {
    const pkg = f.package ?? '';
    for (const m of f.messageType ?? []) message(pkg, m);
    for (const e of f.enumType ?? []) out.set(`${pkg}.${e.name}`, normal(e));
    for (const s of f.service ?? []) out.set(`${pkg}.${s.name}`, normal(s));
  }
  return out;
}

/**
 * The message types `method` of `service` reaches that the descriptors in `files` do not declare,
 * resolving each type reference as protoc does (innermost scope outwards). Empty when a client can
 * build the method's requests and read its responses from these files alone.
 */
export function unresolvedTypes(files: readonly FileDescriptor[], service: string, method: string): string[] {
  const messages = new Map<string, MessageDescriptor>();
  const enums = new Set<string>();
  const add = (scope: string, m: MessageDescriptor) => {
    const name = scope ? `${scope}.${m.name}` : m.name;
    messages.set(name, m);
    for (const e of m.enumType ?? []) enums.add(`${name}.${e.name}`);
    for (const n of m.nestedType ?? []) add(name, n);
  };
  let target: { inputType: string; outputType: string; scope: string } | undefined;
  for (const f of files) {
    const pkg = f.package ?? '';
    for (const m of f.messageType ?? []) add(pkg, m);
    for (const e of f.enumType ?? []) enums.add(pkg ? `${pkg}.${e.name}` : e.name);
    for (const s of f.service ?? []) {
      const found = `${pkg ? `${pkg}.` : ''}${s.name}` === service ? s.method?.find((x) => x.name === method) : undefined;
      if (found) target = { ...found, scope: pkg };
    }
  }
  if (!target) return [`${service}.${method}`];
  const resolve = (ref: string, scope: string): string | undefined => {
    if (ref.startsWith('.')) return ref.slice(1);
    for (let s = scope; ; s = s.includes('.') ? s.slice(0, s.lastIndexOf('.')) : '') {
      const candidate = s ? `${s}.${ref}` : ref;
      if (messages.has(candidate) || enums.has(candidate)) return candidate;
      if (s === '') return undefined;
    }
  };
  const missing: string[] = [];
  const seen = new Set<string>();
  const visit = (ref: string, scope: string) => {
    const name = resolve(ref, scope);
    if (name === undefined) {
      missing.push(`${ref} (from ${scope})`);
      return;
    }
    if (seen.has(name) || enums.has(name)) return;
    seen.add(name);
    for (const f of messages.get(name)!.field ?? []) if (f.typeName) visit(f.typeName, name);
  };
  visit(target.inputType, target.scope);
  visit(target.outputType, target.scope);
  return missing;
}
