/**
 * `npm run demo`: starts the local Entra ID emulator and the built sidecar wired to it on loopback,
 * then walks through what the sidecar does — validate a user token, exchange it On-Behalf-Of, call a
 * downstream API, answer an Envoy ext_authz Check, act as an agent — and prints curl commands to try.
 * With a terminal attached it keeps running until Ctrl-C; otherwise it exits when the walk-through ends.
 * Whenever it stops (the end, a failure, Ctrl-C or SIGTERM at any step) it stops the sidecar and
 * removes its temporary files and the emulator's.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeJwt } from 'jose';
import * as grpc from '@grpc/grpc-js';
import { startEmulator } from '../emulator/index.js';
import { startSidecar } from '../test/helpers/sidecar.js';
import { createAuthorizationClient } from '../src/extauthz/protos.js';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const ok = (s: string) => console.log(`  ${process.stdout.isTTY ? '\x1b[32m✔\x1b[0m' : 'OK'} ${s}`);
const fail = (s: string) => console.log(`  ${process.stdout.isTTY ? '\x1b[31m✘\x1b[0m' : 'FAIL'} ${s}`);
const short = (t: string) => `${t.slice(0, 24)}…(${t.length} chars)`;

/** What the demo holds (emulator, servers, sidecar, files), released last-in first-out, once. */
const held: Array<() => unknown> = [];
/** Starts still in progress: a release waits for them, so what they create is released too. */
const starting = new Set<Promise<unknown>>();
let released: Promise<void> | undefined;
/** Set by the first SIGINT or SIGTERM: nothing new is started after it. */
let interrupted = false;

/** Runs `start` and holds what it gives until release(); refuses to start anything once interrupted. */
function hold<T>(start: () => Promise<T> | T, free: (value: T) => unknown): Promise<T> {
  if (interrupted) return Promise.reject(new Error('interrupted'));
  const holding = Promise.resolve().then(start).then((value) => {
    held.push(() => free(value));
    return value;
  });
  starting.add(holding);
  void holding.then(() => starting.delete(holding), () => starting.delete(holding));
  return holding;
}

/** Waits for the starts in progress, then frees everything held, newest first; once. */
function release(): Promise<void> {
  released ??= (async () => {
    await Promise.allSettled([...starting]);
    for (const free of held.reverse()) {
      try {
        await free();
      } catch (err) {
        console.error('demo clean-up:', (err as Error).message);
      }
    }
  })();
  return released;
}

/** Set once the walk-through has ended: from then on a signal is the way out, with this code. */
let finishedWith: number | undefined;
// Registered before anything is created: the emulator makes its temporary folder (the CA file) as it
// starts, and Ctrl-C or SIGTERM during any step must not leave that folder, ours or the sidecar behind.
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    if (finishedWith === undefined) console.log(`\n${signal}: stopping the sidecar and the emulator, removing temporary files…`);
    void release().then(() => process.exit(finishedWith ?? code));
  });
}

async function main(): Promise<number> {
  let failures = 0;
  const step = (title: string) => console.log(`\n${bold(title)}`);
  const expectOk = (cond: boolean, what: string) => {
    if (cond) ok(what);
    else {
      fail(what);
      failures++;
    }
  };

  step('1. Starting the local Entra ID emulator (HTTPS, throw-away CA)…');
  const emu = await hold(() => startEmulator(), (e) => e.close());
  const s = emu.scenario;
  ok(`emulator at ${emu.origin}, tenant ${s.tenants.primary.id}, CA ${emu.caFile}`);

  // A tiny downstream API that echoes who called it.
  const downstream = createServer((req, res) => {
    const auth = req.headers.authorization ?? '';
    const claims = auth.startsWith('Bearer ') ? decodeJwt(auth.slice(7)) : {};
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ path: req.url, caller: claims.oid ?? null, scopes: claims.scp ?? null, roles: claims.roles ?? null }));
  });
  await hold(() => new Promise<void>((r) => downstream.listen(0, '127.0.0.1', r)), () => new Promise((r) => downstream.close(r)));
  const downstreamUrl = `http://127.0.0.1:${(downstream.address() as AddressInfo).port}`;

  step('2. Starting entra-sidecar against it (configured only by environment variables)…');
  const env: Record<string, string> = {
    AzureAd__Instance: emu.instance,
    AzureAd__TenantId: s.tenants.primary.id,
    AzureAd__ClientId: s.apps.sidecarApi.appId,
    AzureAd__ClientCredentials__0__SourceType: 'ClientSecret',
    AzureAd__ClientCredentials__0__ClientSecret: s.apps.sidecarApi.secrets[0].value,
    DownstreamApis__downstream__BaseUrl: `${downstreamUrl}/api/`,
    DownstreamApis__downstream__RelativePath: 'me',
    DownstreamApis__downstream__Scopes__0: 'api://downstream/read',
    DownstreamApis__downstreamApp__BaseUrl: `${downstreamUrl}/api/`,
    DownstreamApis__downstreamApp__Scopes__0: 'api://downstream/.default',
    DownstreamApis__downstreamApp__RequestAppToken: 'true',
    Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated: 'true',
    Sidecar__Outbound__CaFile: emu.caFile,
    Sidecar__Http__Url: 'http://127.0.0.1:0',
    Sidecar__ExtAuthz__Address: '127.0.0.1:0',
    Sidecar__Management__Url: 'http://127.0.0.1:0',
    Sidecar__LogLevel: 'warn',
  };
  const sidecar = await hold(() => startSidecar(env), (sc) => sc.stop());
  const base = sidecar.url;
  const grpcAddr = sidecar.listening.extAuthz ? `127.0.0.1:${sidecar.listening.extAuthz.port}` : undefined;
  ok(`identity API ${base}${grpcAddr ? `, ext_authz gRPC ${grpcAddr}` : ''}${sidecar.listening.management ? `, management http://127.0.0.1:${sidecar.listening.management.port}` : ''}`);

  const tmp = await hold(() => mkdtempSync(path.join(tmpdir(), 'entra-sidecar-demo-')), (dir) => rmSync(dir, { recursive: true, force: true }));
  const userToken = await emu.mint({ kind: 'user', scp: 'access_as_user' });
  const tokenFile = path.join(tmp, 'user-token');
  writeFileSync(tokenFile, userToken, { mode: 0o600 });

  step('3. GET /Validate with a user token minted by the emulator');
  const v = await fetch(`${base}/Validate`, { headers: { authorization: `Bearer ${userToken}` } });
  const vb = (await v.json()) as { protocol: string; claims: Record<string, unknown> };
  expectOk(v.status === 200 && vb.protocol === 'Bearer', `200 ${vb.protocol}: oid=${vb.claims.oid} scp=${vb.claims.scp} tid=${vb.claims.tid}`);
  const bad = await fetch(`${base}/Validate`, { headers: { authorization: `Bearer ${userToken.slice(0, -4)}AAAA` } });
  expectOk(bad.status === 401, `a tampered token is refused: 401 ${bad.headers.get('www-authenticate')}`);

  step('4. GET /AuthorizationHeader/downstream: On-Behalf-Of exchange');
  const a = await fetch(`${base}/AuthorizationHeader/downstream`, { headers: { authorization: `Bearer ${userToken}` } });
  const ab = (await a.json()) as { authorizationHeader?: string; detail?: string };
  expectOk(a.status === 200 && !!ab.authorizationHeader, `200 {"authorizationHeader": "${short(ab.authorizationHeader ?? String(ab.detail))}"}`);
  if (ab.authorizationHeader) {
    const c = decodeJwt(ab.authorizationHeader.slice(7));
    ok(`the OBO token is for aud=${c.aud}, scp=${c.scp}, on behalf of oid=${c.oid}`);
  }

  step('5. POST /DownstreamApi/downstream: the sidecar calls the API with the token attached');
  const d = await fetch(`${base}/DownstreamApi/downstream`, { method: 'POST', headers: { authorization: `Bearer ${userToken}` } });
  const db = (await d.json()) as { statusCode: number; content: string };
  expectOk(d.status === 200 && db.statusCode === 200, `200 {"statusCode": ${db.statusCode}, "content": ${JSON.stringify(db.content)}}`);

  if (grpcAddr) {
    step('6. Envoy ext_authz: Check for GET /api/orders with the user token, per-route downstream_api=downstreamApp');
    const client = createAuthorizationClient(grpcAddr);
    const request = {
      attributes: {
        source: { address: { socket_address: { address: '10.0.0.7', port_value: 51234 } } },
        request: {
          http: {
            id: '7026', method: 'GET', path: '/api/orders?top=1', host: 'orders.example', scheme: 'https', protocol: 'HTTP/1.1', size: '0',
            headers: { ':authority': 'orders.example', ':method': 'GET', ':path': '/api/orders?top=1', ':scheme': 'https', authorization: `Bearer ${userToken}`, 'x-request-id': 'demo-1', 'x-entra-oid': 'spoofed' },
          },
        },
        context_extensions: { downstream_api: 'downstreamApp' },
      },
    };
    const resp = await new Promise<Record<string, any>>((resolve, reject) =>
      client.Check(request, new grpc.Metadata(), { deadline: Date.now() + 2000 }, (err, r) => (err ? reject(err) : resolve(r ?? {}))),
    );
    client.close();
    const okResp = resp.ok_response as { headers?: Array<{ header: { key: string; value: string }; append_action?: string }>; headers_to_remove?: string[] } | undefined;
    expectOk(resp.status?.code === 0 && !!okResp, `status.code=${resp.status?.code ?? 0} (allow). Envoy would apply to the upstream request:`);
    for (const h of okResp?.headers ?? []) console.log(`      set    ${h.header.key}: ${h.header.key === 'authorization' ? short(h.header.value) : h.header.value}   (${h.append_action})`);
    for (const h of okResp?.headers_to_remove ?? []) console.log(`      remove ${h}`);
    const denied = await new Promise<Record<string, any>>((resolve, reject) => {
      const c2 = createAuthorizationClient(grpcAddr);
      const noToken = structuredClone(request);
      delete (noToken.attributes.request.http.headers as Record<string, string>).authorization;
      c2.Check(noToken, new grpc.Metadata(), { deadline: Date.now() + 2000 }, (err, r) => {
        c2.close();
        if (err) reject(err);
        else resolve(r ?? {});
      });
    });
    const dr = denied.denied_response as { status?: { code?: string }; headers?: Array<{ header: { key: string; value: string } }>; body?: string } | undefined;
    expectOk(denied.status?.code === 16, `without a token: status.code=16, Envoy answers ${dr?.status?.code} with ${dr?.headers?.map((h) => `${h.header.key}: ${h.header.value}`).join('; ')} and body ${dr?.body}`);
  }

  step('7. Agent identities (the sidecar\'s app is the agent blueprint)');
  const agentId = s.apps.agentIdentity1.appId;
  const agent = await fetch(`${base}/AuthorizationHeaderUnauthenticated/downstreamApp?AgentIdentity=${agentId}`);
  const agb = (await agent.json()) as { authorizationHeader?: string; detail?: string };
  if (agent.status === 200 && agb.authorizationHeader) {
    const c = decodeJwt(agb.authorizationHeader.slice(7));
    ok(`autonomous agent token: azp=${c.azp ?? c.appid} idtyp=${c.idtyp} roles=${JSON.stringify(c.roles)}`);
  } else {
    fail(`autonomous agent: ${agent.status} ${agb.detail ?? ''}`);
    failures++;
  }
  const agentUser = await fetch(`${base}/AuthorizationHeaderUnauthenticated/downstream?AgentIdentity=${agentId}&AgentUsername=${encodeURIComponent(s.users.agentUser1.upn)}`);
  const aub = (await agentUser.json()) as { authorizationHeader?: string; detail?: string };
  if (agentUser.status === 200 && aub.authorizationHeader) {
    const c = decodeJwt(aub.authorizationHeader.slice(7));
    ok(`agent user token: upn=${c.preferred_username ?? c.upn} idtyp=${c.idtyp} scp=${c.scp}`);
  } else {
    fail(`agent user: ${agentUser.status} ${aub.detail ?? ''}`);
    failures++;
  }

  // Without a terminal (CI, a pipe) nobody can press Ctrl-C, so the demo ends after the walk-through.
  const stayUp = process.stdout.isTTY && !process.argv.includes('--once');
  step(stayUp ? 'Try it yourself (while the demo runs):' : 'Try it yourself: run `npm run demo` in a terminal, where it keeps running until Ctrl-C (without one it stops now):');
  console.log(`  TOKEN=$(cat ${tokenFile})`);
  console.log(`  curl -s ${base}/Validate -H "Authorization: Bearer $TOKEN"`);
  console.log(`  curl -s ${base}/AuthorizationHeader/downstream -H "Authorization: Bearer $TOKEN"`);
  console.log(`  curl -s -X POST ${base}/DownstreamApi/downstream -H "Authorization: Bearer $TOKEN"`);
  console.log(`  curl -s ${base}/AuthorizationHeaderUnauthenticated/downstreamApp`);
  if (sidecar.listening.management) console.log(`  curl -s http://127.0.0.1:${sidecar.listening.management.port}/metrics | grep entra_sidecar_`);

  console.log(failures === 0 ? `\n${bold('Demo finished: every step succeeded.')}` : `\n${bold(`Demo finished with ${failures} failed step(s).`)}`);
  finishedWith = failures === 0 ? 0 : 1;
  if (stayUp) {
    console.log('Running until Ctrl-C…');
    // The signal handler releases everything and exits with finishedWith.
    await new Promise<never>(() => {});
  }
  return finishedWith;
}

main().then(
  async (code) => {
    if (interrupted) return; // the signal handler exits once everything is released
    await release();
    process.exit(code);
  },
  async (err: unknown) => {
    if (interrupted) return; // a step cut short by the clean-up: not a failure to report
    console.error('demo failed:', err);
    await release();
    process.exit(1);
  },
);
