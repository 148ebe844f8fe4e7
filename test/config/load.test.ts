import { expect } from 'chai';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type ConfigInputs, type ConfigResult } from '../../src/config/load.js';
import type { SidecarConfig } from '../../src/config/types.js';
import { CONFIG_KEYS, findKeyDoc } from '../../src/config/defaults.js';
import { MAX_TIMER_DELAY_MS } from '../../src/timer-delay.js';
import { MAX_DEADLINE_OUTBOUND_TIMEOUTS } from '../../src/extauthz/check.js';
import { repoRoot } from '../helpers/sidecar.js';

const CLIENT_ID = '11111111-2222-3333-4444-555555555555';
const BASE_ENV: Record<string, string> = {
  AzureAd__Instance: 'https://login.microsoftonline.com/',
  AzureAd__TenantId: 'contoso.onmicrosoft.com',
  AzureAd__ClientId: CLIENT_ID,
};

const dirs: string[] = [];
/** A fresh working directory, optionally holding settings files. */
function workdir(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'entra-sidecar-config-'));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

function load(env: Record<string, string | undefined> = {}, opts: Partial<ConfigInputs> = {}): ConfigResult {
  return loadConfig({ argv: opts.argv ?? [], env: { ...BASE_ENV, ...env }, cwd: opts.cwd ?? workdir() });
}

function ok(result: ConfigResult): SidecarConfig & { warnings: string[] } {
  if (!result.ok) throw new Error(`expected a valid configuration, got:\n${result.errors.join('\n')}`);
  return { ...result.config, warnings: result.warnings };
}

function errorsOf(result: ConfigResult): string[] {
  if (result.ok) throw new Error('expected configuration errors, got a valid configuration');
  return result.errors;
}

function expectError(errors: string[], ...fragments: string[]): void {
  const hit = errors.find((e) => fragments.every((f) => e.includes(f)));
  expect(hit, `no error containing ${JSON.stringify(fragments)} in:\n${errors.join('\n')}`).to.be.a('string');
}

after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('config: sources and precedence', () => {
  it('takes each key from the highest source: command line > environment > appsettings.{Environment}.json > appsettings.json', () => {
    const cwd = workdir({
      'appsettings.json': JSON.stringify({ Sidecar: { Http: { MaxHeaderBytes: 2001, MaxBodyBytes: 2002, RequestTimeoutMs: 2003, HeadersTimeoutMs: 2004 } } }),
      'appsettings.Production.json': JSON.stringify({ Sidecar: { Http: { MaxHeaderBytes: 3001, MaxBodyBytes: 3002, RequestTimeoutMs: 3003 } } }),
    });
    const cfg = ok(load(
      { Sidecar__Http__MaxHeaderBytes: '4001', Sidecar__Http__MaxBodyBytes: '4002' },
      { cwd, argv: ['--Sidecar:Http:MaxHeaderBytes=5001'] },
    ));
    expect(cfg.sidecar.http.maxHeaderBytes).to.equal(5001);
    expect(cfg.sidecar.http.maxBodyBytes).to.equal(4002);
    expect(cfg.sidecar.http.requestTimeoutMs).to.equal(3003);
    expect(cfg.sidecar.http.headersTimeoutMs).to.equal(2004);
  });

  it('matches keys case-insensitively within and across sources', () => {
    const cwd = workdir({ 'appsettings.json': JSON.stringify({ azuread: { clientid: 'from-json' }, SIDECAR: { allowoutboundredirects: true } }) });
    const cfg = ok(loadConfig({
      argv: ['--AZUREAD:INSTANCE=https://login.microsoftonline.com/'],
      env: { AZUREAD__TENANTID: 'tenant-a', AzureAd__ClientID: 'from-env' },
      cwd,
    }));
    expect(cfg.azureAd.clientId).to.equal('from-env');
    expect(cfg.azureAd.tenantId).to.equal('tenant-a');
    expect(cfg.azureAd.instance).to.equal('https://login.microsoftonline.com/');
    expect(cfg.sidecar.allowOutboundRedirects).to.equal(true);
  });

  it('reads index-keyed arrays from environment variables in numeric order and JSON arrays as :0, :1', () => {
    const cwd = workdir({ 'appsettings.json': JSON.stringify({ DownstreamApis: { json: { Scopes: ['a', 'b'] } } }) });
    const cfg = ok(load({
      DownstreamApis__env__Scopes__10: 'third',
      DownstreamApis__env__Scopes__2: 'second',
      DownstreamApis__env__Scopes__0: 'first',
      AzureAd__TokenValidationParameters__ValidAudiences__0: 'api://one',
    }, { cwd }));
    expect(cfg.downstreamApis.json.scopes).to.deep.equal(['a', 'b']);
    expect(cfg.downstreamApis.env.scopes).to.deep.equal(['first', 'second', 'third']);
    expect(cfg.azureAd.validAudiences).to.deep.equal(['api://one']);
  });

  it('honours JwtBearer\'s TokenValidationParameters ClockSkew and the singular ValidAudience / ValidIssuer', () => {
    // A deployment that tightened the skew must not run with the 5-minute default here.
    const tight = ok(load({ AzureAd__TokenValidationParameters__ClockSkew: '00:00:30', AzureAd__TokenValidationParameters__ValidAudience: 'api://two', AzureAd__TokenValidationParameters__ValidIssuer: 'https://issuer.example/{tenantid}/v2.0' }));
    expect(tight.sidecar.validation.clockSkewSec).to.equal(30);
    expect(tight.azureAd.validAudiences).to.deep.equal(['api://two']);
    expect(tight.azureAd.validIssuers).to.deep.equal(['https://issuer.example/{tenantid}/v2.0']);
    expect(tight.warnings.join('\n')).not.to.include('TokenValidationParameters');
    expect(ok(load({ AzureAd__TokenValidationParameters__ClockSkew: '00:00:00' })).sidecar.validation.clockSkewSec).to.equal(0);
    // Our own key wins when both are set; a value that is not a TimeSpan is an error.
    expect(ok(load({ AzureAd__TokenValidationParameters__ClockSkew: '00:00:30', Sidecar__Validation__ClockSkewSec: '60' })).sidecar.validation.clockSkewSec).to.equal(60);
    expectError(errorsOf(load({ AzureAd__TokenValidationParameters__ClockSkew: '30' })), 'AzureAd:TokenValidationParameters:ClockSkew');
    // The rules we keep fixed are still reported as ignored.
    expect(ok(load({ AzureAd__TokenValidationParameters__ValidateLifetime: 'false' })).warnings.join('\n')).to.include('ValidateLifetime');
  });

  it('holds request bodies in flight to Sidecar:Http:MaxBufferedBodyBytes, never below one body of MaxBodyBytes', () => {
    expect(ok(load({ Sidecar__Http__MaxBufferedBodyBytes: '67108864' })).sidecar.http.maxBufferedBodyBytes).to.equal(67_108_864);
    // Unset, it follows a body limit raised above it (a deployment moved over with a larger Kestrel limit).
    expect(ok(load({ Kestrel__Limits__MaxRequestBodySize: '100000000' })).sidecar.http.maxBufferedBodyBytes).to.equal(100_000_000);
    expect(ok(load({ Sidecar__Http__MaxBodyBytes: '1024' })).sidecar.http.maxBufferedBodyBytes).to.equal(33_554_432);
    // Set below it, every body between the two would be refused: an error at start.
    expectError(errorsOf(load({ Sidecar__Http__MaxBodyBytes: '2048', Sidecar__Http__MaxBufferedBodyBytes: '1024' })), 'Sidecar:Http:MaxBufferedBodyBytes must be at least Sidecar:Http:MaxBodyBytes');
    expectError(errorsOf(load({ Sidecar__Http__MaxBufferedBodyBytes: '0' })), 'Sidecar:Http:MaxBufferedBodyBytes must be at least 1');
  });

  it('holds unfinished CheckRequests to Sidecar:ExtAuthz:MaxBufferedRequestBytes, never below the largest request denied in band', () => {
    const defaults = ok(load({})).sidecar.extAuthz;
    expect(defaults.maxBufferedRequestBytes).to.equal(32 * 1024 * 1024);
    expect(defaults.requestReceiveTimeoutMs).to.equal(10_000);
    expect(ok(load({ Sidecar__ExtAuthz__MaxBufferedRequestBytes: '16777216', Sidecar__ExtAuthz__RequestReceiveTimeoutMs: '500' })).sidecar.extAuthz).to.include({ maxBufferedRequestBytes: 16_777_216, requestReceiveTimeoutMs: 500 });
    // Unset, it follows a MaxReceiveMessageBytes raised past it.
    expect(ok(load({ Sidecar__ExtAuthz__MaxReceiveMessageBytes: '50000000' })).sidecar.extAuthz.maxBufferedRequestBytes).to.equal(50_000_000);
    // Below 16 MiB (or MaxReceiveMessageBytes, when larger) a request that is denied in band could be cut first.
    expectError(errorsOf(load({ Sidecar__ExtAuthz__MaxBufferedRequestBytes: '16777215' })), 'Sidecar:ExtAuthz:MaxBufferedRequestBytes must be at least 16777216');
    expectError(errorsOf(load({ Sidecar__ExtAuthz__MaxReceiveMessageBytes: '20000000', Sidecar__ExtAuthz__MaxBufferedRequestBytes: '19999999' })), 'Sidecar:ExtAuthz:MaxBufferedRequestBytes must be at least 20000000');
    expectError(errorsOf(load({ Sidecar__ExtAuthz__RequestReceiveTimeoutMs: '0' })), 'Sidecar:ExtAuthz:RequestReceiveTimeoutMs must be at least 1');
  });

  it('reads Kestrel\'s body and header limits, refuses an endpoint without a Url, and names the Kestrel keys it ignores', () => {
    const limits = ok(load({ Kestrel__Limits__MaxRequestBodySize: '1048576', Kestrel__Limits__MaxRequestHeadersTotalSize: '65536' }));
    expect(limits.sidecar.http.maxBodyBytes).to.equal(1_048_576);
    expect(limits.sidecar.http.maxHeaderBytes).to.equal(65_536);
    // Our own key wins.
    expect(ok(load({ Kestrel__Limits__MaxRequestBodySize: '1048576', Sidecar__Http__MaxBodyBytes: '2048' })).sidecar.http.maxBodyBytes).to.equal(2048);
    // A misspelt Url: Kestrel refuses to start, and so do we (instead of falling back to another listener).
    expectError(errorsOf(load({ Kestrel__Endpoints__Http__Urls: 'http://127.0.0.1:5001' })), 'Kestrel:Endpoints:Http has no Url');
    const warned = ok(load({ Kestrel__Endpoints__Http__Url: 'http://127.0.0.1:5001', Kestrel__Endpoints__Http__Protocols: 'Http2', Kestrel__Limits__MaxConcurrentConnections: '10' })).warnings.join('\n');
    expect(warned).to.include('Kestrel:Endpoints:Http:Protocols is not used by entra-sidecar (the identity API serves HTTP/1.1 only)');
    expect(warned).to.include('Kestrel:Limits:MaxConcurrentConnections is not used');
  });

  it('merges a section written twice in appsettings.json, but refuses a setting written twice', () => {
    // ASP.NET's JSON provider flattens both objects into a:b keys and only refuses a repeated key.
    const cwd = workdir({ 'appsettings.json': '{ "Sidecar": { "AllowOverrides": { "CallDownstreamApi": false } }, "DownstreamApis": { "g": { "Scopes": ["a"] } }, "sidecar": { "PopValidation": { "ValidateQ": true } } }' });
    const cfg = ok(load({}, { cwd }));
    expect(cfg.sidecar.allowOverrides.callDownstreamApi).to.equal(false);
    expect(cfg.sidecar.popValidation.validateQ).to.equal(true);
    const twice = workdir({ 'appsettings.json': '{ "Sidecar": { "AllowOutboundRedirects": false }, "sidecar": { "allowOutboundRedirects": true } }' });
    expectError(errorsOf(load({}, { cwd: twice })), 'duplicate key');
  });

  it('reads a numeric Logging:LogLevel:Default as .NET\'s LogLevel enum, and accepts ValidateTs=true only', () => {
    expect(ok(load({ Logging__LogLevel__Default: '2' })).sidecar.logLevel).to.equal('info');
    expect(ok(load({ Logging__LogLevel__Default: '6' })).sidecar.logLevel).to.equal('silent');
    expectError(errorsOf(load({ Logging__LogLevel__Default: '7' })), 'Logging:LogLevel:Default');
    ok(load({ Sidecar__PopValidation__ValidateTs: 'true' }));
    expectError(errorsOf(load({ Sidecar__PopValidation__ValidateTs: 'false' })), 'Sidecar:PopValidation:ValidateTs');
  });

  it('overrides a single array element from a higher source, as ASP.NET does', () => {
    const cwd = workdir({ 'appsettings.json': JSON.stringify({ DownstreamApis: { graph: { Scopes: ['a', 'b'] } } }) });
    const cfg = ok(load({ DownstreamApis__graph__Scopes__1: 'B' }, { cwd }));
    expect(cfg.downstreamApis.graph.scopes).to.deep.equal(['a', 'B']);
  });

  it('accepts // and /* */ comments and trailing commas in appsettings.json', () => {
    const cwd = workdir({
      'appsettings.json': `// settings
{
  /* the API we call */
  "DownstreamApis": {
    "graph": { "BaseUrl": "https://graph.microsoft.com/v1.0/", // trailing comment with "quotes"
      "Scopes": ["User.Read",], },
  },
  "Sidecar": { "AllowOutboundRedirects": true /* inline */ },
}`,
    });
    const cfg = ok(load({}, { cwd }));
    expect(cfg.downstreamApis.graph.baseUrl).to.equal('https://graph.microsoft.com/v1.0/');
    expect(cfg.downstreamApis.graph.scopes).to.deep.equal(['User.Read']);
    expect(cfg.sidecar.allowOutboundRedirects).to.equal(true);
  });

  it('keeps "//" inside JSON strings as text, not as a comment', () => {
    const cwd = workdir({ 'appsettings.json': '{ "AzureAd": { "Instance": "https://login.microsoftonline.com/" } }' });
    const cfg = ok(loadConfig({ argv: [], env: { AzureAd__TenantId: 't', AzureAd__ClientId: 'c' }, cwd }));
    expect(cfg.azureAd.instance).to.equal('https://login.microsoftonline.com/');
  });

  it('reports invalid JSON with a line and column and without the file text', () => {
    const cwd = workdir({ 'appsettings.json': '{\n  "AzureAd": { "ClientSecret": "hunter2-secret" oops }\n}' });
    const errors = errorsOf(load({}, { cwd }));
    expectError(errors, 'appsettings.json', 'invalid JSON', 'line 2');
    expect(errors.join('\n')).not.to.include('hunter2');
  });

  it('rejects keys that differ only in case within one JSON object, as .NET does', () => {
    const cwd = workdir({ 'appsettings.json': '{ "Sidecar": { "LogLevel": "info", "loglevel": "debug" } }' });
    expectError(errorsOf(load({}, { cwd })), 'duplicate key');
  });

  it('loads appsettings.{Environment}.json chosen by DOTNET_ENVIRONMENT, then ASPNETCORE_ENVIRONMENT, default Production', () => {
    const cwd = workdir({
      'appsettings.Production.json': '{ "Sidecar": { "LogLevel": "error" } }',
      'appsettings.Staging.json': '{ "Sidecar": { "LogLevel": "warn" } }',
      'appsettings.Development.json': '{ "Sidecar": { "LogLevel": "debug" } }',
    });
    const prod = ok(load({}, { cwd }));
    expect(prod.environment.name).to.equal('Production');
    expect(prod.environment.isDevelopment).to.equal(false);
    expect(prod.sidecar.logLevel).to.equal('error');
    expect(ok(load({ DOTNET_ENVIRONMENT: 'Staging' }, { cwd })).sidecar.logLevel).to.equal('warn');
    // WebApplicationBuilder (.NET 7+): DOTNET_ beats ASPNETCORE_ (aspnet/Announcements#498). The
    // other way round, ASPNETCORE_ENVIRONMENT=Development would lift the loopback restriction of a
    // container its operator set to Production with DOTNET_ENVIRONMENT.
    const both = ok(load({ DOTNET_ENVIRONMENT: 'Production', ASPNETCORE_ENVIRONMENT: 'Development' }, { cwd }));
    expect(both.environment.name).to.equal('Production');
    expect(both.environment.isDevelopment).to.equal(false);
    const dev = ok(load({ DOTNET_ENVIRONMENT: 'Development', ASPNETCORE_ENVIRONMENT: 'Staging' }, { cwd }));
    expect(dev.sidecar.logLevel).to.equal('debug');
    expect(dev.environment.isDevelopment).to.equal(true);
    expect(ok(load({ ASPNETCORE_ENVIRONMENT: 'development' }, { cwd })).environment.isDevelopment).to.equal(true);
    // .NET compares the name as given: a stray space is not Development.
    expect(ok(load({ ASPNETCORE_ENVIRONMENT: 'Development ' }, { cwd })).environment.isDevelopment).to.equal(false);
  });

  it('reads the settings file named by Sidecar__SettingsFile and fails when that file is missing', () => {
    const cwd = workdir();
    mkdirSync(join(cwd, 'conf'));
    writeFileSync(join(cwd, 'conf', 'sidecar.json'), '{ "Sidecar": { "ExtAuthz": { "Validate": "optional" } } }');
    writeFileSync(join(cwd, 'conf', 'sidecar.Production.json'), '{ "Sidecar": { "ExtAuthz": { "InjectHeader": "X-Token" } } }');
    const cfg = ok(load({ Sidecar__SettingsFile: 'conf/sidecar.json' }, { cwd }));
    expect(cfg.sidecar.extAuthz.validate).to.equal('optional');
    expect(cfg.sidecar.extAuthz.injectHeader).to.equal('x-token');
    expectError(errorsOf(load({ Sidecar__SettingsFile: 'conf/missing.json' }, { cwd })), 'missing.json', 'does not exist');
    expect(ok(load({}, { cwd: workdir(), argv: ['--Sidecar:SettingsFile', join(cwd, 'conf', 'sidecar.json')] })).sidecar.extAuthz.validate).to.equal('optional');
  });

  it('accepts --Key=value, --Key value, /Key=value and Key=value on the command line', () => {
    const cfg = ok(load({}, {
      argv: ['--Sidecar:LogLevel', 'debug', '/Sidecar:AllowOutboundRedirects=true', 'Sidecar:Http:MaxHeaderBytes=4096', '--Sidecar:ExtAuthz:Validate=none'],
    }));
    expect(cfg.sidecar.logLevel).to.equal('debug');
    expect(cfg.sidecar.allowOutboundRedirects).to.equal(true);
    expect(cfg.sidecar.http.maxHeaderBytes).to.equal(4096);
    expect(cfg.sidecar.extAuthz.validate).to.equal('none');
  });

  it('rejects command-line arguments it cannot read, naming their position', () => {
    const errors = errorsOf(load({}, { argv: ['-v', 'stray-value', '--Sidecar:LogLevel'] }));
    expectError(errors, 'argument 1', 'single-dash');
    expectError(errors, 'argument 2', 'not a configuration setting');
    expectError(errors, 'argument 3', 'has no value');
    expect(errors.join('\n')).not.to.include('stray-value');
  });

  it('keeps the first casing seen for a DownstreamApis name', () => {
    const cwd = workdir({ 'appsettings.json': JSON.stringify({ DownstreamApis: { GraphApi: { Scopes: ['User.Read'] } } }) });
    const cfg = ok(load({ DOWNSTREAMAPIS__graphapi__RequestAppToken: 'true' }, { cwd }));
    expect(Object.keys(cfg.downstreamApis)).to.deep.equal(['GraphApi']);
    expect(cfg.downstreamApis.GraphApi.requestAppToken).to.equal(true);
  });
});

describe('config: listener addresses', () => {
  it('listens on http://127.0.0.1:5000 when no listener source is configured', () => {
    expect(ok(load()).sidecar.http.listen).to.deep.equal([{ host: '127.0.0.1', port: 5000 }]);
  });

  it('prefers Sidecar:Http:Url over Kestrel:Endpoints, ASPNETCORE_URLS and ASPNETCORE_HTTP_PORTS', () => {
    const all = {
      Sidecar__Http__Url: 'http://127.0.0.1:7001',
      Kestrel__Endpoints__Http__Url: 'http://127.0.0.1:7002',
      ASPNETCORE_URLS: 'http://127.0.0.1:7003',
      ASPNETCORE_HTTP_PORTS: '7004',
    };
    expect(ok(load(all)).sidecar.http.listen).to.deep.equal([{ host: '127.0.0.1', port: 7001 }]);
    const { Sidecar__Http__Url: _a, ...noOurs } = all;
    const kestrel = ok(load(noOurs));
    expect(kestrel.sidecar.http.listen).to.deep.equal([{ host: '127.0.0.1', port: 7002 }]);
    expect(kestrel.warnings.join('\n')).to.include('ASPNETCORE_URLS is overridden by Kestrel:Endpoints');
    const { Kestrel__Endpoints__Http__Url: _b, ...noKestrel } = noOurs;
    expect(ok(load(noKestrel)).sidecar.http.listen).to.deep.equal([{ host: '127.0.0.1', port: 7003 }]);
    const { ASPNETCORE_URLS: _c, ...portsOnly } = noKestrel;
    expect(ok(load(portsOnly)).sidecar.http.listen).to.deep.equal([{ host: '::', port: 7004 }]);
  });

  it('binds every named Kestrel endpoint', () => {
    const cfg = ok(load({ Kestrel__Endpoints__Http__Url: 'http://127.0.0.1:7010', Kestrel__Endpoints__Other__Url: 'http://[::1]:7011' }));
    expect(cfg.sidecar.http.listen).to.deep.equal([{ host: '127.0.0.1', port: 7010 }, { host: '::1', port: 7011 }]);
  });

  it('maps ASPNETCORE_URLS hosts: + and * to every interface of both families (::), 0.0.0.0 to IPv4 only, localhost to 127.0.0.1', () => {
    const cfg = ok(load({ ASPNETCORE_URLS: 'http://+:7020; http://*:7021;http://[::]:7022;http://localhost:7023/;http://10.1.2.3;http://0.0.0.0:7024' }));
    expect(cfg.sidecar.http.listen).to.deep.equal([
      { host: '::', port: 7020 }, { host: '::', port: 7021 }, { host: '::', port: 7022 },
      { host: '127.0.0.1', port: 7023 }, { host: '10.1.2.3', port: 80 }, { host: '0.0.0.0', port: 7024 },
    ]);
  });

  it('reads ASPNETCORE_HTTP_PORTS as a comma or semicolon list on all interfaces', () => {
    const cfg = ok(load({ ASPNETCORE_HTTP_PORTS: '8080, 8081;8082' }));
    expect(cfg.sidecar.http.listen).to.deep.equal([8080, 8081, 8082].map((port) => ({ host: '::', port })));
    expectError(errorsOf(load({ ASPNETCORE_HTTP_PORTS: '80a' })), 'ASPNETCORE_HTTP_PORTS', 'list of ports');
  });

  it('also reads urls from the command line (--urls), like ASP.NET', () => {
    expect(ok(load({ ASPNETCORE_URLS: 'http://127.0.0.1:7030' }, { argv: ['--urls=http://127.0.0.1:7031'] })).sidecar.http.listen)
      .to.deep.equal([{ host: '127.0.0.1', port: 7031 }]);
  });

  it('allows port 0 on every listener', () => {
    const cfg = ok(load({ Sidecar__Http__Url: 'http://127.0.0.1:0', Sidecar__Management__Url: 'http://127.0.0.1:0', Sidecar__ExtAuthz__Address: '127.0.0.1:0' }));
    expect(cfg.sidecar.http.listen).to.deep.equal([{ host: '127.0.0.1', port: 0 }]);
    expect(cfg.sidecar.management.address).to.deep.equal({ host: '127.0.0.1', port: 0 });
    expect(cfg.sidecar.extAuthz.address).to.deep.equal({ host: '127.0.0.1', port: 0 });
  });

  it('defaults management to http://+:9090, every interface of both families (no GC histogram) and ext_authz to 127.0.0.1:9191, both enabled, and lets them be disabled', () => {
    const cfg = ok(load());
    expect(cfg.sidecar.management).to.deep.equal({ enabled: true, address: { host: '::', port: 9090 }, gcMetrics: false });
    expect(ok(load({ Sidecar__Management__GcMetrics: 'true' })).sidecar.management.gcMetrics).to.equal(true);
    expect(errorsOf(load({ Sidecar__Management__GcMetrics: 'sometimes' })).join('\n')).to.contain('Sidecar:Management:GcMetrics');
    expect(cfg.sidecar.extAuthz.enabled).to.equal(true);
    expect(cfg.sidecar.extAuthz.address).to.deep.equal({ host: '127.0.0.1', port: 9191 });
    const off = ok(load({ Sidecar__Management__Enabled: 'false', Sidecar__ExtAuthz__Enabled: 'False', Sidecar__ExtAuthz__Address: 'nonsense' }));
    expect(off.sidecar.management.enabled).to.equal(false);
    expect(off.sidecar.extAuthz.enabled).to.equal(false);
  });

  it('refuses https listeners, paths, bad ports and host names, naming the key', () => {
    const errors = errorsOf(load({
      Kestrel__Endpoints__Https__Url: 'https://127.0.0.1:7443',
      Sidecar__Management__Url: 'http://127.0.0.1:70000',
      Sidecar__ExtAuthz__Address: 'sidecar.local:9191',
      ASPNETCORE_HTTPS_PORTS: '8443',
    }));
    expectError(errors, 'Kestrel:Endpoints:Https:Url', 'https', 'plain HTTP');
    expectError(errors, 'Sidecar:Management:Url', 'invalid port');
    expectError(errors, 'Sidecar:ExtAuthz:Address', 'IP address');
    expectError(errors, 'ASPNETCORE_HTTPS_PORTS', 'https is not supported');
    expectError(errorsOf(load({ Sidecar__Http__Url: 'http://127.0.0.1:5000/base' })), 'Sidecar:Http:Url', 'path');
  });

  it('reads Sidecar:Http:AllowedHosts as lower-case host names and refuses ports, wildcards and schemes', () => {
    expect(ok(load({})).sidecar.http.allowedHosts).to.deep.equal([]);
    const cfg = ok(load({ Sidecar__Http__AllowedHosts__0: 'Sidecar.Internal', Sidecar__Http__AllowedHosts__1: '10.0.0.7', Sidecar__Http__AllowedHosts__2: '[FD00::1]' }));
    expect(cfg.sidecar.http.allowedHosts).to.deep.equal(['sidecar.internal', '10.0.0.7', '[fd00::1]']);
    for (const bad of ['sidecar:5000', '*.example.test', '*', 'http://sidecar', 'fd00::1', 'a..b']) {
      expectError(errorsOf(load({ Sidecar__Http__AllowedHosts__0: bad })), 'Sidecar:Http:AllowedHosts:0', 'without port or wildcard');
    }
    expectError(errorsOf(load({ Sidecar__Http__AllowedHosts: 'sidecar' })), 'Sidecar:Http:AllowedHosts', 'array');
  });

  it('refuses two listeners on the same port', () => {
    expectError(errorsOf(load({ Sidecar__Http__Url: 'http://127.0.0.1:9090' })), 'Sidecar:Management:Url', 'port 9090');
  });
});

describe('config: AzureAd', () => {
  it('builds the authority {instance}{tenantId}/v2.0 and adds the trailing slash to Instance', () => {
    const cfg = ok(load({ AzureAd__Instance: 'https://login.microsoftonline.com' }));
    expect(cfg.azureAd.instance).to.equal('https://login.microsoftonline.com/');
    expect(cfg.azureAd.authority).to.equal('https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0');
  });

  it('derives Instance and TenantId from AzureAd:Authority, with or without /v2.0', () => {
    for (const authority of ['https://login.example.test/tenant-x/v2.0', 'https://login.example.test/tenant-x/', 'https://login.example.test/tenant-x']) {
      const cfg = ok(loadConfig({ argv: [], env: { AzureAd__ClientId: 'c', AzureAd__Authority: authority }, cwd: workdir() }));
      expect(cfg.azureAd.instance).to.equal('https://login.example.test/');
      expect(cfg.azureAd.tenantId).to.equal('tenant-x');
      expect(cfg.azureAd.authority).to.equal('https://login.example.test/tenant-x/v2.0');
    }
    const ciam = ok(loadConfig({ argv: [], env: { AzureAd__ClientId: 'c', AzureAd__Authority: 'https://contoso.ciamlogin.com/' }, cwd: workdir() }));
    expect(ciam.azureAd.authority).to.equal('https://contoso.ciamlogin.com/contoso.onmicrosoft.com/v2.0');
  });

  it('reports missing ClientId, TenantId and Instance together', () => {
    const errors = errorsOf(loadConfig({ argv: [], env: {}, cwd: workdir() }));
    expectError(errors, 'AzureAd:ClientId', 'required');
    expectError(errors, 'AzureAd:TenantId', 'required');
    expectError(errors, 'AzureAd:Instance', 'required');
    expect(errors).to.have.length(3);
  });

  it('requires an https Instance and Authority, because msal-node refuses http authorities', () => {
    expectError(errorsOf(load({ AzureAd__Instance: 'http://login.microsoftonline.com/' })), 'AzureAd:Instance', 'https');
    expectError(errorsOf(load({ AzureAd__Instance: 'not a url' })), 'AzureAd:Instance', 'https');
    expectError(errorsOf(loadConfig({ argv: [], env: { AzureAd__ClientId: 'c', AzureAd__Authority: 'http://x.test/t' }, cwd: workdir() })), 'AzureAd:Authority', 'https');
    expectError(errorsOf(load({ AzureAd__TenantId: 'a/b' })), 'AzureAd:TenantId');
  });

  it('accepts only a GUID or a domain name as a tenant, since it becomes a path segment of the authority', () => {
    for (const tenant of ['72f988bf-86f1-41af-91ab-2d7cd011db47', 'contoso.onmicrosoft.com', 'common']) {
      ok(load({ AzureAd__TenantId: tenant, DownstreamApis__x__Scopes__0: 's', DownstreamApis__x__AcquireTokenOptions__Tenant: tenant }));
    }
    for (const bad of ['../x', 'a/b', '@evil.example', 'a#b', 'a?b', 'a\\b', 'a..b', '-a.b', `${'a'.repeat(64)}.com`]) {
      expectError(errorsOf(load({ AzureAd__TenantId: bad })), 'AzureAd:TenantId');
      expectError(errorsOf(load({ DownstreamApis__x__Scopes__0: 's', DownstreamApis__x__AcquireTokenOptions__Tenant: bad })), 'DownstreamApis:x:AcquireTokenOptions:Tenant', 'GUID');
    }
  });

  it('accepts SourceType names case-insensitively and as enum numbers', () => {
    const cfg = ok(load({
      AzureAd__ClientCredentials__0__SourceType: 'clientsecret',
      AzureAd__ClientCredentials__0__ClientSecret: 'x',
      AzureAd__ClientCredentials__1__SourceType: '3',
      AzureAd__ClientCredentials__1__CertificateDiskPath: '/certs/app.pfx',
      AzureAd__ClientCredentials__2__SourceType: '7',
      AzureAd__ClientCredentials__2__ManagedIdentityClientId: 'mi-id',
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'Base64Encoded',
      AzureAd__TokenDecryptionCredentials__0__Base64EncodedValue: 'TUlJQw==',
    }));
    expect(cfg.azureAd.clientCredentials.map((c) => c.sourceType)).to.deep.equal(['ClientSecret', 'Path', 'SignedAssertionFromManagedIdentity']);
    expect(cfg.azureAd.clientCredentials[1].certificateDiskPath).to.equal('/certs/app.pfx');
    expect(cfg.azureAd.clientCredentials[2].managedIdentityClientId).to.equal('mi-id');
    expect(cfg.azureAd.clientCredentials[0].tokenExchangeUrl).to.equal('api://AzureADTokenExchange');
    expect(cfg.azureAd.tokenDecryptionCredentials[0].sourceType).to.equal('Base64Encoded');
  });

  it('rejects unknown SourceTypes and certificate stores, which have no meaning on Linux', () => {
    const errors = errorsOf(load({
      AzureAd__ClientCredentials__0__SourceType: 'Magic',
      AzureAd__ClientCredentials__1__SourceType: 'StoreWithThumbprint',
      AzureAd__ClientCredentials__2__SourceType: '5',
      AzureAd__ClientCredentials__3__SourceType: '42',
    }));
    expectError(errors, 'AzureAd:ClientCredentials:0:SourceType', 'not a known credential source');
    expectError(errors, 'AzureAd:ClientCredentials:1:SourceType', 'has no meaning on Linux; use Path, Base64Encoded, KeyVault or SignedAssertionFilePath');
    expectError(errors, 'AzureAd:ClientCredentials:2:SourceType', 'StoreWithDistinguishedName has no meaning on Linux');
    expectError(errors, 'AzureAd:ClientCredentials:3:SourceType', 'not a known credential source');
  });

  it('requires the fields of each credential source type', () => {
    const errors = errorsOf(load({
      AzureAd__ClientCredentials__0__SourceType: 'ClientSecret',
      AzureAd__ClientCredentials__1__SourceType: 'Path',
      AzureAd__ClientCredentials__2__SourceType: 'KeyVault',
      AzureAd__ClientCredentials__2__KeyVaultUrl: 'http://vault.test/',
      AzureAd__ClientCredentials__3__SourceType: 'Base64Encoded',
      AzureAd__ClientCredentials__4__SourceType: 'SignedAssertionFilePath',
      AzureAd__ClientCredentials__5__ClientSecret: 'x',
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'ClientSecret',
      AzureAd__TokenDecryptionCredentials__0__ClientSecret: 'x',
    }));
    expectError(errors, 'AzureAd:ClientCredentials:0:ClientSecret is required for SourceType ClientSecret');
    expectError(errors, 'AzureAd:ClientCredentials:1:CertificateDiskPath is required for SourceType Path');
    expectError(errors, 'AzureAd:ClientCredentials:2:KeyVaultCertificateName is required');
    expectError(errors, 'AzureAd:ClientCredentials:2:KeyVaultUrl must be an absolute https URL');
    expectError(errors, 'AzureAd:ClientCredentials:3:Base64EncodedValue is required');
    expectError(errors, 'AzureAd:ClientCredentials:4:SignedAssertionFileDiskPath is required', 'AZURE_FEDERATED_TOKEN_FILE');
    expectError(errors, 'AzureAd:ClientCredentials:5:SourceType is required');
    expectError(errors, 'AzureAd:TokenDecryptionCredentials:0:SourceType ClientSecret cannot decrypt tokens');
  });

  it('refuses the credential sources it does not implement, naming the key and saying so', () => {
    const errors = errorsOf(load({
      AzureAd__ClientCredentials__0__SourceType: 'SignedAssertionFromVault',
      AzureAd__ClientCredentials__0__KeyVaultUrl: 'https://vault.test/',
      AzureAd__ClientCredentials__0__KeyVaultCertificateName: 'c',
      AzureAd__ClientCredentials__1__SourceType: '9',
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'AutoDecryptKeys',
      AzureAd__TokenDecryptionCredentials__1__SourceType: '10',
    }));
    expectError(errors, 'AzureAd:ClientCredentials:0:SourceType SignedAssertionFromVault is not supported by entra-sidecar');
    expectError(errors, 'AzureAd:ClientCredentials:1:SourceType SignedAssertionFromVault is not supported by entra-sidecar');
    expectError(errors, 'AzureAd:TokenDecryptionCredentials:0:SourceType AutoDecryptKeys is not supported by entra-sidecar');
    expectError(errors, 'AzureAd:TokenDecryptionCredentials:1:SourceType AutoDecryptKeys is not supported by entra-sidecar');
    expect(errors).to.have.length(4);
  });

  it('accepts KeyVault for token decryption, with the same required fields as for client credentials', () => {
    const cfg = ok(load({
      AzureAd__TokenDecryptionCredentials__0__SourceType: 'KeyVault',
      AzureAd__TokenDecryptionCredentials__0__KeyVaultUrl: 'https://vault.test/',
      AzureAd__TokenDecryptionCredentials__0__KeyVaultCertificateName: 'decrypt',
      AzureAd__TokenDecryptionCredentials__0__ManagedIdentityClientId: 'uami',
    }));
    expect(cfg.azureAd.tokenDecryptionCredentials[0]).to.deep.include({ sourceType: 'KeyVault', keyVaultUrl: 'https://vault.test/', keyVaultCertificateName: 'decrypt', managedIdentityClientId: 'uami' });
    expectError(errorsOf(load({ AzureAd__TokenDecryptionCredentials__0__SourceType: 'KeyVault' })), 'AzureAd:TokenDecryptionCredentials:0:KeyVaultUrl is required for SourceType KeyVault');
  });

  it('defaults the assertion file to AZURE_FEDERATED_TOKEN_FILE, then AZURE_ACCESS_TOKEN_FILE, and accepts the README alias', () => {
    const env = { AzureAd__ClientCredentials__0__SourceType: 'SignedAssertionFilePath' };
    const fed = ok(load({ ...env, AZURE_FEDERATED_TOKEN_FILE: '/var/run/secrets/azure/tokens/azure-identity-token', AZURE_ACCESS_TOKEN_FILE: '/other' }));
    expect(fed.azureAd.clientCredentials[0].signedAssertionFileDiskPath).to.equal('/var/run/secrets/azure/tokens/azure-identity-token');
    expect(fed.environment.federatedTokenFile).to.equal('/var/run/secrets/azure/tokens/azure-identity-token');
    expect(ok(load({ ...env, AZURE_ACCESS_TOKEN_FILE: '/access' })).azureAd.clientCredentials[0].signedAssertionFileDiskPath).to.equal('/access');
    const alias = ok(load({ ...env, AzureAd__ClientCredentials__0__SignedAssertionFilePath: '/alias' }));
    expect(alias.azureAd.clientCredentials[0].signedAssertionFileDiskPath).to.equal('/alias');
    expect(alias.warnings).to.deep.equal([]);
  });

  it('turns the legacy AzureAd:ClientSecret into a ClientSecret credential when ClientCredentials is empty', () => {
    const cfg = ok(load({ AzureAd__ClientSecret: 'legacy' }));
    expect(cfg.azureAd.clientCredentials).to.deep.equal([{ sourceType: 'ClientSecret', clientSecret: 'legacy', tokenExchangeUrl: 'api://AzureADTokenExchange', skip: false }]);
  });

  it('defaults AllowWebApiToBeAuthorizedByACL to true and SendX5C to false', () => {
    const cfg = ok(load());
    expect(cfg.azureAd.allowWebApiToBeAuthorizedByACL).to.equal(true);
    expect(cfg.azureAd.sendX5C).to.equal(false);
  });
});

describe('config: DownstreamApis', () => {
  it('binds a downstream API with Microsoft\'s defaults and upper-cases known methods', () => {
    const cfg = ok(load({
      DownstreamApis__graph__BaseUrl: 'https://graph.microsoft.com/v1.0/',
      DownstreamApis__graph__Scopes__0: 'User.Read',
      'DownstreamApis__graph__ExtraHeaderParameters__X-Custom': 'v',
      DownstreamApis__graph__AcquireTokenOptions__ManagedIdentity__UserAssignedClientId: 'uami',
      DownstreamApis__other__HttpMethod: 'post',
    }));
    const graph = cfg.downstreamApis.graph;
    expect(graph).to.include({ baseUrl: 'https://graph.microsoft.com/v1.0/', relativePath: '', httpMethod: 'GET', requestAppToken: false, acceptHeader: 'application/json', contentType: 'application/json', protocolScheme: 'Bearer' });
    expect(graph.extraHeaderParameters).to.deep.equal({ 'X-Custom': 'v' });
    expect(graph.acquireTokenOptions.managedIdentity).to.deep.equal({ userAssignedClientId: 'uami' });
    expect(cfg.downstreamApis.other.httpMethod).to.equal('POST');
    expect(cfg.downstreamApis.other.scopes).to.equal(undefined);
    expect(cfg.downstreamApis.other.acquireTokenOptions.managedIdentity).to.equal(undefined);
  });

  it('treats an empty ManagedIdentity object in JSON as "use managed identity, system-assigned"', () => {
    const cwd = workdir({ 'appsettings.json': '{ "DownstreamApis": { "mi": { "AcquireTokenOptions": { "ManagedIdentity": {} } } } }' });
    expect(ok(load({}, { cwd })).downstreamApis.mi.acquireTokenOptions.managedIdentity).to.deep.equal({});
  });

  it('rejects a scalar where an array is required and says to use index keys', () => {
    const cwd = workdir({ 'appsettings.json': JSON.stringify({ AzureAd: { ClientCapabilities: 'cp1' } }) });
    const errors = errorsOf(load({
      DownstreamApis__graph__Scopes: 'User.Read Mail.Read',
      AzureAd__TokenValidationParameters__ValidAudiences: 'api://x',
      AzureAd__TokenValidationParameters__ValidIssuers: 'https://issuer',
      AzureAd__ClientCredentials: 'ClientSecret',
    }, { cwd }));
    expectError(errors, 'DownstreamApis:graph:Scopes', 'must be an array', 'DownstreamApis__graph__Scopes__0', 'silently ignores');
    expectError(errors, 'AzureAd:TokenValidationParameters:ValidAudiences', 'must be an array', 'ValidAudiences__0');
    expectError(errors, 'AzureAd:TokenValidationParameters:ValidIssuers', 'must be an array');
    expectError(errors, 'AzureAd:ClientCredentials', 'must be an array', 'ClientCredentials__0__SourceType');
    expectError(errors, 'AzureAd:ClientCapabilities', 'must be an array');
  });

  it('rejects malformed downstream URLs, methods and correlation ids', () => {
    const errors = errorsOf(load({
      DownstreamApis__a__BaseUrl: 'graph.microsoft.com',
      DownstreamApis__a__HttpMethod: 'GE T',
      DownstreamApis__a__AcquireTokenOptions__CorrelationId: 'nope',
    }));
    expectError(errors, 'DownstreamApis:a:BaseUrl', 'absolute http(s) URL');
    expectError(errors, 'DownstreamApis:a:HttpMethod');
    expectError(errors, 'DownstreamApis:a:AcquireTokenOptions:CorrelationId', 'GUID');
  });

  it('accepts ProtocolScheme Bearer in any case silently, and warns that any other scheme is ignored (Microsoft sends Bearer only)', () => {
    const cfg = ok(load({ DownstreamApis__a__ProtocolScheme: 'bearer', DownstreamApis__b__ProtocolScheme: 'MTLS_POP', DownstreamApis__c__Scopes__0: 'x' }));
    expect(cfg.warnings.filter((w) => w.includes('ProtocolScheme'))).to.deep.equal([
      "DownstreamApis:b:ProtocolScheme is ignored: the token is always sent as Bearer, as by Microsoft's sidecar (for a PoP-bound request use SignHttpRequest=true)",
    ]);
    for (const api of ['a', 'b', 'c']) expect(cfg.downstreamApis[api].protocolScheme, api).to.equal('Bearer');
  });

  it('drops an ExtraHeaderParameters entry the request can never carry with one start-up warning, naming the key and not the value', () => {
    const cfg = ok(load({
      'DownstreamApis__a__ExtraHeaderParameters__X-Forwarded-For': 'v-forwarded',
      'DownstreamApis__a__ExtraHeaderParameters__sec-fetch-site': 'v-sec',
      'DownstreamApis__a__ExtraHeaderParameters__X-Bad-Value': 'v-bad\r\nX-Evil: 1',
      DownstreamApis__a__ExtraHeaderParameters__Accept: 'v-accept',
      'DownstreamApis__a__ExtraHeaderParameters__X-Custom': 'v-custom',
    }));
    expect(cfg.downstreamApis.a.extraHeaderParameters).to.deep.equal({ 'X-Custom': 'v-custom' });
    const warnings = cfg.warnings.filter((w) => w.includes('ExtraHeaderParameters'));
    expect(warnings).to.have.length(4);
    for (const name of ['X-Forwarded-For', 'sec-fetch-site', 'X-Bad-Value', 'Accept']) {
      expect(warnings.some((w) => w.startsWith(`DownstreamApis:a:ExtraHeaderParameters:${name} is never sent (`))).to.equal(true);
    }
    expect(warnings.join('\n')).not.to.include('v-');
  });
});

describe('config: AcquireTokenOptions:ExtraHeadersParameters', () => {
  const key = (name: string) => `DownstreamApis__a__AcquireTokenOptions__ExtraHeadersParameters__${name}`;

  it('binds extra token-request headers with their configured names', () => {
    const cfg = ok(load({ [key('X-Token-Hint')]: 'v1', [key('x-ms-routing')]: 'v2' }));
    expect(cfg.downstreamApis.a.acquireTokenOptions.extraHeadersParameters).to.deep.equal({ 'X-Token-Hint': 'v1', 'x-ms-routing': 'v2' });
  });

  it('refuses the names the token request needs, case-insensitively, naming the key', () => {
    const reserved = ['Content-Type', 'content-length', 'HOST', 'client-request-id', 'Authorization', 'Cookie', 'Transfer-Encoding', 'Connection', 'Accept', 'Proxy-Authorization', 'X-Client-SKU', 'x-anchormailbox', 'Content-Language', 'Sec-Fetch-Mode'];
    const errors = errorsOf(load(Object.fromEntries(reserved.map((n) => [key(n), 'v']))));
    for (const name of reserved) {
      expectError(errors, `DownstreamApis:a:AcquireTokenOptions:ExtraHeadersParameters:${name} cannot be set`, 'the token request needs that header');
    }
    expect(errors).to.have.length(reserved.length);
  });

  it('refuses values with control characters, without quoting the value', () => {
    const errors = errorsOf(load({ [key('X-One')]: 'a\r\nInjected: yes', [key('X-Two')]: 'nul\u0000', [key('X-Tab')]: 'tab\tis fine' }));
    expectError(errors, 'DownstreamApis:a:AcquireTokenOptions:ExtraHeadersParameters:X-One has a control character');
    expectError(errors, 'DownstreamApis:a:AcquireTokenOptions:ExtraHeadersParameters:X-Two has a control character');
    expect(errors).to.have.length(2);
    expect(errors.join('\n')).not.to.include('Injected');
  });
});

describe('config: Sidecar section', () => {
  it('applies the documented defaults', () => {
    const s = ok(load()).sidecar;
    expect(s.allowOverrides).to.deep.equal({ getAuthorizationHeader: true, getAuthorizationHeaderUnauthenticated: false, callDownstreamApi: true, callDownstreamApiUnauthenticated: false });
    expect(s.allowOutboundRedirects).to.equal(false);
    expect(s.popValidation).to.deep.equal({
      validateM: true, validateU: true, validateP: true, validateQ: false, acceptUnsignedQueryParameters: true,
      signedHttpRequestLifetimeSec: 300, replayCache: false, validatePresentClaims: false, claimsToValidateWhenPresent: ['m', 'p'],
    });
    expect(s.http).to.deep.include({ maxHeaderBytes: 32768, maxBodyBytes: 30_000_000, maxBufferedBodyBytes: 33_554_432, requestTimeoutMs: 30_000, headersTimeoutMs: 10_000 });
    expect(s.outbound).to.deep.equal({ extraCaFiles: [], connectTimeoutMs: 5000, timeoutMs: 10_000, maxResponseBytes: 1_048_576 });
    expect(s.validation).to.deep.equal({ clockSkewSec: 300, signingKeysRefreshIntervalSec: 86_400, unknownKidCooldownSec: 300, verifiedTokenCacheSize: 10_000 });
    expect(s.tokenCache).to.deep.equal({ maxEntries: 10_000, expiryBufferSec: 300 });
    expect(s.downstreamApi).to.deep.equal({ returnAllResponseHeaders: false, maxResponseBytes: 10_485_760, maxRedirects: 5 });
    expect(s.extAuthz).to.deep.include({ validate: 'required', injectHeader: 'authorization', reflection: false, maxReceiveMessageBytes: 1_048_576, requireAll: false });
    expect(s.extAuthz.claimsToHeaders).to.deep.equal({});
    expect(s.logLevel).to.equal('info');
  });

  it('maps Logging:LogLevel:Default to pino levels and lets Sidecar:LogLevel override it', () => {
    const pairs: [string, string][] = [['Trace', 'trace'], ['Debug', 'debug'], ['Information', 'info'], ['Warning', 'warn'], ['Error', 'error'], ['Critical', 'fatal'], ['None', 'silent']];
    for (const [dotnet, pino] of pairs) expect(ok(load({ Logging__LogLevel__Default: dotnet })).sidecar.logLevel).to.equal(pino);
    expect(ok(load({ Logging__LogLevel__Default: 'Warning', Sidecar__LogLevel: 'debug' })).sidecar.logLevel).to.equal('debug');
    expectError(errorsOf(load({ Sidecar__LogLevel: 'loud' })), 'Sidecar:LogLevel');
  });

  it('parses SignedHttpRequestLifetime as a TimeSpan and requires it to be positive', () => {
    expect(ok(load({ Sidecar__PopValidation__SignedHttpRequestLifetime: '00:01:30' })).sidecar.popValidation.signedHttpRequestLifetimeSec).to.equal(90);
    expect(ok(load({ Sidecar__PopValidation__SignedHttpRequestLifetime: '1.00:00:00' })).sidecar.popValidation.signedHttpRequestLifetimeSec).to.equal(86_400);
    expectError(errorsOf(load({ Sidecar__PopValidation__SignedHttpRequestLifetime: '00:00:00' })), 'SignedHttpRequestLifetime', 'greater than zero');
    expectError(errorsOf(load({ Sidecar__PopValidation__SignedHttpRequestLifetime: '300' })), 'SignedHttpRequestLifetime', 'hh:mm:ss');
  });

  it('binds ext_authz claims-to-headers with lower-case header names', () => {
    const cfg = ok(load({ 'Sidecar__ExtAuthz__ClaimsToHeaders__X-User-Oid': 'oid', Sidecar__ExtAuthz__RequiredScopes__0: 'access_as_user' }));
    expect(cfg.sidecar.extAuthz.claimsToHeaders).to.deep.equal({ 'x-user-oid': 'oid' });
    expect(cfg.sidecar.extAuthz.requiredScopes).to.deep.equal(['access_as_user']);
  });

  it('rejects booleans, numbers and enumerations that do not parse', () => {
    const errors = errorsOf(load({
      Sidecar__AllowOutboundRedirects: 'yes',
      Sidecar__Http__MaxBodyBytes: '1MB',
      Sidecar__Outbound__TimeoutMs: '0',
      Sidecar__ExtAuthz__Validate: 'always',
      AzureAd__SendX5C: '1',
    }));
    expectError(errors, 'Sidecar:AllowOutboundRedirects must be true or false');
    expectError(errors, 'Sidecar:Http:MaxBodyBytes', 'whole number');
    expectError(errors, 'Sidecar:Outbound:TimeoutMs must be at least 1');
    expectError(errors, 'Sidecar:ExtAuthz:Validate must be one of required, optional, none');
    expectError(errors, 'AzureAd:SendX5C must be true or false');
  });

  it('rejects an ext_authz default DownstreamApi that is not configured (names are case-sensitive)', () => {
    expectError(errorsOf(load({ Sidecar__ExtAuthz__DownstreamApi: 'Graph', DownstreamApis__graph__Scopes__0: 'a' })), 'Sidecar:ExtAuthz:DownstreamApi', 'not configured');
    expect(ok(load({ Sidecar__ExtAuthz__DownstreamApi: 'graph', DownstreamApis__graph__Scopes__0: 'a' })).sidecar.extAuthz.downstreamApi).to.equal('graph');
  });

  it('rejects unknown Sidecar keys with a "did you mean" hint', () => {
    const errors = errorsOf(load({ Sidecar__AllowOutboundRedirect: 'true', Sidecar__Nonsense__Thing: '1' }));
    expectError(errors, 'Sidecar:AllowOutboundRedirect is not a known setting', 'did you mean Sidecar:AllowOutboundRedirects?');
    expectError(errors, 'Sidecar:Nonsense:Thing is not a known setting');
  });

  it('warns, without failing, about Microsoft keys it ignores and unknown AzureAd / DownstreamApis keys', () => {
    const cfg = ok(load({
      AzureAd__EnablePiiLogging: 'true',
      AzureAd__ClientCredentials__0__SourceType: 'ClientSecret',
      AzureAd__ClientCredentials__0__ClientSecret: 'x',
      AzureAd__ClientCredentials__0__CertificateThumbprint: 'ab',
      AzureAd__ClientIdd: 'x',
      DownstreamApis__graph__AcquireTokenOptions__PopClaims: 'x',
      DownstreamApis__graph__Scopes__0: 'a',
    }));
    const w = cfg.warnings.join('\n');
    expect(w).to.include('AzureAd:EnablePiiLogging is not used by entra-sidecar');
    expect(w).to.include('AzureAd:ClientCredentials:0:CertificateThumbprint is not used by entra-sidecar');
    expect(w).to.include('AzureAd:ClientIdd is not a known setting; ignored; did you mean AzureAd:ClientId?');
    expect(w).to.include('DownstreamApis:graph:AcquireTokenOptions:PopClaims is not used');
    expect(cfg.warnings).to.have.length(4);
  });

  it('ignores environment variables outside the configuration sections', () => {
    expect(ok(load({ PATH: '/usr/bin', HOME: '/root', SIDECAR_FOO: 'x', Logging__LogLevel__Microsoft: 'Warning' })).warnings).to.deep.equal([]);
  });

  it('records NODE_EXTRA_CA_CERTS and Sidecar:Outbound:CaFile as extra trust, and fails on a missing CaFile', () => {
    const cwd = workdir({ 'node-extra.pem': 'x', 'proxy-ca.pem': 'y' });
    const cfg = ok(load({ NODE_EXTRA_CA_CERTS: join(cwd, 'node-extra.pem'), Sidecar__Outbound__CaFile: 'proxy-ca.pem' }, { cwd }));
    expect(cfg.sidecar.outbound.extraCaFiles).to.deep.equal([join(cwd, 'node-extra.pem'), join(cwd, 'proxy-ca.pem')]);
    expect(cfg.sidecar.outbound.caFile).to.equal(join(cwd, 'proxy-ca.pem'));
    expectError(errorsOf(load({ Sidecar__Outbound__CaFile: 'absent.pem' }, { cwd })), 'Sidecar:Outbound:CaFile');
  });

  it('collects the managed-identity environment for msal', () => {
    const cfg = ok(load({ IDENTITY_ENDPOINT: 'http://169.254.169.254/x', IDENTITY_HEADER: 'h', MSI_ENDPOINT: '', UNRELATED: 'u' }));
    expect(cfg.environment.managedIdentityEnv).to.deep.equal({ IDENTITY_ENDPOINT: 'http://169.254.169.254/x', IDENTITY_HEADER: 'h' });
  });
});

describe('config: result', () => {
  it('reports every problem in one result', () => {
    const errors = errorsOf(loadConfig({
      argv: [],
      env: {
        AzureAd__Instance: 'http://insecure/',
        DownstreamApis__graph__Scopes: 'User.Read',
        AzureAd__ClientCredentials__0__SourceType: 'StoreWithThumbprint',
        Sidecar__AllowOutboundRedirects: 'maybe',
        Sidecar__ExtAuthz__Validate: 'sometimes',
        Sidecar__Typo: 'x',
      },
      cwd: workdir(),
    }));
    for (const key of ['AzureAd:ClientId', 'AzureAd:TenantId', 'AzureAd:Instance', 'DownstreamApis:graph:Scopes', 'AzureAd:ClientCredentials:0:SourceType', 'Sidecar:AllowOutboundRedirects', 'Sidecar:ExtAuthz:Validate', 'Sidecar:Typo']) {
      expectError(errors, key);
    }
    expect(errors).to.have.length(8);
  });

  it('quotes a value only from a setting that holds no secret, cut to 100 characters, as docs/configuration.md says', () => {
    const host = `bad_host${'x'.repeat(300)}`;
    const errors = errorsOf(load({ Sidecar__ExtAuthz__Routes__0__Hosts__0: host, Sidecar__ExtAuthz__Routes__0__PathPrefix: '/api' }));
    expectError(errors, 'Sidecar:ExtAuthz:Routes:0:Hosts', `"${host.slice(0, 100)}"`);
    expect(errors.join('\n')).not.to.include(host.slice(0, 101));
    const docs = readFileSync(join(repoRoot, 'docs', 'configuration.md'), 'utf8');
    const validation = docs.slice(docs.indexOf('## Validation'), docs.indexOf('## How entra-sidecar differs'));
    expect(validation).not.to.include('never contain a configured value');
    expect(validation).to.include('never contain a secret').and.include('cut to 100 characters');
  });

  it('never puts a secret, or the value of an unknown or unparsable setting, into an error or warning', () => {
    const secret = 'S3cr3t-VALUE-do-not-print';
    const env = {
      AzureAd__ClientCredentials__0__SourceType: secret,
      AzureAd__ClientCredentials__1__SourceType: 'ClientSecret',
      AzureAd__ClientCredentials__1__ClientSecret: secret,
      AzureAd__ClientCredentials__2__SourceType: 'Base64Encoded',
      AzureAd__ClientCredentials__2__Base64EncodedValue: `${secret}!`,
      AzureAd__ClientCredentials__2__CertificatePassword: secret,
      AzureAd__Instance: `https://${secret}.test/?q=${secret}`,
      AzureAd__UnknownThing: secret,
      Sidecar__AllowOutboundRedirects: secret,
      Sidecar__Http__Url: `http://${secret}:1`,
      Sidecar__ExtAuthz__Address: secret,
      Sidecar__LogLevel: secret,
      Sidecar__Unknown: secret,
      DownstreamApis__graph__Scopes: secret,
      DownstreamApis__graph__BaseUrl: secret,
      ASPNETCORE_HTTP_PORTS: secret,
    };
    const failed = loadConfig({ argv: [secret, `--AzureAd:ClientCredentials:3:SourceType=${secret}`], env, cwd: workdir({ 'appsettings.json': `{ "x": ${secret} }` }) });
    const text = errorsOf(failed).join('\n');
    expect(text).not.to.include(secret);
    expect(text).not.to.include('S3cr3t');
    const passed = ok(load({ AzureAd__ClientSecret: secret, AzureAd__Unknown: secret, AzureAd__EnablePiiLogging: secret }));
    expect(passed.warnings.join('\n')).not.to.include('S3cr3t');
  });

  it('returns a deeply frozen configuration', () => {
    const result = load({ DownstreamApis__graph__Scopes__0: 'User.Read', 'Sidecar__ExtAuthz__ClaimsToHeaders__x-oid': 'oid' });
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const c = result.config;
    for (const obj of [c, c.azureAd, c.azureAd.validAudiences, c.downstreamApis, c.downstreamApis.graph, c.downstreamApis.graph.scopes, c.downstreamApis.graph.acquireTokenOptions.extraQueryParameters, c.sidecar.http.listen, c.sidecar.http.listen[0], c.sidecar.extAuthz.claimsToHeaders, c.environment.managedIdentityEnv]) {
      expect(Object.isFrozen(obj)).to.equal(true);
    }
    expect(() => { (c.downstreamApis.graph.scopes as string[]).push('x'); }).to.throw(TypeError);
  });

  it('does not throw for an unreadable settings path (a directory)', () => {
    const cwd = workdir();
    mkdirSync(join(cwd, 'appsettings.json'));
    expectError(errorsOf(load({}, { cwd })), 'appsettings.json', 'cannot read');
  });
});

describe('config: duration bounds (no timer longer than setTimeout keeps)', () => {
  const bounded = CONFIG_KEYS.filter((d) => d.max !== undefined);
  const envKey = (key: string): string => key.replace(/:/g, '__');

  it('gives every key in ms or s a maximum', () => {
    for (const doc of CONFIG_KEYS) if (doc.unit === 'ms' || doc.unit === 's') expect(doc.max, doc.key).to.be.a('number');
  });

  it('keeps every delay the maximums allow, and what is derived from them, within 2^31-1 ms', () => {
    for (const doc of bounded) expect((doc.unit === 's' ? 1000 : 1) * doc.max!, doc.key).to.be.at.most(MAX_TIMER_DELAY_MS);
    // Node's HTTP server adds a second to the keep-alive timeout; ext_authz honours up to 6 outbound timeouts.
    expect(findKeyDoc('Sidecar:Http:KeepAliveTimeoutMs')!.max! + 1000).to.be.at.most(MAX_TIMER_DELAY_MS);
    expect(MAX_DEADLINE_OUTBOUND_TIMEOUTS * findKeyDoc('Sidecar:Outbound:TimeoutMs')!.max!).to.be.at.most(MAX_TIMER_DELAY_MS);
  });

  it('accepts each duration at its maximum', () => {
    const cfg = ok(load(Object.fromEntries(bounded.map((d) => [envKey(d.key), String(d.max)]))));
    expect(cfg.sidecar.validation.signingKeysRefreshIntervalSec).to.equal(2_147_483);
    expect(cfg.sidecar.outbound.timeoutMs).to.equal(357_913_941);
    expect(cfg.sidecar.http.keepAliveTimeoutMs).to.equal(2_147_482_647);
  });

  it('refuses each duration above its maximum, naming the key and the maximum', () => {
    const errors = errorsOf(load(Object.fromEntries(bounded.map((d) => [envKey(d.key), String(d.max! + 1)]))));
    expect(errors).to.have.length(bounded.length);
    for (const d of bounded) expectError(errors, `${d.key} must be at most ${d.max} ${d.unit}`);
    expectError(errors, 'Sidecar:Validation:SigningKeysRefreshIntervalSec must be at most 2147483 s (about 24.8 days)');
    expectError(errors, 'Sidecar:Outbound:TimeoutMs must be at most 357913941 ms (about 4.1 days)');
  });

  it('refuses an AzureAd:TokenValidationParameters:ClockSkew longer than Sidecar:Validation:ClockSkewSec allows', () => {
    expectError(errorsOf(load({ AzureAd__TokenValidationParameters__ClockSkew: '30.00:00:00' })), 'AzureAd:TokenValidationParameters:ClockSkew must be at most 2147483 s', 'Sidecar:Validation:ClockSkewSec');
    expect(ok(load({ AzureAd__TokenValidationParameters__ClockSkew: '24.00:00:00' })).sidecar.validation.clockSkewSec).to.equal(24 * 86_400);
  });
});
