/**
 * The ext_authz protos the server runs on come from a pruned descriptor written by `npm run build`
 * (src/extauthz/build-descriptor.ts). These tests keep that file honest: it is what the server
 * loads, it equals a fresh build from @grpc/grpc-js-xds's .proto tree, and it encodes and decodes
 * Envoy's messages byte for byte as @grpc/proto-loader does from the full tree.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import * as protoLoader from '@grpc/proto-loader';
import {
  AUTHORIZATION_SERVICE,
  CHECK_REQUEST_FIELDS_READ,
  DESCRIPTOR_FILE,
  EXT_AUTHZ_PROTO,
  PROTO_LOADER_OPTIONS,
  buildExtAuthzDescriptor,
  envoyProtoIncludeDirs,
  loadExtAuthzProtos,
  loadReflectionPackageDefinition,
} from '../../src/extauthz/protos.js';
import { declaredSymbols, decodeFileDescriptors, unresolvedTypes } from '../helpers/reflection.js';
import { envoyCheckRequest } from './fixtures.js';

type Method = protoLoader.MethodDefinition<object, object>;

const full = protoLoader.loadSync(EXT_AUTHZ_PROTO, { ...PROTO_LOADER_OPTIONS, includeDirs: envoyProtoIncludeDirs() });
const fullCheck = (full[AUTHORIZATION_SERVICE] as protoLoader.ServiceDefinition).Check as Method;

const requests: Array<[string, object]> = [
  ['plain headers', envoyCheckRequest({ headers: { authorization: 'Bearer abc.def.ghi' }, contextExtensions: { downstream_api: 'graph' } })],
  ['raw header_map', envoyCheckRequest({ raw: true, headers: { authorization: 'Bearer abc.def.ghi' } })],
  [
    'every attribute Envoy fills',
    {
      attributes: {
        source: {
          address: { socket_address: { address: '10.0.0.1', port_value: 1234, protocol: 'TCP' } },
          service: 'frontend',
          principal: 'spiffe://cluster.local/ns/default/sa/frontend',
          certificate: '-----BEGIN CERTIFICATE-----',
          labels: { app: 'frontend' },
        },
        destination: { address: { pipe: { path: '/run/app.sock', mode: 384 } }, principal: 'spiffe://x' },
        request: {
          time: { seconds: '1767225600', nanos: 5 },
          http: { id: '1', method: 'POST', headers: { 'content-type': 'application/json' }, path: '/a?b=c', host: 'h', scheme: 'https', query: '', fragment: '', size: '12', protocol: 'HTTP/2', body: '{"a":1}', raw_body: Buffer.from([0, 1, 2, 255]) },
        },
        context_extensions: { downstream_api: 'graph', policy: 'optional' },
        metadata_context: {
          filter_metadata: { 'envoy.filters.http.jwt_authn': { fields: { sub: { stringValue: 'x' }, n: { numberValue: 1.5 }, ok: { boolValue: true }, l: { listValue: { values: [{ nullValue: 'NULL_VALUE' }] } } } } },
        },
        route_metadata_context: { filter_metadata: { r: { fields: { k: { stringValue: 'v' } } } } },
        tls_session: { sni: 'app.example.test' },
      },
    },
  ],
];

const responses: Array<[string, object]> = [
  [
    'allow with headers',
    {
      status: { code: 0 },
      ok_response: {
        headers: [{ header: { key: 'authorization', value: 'Bearer x' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }, { header: { key: 'x-a', value: '1' }, append: { value: false } }],
        headers_to_remove: ['x-user-claims', 'cookie'],
        response_headers_to_add: [{ header: { key: 'x-b', value: '2' } }],
        query_parameters_to_set: [{ key: 'q', value: 'v' }],
        query_parameters_to_remove: ['token'],
      },
      dynamic_metadata: { fields: { oid: { stringValue: 'abc' } } },
    },
  ],
  [
    'deny',
    {
      status: { code: 16, message: 'token_expired' },
      denied_response: {
        status: { code: 'Unauthorized' },
        headers: [{ header: { key: 'www-authenticate', value: 'Bearer error="invalid_token"' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
        body: '{"code":"token_expired"}',
      },
    },
  ],
];

describe('ext_authz protos (build-time descriptor)', () => {
  it('are loaded from the descriptor file npm run build wrote, not by parsing .proto files', () => {
    expect(loadExtAuthzProtos().source).to.equal('descriptor-file');
  });

  it('the descriptor file equals one built now from @grpc/grpc-js-xds (not stale, not edited)', () => {
    expect(JSON.parse(readFileSync(DESCRIPTOR_FILE, 'utf8'))).to.deep.equal(JSON.parse(JSON.stringify(buildExtAuthzDescriptor())));
  });

  it('gives server reflection, from the same descriptor, what proto-loader builds from the .proto tree for the service and every type it reaches', async () => {
    // Reflection used to parse the tree at start (and so needed @grpc/grpc-js-xds in production).
    const fileDescriptors = (def: protoLoader.PackageDefinition) =>
      decodeFileDescriptors((Object.values(def).find((d) => 'fileDescriptorProtos' in d) as { fileDescriptorProtos: Buffer[] }).fileDescriptorProtos);
    const servedFiles = fileDescriptors(await loadReflectionPackageDefinition());
    const served = declaredSymbols(servedFiles);
    const fromTree = declaredSymbols(fileDescriptors(full));
    expect(served.has(AUTHORIZATION_SERVICE)).to.equal(true);
    for (const [name, descriptor] of served) expect(descriptor, name).to.deep.equal(fromTree.get(name));
    expect(unresolvedTypes(servedFiles, AUTHORIZATION_SERVICE, 'Check')).to.deep.equal([]);
  });

  it('names every envoy.type.v3.StatusCode as proto-loader does', () => {
    const values = ((full['envoy.type.v3.StatusCode'] as protoLoader.EnumTypeDefinition).type as { value: Array<{ name: string; number: number }> }).value;
    const expected = new Map(values.filter((v) => v.number !== 0).map((v) => [v.number, v.name]));
    expect([...loadExtAuthzProtos().httpStatusNames]).to.deep.equal([...expected]);
  });

  const ours = loadExtAuthzProtos().authorizationService.Check;
  for (const [name, request] of requests) {
    it(`CheckRequest (${name}): same bytes and same decoded object as proto-loader from the full tree`, () => {
      const bytes = ours.requestSerialize(request);
      expect(bytes.length).to.be.greaterThan(0);
      expect(Buffer.compare(bytes, fullCheck.requestSerialize(request))).to.equal(0);
      expect(ours.requestDeserialize(bytes)).to.deep.equal(fullCheck.requestDeserialize(bytes));
    });
  }
  for (const [name, response] of responses) {
    it(`CheckResponse (${name}): same bytes and same decoded object as proto-loader from the full tree`, () => {
      const bytes = ours.responseSerialize(response);
      expect(Buffer.compare(bytes, fullCheck.responseSerialize(response))).to.equal(0);
      const decoded = ours.responseDeserialize(bytes);
      expect(decoded).to.deep.equal(fullCheck.responseDeserialize(bytes));
      expect(decoded).to.have.nested.property('status.code');
    });
  }

  /** The full decoding cut down to CHECK_REQUEST_FIELDS_READ (what the server's view must produce). */
  function projected(full: Record<string, unknown>): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const a = full.attributes as Record<string, unknown> | undefined;
    if (a === undefined) return out;
    const attributes: Record<string, unknown> = {};
    if (a.context_extensions !== undefined) attributes.context_extensions = a.context_extensions;
    const http = (a.request as Record<string, unknown> | undefined)?.http as Record<string, unknown> | undefined;
    if (a.request !== undefined) attributes.request = {};
    if (http !== undefined) {
      const h: Record<string, unknown> = {};
      for (const f of CHECK_REQUEST_FIELDS_READ['envoy.service.auth.v3.AttributeContext.HttpRequest']) if (http[f] !== undefined) h[f] = http[f];
      (attributes.request as Record<string, unknown>).http = h;
    }
    out.attributes = attributes;
    return out;
  }

  const server = loadExtAuthzProtos().serverService.Check;
  for (const [name, request] of requests) {
    it(`the server decodes a CheckRequest (${name}) to exactly the fields the checker reads`, () => {
      const bytes = fullCheck.requestSerialize(request);
      const viewed = server.requestDeserialize(bytes) as Record<string, unknown>;
      expect(viewed).to.deep.equal(projected(fullCheck.requestDeserialize(bytes) as Record<string, unknown>));
      expect(viewed).to.have.nested.property('attributes.request.http.path');
    });
  }

  it('the server view keeps the client side of Check unchanged', () => {
    expect(server.requestSerialize).to.equal(ours.requestSerialize);
    expect(server.responseSerialize).to.equal(ours.responseSerialize);
  });

  it('refuses an array where a message belongs, as proto-loader does', () => {
    expect(() => ours.responseSerialize([] as unknown as object)).to.throw(/expected object/);
  });
});
