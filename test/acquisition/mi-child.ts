/**
 * Child process for the managed-identity tests. msal-node picks the managed-identity source from
 * process.env once per process and keeps it (and its MI token cache) in static fields, so each
 * source (IMDS, App Service) is exercised in a fresh process whose environment names it.
 *
 * argv[2]: JSON `{ groups: Array<{ config: SidecarConfig, requests: Array<{ label, options }> }> }`; each group
 * gets its own acquirer (credentials differ), all share the process's managed-identity source.
 * stdout: one JSON line `{ results: [...], stats: [...] }`; a result never carries the token, only its claims.
 */
import { decodeJwt } from 'jose';
import { createTokenAcquirer } from '../../src/acquisition/acquirer.js';
import type { SidecarConfig } from '../../src/config/types.js';
import { SidecarError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { createOutboundAgent } from '../../src/net/outbound.js';
import type { EffectiveApiOptions } from '../../src/pipeline/types.js';

interface ChildSpec {
  groups: Array<{ config: SidecarConfig; requests: Array<{ label: string; options: EffectiveApiOptions }> }>;
}

const spec = JSON.parse(process.argv[2]) as ChildSpec;
const results: unknown[] = [];
const stats: unknown[] = [];
for (const group of spec.groups) {
  const outbound = group.config.sidecar.outbound;
  const agent = createOutboundAgent({ extraCaFiles: outbound.extraCaFiles, connectTimeoutMs: outbound.connectTimeoutMs, timeoutMs: outbound.timeoutMs });
  const acquirer = createTokenAcquirer({ config: group.config, agent, logger: createLogger('silent') });
  for (const r of group.requests) {
    try {
      const token = await acquirer.acquire({ options: r.options });
      results.push({ label: r.label, ok: true, scheme: token.scheme, claims: decodeJwt(token.token) });
    } catch (err) {
      const e = err instanceof SidecarError ? err : undefined;
      results.push({ label: r.label, ok: false, code: e?.code ?? 'thrown', detail: e?.detail ?? String(err) });
    }
  }
  stats.push(acquirer.stats());
  acquirer.close();
  await agent.close();
}
process.stdout.write(JSON.stringify({ results, stats }) + '\n');
