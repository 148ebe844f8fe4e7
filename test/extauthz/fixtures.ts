import { defaultApiOptions } from '../../src/pipeline/api-options.js';
import { memoryLogger } from '../helpers/logger.js';
/**
 * Fixtures for the ext_authz tests: a config with only what the gRPC server reads, fake validator
 * and acquirer that record what they were asked, Envoy-shaped CheckRequests (reference §1.2, modelled
 * on the shape OPA-Envoy captured from a real Envoy) and a "mini-Envoy" that applies a CheckResponse
 * the way ext_authz.cc does.
 */
import * as grpc from '@grpc/grpc-js';
import type { DownstreamApiOptions, ExtAuthzOptions, SidecarConfig } from '../../src/config/types.js';
import { SidecarError } from '../../src/errors.js';
import type { AcquiredToken, AcquireRequest, EffectiveApiOptions, TokenAcquirer, TokenValidator, ValidatedToken } from '../../src/pipeline/types.js';
import { startExtAuthzServer, type ExtAuthzServer } from '../../src/extauthz/server.js';
import { CHECK_PATH, createAuthorizationClient, loadExtAuthzProtos, type AuthorizationClient } from '../../src/extauthz/protos.js';

export const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
export const USER_OID = '00000000-0000-0000-0000-0000000000a1';
export const CLIENT_APP = '11111111-2222-3333-4444-555555555555';

/** A validated token the fake validator hands out for `token`. */
export function validatedToken(token: string, claims: Record<string, unknown> = {}): ValidatedToken {
  return {
    raw: token,
    jws: token,
    header: { alg: 'RS256', kid: 'k1' },
    claims: { tid: TENANT, oid: USER_OID, azp: CLIENT_APP, scp: 'access_as_user', ...claims },
    version: '2.0',
    tenantId: TENANT,
    expiresAt: Math.floor(Date.now() / 1000) + 3600,
  };
}

/**
 * Hands out tokens as the real validator does: a fresh, unfrozen object on a token's first request
 * (verified, not cached), then one deep-frozen object on every later request (cached).
 */
export class FakeValidator implements TokenValidator {
  readonly tokens = new Map<string, ValidatedToken>();
  private readonly seen = new Set<string>();
  isReady = true;
  /** When set, validate() waits this long (a slow JWKS fetch). */
  delayMs = 0;
  calls = 0;
  /** When true, cached() answers for tokens seen before (the real validator's synchronous warm path). */
  syncCache = false;

  add(token: string, claims: Record<string, unknown> = {}): string {
    const t = validatedToken(token, claims);
    this.tokens.set(token, Object.freeze({ ...t, header: Object.freeze(t.header), claims: Object.freeze(t.claims) }));
    this.seen.delete(token);
    return token;
  }
  async validate(compact: string): Promise<ValidatedToken> {
    this.calls++;
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const t = this.tokens.get(compact);
    if (!t) throw new SidecarError('token_signature_invalid');
    if (this.seen.has(compact)) return t;
    this.seen.add(compact);
    return { ...t, header: { ...t.header }, claims: { ...t.claims } };
  }
  cached(compact: string): ValidatedToken | undefined {
    return this.syncCache && this.seen.has(compact) ? this.tokens.get(compact) : undefined;
  }
  /** Only the cache is synchronous here; everything else goes through validate() (and its delay). */
  validateNow(compact: string): ValidatedToken | undefined {
    return this.cached(compact);
  }
  ready(): boolean {
    return this.isReady;
  }
  async start(): Promise<void> {}
  close(): void {}
}

export class FakeAcquirer implements TokenAcquirer {
  readonly requests: AcquireRequest[] = [];
  /** No warm path: every request goes through acquire(), which records it. */
  cached(): undefined {
    return undefined;
  }
  /** Makes acquire() wait until its signal aborts (a dependency that never answers). */
  hang = false;
  error: unknown;
  scheme = 'Bearer';
  abortedCount = 0;

  async acquire(req: AcquireRequest): Promise<AcquiredToken> {
    this.requests.push(req);
    if (this.hang) {
      await new Promise<void>((_resolve, reject) => {
        req.signal?.addEventListener('abort', () => {
          this.abortedCount++;
          reject(new SidecarError('dependency_timeout'));
        });
      });
    }
    if (this.error !== undefined) throw this.error;
    const who = req.agent ? `agent.${req.agent.agentIdentity}` : req.user ? (req.user.claims.oid as string) : 'app';
    return { scheme: this.scheme, token: `downstream.${req.options.apiName}.${who}`, expiresOn: Math.floor(Date.now() / 1000) + 3600 };
  }
  close(): void {}
}

function apiOptions(scopes: string[], requestAppToken = false): DownstreamApiOptions {
  return { ...defaultApiOptions(), baseUrl: 'https://graph.example.test/v1.0', scopes, requestAppToken };
}

export const DOWNSTREAM_APIS: Record<string, DownstreamApiOptions> = {
  graph: apiOptions(['https://graph.microsoft.com/.default']),
  'partner-api': apiOptions(['api://partner/.default'], true),
};

export function extAuthzOptions(overrides: Partial<ExtAuthzOptions> = {}): ExtAuthzOptions {
  return {
    enabled: true,
    address: { host: '127.0.0.1', port: 0 },
    validate: 'required',
    injectHeader: 'authorization',
    requiredScopes: [],
    requiredRoles: [],
    requireAll: false,
    claimsToHeaders: { 'x-entra-oid': 'oid', 'x-entra-roles': 'roles', 'x-entra-name': 'name' },
    stripInboundAuthorization: false,
    allowCorsPreflight: false,
    reflection: false,
    maxReceiveMessageBytes: 64 * 1024,
    maxBufferedRequestBytes: 32 * 1024 * 1024,
    requestReceiveTimeoutMs: 10_000,
    routes: [],
    ...overrides,
  };
}

/** Only the parts of SidecarConfig the ext_authz server reads; the lead's e2e tests use a loaded config. */
export function testConfig(options: ExtAuthzOptions): SidecarConfig {
  return { downstreamApis: DOWNSTREAM_APIS, sidecar: { extAuthz: options, outbound: { timeoutMs: 10_000 } } } as unknown as SidecarConfig;
}

export function resolveFromTable(apiName: string): EffectiveApiOptions | undefined {
  const o = Object.prototype.hasOwnProperty.call(DOWNSTREAM_APIS, apiName) ? DOWNSTREAM_APIS[apiName] : undefined;
  return o ? { ...o, apiName } : undefined;
}

/** A logger whose JSON lines are kept in memory (to assert that no token is ever logged). */
export { memoryLogger } from '../helpers/logger.js';

export interface Harness {
  server: ExtAuthzServer;
  client: AuthorizationClient;
  validator: FakeValidator;
  acquirer: FakeAcquirer;
  lines: string[];
  close(): Promise<void>;
}

/** Starts the real gRPC server on 127.0.0.1:0 with fakes behind it, plus a client built from the same protos. */
export async function startHarness(overrides: Partial<ExtAuthzOptions> = {}): Promise<Harness> {
  const validator = new FakeValidator();
  const acquirer = new FakeAcquirer();
  const { logger, lines } = memoryLogger();
  const server = await startExtAuthzServer({
    config: testConfig(extAuthzOptions(overrides)),
    validator,
    acquirer,
    resolveApiOptions: resolveFromTable,
    logger,
  });
  const client = createAuthorizationClient(`127.0.0.1:${server.port}`);
  return {
    server,
    client,
    validator,
    acquirer,
    lines,
    async close() {
      client.close();
      await server.close(1000);
    },
  };
}

export interface EnvoyRequestInit {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  contextExtensions?: Record<string, string>;
  /** `:authority` and `http.host` (default app.example.test). */
  host?: string;
  /** Send `header_map` with raw_value bytes instead of the `headers` map (encode_raw_headers: true). */
  raw?: boolean;
}

/** A CheckRequest shaped like the ones Envoy's HTTP ext_authz filter sends (reference §1.2). */
export function envoyCheckRequest(init: EnvoyRequestInit = {}): Record<string, unknown> {
  const method = init.method ?? 'GET';
  const path = init.path ?? '/api/items?page=2';
  const host = init.host ?? 'app.example.test';
  const headers: Record<string, string> = {
    ':authority': host,
    ':method': method,
    ':path': path,
    ':scheme': 'http',
    accept: '*/*',
    'user-agent': 'curl/8.5.0',
    'x-forwarded-proto': 'http',
    'x-request-id': '3c6e1b7e-3f2a-4a4e-9b51-6f7d1a2b9c0d',
    'x-envoy-internal': 'true',
    ...init.headers,
  };
  const http: Record<string, unknown> = {
    id: '13359530607844510314',
    method,
    path,
    host,
    scheme: 'http',
    size: '0',
    protocol: 'HTTP/1.1',
  };
  if (init.raw) {
    http.header_map = { headers: Object.entries(headers).map(([key, value]) => ({ key, raw_value: Buffer.from(value, 'latin1') })) };
  } else {
    http.headers = headers;
  }
  return {
    attributes: {
      source: { address: { socket_address: { address: '10.244.0.12', port_value: 53422 } } },
      destination: { address: { socket_address: { address: '10.244.0.7', port_value: 8080 } } },
      request: { time: { seconds: '1767225600', nanos: 123000000 }, http },
      ...(init.contextExtensions ? { context_extensions: init.contextExtensions } : {}),
    },
  };
}

export type CheckResult = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * Default Check deadline where a test is not about deadlines: generous, so a cold path (JWKS fetch,
 * OBO against the emulator) on a loaded CI machine is not cut short. Deadline tests pass their own.
 */
export const DEFAULT_CHECK_DEADLINE_MS = 10_000;

/** Calls Check with a deadline (as Envoy's grpc-timeout does) and resolves the decoded CheckResponse. */
export function check(client: AuthorizationClient, request: object, timeoutMs = DEFAULT_CHECK_DEADLINE_MS): Promise<CheckResult> {
  return new Promise((resolve, reject) => {
    client.Check(request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, response) => (err ? reject(err) : resolve(response as CheckResult)));
  });
}

/**
 * Sends `bytes` as the CheckRequest as they are (no encoding); the answer is a failed RPC or a
 * decoded CheckResponse with the bytes it was decoded from.
 */
export type RawCheck = (bytes: Buffer) => Promise<{ err?: grpc.ServiceError; res?: CheckResult; bytes?: Buffer }>;

/**
 * A Check caller that sends any bytes as the request message, as a buggy or hostile peer could.
 * `options` are grpc-js channel options (`grpc.use_local_subchannel_pool: 1` gives the client a
 * connection of its own instead of the one every client of that address shares).
 */
export function rawCheckClient(address: string, options: grpc.ChannelOptions = {}): { send: RawCheck; ready(timeoutMs: number): Promise<void>; close(): void } {
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), options);
  const { responseDeserialize } = loadExtAuthzProtos().authorizationService.Check;
  return {
    send: (bytes) =>
      new Promise((resolve) => {
        client.makeUnaryRequest(CHECK_PATH, (b: Buffer) => b, (b: Buffer) => b, bytes, new grpc.Metadata(), { deadline: Date.now() + DEFAULT_CHECK_DEADLINE_MS }, (err, res) => {
          resolve(err ? { err } : { res: responseDeserialize(res as Buffer) as CheckResult, bytes: res as Buffer });
        });
      }),
    ready: (timeoutMs) => new Promise((resolve, reject) => client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()))),
    close: () => client.close(),
  };
}

/** `name → value` of a HeaderValueOption list. */
export function headerMap(options: Array<{ header: { key: string; value: string } }> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const o of options ?? []) out[o.header.key] = o.header.value;
  return out;
}

/**
 * Applies an OK CheckResponse to request headers the way Envoy's ext_authz filter does
 * (ext_authz.cc onComplete): header sets first, then headers_to_remove, pseudo-headers and host
 * never removed.
 */
export function applyOkResponse(request: Record<string, string>, response: CheckResult): Record<string, string> {
  const out = { ...request };
  const ok = response.ok_response;
  for (const o of ok?.headers ?? []) {
    if (o.append_action !== 'OVERWRITE_IF_EXISTS_OR_ADD') throw new Error(`header ${o.header.key} has append_action ${o.append_action}`);
    out[o.header.key] = o.header.value;
  }
  for (const name of ok?.headers_to_remove ?? []) {
    if (name.startsWith(':') || name === 'host') continue;
    delete out[name];
  }
  return out;
}
