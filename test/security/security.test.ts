/**
 * Security checks through the built sidecar (issue 9): no override or header moves a downstream call
 * off the configured origin (SSRF); redirects to another origin never carry the token; the
 * AllowOverrides gates hold on every route; concurrent requests never see each other's identity or
 * overrides; nothing secret is logged even at trace level; secret material is never compared with ===.
 */
import { expect } from 'chai';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { call, assertNoSecrets, secretsOf } from '../helpers/e2e.js';
import { repoRoot } from '../helpers/sidecar.js';
import { checkWith, eventually, startDownstream, startStack, type Downstream, type Stack } from '../faults/harness.js';
import { headerMap } from '../extauthz/fixtures.js';

const V1_SCOPE = 'api://legacy-v1/.default';

function audOf(authorization: string | undefined): unknown {
  expect(authorization, 'an Authorization header').to.be.a('string');
  return decodeJwt(authorization!.split(' ')[1]).aud;
}

describe('security (built sidecar)', function () {
  this.timeout(40_000);
  let stack: Stack;
  let api: Downstream;
  let other: Downstream;
  let downstreamAud = '';
  before(async () => {
    api = await startDownstream();
    other = await startDownstream();
    stack = await startStack({
      Sidecar__LogLevel: 'trace',
      Sidecar__Outbound__TimeoutMs: '5000',
      Sidecar__AllowOutboundRedirects: 'true',
      // Gates: off on both authenticated routes, on for one anonymous route (to show the switch is per route).
      Sidecar__AllowOverrides__GetAuthorizationHeader: 'false',
      Sidecar__AllowOverrides__CallDownstreamApi: 'false',
      Sidecar__AllowOverrides__CallDownstreamApiUnauthenticated: 'true',
      DownstreamApis__items__BaseUrl: `${api.origin}/v1`,
      DownstreamApis__items__Scopes__0: 'api://downstream/.default',
      DownstreamApis__items__RequestAppToken: 'true',
      'DownstreamApis__items__ExtraHeaderParameters__X-Api-Key': 'configured-api-key-value',
      DownstreamApis__app__Scopes__0: 'api://downstream/.default',
      DownstreamApis__app__RequestAppToken: 'true',
      DownstreamApis__orders__Scopes__0: 'api://downstream/read',
      'Sidecar__ExtAuthz__ClaimsToHeaders__x-entra-name': 'name',
    });
    downstreamAud = stack.emu.scenario.apps.downstreamApi.appId;
    expect(await eventually(async () => (await call(`${stack.management}/readyz`)).status === 200, 15_000), '/readyz 200 (signing keys loaded)').to.equal(true);
  });
  after(async () => {
    await stack?.close();
    if (stack) assertNoSecrets(stack.sidecar.lines, secretsOf(stack.emu, [...stack.tokens, 'configured-api-key-value']));
    await stack?.emu.close();
    await api?.close();
    await other?.close();
  });
  beforeEach(() => {
    api.seen.length = 0;
    other.seen.length = 0;
    api.behaviour = (_q, res) => {
      res.setHeader('content-type', 'application/json');
      res.end('{"ok":true}');
    };
  });

  const user = async (claims: Record<string, unknown> = {}) => {
    const t = await stack.emu.mint({ kind: 'user', scp: 'access_as_user', claims });
    stack.tokens.push(t);
    return t;
  };

  describe('SSRF: the downstream origin comes from BaseUrl only', () => {
    // Each attempt: the query it sends, and the path the configured API receives where the route
    // honours optionsOverride.* (DownstreamApiUnauthenticated here). Every attempt is answered 200
    // with the configured API's answer: RelativePath is appended to BaseUrl after a '/', so nothing a
    // caller sends can leave the origin, and the 400 guard behind it (src/downstream/call.ts) is
    // unreachable. `h` is the other origin's host:port.
    const attempts: Array<[string, (o: string) => string, (h: string) => string]> = [
      ['optionsOverride.BaseUrl', (o) => `optionsOverride.BaseUrl=${encodeURIComponent(o)}`, () => '/v1/'],
      ['an absolute RelativePath', (o) => `optionsOverride.RelativePath=${encodeURIComponent(o + '/steal')}`, (h) => `/v1/http://${h}/steal`],
      ['a scheme-relative RelativePath', (o) => `optionsOverride.RelativePath=${encodeURIComponent('//' + new URL(o).host + '/steal')}`, (h) => `/v1/${h}/steal`],
      ['a userinfo-style RelativePath', (o) => `optionsOverride.RelativePath=${encodeURIComponent('@' + new URL(o).host + '/steal')}`, (h) => `/v1/@${h}/steal`],
      // The WHATWG URL parser reads '\' as '/' in an http URL.
      ['a backslash RelativePath', (o) => `optionsOverride.RelativePath=${encodeURIComponent('\\\\' + new URL(o).host + '\\steal')}`, (h) => `/v1///${h}/steal`],
      // Resolved against the origin's root, never above it.
      ['dot segments', () => `optionsOverride.RelativePath=${encodeURIComponent('../../../x')}`, () => '/x'],
      ['an extra query parameter holding a URL', (o) => `optionsOverride.ExtraQueryParameters.next=${encodeURIComponent(o)}`, (h) => `/v1/?next=${encodeURIComponent(`http://${h}`)}`],
    ];
    // Overrides are off on DownstreamApi in this stack, so there every attempt reaches the configured path.
    for (const [route, honoursOverrides] of [['DownstreamApi', false], ['DownstreamApiUnauthenticated', true]] as const) {
      for (const [what, query, expectedPath] of attempts) {
        it(`${route}: ${what} never reaches another origin`, async () => {
          const token = await user();
          const otherHost = new URL(other.origin).host;
          const r = await call(`${stack.sidecar.url}/${route}/items?${query(other.origin)}`, {
            method: 'POST',
            token,
            headers: { 'content-type': 'application/json', host: otherHost, 'x-forwarded-host': otherHost },
            body: '{}',
          });
          expect(r.status, r.text).to.equal(200);
          // The answer is the configured API's, passed through.
          expect(r.json()).to.deep.include({ statusCode: 200, content: '{"ok":true}' });
          expect(other.seen.length, 'requests that reached the other origin').to.equal(0);
          // Exactly one call, to the configured origin, on the path the (gated) overrides give.
          expect(api.seen.map((s) => ({ method: s.method, url: s.url, host: s.headers.host }))).to.deep.equal([
            { method: 'GET', url: honoursOverrides ? expectedPath(otherHost) : '/v1/', host: new URL(api.origin).host },
          ]);
          stack.tokens.push((api.seen[0].headers.authorization as string).slice(7));
        });
      }
    }
  });

  describe('redirects (Sidecar:AllowOutboundRedirects=true)', () => {
    it('follows a cross-origin redirect without the token or credential-like headers', async () => {
      api.behaviour = (_q, res) => {
        res.writeHead(302, { location: `${other.origin}/landing` });
        res.end();
      };
      const r = await call(`${stack.sidecar.url}/DownstreamApi/items`, { method: 'POST', token: await user(), body: '{}', headers: { 'content-type': 'application/json' } });
      expect(r.status, r.text).to.equal(200);
      expect(api.seen.length).to.equal(1);
      expect(audOf(api.seen[0].headers.authorization as string)).to.equal(downstreamAud);
      stack.tokens.push((api.seen[0].headers.authorization as string).slice(7));
      expect(other.seen.length).to.equal(1);
      expect(other.seen[0].headers.authorization, 'token sent to another origin').to.equal(undefined);
      expect(other.seen[0].headers['x-api-key'], 'configured API key sent to another origin').to.equal(undefined);
    });

    it('keeps the token on a same-origin redirect', async () => {
      api.behaviour = (req, res) => {
        if (req.url?.startsWith('/moved')) {
          res.setHeader('content-type', 'application/json');
          res.end('{"moved":true}');
          return;
        }
        res.writeHead(307, { location: '/moved' });
        res.end();
      };
      const r = await call(`${stack.sidecar.url}/DownstreamApi/items`, { method: 'POST', token: await user(), body: '{}', headers: { 'content-type': 'application/json' } });
      expect(r.status).to.equal(200);
      expect(api.seen.length).to.equal(2);
      expect(audOf(api.seen[1].headers.authorization as string)).to.equal(downstreamAud);
      stack.tokens.push((api.seen[1].headers.authorization as string).slice(7));
    });
  });

  describe('override gates on every route', () => {
    const widen = `optionsOverride.Scopes=${encodeURIComponent(V1_SCOPE)}&optionsOverride.RequestAppToken=true`;
    for (const [route, expectV1] of [
      ['AuthorizationHeader', false],
      ['AuthorizationHeaderUnauthenticated', false],
      ['DownstreamApi', false],
      ['DownstreamApiUnauthenticated', true],
    ] as const) {
      it(`${route} ${expectV1 ? 'honours' : 'ignores'} optionsOverride.* as its AllowOverrides switch says`, async () => {
        const api2 = route.startsWith('Downstream') ? 'items' : 'app';
        const token = await user();
        const r = await call(`${stack.sidecar.url}/${route}/${api2}?${widen}`, { token, method: route.startsWith('Downstream') ? 'POST' : 'GET', body: route.startsWith('Downstream') ? '{}' : undefined, headers: { 'content-type': 'application/json' } });
        expect(r.status, r.text).to.equal(200);
        const authorization = route.startsWith('Downstream') ? (api.seen.at(-1)?.headers.authorization as string) : r.json().authorizationHeader;
        stack.tokens.push(authorization.slice(7));
        const aud = audOf(authorization);
        if (expectV1) expect(aud).to.equal('api://legacy-v1');
        else expect(aud).to.equal(downstreamAud);
        if (!expectV1) {
          const gate = route === 'AuthorizationHeader' ? '"route":"GetAuthorizationHeader"' : route === 'AuthorizationHeaderUnauthenticated' ? '"route":"GetAuthorizationHeaderUnauthenticated"' : '"route":"CallDownstreamApi"';
          // Log lines arrive over a pipe; give the line a moment.
          const warned = await eventually(async () => stack.sidecar.lines.some((l) => l.includes('"event":"OverridesIgnored"') && l.includes(gate)), 2_000);
          expect(warned, 'OverridesIgnored was logged').to.equal(true);
        }
      });
    }

    it('ignores agent identity parameters where overrides are off (no fmi_path reaches Entra)', async () => {
      const before = stack.emu.requests().length;
      const agent = stack.emu.scenario.apps.agentIdentity1.appId;
      const r = await call(`${stack.sidecar.url}/AuthorizationHeaderUnauthenticated/app?AgentIdentity=${agent}&optionsOverride.AcquireTokenOptions.ForceRefresh=true`);
      expect(r.status, r.text).to.equal(200);
      stack.tokens.push(r.json().authorizationHeader.slice(7));
      expect(decodeJwt(r.json().authorizationHeader.slice(7)).azp).to.not.equal(agent);
      for (const q of stack.emu.requests().slice(before)) expect(q.form.fmi_path).to.equal(undefined);
    });
  });

  describe('tokens a caller puts where names and paths go', () => {
    it('are cut out of every log line that quotes the name, scope or path (trace level)', async () => {
      const pasted = await user();
      const from = stack.sidecar.lines.length;
      // An API name, an override scope and a DownstreamApi name (each quoted in an error's detail), and an ext_authz path.
      const answers = [
        await call(`${stack.sidecar.url}/AuthorizationHeaderUnauthenticated/${pasted}`),
        await call(`${stack.sidecar.url}/DownstreamApiUnauthenticated/items?optionsOverride.Scopes=${pasted}`, { method: 'POST' }),
        await call(`${stack.sidecar.url}/DownstreamApiUnauthenticated/${pasted}?optionsOverride.Scopes=${encodeURIComponent(V1_SCOPE)}&optionsOverride.RequestAppToken=true`, { method: 'POST' }),
      ];
      expect(answers.map((a) => a.status)).to.deep.equal([400, 500, 500]);
      const denied = await checkWith(stack, { path: `/orders/${pasted}/lines`, headers: {} });
      expect(denied.denied_response?.status?.code).to.equal('Unauthorized');
      const lines = stack.sidecar.lines.slice(from);
      expect(lines.some((l) => l.includes('No scopes found for the API') && l.includes('[redacted]')), 'the scopes_missing line, redacted').to.equal(true);
      expect(lines.some((l) => l.includes('"/orders/[redacted]/lines"')), 'the deny line\'s path, redacted').to.equal(true);
      assertNoSecrets(lines, [pasted]);
    });
  });

  describe('per-request isolation under concurrency', () => {
    it('answers 60 concurrent /Validate and Check calls each with its own caller\'s claims', async () => {
      const tokens = await Promise.all(Array.from({ length: 60 }, (_, i) => user({ name: `caller-${i}` })));
      const answers = await Promise.all(
        tokens.map(async (t, i) => {
          if (i % 2 === 0) return (await call(`${stack.sidecar.url}/Validate`, { token: t })).json().claims.name as string;
          return headerMap((await checkWith(stack, { headers: { authorization: `Bearer ${t}`, 'x-entra-name': 'spoofed' } })).ok_response.headers)['x-entra-name'];
        }),
      );
      answers.forEach((name, i) => expect(name).to.equal(`caller-${i}`));
    });

    it('never lets one request\'s overrides leak into another\'s (concurrent, mixed)', async () => {
      const answers = await Promise.all(
        Array.from({ length: 30 }, async (_, i) => {
          const widen = i % 3 === 0;
          const q = widen ? `?optionsOverride.Scopes=${encodeURIComponent(V1_SCOPE)}&optionsOverride.RequestAppToken=true` : '';
          const r = await call(`${stack.sidecar.url}/DownstreamApiUnauthenticated/items${q}`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json', 'x-case': String(i) } });
          return { widen, status: r.status, text: r.text };
        }),
      );
      for (const a of answers) expect(a.status, a.text).to.equal(200);
      expect(api.seen.length).to.equal(30);
      const auds = api.seen.map((s) => audOf(s.headers.authorization as string));
      for (const s of api.seen) stack.tokens.push((s.headers.authorization as string).slice(7));
      expect(auds.filter((a) => a === 'api://legacy-v1').length).to.equal(answers.filter((a) => a.widen).length);
      // The configured options are unchanged afterwards.
      const plain = await call(`${stack.sidecar.url}/DownstreamApiUnauthenticated/items`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
      expect(plain.status).to.equal(200);
      expect(audOf(api.seen.at(-1)!.headers.authorization as string)).to.equal(downstreamAud);
    });
  });
});

describe('security: secret material is never compared with === in src/', () => {
  /** Every .ts file under src/. */
  function sources(dir: string): string[] {
    const out: string[] = [];
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) out.push(...sources(p));
      else if (p.endsWith('.ts')) out.push(p);
    }
    return out;
  }
  // Secret-named values, and the names a caller's bearer token goes by in the validator (`compact`, a
  // token's `raw` or `jws`): a token held for another caller is compared with isSameToken.
  const SECRET_OPERAND = /\b\w*(secret|password|privatekey|assertion|refreshtoken|sessionkey|apikey|identityheader|compact)\w*\b|\.(raw|jws)\b/i;
  // Against a literal or a public constant (e.g. `!== ALLOCATE_FOR_ME`, `.asymmetricKeyType === 'rsa'`) nothing secret can leak.
  const BENIGN_OTHER_SIDE = /^(undefined|null|true|false|\d+|'[^']*'|"[^"]*"|[A-Z][A-Z0-9_]*)$/;

  it('finds src/ files to scan', () => {
    expect(sources(path.join(repoRoot, 'src')).length).to.be.greaterThan(20);
  });

  it('has no equality comparison between secret-named values (use crypto.timingSafeEqual or compare digests)', () => {
    const offences: string[] = [];
    for (const file of sources(path.join(repoRoot, 'src'))) {
      const lines = readFileSync(file, 'utf8').split('\n');
      lines.forEach((line, i) => {
        if (/^\s*(\/\/|\*)/.test(line)) return;
        for (const m of line.matchAll(/([\w.$[\]'"?]+)\s*(===|!==|==|!=)\s*([\w.$[\]'"?]+)/g)) {
          const [left, right] = [m[1], m[3]];
          // A length is public: comparing one tells nothing about the characters.
          const secret = (side: string) => SECRET_OPERAND.test(side) && !/\.length$/.test(side);
          const secretSide = secret(left) ? right : secret(right) ? left : undefined;
          if (secretSide === undefined) continue;
          if (BENIGN_OTHER_SIDE.test(secretSide) || /typeof/.test(line.slice(Math.max(0, (m.index ?? 0) - 10), m.index))) continue;
          offences.push(`${path.relative(repoRoot, file)}:${i + 1}: ${line.trim()}`);
        }
      });
    }
    expect(offences).to.deep.equal([]);
  });

  it('uses timingSafeEqual correctly wherever it is used (equal-length buffers checked first)', () => {
    for (const file of sources(path.join(repoRoot, 'src'))) {
      const text = readFileSync(file, 'utf8');
      if (!text.includes('timingSafeEqual(')) continue;
      expect(text, `${file} compares lengths before timingSafeEqual`).to.match(/\.length\s*[!=]==/);
    }
  });
});
