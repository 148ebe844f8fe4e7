/**
 * The fuzz campaign (issue 9), shared by the bounded CI run (fuzz.test.ts) and `npm run fuzz`
 * (scripts/fuzz.ts, more runs). Targets the BUILT sidecar's /Validate, /AuthorizationHeader and
 * ext_authz Check (object and raw protobuf), plus loadConfig in-process. Properties: never a crash,
 * never a 5xx where a 4xx is defined, never an allow for an invalid token, never CR/LF/NUL in a
 * CheckResponse header, bounded time per input.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { loadConfig } from '../../src/config/load.js';
import { loadExtAuthzProtos } from '../../src/extauthz/protos.js';
import { CONTEXT_EXTENSION_KEYS } from '../../src/extauthz/policy.js';
import { ERROR_TABLE } from '../../src/errors.js';
import { call } from '../helpers/e2e.js';
import { assertAlive, checkWith, eventually, startStack, type Stack } from '../faults/harness.js';
import { check, rawCheckClient, type CheckResult } from '../extauthz/fixtures.js';

export interface CampaignOptions {
  /** Runs per property; the CI test uses a small number, `npm run fuzz` a large one. */
  readonly runs: number;
  readonly seed?: number;
  /** Upper bound on the wall time of one input (ms). */
  readonly perInputMs?: number;
  readonly log?: (line: string) => void;
}

export interface CampaignResult {
  /** Inputs run per property. */
  readonly cases: Record<string, number>;
  readonly total: number;
  /** Slowest single input per property (ms). */
  readonly slowestMs: Record<string, number>;
  readonly seed: number;
  /** Every log line the sidecar wrote (the caller checks them for secrets). */
  readonly sidecarLines: readonly string[];
  readonly tokens: readonly string[];
}

const BAD_HEADER_VALUE = /[\r\n\0]/;
const CODES = new Set(Object.keys(ERROR_TABLE));
/** The 5xx codes the error table defines for conditions a caller can cause through overrides (Microsoft answers 500 too). */
const DEFINED_5XX = new Set(['misconfigured', 'acquisition_unavailable', 'dependency_timeout', 'downstream_unavailable']);

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64url');

/** Throws with `what` unless `ok`. */
function require(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

/** Every header value in a CheckResponse must be a legal header value. */
function assertCleanHeaders(res: CheckResult): void {
  const lists = [res.ok_response?.headers, res.denied_response?.headers];
  for (const list of lists) {
    for (const o of (list ?? []) as Array<{ header: { key: string; value: string } }>) {
      require(!BAD_HEADER_VALUE.test(o.header.value) && !BAD_HEADER_VALUE.test(o.header.key), `CR/LF/NUL in CheckResponse header ${JSON.stringify(o.header.key)}`);
    }
  }
}

function denyCode(res: CheckResult): string | undefined {
  if ((res.status?.code ?? 0) === 0) return undefined;
  return (JSON.parse(res.denied_response.body) as { code: string }).code;
}

/** The token mutations: header, payload and signature corruption, structure, size, types, unicode, nesting. */
function tokenMutations(base: string): fc.Arbitrary<string> {
  const [h, p, s] = base.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>;
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
  const claimNames = [...Object.keys(payload), 'exp', 'nbf', 'aud', 'iss', 'tid', 'scp', 'roles', 'ver'];
  const weird = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant(null), fc.double(), fc.string({ unit: 'grapheme' }), fc.constant(Number.MAX_SAFE_INTEGER * 1000));
  return fc.oneof(
    // Header replaced or edited.
    fc
      .record(
        {
          alg: fc.oneof(fc.constantFrom('RS256', 'none', 'None', 'HS256', 'ES256', 'PS256', 'RS1', '', 'rs256'), fc.string(), fc.integer()),
          kid: fc.oneof(fc.constant(header.kid), fc.string(), fc.integer(), fc.constant(null)),
          typ: fc.oneof(fc.constant('JWT'), fc.string()),
          crit: fc.array(fc.string(), { maxLength: 2 }),
          jku: fc.webUrl(),
          jwk: fc.jsonValue({ maxDepth: 2 }),
          enc: fc.constantFrom('A256GCM', 'A256CBC-HS512'),
        },
        { requiredKeys: [] },
      )
      .map((hdr) => `${b64(JSON.stringify({ ...header, ...hdr }))}.${p}.${s}`),
    // One claim given a wrong type or value.
    fc.tuple(fc.constantFrom(...claimNames), weird).map(([k, v]) => `${h}.${b64(JSON.stringify({ ...payload, [k]: v }))}.${s}`),
    // A huge claim.
    fc.integer({ min: 1_000, max: 40_000 }).map((n) => `${h}.${b64(JSON.stringify({ ...payload, huge: 'x'.repeat(n) }))}.${s}`),
    // Duplicate keys: the forged value first, the signed one last (and the reverse).
    fc.constantFrom('aud', 'iss', 'tid', 'exp').chain((k) =>
      fc.boolean().map((forgedLast) => {
        const body = JSON.stringify(payload).slice(1, -1);
        const forged = `"${k}":"forged"`;
        return `${h}.${b64(forgedLast ? `{${body},${forged}}` : `{${forged},${body}}`)}.${s}`;
      }),
    ),
    // Deeply nested JSON in a claim, or as the whole payload.
    fc.integer({ min: 10, max: 6_000 }).map((n) => `${h}.${b64(`{"deep":${'['.repeat(n)}${']'.repeat(n)}}`)}.${s}`),
    fc.integer({ min: 10, max: 6_000 }).map((n) => `${h}.${b64('['.repeat(n) + ']'.repeat(n))}.${s}`),
    // Unicode, lone surrogates and control characters inside the JSON text.
    fc.string({ unit: 'binary' }).map((u) => `${h}.${b64(JSON.stringify({ ...payload, name: u }).replace('"name":"', '"name":"\\ud800'))}.${s}`),
    // Payload bytes that are not UTF-8 or not JSON.
    fc.uint8Array({ maxLength: 200 }).map((bytes) => `${h}.${b64(Buffer.from(bytes))}.${s}`),
    // Signature corruption: flip, truncate, extend, replace, remove.
    fc.nat().map((i) => {
      const at = i % s.length;
      const c = s[at] === 'A' ? 'B' : 'A';
      return `${h}.${p}.${s.slice(0, at)}${c}${s.slice(at + 1)}`;
    }),
    fc.nat().map((i) => `${h}.${p}.${s.slice(0, i % s.length)}`),
    fc.stringMatching(/^[A-Za-z0-9_-]{0,400}$/).map((sig) => `${h}.${p}.${sig}`),
    fc.constant(`${h}.${p}.`),
    fc.constant(`${h}.${p}`),
    // Structure: segment count, separators, JWE-shaped, alphabet.
    fc.array(fc.stringMatching(/^[A-Za-z0-9_=+/-]{0,60}$/), { minLength: 1, maxLength: 7 }).map((parts) => parts.join('.')),
    fc.string({ minLength: 1, maxLength: 300, unit: fc.constantFrom(...'abcXYZ019-_.=+/ \t!"~'.split('')) }),
  );
}

/** True when `candidate` carries the same signed content as `base` (base64url has non-canonical spellings of the last signature char). */
function sameSignedContent(candidate: string, base: string): boolean {
  const a = candidate.split('.');
  const b = base.split('.');
  if (a.length !== 3 || a[0] !== b[0] || a[1] !== b[1]) return false;
  return Buffer.from(a[2], 'base64url').equals(Buffer.from(b[2], 'base64url'));
}

const HEADER_SAFE = /^[\x20-\x7e]*$/;

/** A CheckRequest in proto-loader object form with any field missing or odd. */
function checkRequests(): fc.Arbitrary<{ req: Record<string, unknown>; mayAllow: boolean }> {
  const u = undefined;
  const value = fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom('required', 'optional', 'none', 'true', 'false', 'orders', 'authorization', ''));
  const ext = fc.dictionary(fc.oneof(fc.constantFrom(...CONTEXT_EXTENSION_KEYS), fc.string({ maxLength: 20 })), value, { maxKeys: 4 });
  const headers = fc.dictionary(fc.oneof(fc.constantFrom('authorization', ':method', ':path', 'origin', 'access-control-request-method', 'x-request-id'), fc.string({ maxLength: 30 })), fc.string({ maxLength: 120, unit: 'binary' }), { maxKeys: 20 });
  const headerMap = fc.array(
    fc.record({ key: fc.string({ maxLength: 30 }), value: fc.option(fc.string({ maxLength: 60 }), { nil: u }), raw_value: fc.option(fc.uint8Array({ maxLength: 80 }), { nil: u }) }, { requiredKeys: ['key'] }),
    { maxLength: 20 },
  );
  const http = fc.record(
    {
      method: fc.oneof(fc.constantFrom('GET', 'POST', 'OPTIONS', ''), fc.string({ maxLength: 10 })),
      path: fc.string({ maxLength: 200, unit: 'binary' }),
      host: fc.string({ maxLength: 40 }),
      headers,
      header_map: headerMap.map((hs) => ({ headers: hs })),
    },
    { requiredKeys: [] },
  );
  const huge = fc.integer({ min: 500, max: 6_000 }).map((n) => {
    const hs: Record<string, string> = {};
    for (let i = 0; i < n; i++) hs[`x-h-${i}`] = 'v'.repeat(100);
    return hs;
  });
  return fc
    .record(
      {
        attributes: fc.record(
          {
            request: fc.record({ http: fc.oneof(http, huge.map((hs) => ({ method: 'GET', path: '/', headers: hs }))) }, { requiredKeys: [] }),
            context_extensions: ext,
          },
          { requiredKeys: [] },
        ),
      },
      { requiredKeys: [] },
    )
    .map((req) => {
      // An allow is legitimate only where the policy asks for no token (or a CORS preflight).
      const ce = (req.attributes?.context_extensions ?? {}) as Record<string, string>;
      const mayAllow = ce.validate === 'none' || ce.validate === 'optional' || ((req.attributes?.request?.http as { method?: string } | undefined)?.method ?? '') === 'OPTIONS' || Object.keys(req.attributes?.request?.http ?? {}).includes('header_map');
      return { req: req as Record<string, unknown>, mayAllow };
    });
}

/** Appends protobuf fields with numbers the schema does not define. */
function unknownFields(): fc.Arbitrary<Buffer> {
  const varint = (n: number): number[] => {
    const out: number[] = [];
    let v = n >>> 0;
    while (v > 0x7f) {
      out.push((v & 0x7f) | 0x80);
      v >>>= 7;
    }
    out.push(v);
    return out;
  };
  const field = fc.tuple(fc.integer({ min: 100, max: 536_870_911 }), fc.constantFrom(0, 1, 2, 5), fc.uint8Array({ maxLength: 40 })).map(([num, wire, data]) => {
    const key = varint(num * 8 + wire);
    switch (wire) {
      case 0:
        return Buffer.from([...key, ...varint(data.length * 977 + 1)]);
      case 1:
        return Buffer.from([...key, ...Buffer.alloc(8, data[0] ?? 1)]);
      case 5:
        return Buffer.from([...key, ...Buffer.alloc(4, data[0] ?? 1)]);
      default:
        return Buffer.from([...key, ...varint(data.length), ...data]);
    }
  });
  return fc.array(field, { minLength: 1, maxLength: 6 }).map((fs) => Buffer.concat(fs));
}

/** Starts the sidecar the campaign runs against (claims mapped to headers, a few downstream APIs). */
export async function startFuzzTarget(): Promise<Stack> {
  const stack = await startStack({
    DownstreamApis__orders__Scopes__0: 'api://downstream/read',
    DownstreamApis__app__Scopes__0: 'api://downstream/.default',
    DownstreamApis__app__RequestAppToken: 'true',
    'Sidecar__ExtAuthz__ClaimsToHeaders__x-entra-name': 'name',
    'Sidecar__ExtAuthz__ClaimsToHeaders__x-entra-roles': 'roles',
    'Sidecar__ExtAuthz__ClaimsToHeaders__x-entra-oid': 'oid',
    Sidecar__LogLevel: 'warn',
  });
  if (!(await eventually(async () => (await call(`${stack.management}/readyz`)).status === 200, 15_000))) {
    await stack.close();
    throw new Error('the fuzz stack never became ready (/readyz)');
  }
  return stack;
}

/** Runs every property against `stack` (see the module comment). Throws on the first counterexample. */
export async function runCampaign(stack: Stack, opts: CampaignOptions): Promise<CampaignResult> {
  const seed = opts.seed ?? (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
  const perInputMs = opts.perInputMs ?? 3_000;
  const log = opts.log ?? (() => {});
  const cases: Record<string, number> = {};
  const slowestMs: Record<string, number> = {};
  const url = stack.sidecar.url;
  const base = await stack.emu.mint({ kind: 'user', scp: 'access_as_user' });
  stack.tokens.push(base);
  const raw = rawCheckClient(`127.0.0.1:${stack.sidecar.listening.extAuthz!.port}`);

  async function property<T>(name: string, arb: fc.Arbitrary<T>, body: (input: T) => Promise<void>, runs = opts.runs): Promise<void> {
    cases[name] = 0;
    slowestMs[name] = 0;
    await fc.assert(
      fc.asyncProperty(arb, async (input) => {
        const t0 = performance.now();
        await body(input);
        const ms = performance.now() - t0;
        cases[name]++;
        if (ms > slowestMs[name]) slowestMs[name] = ms;
        require(ms < perInputMs, `input took ${Math.round(ms)} ms (bound ${perInputMs} ms)`);
      }),
      { numRuns: runs, seed, endOnFailure: true },
    );
    log(`${name}: ${cases[name]} cases, slowest ${Math.round(slowestMs[name])} ms`);
  }

  try {
    await property('mutated JWT → /Validate', tokenMutations(base).filter((t) => HEADER_SAFE.test(t)), async (token) => {
      const r = await call(`${url}/Validate`, { token });
      if (r.status === 200) require(sameSignedContent(token, base), 'an altered token was accepted by /Validate');
      else require(r.status === 401 || r.status === 431, `/Validate answered ${r.status} ${r.text.slice(0, 200)}`);
    });

    await property('mutated JWT → ext_authz Check', tokenMutations(base), async (token) => {
      const res = await checkWith(stack, { headers: { authorization: `Bearer ${token}` } });
      assertCleanHeaders(res);
      const code = denyCode(res);
      if (code === undefined) require(sameSignedContent(token, base), 'an altered token was allowed by Check');
      else require(/^(token_|credential_)/.test(code) && res.status.code === 16, `Check denied with ${code} / ${res.status.code}`);
    });

    await property('random CheckRequest (object)', checkRequests(), async ({ req, mayAllow }) => {
      let res: CheckResult;
      try {
        res = await check(stack.client, req, 5_000);
      } catch (err) {
        // Only a message over grpc-js's own 16 MiB may fail the RPC (one over MaxReceiveMessageBytes is denied).
        require((err as grpc.ServiceError).code === grpc.status.RESOURCE_EXHAUSTED, `Check RPC failed: ${(err as Error).message}`);
        return;
      }
      assertCleanHeaders(res);
      const code = denyCode(res);
      if (code === undefined) require(mayAllow, 'a random request without a valid token was allowed');
      else require(CODES.has(code) && code !== 'internal', `deny code ${code}`);
    });

    const { requestSerialize } = loadExtAuthzProtos().authorizationService.Check;
    await property(
      'raw protobuf with unknown fields / invalid UTF-8',
      fc.tuple(fc.constantFrom('unknown', 'utf8', 'garbage'), unknownFields(), fc.uint8Array({ minLength: 1, maxLength: 300 }), tokenMutations(base)),
      async ([mode, extra, garbage, token]) => {
        const marker = '\u0001'.repeat(8);
        const obj = { attributes: { request: { http: { method: 'GET', path: '/', headers: { authorization: `Bearer ${token}`, 'x-raw': marker } } } } };
        let buf = requestSerialize(obj) as Buffer;
        if (mode === 'utf8') {
          const at = buf.indexOf(Buffer.from(marker));
          buf = Buffer.from(buf);
          Buffer.from([0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80, 0xf8]).copy(buf, at);
        }
        const payload = mode === 'garbage' ? Buffer.from(garbage) : Buffer.concat([buf, extra]);
        const { err, res } = await raw.send(payload);
        // Not even undecodable bytes fail the RPC: Envoy would read that as an error (failure_mode_allow).
        require(err === undefined, `Check RPC failed (${mode}): ${err?.message}`);
        assertCleanHeaders(res!);
        const code = denyCode(res!);
        if (code === undefined) require(mode !== 'garbage' && sameSignedContent(token, base), 'an invalid raw request was allowed');
        else require(CODES.has(code) && code !== 'internal', `deny code ${code}`);
      },
    );

    const overrideKeys = [
      'Scopes', 'RequestAppToken', 'RelativePath', 'HttpMethod', 'BaseUrl', 'AcceptHeader', 'ContentType',
      'AcquireTokenOptions.Tenant', 'AcquireTokenOptions.ForceRefresh', 'AcquireTokenOptions.Claims', 'AcquireTokenOptions.CorrelationId',
      'AcquireTokenOptions.FmiPath', 'AcquireTokenOptions.LongRunningWebApiSessionKey', 'AcquireTokenOptions.PopPublicKey',
      'AcquireTokenOptions.ManagedIdentity.UserAssignedClientId', 'ExtraHeaderParameters.X-A', 'ExtraQueryParameters.q',
    ].map((k) => `optionsOverride.${k}`);
    const paramKey = fc.oneof(fc.constantFrom(...overrideKeys, 'AgentIdentity', 'AgentUsername', 'AgentUserId', 'agentidentity'), fc.string({ maxLength: 30 }));
    const paramValue = fc.oneof(
      fc.string({ maxLength: 80, unit: 'binary' }),
      fc.constantFrom('true', 'false', 'api://downstream/.default', 'api://downstream/read', 'common', '00000000-0000-0000-0000-000000000000', '{"access_token":{}}', '../../x', '//evil.example/', 'https://evil.example/'),
    );
    await property(
      'optionsOverride.* and agent parameters → /AuthorizationHeader',
      fc.tuple(fc.constantFrom('orders', 'app', 'unknown-api'), fc.array(fc.tuple(paramKey, paramValue), { maxLength: 6 })),
      async ([api, params]) => {
        const q = new URLSearchParams(params).toString();
        const r = await call(`${url}/AuthorizationHeader/${api}?${q}`, { token: base });
        let code: string | undefined;
        try {
          code = r.text ? (JSON.parse(r.text) as { code?: string }).code : undefined;
        } catch {
          code = undefined;
        }
        if (r.status >= 500) require(code !== undefined && DEFINED_5XX.has(code), `${r.status} ${code ?? r.text.slice(0, 200)} for ?${q.slice(0, 300)}`);
        else require([200, 400, 401, 403, 404, 414, 431].includes(r.status), `status ${r.status} for ?${q.slice(0, 300)}`);
        if (r.status === 200) stack.tokens.push((JSON.parse(r.text) as { authorizationHeader: string }).authorizationHeader.split(' ')[1] ?? '');
      },
      Math.max(10, Math.floor(opts.runs / 2)),
    );

    await property(
      'valid token with hostile claim values → allow without CR/LF/NUL in headers',
      fc.tuple(fc.string({ maxLength: 200, unit: 'binary' }), fc.array(fc.oneof(fc.string({ unit: 'binary' }), fc.integer(), fc.jsonValue({ maxDepth: 1 })), { maxLength: 4 })),
      async ([name, roles]) => {
        const token = await stack.emu.mint({ kind: 'user', scp: 'access_as_user', claims: { name, roles } });
        stack.tokens.push(token);
        const res = await checkWith(stack, { headers: { authorization: `Bearer ${token}` } });
        assertCleanHeaders(res);
        require(denyCode(res) === undefined, `a valid token was denied: ${res.denied_response?.body}`);
      },
      Math.max(10, Math.floor(opts.runs / 2)),
    );

    const cwd = mkdtempSync(path.join(tmpdir(), 'rel-fuzz-cfg-'));
    try {
      const knownKeys = [
        'AzureAd__Instance', 'AzureAd__TenantId', 'AzureAd__ClientId', 'AzureAd__Authority', 'AzureAd__Audience', 'AzureAd__Scopes',
        'AzureAd__ClientCredentials__0__SourceType', 'AzureAd__ClientCredentials__0__ClientSecret', 'AzureAd__ClientCredentials__1__CertificateDiskPath',
        'AzureAd__TokenValidationParameters__ValidAudiences__0', 'AzureAd__TokenValidationParameters__ValidIssuers', 'DownstreamApis__a__BaseUrl',
        'DownstreamApis__a__Scopes__0', 'DownstreamApis__a__Scopes', 'DownstreamApis__a__HttpMethod', 'DownstreamApis__a__RequestAppToken',
        'Sidecar__Http__Url', 'Sidecar__Http__MaxHeaderBytes', 'Sidecar__ExtAuthz__Address', 'Sidecar__ExtAuthz__Validate', 'Sidecar__Outbound__TimeoutMs',
        'Sidecar__Validation__ClockSkewSec', 'Sidecar__LogLevel', 'Sidecar__PopValidation__SignedHttpRequestLifetime', 'Sidecar__SettingsFile',
        'ASPNETCORE_URLS', 'ASPNETCORE_HTTP_PORTS', 'ASPNETCORE_ENVIRONMENT', 'Kestrel__Endpoints__Http__Url', 'Logging__LogLevel__Default',
        'Sidecar__ExtAuthz__ClaimsToHeaders__x-a', 'DownstreamApis____Scopes__0', 'AzureAd__ClientCredentials__x__SourceType',
      ];
      const SECRET = 'S3cr3t-marker-' + 'q'.repeat(12);
      await property(
        'random configuration → loadConfig never throws, never echoes a secret',
        fc.tuple(
          fc.dictionary(fc.oneof(fc.constantFrom(...knownKeys), fc.string({ maxLength: 40 })), fc.oneof(fc.string({ maxLength: 60, unit: 'binary' }), fc.constantFrom('0', '-1', '1e309', 'true', 'ClientSecret', 'http://127.0.0.1:0', '[]', '{}', '00:00:00')), { maxKeys: 12 }),
          fc.array(fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('--AzureAd:ClientId=x', '--Sidecar:Http:Url', '/A:B=c', '--environment', 'Development')), { maxLength: 4 }),
        ),
        async ([env, argv]) => {
          const withSecret = { ...env, AzureAd__ClientCredentials__0__ClientSecret: SECRET, AzureAd__ClientSecret: SECRET };
          let result: ReturnType<typeof loadConfig>;
          try {
            result = loadConfig({ env: withSecret, argv, cwd });
          } catch (err) {
            throw new Error(`loadConfig threw ${(err as Error).name}: ${(err as Error).message}`);
          }
          const messages = result.ok ? result.warnings : result.errors;
          require(Array.isArray(messages) && messages.every((m) => typeof m === 'string'), 'loadConfig messages are not strings');
          require(!messages.some((m) => m.includes(SECRET)), 'a configuration message contains the client secret');
        },
        opts.runs * 2,
      );
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  } finally {
    raw.close();
  }
  await assertAlive(stack);
  const total = Object.values(cases).reduce((a, b) => a + b, 0);
  return { cases, total, slowestMs, seed, sidecarLines: stack.sidecar.lines, tokens: stack.tokens };
}
