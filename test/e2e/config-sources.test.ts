/**
 * Configuration from every source ASP.NET reads, through the built process and on to a Check:
 * appsettings.json in the working directory, appsettings.{Environment}.json on top of it (the
 * environment from DOTNET_ENVIRONMENT, which wins over ASPNETCORE_ENVIRONMENT), environment
 * variables, and command-line arguments on top of everything. The ext_authz defaults set this way
 * (RequiredScopes, InjectHeader) are what the Check enforces, and AzureAd:ExtraQueryParameters reach
 * Entra's token endpoint.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { createAuthorizationClient, type AuthorizationClient } from '../../src/extauthz/protos.js';
import { startSidecar, type RunningSidecar } from '../helpers/sidecar.js';
import { assertNoSecrets, secretsOf } from '../helpers/e2e.js';
import { check, envoyCheckRequest, headerMap } from '../extauthz/fixtures.js';

describe('configuration sources (built sidecar: appsettings files, environment, command line)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let sidecar: RunningSidecar;
  let client: AuthorizationClient;
  let dir: string;
  const tokens: string[] = [];

  before(async () => {
    emu = await startEmulator();
    const s = emu.scenario;
    dir = mkdtempSync(path.join(tmpdir(), 'es-config-'));
    writeFileSync(path.join(dir, 'appsettings.json'), JSON.stringify({
      AzureAd: {
        Instance: emu.instance,
        TenantId: s.tenants.primary.id,
        ClientId: s.apps.sidecarApi.appId,
        ClientCredentials: [{ SourceType: 'ClientSecret', ClientSecret: s.apps.sidecarApi.secrets[0].value }],
        // Sent on every token request (Entra's `dc` slice parameter, for example).
        ExtraQueryParameters: { dc: 'ESTS-PUB-TEST' },
      },
      DownstreamApis: { orders: { Scopes: ['api://downstream/read'] } },
      Sidecar: { ExtAuthz: { InjectHeader: 'x-from-appsettings', RequiredScopes: ['not-granted'] } },
    }));
    // The environment's file overrides the base file.
    writeFileSync(path.join(dir, 'appsettings.Staging.json'), JSON.stringify({ Sidecar: { ExtAuthz: { InjectHeader: 'x-from-staging' } } }));
    // A file for the environment that loses must not be read.
    writeFileSync(path.join(dir, 'appsettings.Production.json'), JSON.stringify({ Sidecar: { ExtAuthz: { InjectHeader: 'x-from-production' } } }));
    sidecar = await startSidecar(
      {
        DOTNET_ENVIRONMENT: 'Staging',
        ASPNETCORE_ENVIRONMENT: 'Production',
        Sidecar__Outbound__CaFile: emu.caFile,
        Sidecar__Http__Url: 'http://127.0.0.1:0',
        Sidecar__ExtAuthz__Address: '127.0.0.1:0',
        Sidecar__Management__Url: 'http://127.0.0.1:0',
        // An environment variable beats both files...
        Sidecar__ExtAuthz__RequiredScopes__0: 'still-not-granted',
      },
      // ...and the command line beats the environment.
      { cwd: dir, args: ['--Sidecar:ExtAuthz:RequiredScopes:0=access_as_user'] },
    );
    client = createAuthorizationClient(`127.0.0.1:${sidecar.listening.extAuthz!.port}`);
  });
  after(async () => {
    client?.close();
    await sidecar?.stop();
    assertNoSecrets(sidecar?.lines ?? [], secretsOf(emu, tokens));
    await emu?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs in the environment DOTNET_ENVIRONMENT names', () => {
    expect(JSON.parse(sidecar.lines.find((l) => l.includes('"event":"listening"'))!).environment).to.equal('Staging');
  });

  it('enforces the required scope and injects under the header the sources settle on', async () => {
    const granted = await emu.mint({ kind: 'user', scp: 'access_as_user' });
    const other = await emu.mint({ kind: 'user', scp: 'something_else' });
    tokens.push(granted, other);
    const sent = emu.requests().length;
    const allow = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${granted}` }, contextExtensions: { downstream_api: 'orders' } }), 10_000);
    const obo = emu.requests().slice(sent).filter((r) => r.route === 'token');
    expect(obo).to.have.length(1);
    expect(obo[0].form.grant_type).to.equal('urn:ietf:params:oauth:grant-type:jwt-bearer');
    expect(obo[0].query).to.include({ dc: 'ESTS-PUB-TEST' });
    expect(allow.status.code, JSON.stringify(allow.denied_response)).to.equal(0);
    const injected = headerMap(allow.ok_response.headers);
    expect(injected).to.have.property('x-from-staging').that.matches(/^Bearer ey/);
    tokens.push(injected['x-from-staging'].slice(7));
    const deny = await check(client, envoyCheckRequest({ headers: { authorization: `Bearer ${other}` } }), 10_000);
    expect(deny.denied_response.status.code).to.equal('Forbidden');
    expect(JSON.parse(deny.denied_response.body).code).to.equal('insufficient_scope');
    expect(headerMap(deny.denied_response.headers)['www-authenticate']).to.equal('Bearer error="insufficient_scope", scope="access_as_user"');
    // A validate=none route is open whatever the default scopes are.
    expect((await check(client, envoyCheckRequest({ contextExtensions: { validate: 'none' } }), 10_000)).status.code).to.equal(0);
  });
});
