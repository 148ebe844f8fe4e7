import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built entry point, relative to this compiled test (<outDir>/test/config → <outDir>/src/main.js). */
const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

/** Every listener on a free port, so a start that wrongly succeeds cannot collide with anything. */
const FREE_PORTS = { Sidecar__Http__Url: 'http://127.0.0.1:0', Sidecar__Management__Url: 'http://127.0.0.1:0', Sidecar__ExtAuthz__Address: '127.0.0.1:0' };

/** A valid app registration, so a test's own keys are the only problems. */
const APP = { AzureAd__Instance: 'https://login.example.test/', AzureAd__TenantId: 'contoso.example', AzureAd__ClientId: '11111111-2222-3333-4444-555555555555' };

/** Runs the built sidecar with `env` in a scratch working folder of its own (removed after) until it exits. */
async function runSidecar(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const cwd = mkdtempSync(join(tmpdir(), 'entra-sidecar-startup-'));
  try {
    return await runIn(env, cwd);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
}

function runIn(env: Record<string, string>, cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [MAIN], { env: { ...FREE_PORTS, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`sidecar did not exit; stdout: ${stdout}`)); }, 10_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolvePromise({ code, stdout, stderr }); });
  });
}

interface ConfigInvalidLine {
  level: string;
  service: string;
  code: string;
  problems: string[];
  msg: string;
}

/** The one line an invalid configuration writes: JSON, on stdout with every other log line. */
function configInvalidLine(stdout: string): ConfigInvalidLine {
  const lines = stdout.split('\n').filter((l) => l !== '');
  expect(lines, stdout).to.have.length(1);
  const line = JSON.parse(lines[0]) as ConfigInvalidLine;
  expect(line).to.include({ level: 'fatal', service: 'entra-sidecar', code: 'config_invalid', msg: 'invalid configuration' });
  return line;
}

describe('config: startup with an invalid configuration', () => {
  it('exits 1 before listening and lists every problem in one JSON line without secret values', async () => {
    const secret = 'Sup3r-Secret-Value';
    const { code, stdout, stderr } = await runSidecar({
      AzureAd__Instance: 'http://login.example.test/',
      DownstreamApis__graph__Scopes: 'User.Read Mail.Read',
      AzureAd__ClientCredentials__0__SourceType: 'StoreWithThumbprint',
      AzureAd__ClientCredentials__1__SourceType: 'ClientSecret',
      AzureAd__ClientCredentials__1__ClientSecret: secret,
      Sidecar__AllowOutboundRedirects: secret,
    });
    expect(code).to.equal(1);
    const { problems } = configInvalidLine(stdout);
    expect(problems).to.have.length(6);
    for (const key of ['AzureAd:ClientId', 'AzureAd:TenantId', 'AzureAd:Instance', 'DownstreamApis:graph:Scopes', 'Scopes__0', 'AzureAd:ClientCredentials:0:SourceType', 'Sidecar:AllowOutboundRedirects']) {
      expect(problems.join('\n')).to.include(key);
    }
    expect(stderr).to.equal('');
    expect(stderr + stdout).not.to.include(secret);
    expect(stdout).not.to.include('listening');
  });

  it('exits non-zero before listening when a credential source is one entra-sidecar does not implement', async () => {
    const { code, stdout, stderr } = await runSidecar({
      ...APP,
      AzureAd__ClientCredentials__0__SourceType: 'SignedAssertionFromVault',
      AzureAd__ClientCredentials__0__KeyVaultUrl: 'https://vault.example.test/',
      AzureAd__ClientCredentials__0__KeyVaultCertificateName: 'assertion',
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'AutoDecryptKeys',
    });
    expect(code).to.equal(1);
    const { problems } = configInvalidLine(stdout);
    expect(problems).to.have.length(2);
    expect(problems.join('\n')).to.include('AzureAd:ClientCredentials:0:SourceType SignedAssertionFromVault is not supported by entra-sidecar');
    expect(problems.join('\n')).to.include('AzureAd:TokenDecryptionCredentials:0:SourceType AutoDecryptKeys is not supported by entra-sidecar');
    expect(stdout).not.to.include('listening');
  });

  it('exits 1 before listening when a duration is longer than a timer can hold (30 days of refresh interval), naming each key and its maximum', async () => {
    const { code, stdout, stderr } = await runSidecar({
      ...APP,
      // Both were taken, and then their timers fired at once: keys fetched without pause, every
      // outbound call timed out on the spot.
      Sidecar__Validation__SigningKeysRefreshIntervalSec: '2592000',
      Sidecar__Outbound__TimeoutMs: '2200000000',
    });
    expect(code).to.equal(1);
    expect(configInvalidLine(stdout).problems).to.have.members([
      'Sidecar:Outbound:TimeoutMs must be at most 357913941 ms (about 4.1 days)',
      'Sidecar:Validation:SigningKeysRefreshIntervalSec must be at most 2147483 s (about 24.8 days)',
    ]);
    expect(stderr).to.equal('');
  });

  for (const level of ['None', 'Critical']) {
    it(`writes the config_invalid line at Logging__LogLevel__Default=${level} too (and for a misspelt Sidecar key)`, async () => {
      const { code, stdout } = await runSidecar({
        Logging__LogLevel__Default: level,
        ...APP,
        Sidecar__Htpp__Url: 'http://127.0.0.1:0',
      });
      expect(code).to.equal(1);
      expect(configInvalidLine(stdout).problems).to.deep.equal(['Sidecar:Htpp:Url is not a known setting; did you mean Sidecar:Http:Url?']);
    });
  }
});
