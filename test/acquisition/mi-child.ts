/**
 * Child process for the managed-identity tests. msal-node picks the managed-identity source from
 * process.env once per process and keeps it (and its MI token cache) in static fields, so each
 * source (IMDS, App Service) is exercised in a fresh process whose environment names it.
 *
 * argv[2]: JSON `{ adminOrigin?, groups: Array<{ config: SidecarConfig, requests: Array<{ label, options, claims?, fault? }> }> }`;
 * each group gets its own acquirer (credentials differ), all share the process's managed-identity
 * source. A request's `claims` is a downstream claims challenge; its `fault` is posted to the
 * emulator's admin API (`adminOrigin`) just before it, so a fault can follow a request that succeeded.
 * stdout: one JSON line `{ results: [...], stats: [...] }`; a result never carries the token, only its
 * claims, and the acquirer's `entraRequests` count after it. A group's stats add `msalAccessTokens`: what msal's own process-wide managed-identity cache
 * holds before the acquirer is closed.
 */
import { decodeJwt } from 'jose';
import { request } from 'undici';
import type { FaultSpec } from '../../emulator/types.js';
import { createTokenAcquirer } from '../../src/acquisition/acquirer.js';
import type { SidecarConfig } from '../../src/config/types.js';
import { SidecarError } from '../../src/errors.js';
import { loadMsal } from '../../src/acquisition/msal.js';
import { createLogger } from '../../src/log.js';
import { createOutboundAgent } from '../../src/net/outbound.js';
import type { EffectiveApiOptions } from '../../src/pipeline/types.js';

interface ChildSpec {
  adminOrigin?: string;
  groups: Array<{ config: SidecarConfig; requests: Array<{ label: string; options: EffectiveApiOptions; claims?: string; fault?: FaultSpec }> }>;
}

/** Access tokens in msal's static managed-identity cache (a private field: msal has no API to read it). */
async function msalAccessTokens(): Promise<number> {
  const msal = await loadMsal();
  const storage = (msal.ManagedIdentityApplication as unknown as { nodeStorage?: { getTokenKeys(): { accessToken: string[] } } }).nodeStorage;
  return storage?.getTokenKeys().accessToken.length ?? 0;
}

const spec = JSON.parse(process.argv[2]) as ChildSpec;
const results: unknown[] = [];
const stats: unknown[] = [];
for (const group of spec.groups) {
  const outbound = group.config.sidecar.outbound;
  const agent = createOutboundAgent({ extraCaFiles: outbound.extraCaFiles, connectTimeoutMs: outbound.connectTimeoutMs, timeoutMs: outbound.timeoutMs });
  const acquirer = createTokenAcquirer({ config: group.config, agent, logger: createLogger('silent') });
  for (const r of group.requests) {
    if (r.fault) {
      const res = await request(`${spec.adminOrigin}/_emulator/faults`, { method: 'POST', body: JSON.stringify(r.fault), headers: { 'content-type': 'application/json' }, dispatcher: agent });
      if (res.statusCode !== 200) throw new Error(`fault not set: ${res.statusCode} ${await res.body.text()}`);
      await res.body.dump();
    }
    try {
      const token = await acquirer.acquire({ options: r.options, ...(r.claims ? { claims: r.claims } : {}) });
      results.push({ label: r.label, ok: true, scheme: token.scheme, claims: decodeJwt(token.token), entraRequests: acquirer.stats().entraRequests });
    } catch (err) {
      const e = err instanceof SidecarError ? err : undefined;
      results.push({ label: r.label, ok: false, code: e?.code ?? 'thrown', detail: e?.detail ?? String(err), entraRequests: acquirer.stats().entraRequests });
    }
  }
  stats.push({ ...acquirer.stats(), msalAccessTokens: await msalAccessTokens() });
  acquirer.close();
  await agent.close();
}
process.stdout.write(JSON.stringify({ results, stats }) + '\n');
