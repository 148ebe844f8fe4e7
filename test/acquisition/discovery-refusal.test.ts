/**
 * Which refused GETs may turn an msal failure into 401 acquisition_rejected: only a refusal of the
 * authority's metadata, and only when msal then stops with endpoints_resolution_error. msal also
 * GETs IMDS for the region (AzureRegion=TryAutoDetect) and recovers when IMDS refuses; a later,
 * unrelated failure must keep its own mapping.
 *
 * In-process (the real acquirer, msal and network module) on an undici MockAgent rather than the
 * built sidecar: IMDS is 169.254.169.254, which no loopback emulator can stand in for.
 */
import { expect } from 'chai';
import { MockAgent } from 'undici';
import { createTokenAcquirer } from '../../src/acquisition/acquirer.js';
import type { SidecarConfig } from '../../src/config/types.js';
import type { TokenAcquirer } from '../../src/pipeline/types.js';
import { rejection } from '../helpers/assert.js';
import { captureLogger, makeConfig, TENANT } from './fixtures.js';
import { apiOptions } from './harness.js';

const ORIGIN = 'https://login.entra.test';
const IMDS = 'http://169.254.169.254';

function openIdConfiguration(tenant: string): Record<string, unknown> {
  return {
    token_endpoint: `${ORIGIN}/${tenant}/oauth2/v2.0/token`,
    jwks_uri: `${ORIGIN}/${tenant}/discovery/v2.0/keys`,
    issuer: `${ORIGIN}/${tenant}/v2.0`,
    authorization_endpoint: `${ORIGIN}/${tenant}/oauth2/v2.0/authorize`,
    end_session_endpoint: `${ORIGIN}/${tenant}/oauth2/v2.0/logout`,
  };
}

describe('token acquirer: which refused GETs count as a discovery refusal', function () {
  this.timeout(20_000);
  const logs = captureLogger();
  let mock: MockAgent;
  const acquirers: TokenAcquirer[] = [];
  let imdsCalls = 0;

  function acquirer(azureRegion?: string): TokenAcquirer {
    const base = makeConfig({ instance: `${ORIGIN}/` });
    const config: SidecarConfig = { ...base, azureAd: { ...base.azureAd, ...(azureRegion ? { azureRegion } : {}) } };
    const a = createTokenAcquirer({ config, agent: mock, logger: logs.logger });
    acquirers.push(a);
    return a;
  }
  const appRequest = () => ({ options: apiOptions({ scopes: ['api://downstream/.default'], requestAppToken: true }) });

  // msal takes the region from REGION_NAME before it asks IMDS.
  const regionName = process.env.REGION_NAME;
  before(() => delete process.env.REGION_NAME);
  after(() => {
    if (regionName !== undefined) process.env.REGION_NAME = regionName;
  });

  beforeEach(() => {
    mock = new MockAgent();
    mock.disableNetConnect();
    imdsCalls = 0;
    // IMDS refuses every probe as it does without api-version: 400 with a JSON `error`.
    mock.get(IMDS).intercept({ path: (p) => p.startsWith('/metadata/instance/compute'), method: 'GET' }).reply(() => {
      imdsCalls++;
      return { statusCode: 400, data: { error: 'Bad request. api-version was not specified in the request.', 'newest-versions': ['2023-07-01'] } };
    }).persist();
  });
  afterEach(async () => {
    for (const a of acquirers.splice(0)) a.close();
    await mock.close();
  });

  it('keeps a client-side msal failure after a refused IMDS region probe as acquisition_unavailable, not 401 with IMDS\'s text', async () => {
    const login = mock.get(ORIGIN);
    login.intercept({ path: (p) => p.startsWith(`/${TENANT}/v2.0/.well-known/openid-configuration`), method: 'GET' }).reply(200, openIdConfiguration(TENANT)).persist();
    // A token answer msal cannot read (an id_token that is no JWT): a client-side AuthError.
    login.intercept({ path: (p) => p.startsWith(`/${TENANT}/oauth2/v2.0/token`), method: 'POST' }).reply(200, { token_type: 'Bearer', access_token: 'at', expires_in: 3599, id_token: 'not-a-jwt' }).persist();
    const err = await rejection(acquirer('TryAutoDetect').acquire(appRequest()));
    expect(imdsCalls, 'IMDS probes').to.be.greaterThan(0);
    expect(err.code).to.equal('acquisition_unavailable');
    expect(err.detail).to.equal('msal error: token_parsing_error');
  });

  it('still answers 401 acquisition_rejected with Entra\'s text when the openid-configuration is refused', async () => {
    mock.get(ORIGIN).intercept({ path: (p) => p.startsWith(`/${TENANT}/v2.0/.well-known/openid-configuration`), method: 'GET' })
      .reply(400, { error: 'invalid_tenant', error_description: 'AADSTS90002: Tenant not found.' }).persist();
    const err = await rejection(acquirer('TryAutoDetect').acquire(appRequest()));
    expect(err.code).to.equal('acquisition_rejected');
    expect(err.detail).to.contain('AADSTS90002');
  });
});
