import { expect } from 'chai';
import { assertScopes, overridesAllowed, resolveApiOptions, scopesMissingDetail } from '../../src/pipeline/api-options.js';
import { parseGuid } from '../../src/guid.js';
import { SidecarError } from '../../src/errors.js';
import { acquireTokenOptions, downstreamApi, makeConfig } from './fixtures.js';

const config = makeConfig({
  downstreamApis: {
    graph: downstreamApi({
      baseUrl: 'https://graph.microsoft.com/v1.0/',
      relativePath: 'me',
      scopes: ['User.Read'],
      extraHeaderParameters: { 'X-Configured': 'yes' },
      extraQueryParameters: { a: '1' },
      acquireTokenOptions: acquireTokenOptions({ forceRefresh: true, tenant: 'configured-tenant' }),
    }),
    'graph-app': downstreamApi({ scopes: ['https://graph.microsoft.com/.default'], requestAppToken: true }),
  },
});

function q(s: string): URLSearchParams {
  return new URLSearchParams(s);
}

describe('api-options: named lookup and copying', () => {
  it('resolves a configured API by its exact, case-sensitive name', () => {
    expect(resolveApiOptions(config, 'graph', q(''), true).options.scopes).to.deep.equal(['User.Read']);
    const other = resolveApiOptions(config, 'Graph', q(''), true).options;
    expect(other.scopes).to.equal(undefined);
    expect(other.apiName).to.equal('Graph');
  });

  it('answers a request without a query with one frozen resolution per name, the one a query without overrides gets', () => {
    for (const allow of [true, false]) {
      const a = resolveApiOptions(config, 'graph', q(''), allow);
      expect(resolveApiOptions(config, 'graph', q(''), allow)).to.equal(a);
      expect(Object.isFrozen(a) && Object.isFrozen(a.options)).to.equal(true);
      expect(a).to.deep.equal(resolveApiOptions(config, 'graph', q('unrelated=1'), allow));
    }
    expect(resolveApiOptions(config, 'graph-app', q(''), true).options).to.not.equal(resolveApiOptions(config, 'graph', q(''), true).options);
    // Unconfigured names are not kept.
    expect(resolveApiOptions(config, 'nope', q(''), true)).to.not.equal(resolveApiOptions(config, 'nope', q(''), true));
  });

  it('resolves an unknown name to Microsoft default options rather than an error', () => {
    const o = resolveApiOptions(config, 'nope', q(''), true).options;
    expect(o.baseUrl).to.equal(undefined);
    expect(o).to.include({ requestAppToken: false, httpMethod: 'Get', relativePath: '', acceptHeader: 'application/json' });
    expect(o.scopes).to.equal(undefined);
  });

  it('gives every request its own copy and never changes the configured object', () => {
    const before = JSON.stringify(config.downstreamApis.graph);
    const a = resolveApiOptions(config, 'graph', q('optionsOverride.Scopes=x&optionsOverride.ExtraHeaderParameters.X-New=1'), true).options;
    const b = resolveApiOptions(config, 'graph', q(''), true).options;
    expect(a.scopes).to.deep.equal(['x']);
    expect(b.scopes).to.deep.equal(['User.Read']);
    expect(b.extraHeaderParameters).to.deep.equal({ 'X-Configured': 'yes' });
    expect(a.scopes).to.not.equal(config.downstreamApis.graph.scopes);
    expect(JSON.stringify(config.downstreamApis.graph)).to.equal(before);
  });
});

describe('api-options: optionsOverride grammar', () => {
  it('matches the prefix and sub-keys case-insensitively and adds each non-blank Scopes value as one element', () => {
    const o = resolveApiOptions(config, 'graph', q('OPTIONSOVERRIDE.scopes=Mail.Read&optionsOverride.SCOPES=%20&optionsoverride.Scopes=a b,c'), true).options;
    expect(o.scopes).to.deep.equal(['Mail.Read', 'a b,c']);
  });

  it('keeps configured scopes when every Scopes override is blank', () => {
    const r = resolveApiOptions(config, 'graph', q('optionsOverride.Scopes='), true);
    expect(r.options.scopes).to.deep.equal(['User.Read']);
  });

  it('lets the last occurrence of a single-valued key win and ignores empty values', () => {
    const o = resolveApiOptions(config, 'graph', q('optionsOverride.RelativePath=one&optionsOverride.RelativePath=two&optionsOverride.HttpMethod=&optionsOverride.AcceptHeader=text/plain&optionsOverride.ContentType=text/csv'), true).options;
    expect(o.relativePath).to.equal('two');
    expect(o.httpMethod).to.equal('Get');
    expect(o.acceptHeader).to.equal('text/plain');
    expect(o.contentType).to.equal('text/csv');
  });

  it('takes only the last occurrence of a single-valued key and then applies the merge rule to it, so an empty or unparseable last value overrides nothing', () => {
    const o = resolveApiOptions(
      config,
      'graph',
      q(
        'optionsOverride.RelativePath=etag&optionsOverride.RelativePath=' +
          '&optionsOverride.HttpMethod=Put&optionsOverride.HttpMethod=' +
          '&optionsOverride.AcceptHeader=text/plain&optionsOverride.AcceptHeader=' +
          '&optionsOverride.ContentType=text/csv&optionsOverride.ContentType=' +
          '&optionsOverride.RequestAppToken=true&optionsOverride.RequestAppToken=bogus' +
          '&optionsOverride.AcquireTokenOptions.Tenant=contoso.onmicrosoft.com&optionsOverride.AcquireTokenOptions.Tenant=' +
          '&optionsOverride.AcquireTokenOptions.ForceRefresh=true&optionsOverride.AcquireTokenOptions.ForceRefresh=bogus' +
          '&optionsOverride.AcquireTokenOptions.Claims={"x":1}&optionsOverride.AcquireTokenOptions.Claims=' +
          '&optionsOverride.AcquireTokenOptions.CorrelationId=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee&optionsOverride.AcquireTokenOptions.CorrelationId=not-a-guid' +
          '&optionsOverride.AcquireTokenOptions.FmiPath=agent-1&optionsOverride.AcquireTokenOptions.FmiPath=' +
          '&optionsOverride.AcquireTokenOptions.LongRunningWebApiSessionKey=k1&optionsOverride.AcquireTokenOptions.LongRunningWebApiSessionKey=' +
          '&optionsOverride.AcquireTokenOptions.PopPublicKey=pk&optionsOverride.AcquireTokenOptions.PopPublicKey=' +
          '&optionsOverride.AcquireTokenOptions.ManagedIdentity.UserAssignedClientId=ua-1&optionsOverride.AcquireTokenOptions.ManagedIdentity.UserAssignedClientId=' +
          '&optionsOverride.ExtraHeaderParameters.X-Configured=new&optionsOverride.ExtraHeaderParameters.X-Configured=',
      ),
      true,
    ).options;
    expect(o).to.include({ relativePath: 'me', httpMethod: 'Get', acceptHeader: 'application/json', contentType: 'application/json', requestAppToken: false });
    expect(o.acquireTokenOptions).to.include({ tenant: 'configured-tenant', forceRefresh: false, claims: undefined, correlationId: undefined, fmiPath: undefined, longRunningWebApiSessionKey: undefined, popPublicKey: undefined, managedIdentity: undefined });
    expect(o.extraHeaderParameters).to.deep.equal({ 'X-Configured': 'yes' });
  });

  it('treats names that differ only in letter case as one key whose last value wins, keeping the first spelling', () => {
    const o = resolveApiOptions(
      config,
      'graph',
      q('optionsOverride.RelativePath=one&OPTIONSOVERRIDE.relativepath=two&optionsOverride.ExtraQueryParameters.Page=1&optionsoverride.extraqueryparameters.PAGE=2&optionsOverride.ExtraHeaderParameters.X-A=1&optionsOverride.extraHeaderParameters.x-a=2'),
      true,
    ).options;
    expect(o.relativePath).to.equal('two');
    expect(o.extraQueryParameters).to.deep.equal({ a: '1', Page: '2' });
    expect(o.extraHeaderParameters).to.deep.equal({ 'X-Configured': 'yes', 'X-A': '2' });
  });

  it('refuses a bad HttpMethod or Tenant only when it is the last occurrence', () => {
    const last = (key: string, values: string[]) => values.map((v) => `optionsOverride.${key}=${encodeURIComponent(v)}`).join('&');
    const tenant = 'AcquireTokenOptions.Tenant';
    expect(resolveApiOptions(config, 'graph', q(last(tenant, ['../x', 'contoso.onmicrosoft.com'])), true).options.acquireTokenOptions.tenant).to.equal('contoso.onmicrosoft.com');
    expect(resolveApiOptions(config, 'graph', q(last(tenant, ['../x', ''])), true).options.acquireTokenOptions.tenant).to.equal('configured-tenant');
    expect(() => resolveApiOptions(config, 'graph', q(last(tenant, ['contoso.onmicrosoft.com', '../x'])), true)).to.throw(SidecarError);
    // The method is checked when the call is made (normaliseHttpMethod): what matters is which value reaches it.
    expect(resolveApiOptions(config, 'graph', q(last('HttpMethod', ['Bad Method', 'Put'])), true).options.httpMethod).to.equal('Put');
    expect(resolveApiOptions(config, 'graph', q(last('HttpMethod', ['Put', 'Bad Method'])), true).options.httpMethod).to.equal('Bad Method');
  });

  it('applies RequestAppToken only when true and never turns a configured true off', () => {
    expect(resolveApiOptions(config, 'graph', q('optionsOverride.RequestAppToken=TRUE'), true).options.requestAppToken).to.equal(true);
    expect(resolveApiOptions(config, 'graph-app', q('optionsOverride.RequestAppToken=false'), true).options.requestAppToken).to.equal(true);
    expect(resolveApiOptions(config, 'graph', q('optionsOverride.RequestAppToken=yes'), true).options.requestAppToken).to.equal(false);
  });

  it('always ignores BaseUrl, flags it, and does not count it as an override on its own', () => {
    const r = resolveApiOptions(config, 'graph', q('optionsOverride.BaseUrl=https://evil.example/'), false);
    expect(r.options.baseUrl).to.equal('https://graph.microsoft.com/v1.0/');
    expect(r.baseUrlOverrideIgnored).to.equal(true);
    expect(r.overridesIgnored).to.equal(false);
    expect(resolveApiOptions(config, 'graph', q('optionsOverride.BaseUrl=https://evil.example/'), true).options.baseUrl).to.equal('https://graph.microsoft.com/v1.0/');
  });

  it('copies ForceRefresh whenever any override is given, resetting a configured true', () => {
    expect(resolveApiOptions(config, 'graph', q(''), true).options.acquireTokenOptions.forceRefresh).to.equal(true);
    expect(resolveApiOptions(config, 'graph', q('optionsOverride.RelativePath=x'), true).options.acquireTokenOptions.forceRefresh).to.equal(false);
    expect(resolveApiOptions(config, 'graph', q('optionsOverride.AcquireTokenOptions.ForceRefresh=true'), true).options.acquireTokenOptions.forceRefresh).to.equal(true);
  });

  it('merges the AcquireTokenOptions sub-keys', () => {
    const o = resolveApiOptions(
      config,
      'graph',
      q(
        'optionsOverride.AcquireTokenOptions.Tenant=contoso.onmicrosoft.com&optionsOverride.AcquireTokenOptions.Claims={"x":1}' +
          '&optionsOverride.acquiretokenoptions.fmipath=agent-1&optionsOverride.AcquireTokenOptions.LongRunningWebApiSessionKey=k1' +
          '&optionsOverride.AcquireTokenOptions.PopPublicKey=pk&optionsOverride.AcquireTokenOptions.ManagedIdentity.UserAssignedClientId=ua-1',
      ),
      true,
    ).options.acquireTokenOptions;
    expect(o).to.include({ tenant: 'contoso.onmicrosoft.com', claims: '{"x":1}', fmiPath: 'agent-1', longRunningWebApiSessionKey: 'k1', popPublicKey: 'pk' });
    expect(o.managedIdentity).to.deep.equal({ userAssignedClientId: 'ua-1' });
  });

  it('accepts a CorrelationId only when it is a non-empty GUID', () => {
    const ok = resolveApiOptions(config, 'graph', q('optionsOverride.AcquireTokenOptions.CorrelationId={AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE}'), true).options;
    expect(ok.acquireTokenOptions.correlationId).to.equal('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee');
    const bad = resolveApiOptions(config, 'graph', q('optionsOverride.AcquireTokenOptions.CorrelationId=not-a-guid'), true).options;
    expect(bad.acquireTokenOptions.correlationId).to.equal(undefined);
    const empty = resolveApiOptions(config, 'graph', q('optionsOverride.AcquireTokenOptions.CorrelationId=00000000-0000-0000-0000-000000000000'), true).options;
    expect(empty.acquireTokenOptions.correlationId).to.equal(undefined);
  });

  it('adds or overwrites extra header (case-insensitive names) and query parameters', () => {
    const o = resolveApiOptions(config, 'graph', q('optionsOverride.ExtraHeaderParameters.x-configured=new&optionsOverride.ExtraHeaderParameters.X-Other=1&optionsOverride.ExtraHeaderParameters.X-Empty=&optionsOverride.ExtraQueryParameters.a=2&optionsOverride.ExtraQueryParameters.b='), true).options;
    expect(o.extraHeaderParameters).to.deep.equal({ 'x-configured': 'new', 'X-Other': '1' });
    expect(o.extraQueryParameters).to.deep.equal({ a: '2', b: '' });
  });

  it('counts unrecognised sub-keys as overrides without applying anything', () => {
    const r = resolveApiOptions(config, 'graph', q('optionsOverride.CustomHeader.X=1'), false);
    expect(r.overridesIgnored).to.equal(true);
    const allowed = resolveApiOptions(config, 'graph', q('optionsOverride.Whatever=1'), true);
    expect(allowed.overridesIgnored).to.equal(false);
    expect(allowed.options.acquireTokenOptions.forceRefresh).to.equal(false);
  });

  it('ignores every override when the route does not allow them, and says so', () => {
    const r = resolveApiOptions(config, 'graph', q('optionsOverride.Scopes=evil&optionsOverride.RequestAppToken=true'), false);
    expect(r.overridesIgnored).to.equal(true);
    expect(r.options.scopes).to.deep.equal(['User.Read']);
    expect(r.options.requestAppToken).to.equal(false);
    expect(resolveApiOptions(config, 'graph', q(''), false).overridesIgnored).to.equal(false);
  });

  it('returns frozen options', () => {
    const o = resolveApiOptions(config, 'graph', q(''), true).options;
    expect(Object.isFrozen(o)).to.equal(true);
    expect(Object.isFrozen(o.acquireTokenOptions)).to.equal(true);
  });
});

describe('api-options: agent identity parameters', () => {
  const AGENT = 'aaaaaaaa-0000-0000-0000-000000000001';
  const OID = 'bbbbbbbb-0000-0000-0000-000000000002';

  it('ignores user parameters without AgentIdentity (no 400)', () => {
    expect(resolveApiOptions(config, 'graph', q(`AgentUsername=u@x&AgentUserId=${OID}`), true).agent).to.equal(undefined);
  });

  it('lets the username win over the user id', () => {
    expect(resolveApiOptions(config, 'graph', q(`agentidentity=${AGENT}&AgentUserId=${OID}&AGENTUSERNAME=u@x`), true).agent).to.deep.equal({ agentIdentity: AGENT, username: 'u@x' });
  });

  it('selects the agent user by object id when it is a GUID, else a plain agent', () => {
    expect(resolveApiOptions(config, 'graph', q(`AgentIdentity=${AGENT}&AgentUserId=${OID.toUpperCase()}`), true).agent).to.deep.equal({ agentIdentity: AGENT, userId: OID });
    expect(resolveApiOptions(config, 'graph', q(`AgentIdentity=${AGENT}&AgentUserId=nope`), true).agent).to.deep.equal({ agentIdentity: AGENT });
  });

  it('ignores agent parameters when overrides are not allowed, and flags it', () => {
    const r = resolveApiOptions(config, 'graph', q(`AgentIdentity=${AGENT}`), false);
    expect(r.agent).to.equal(undefined);
    expect(r.agentParamsIgnored).to.equal(true);
    expect(resolveApiOptions(config, 'graph', q(''), false).agentParamsIgnored).to.equal(false);
  });
});

describe('api-options: scopes check and route switches', () => {
  it('throws scopes_missing with Microsoft text when scopes are null', () => {
    const o = resolveApiOptions(config, 'unknown', q(''), true).options;
    let thrown: unknown;
    try {
      assertScopes(o);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).to.be.instanceOf(SidecarError);
    expect((thrown as SidecarError).code).to.equal('scopes_missing');
    expect((thrown as SidecarError).detail).to.equal("No scopes found for the API 'unknown' or in optionsOverride. 'scopes' needs to be either a single value or a list of values.");
    expect(scopesMissingDetail('x')).to.contain("'x'");
  });

  it('accepts an empty list unless nonEmpty is asked for (DownstreamApi)', () => {
    const c = makeConfig({ downstreamApis: { empty: downstreamApi({ scopes: [] }) } });
    const o = resolveApiOptions(c, 'empty', q(''), true).options;
    expect(() => assertScopes(o)).to.not.throw();
    expect(() => assertScopes(o, true)).to.throw(SidecarError);
  });

  it('reads the per-route AllowOverrides switches', () => {
    const c = makeConfig({ allowOverrides: true });
    expect(overridesAllowed(c, 'GetAuthorizationHeader')).to.equal(true);
    expect(overridesAllowed(c, 'GetAuthorizationHeaderUnauthenticated')).to.equal(false);
    expect(overridesAllowed(c, 'CallDownstreamApi')).to.equal(true);
    expect(overridesAllowed(c, 'CallDownstreamApiUnauthenticated')).to.equal(false);
  });

  it('parses GUIDs in D, N and braced forms', () => {
    expect(parseGuid('AAAAAAAABBBBCCCCDDDDEEEEEEEEEEEE')).to.equal('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee');
    expect(parseGuid('(aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)')).to.equal('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee');
    expect(parseGuid(' {AAAAAAAA-bbbb-cccc-dddd-eeeeeeeeeeee} ')).to.equal('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee');
    expect(parseGuid('aaaa')).to.equal(undefined);
    // .NET pairs the brackets: a mixed pair is not a GUID.
    expect(parseGuid('{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)')).to.equal(undefined);
  });
});
