import { expect } from 'chai';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFIG_KEYS, IGNORED_MICROSOFT_KEYS, renderConfigReference } from '../../src/config/defaults.js';
import { loadConfig } from '../../src/config/load.js';

/** The repository root, found from this file's compiled location (works for dist/ and any other outDir). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'entra-sidecar') return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('repository root not found');
    dir = parent;
  }
}

/** A concrete key for a documented pattern: `<i>` → 0, other placeholders → a sample name. */
function concrete(key: string): string {
  return key.split(':').map((s) => (s === '<i>' ? '0' : /^<.+>$/.test(s) ? 'x-sample' : s)).join(':');
}

describe('config: documentation', () => {
  it('docs/configuration.md is exactly what renderConfigReference() generates (run npm run docs)', () => {
    const committed = readFileSync(join(repoRoot(), 'docs', 'configuration.md'), 'utf8');
    expect(committed === renderConfigReference(), 'docs/configuration.md is stale; regenerate it').to.equal(true);
  });

  it('documents every key with its default and a one-line description', () => {
    const text = renderConfigReference();
    const seen = new Set<string>();
    for (const doc of CONFIG_KEYS) {
      expect(seen.has(doc.key.toLowerCase()), `duplicate ${doc.key}`).to.equal(false);
      seen.add(doc.key.toLowerCase());
      expect(doc.description, doc.key).to.match(/\S/);
      expect(doc.description, doc.key).not.to.include('\n');
      expect(text).to.include(`\`${doc.key}\``);
    }
    for (const doc of IGNORED_MICROSOFT_KEYS) expect(text).to.include(`\`${doc.key}\``);
    expect(text).to.include('8080');
    expect(text).to.include('Scopes__0');
  });

  it('accepts every documented Sidecar key set to its documented default without an error or warning', () => {
    const dir = mkdtempSync(join(tmpdir(), 'entra-sidecar-docs-'));
    try {
      writeFileSync(join(dir, 'ca.pem'), 'x');
      writeFileSync(join(dir, 'appsettings.json'), '{}');
      const samples: Record<string, string> = {
        'Sidecar:LogLevel': 'info', 'Sidecar:ExtAuthz:DownstreamApi': 'graph', 'Sidecar:Outbound:CaFile': 'ca.pem',
        'Sidecar:ExtAuthz:ClaimsToHeaders:<header>': 'oid', 'Sidecar:ExtAuthz:RequiredScopes:<i>': 'a', 'Sidecar:ExtAuthz:RequiredRoles:<i>': 'r',
        'Sidecar:PopValidation:ClaimsToValidateWhenPresent:<i>': 'm', 'Sidecar:SettingsFile': 'appsettings.json', 'Sidecar:Pop:KeyFile': 'ca.pem', 'Sidecar:Http:AllowedHosts:<i>': 'sidecar.internal',
        // One route rule holding every key (a second one takes Path, which excludes PathPrefix).
        'Sidecar:ExtAuthz:Routes:<i>:PathPrefix': '/api', 'Sidecar:ExtAuthz:Routes:<i>:Hosts:<i>': '*.example.com', 'Sidecar:ExtAuthz:Routes:<i>:Validate': 'required',
        'Sidecar:ExtAuthz:Routes:<i>:DownstreamApi': 'graph', 'Sidecar:ExtAuthz:Routes:<i>:InjectHeader': 'x-graph-authorization',
        'Sidecar:ExtAuthz:Routes:<i>:RequiredScopes:<i>': 'a', 'Sidecar:ExtAuthz:Routes:<i>:RequiredRoles:<i>': 'r', 'Sidecar:ExtAuthz:Routes:<i>:RequireAll': 'true',
        'Sidecar:ExtAuthz:Routes:<i>:StripInboundAuthorization': 'true', 'Sidecar:ExtAuthz:Routes:<i>:AgentIdentity': '00000000-0000-0000-0000-00000000000a',
        'Sidecar:ExtAuthz:Routes:<i>:AgentUsername': 'agent@example.com', 'Sidecar:ExtAuthz:Routes:<i>:AgentUserId': '00000000-0000-0000-0000-00000000000b',
      };
      const secondRule: ReadonlySet<string> = new Set(['Sidecar:ExtAuthz:Routes:<i>:Path']);
      samples['Sidecar:ExtAuthz:Routes:<i>:Path'] = '/hook';
      const env: Record<string, string> = {
        AzureAd__Instance: 'https://login.microsoftonline.com/', AzureAd__TenantId: 't', AzureAd__ClientId: 'c', DownstreamApis__graph__Scopes__0: 'User.Read',
      };
      for (const doc of CONFIG_KEYS.filter((d) => d.key.startsWith('Sidecar:'))) {
        const value = samples[doc.key] ?? doc.default;
        expect(value, `no sample value for ${doc.key}`).not.to.equal('');
        const key = secondRule.has(doc.key) ? concrete(doc.key).replace('Routes:0', 'Routes:1') : concrete(doc.key);
        env[key.replace(/:/g, '__')] = value;
      }
      const result = loadConfig({ argv: [], env, cwd: dir });
      if (!result.ok) throw new Error(result.errors.join('\n'));
      expect(result.warnings).to.deep.equal([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
