/**
 * AADSTS error bodies exactly as Entra shapes them (reference §2.8) and the codes the emulator
 * produces (§2.9). Codes marked [choice] in the reference are our pick where the real code is unknown.
 */
import { randomUUID } from 'node:crypto';

/** An OAuth error the token endpoint (or discovery) answers with. */
export class AadstsError extends Error {
  readonly error: string;
  readonly code: number;
  readonly status: number;
  readonly suberror?: string;
  readonly claims?: string;
  constructor(error: string, code: number, description: string, opts: { status?: number; suberror?: string; claims?: string } = {}) {
    super(description);
    this.error = error;
    this.code = code;
    this.status = opts.status ?? (error === 'invalid_client' ? 401 : 400);
    this.suberror = opts.suberror;
    this.claims = opts.claims;
  }
}

/** Entra's timestamp format: `yyyy-MM-dd HH:mm:ssZ`. */
export function aadTimestamp(date: Date): string {
  return date.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
}

/** The JSON body of an AADSTS error (§2.8). */
export function aadstsBody(err: AadstsError, correlationId: string, now: Date): Record<string, unknown> {
  const traceId = randomUUID();
  const timestamp = aadTimestamp(now);
  const body: Record<string, unknown> = {
    error: err.error,
    error_description: `AADSTS${err.code}: ${err.message}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
    error_codes: [err.code],
    timestamp,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `https://login.microsoftonline.com/error?code=${err.code}`,
  };
  if (err.suberror) body.suberror = err.suberror;
  if (err.claims) body.claims = err.claims;
  return body;
}

/** Factory functions for every error the emulator raises (one place, so codes stay consistent). */
export const Aadsts = {
  methodNotAllowed: () => new AadstsError('invalid_request', 900561, 'The endpoint only accepts POST requests.'),
  missingParameter: (name: string) => new AadstsError('invalid_request', 900144, `The request body must contain the following parameter: '${name}'.`),
  bodyTooLarge: () => new AadstsError('invalid_request', 90015, 'Requested body is too long.'),
  unsupportedGrant: (grant: string) => new AadstsError('unsupported_grant_type', 70003, `The app requested an unsupported grant type '${grant}'.`),
  // The token endpoint names these `invalid_request`; the metadata endpoint names them `invalid_tenant`.
  tenantNotFound: (tenant: string, error = 'invalid_request') => new AadstsError(error, 90002, `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`),
  malformedTenant: (tenant: string, error = 'invalid_request') => new AadstsError(error, 900023, `Specified tenant identifier '${tenant}' is neither a valid DNS name, nor a valid external domain.`),
  metaTenantNotAllowed: () => new AadstsError('invalid_request', 9001023, 'The grant type is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.'),
  unknownClient: (clientId: string, tenant: string) => new AadstsError('unauthorized_client', 700016, `Application with identifier '${clientId}' was not found in the directory '${tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.`),
  clientDisabled: (clientId: string) => new AadstsError('unauthorized_client', 7000112, `Application '${clientId}' is disabled.`),
  noCredential: () => new AadstsError('invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."),
  multipleCredentials: () => new AadstsError('invalid_request', 7000219, 'Only one client credential may be provided.'), // [choice]
  wrongSecret: (clientId: string) => new AadstsError('invalid_client', 7000215, `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`),
  expiredSecret: (clientId: string) => new AadstsError('invalid_client', 7000222, `The provided client secret keys for app '${clientId}' are expired. Visit the Azure portal to create new keys for your app.`),
  badAssertionType: () => new AadstsError('invalid_request', 900144, "The request body must contain the following parameter: 'client_assertion_type'."),
  assertionMalformed: (why: string) => new AadstsError('invalid_client', 50027, `JWT token is invalid or malformed. ${why}`),
  assertionSignature: (why: string) => new AadstsError('invalid_client', 700027, `Client assertion failed signature validation. ${why}`),
  assertionIssuerSubject: () => new AadstsError('invalid_client', 50048, 'Subject mismatches Issuer claim in the client assertion.'),
  assertionAudience: (aud: string) => new AadstsError('invalid_client', 50027, `Invalid JWT token. Token audience '${aud}' does not match the token endpoint of this tenant.`),
  assertionTime: () => new AadstsError('invalid_client', 700024, 'Client assertion is not within its valid time range.'),
  ficIssuer: (iss: string) => new AadstsError('invalid_client', 700211, `No matching federated identity record found for presented assertion issuer '${iss}'.`),
  ficAudience: () => new AadstsError('invalid_client', 700212, 'No matching federated identity record found for presented assertion audience.'),
  ficSubject: (sub: string) => new AadstsError('invalid_client', 700213, `No matching federated identity record found for presented assertion subject '${sub}'.`),
  ficUserToken: () => new AadstsError('invalid_client', 700229, 'Federated identity credential assertions issued by Microsoft Entra ID must be app-only tokens.'),
  scopeWithoutDefault: () => new AadstsError('invalid_scope', 1002012, 'The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).'),
  scopeTwoResources: () => new AadstsError('invalid_scope', 700022, 'The provided value for the input parameter scope is not valid because it contains more than one resource.'),
  invalidScope: (scope: string) => new AadstsError('invalid_scope', 70011, `The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid: '${scope}'.`),
  unknownResource: (resource: string, tenant: string) => new AadstsError('invalid_resource', 500011, `The resource principal named ${resource} was not found in the tenant named ${tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.`),
  oboAssertionInvalid: (why: string) => new AadstsError('invalid_grant', 50013, `Assertion failed signature validation. ${why}`),
  oboAssertionAudience: (aud: string, expected: string) => new AadstsError('invalid_grant', 50013, `Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '${aud}' and the expected audience is '${expected}'.`),
  oboAssertionExpired: () => new AadstsError('invalid_grant', 500133, 'Assertion is not within its valid time range.'),
  oboNotAllowed: (clientId: string) => new AadstsError('unauthorized_client', 7000114, `Application '${clientId}' is not allowed to make application on-behalf-of calls.`),
  consentRequired: (clientId: string, resource: string) => new AadstsError('invalid_grant', 65001, `The user or administrator has not consented to use the application with ID '${clientId}'. Send an interactive authorization request for this user and resource '${resource}'.`, { suberror: 'consent_required' }),
  interactionRequired: (resource: string, claims: string) => new AadstsError('interaction_required', 50076, `Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '${resource}'.`, { suberror: 'basic_action', claims }),
  refreshTokenMalformed: () => new AadstsError('invalid_grant', 9002313, 'Invalid request. Request is malformed or invalid.'),
  refreshTokenRevoked: () => new AadstsError('invalid_grant', 50173, 'The provided grant has expired due to it being revoked, a fresh auth token is needed.'),
  refreshTokenExpired: () => new AadstsError('invalid_grant', 700082, 'The refresh token has expired due to inactivity.'),
  refreshTokenWrongClient: () => new AadstsError('invalid_grant', 70000, 'Provided grant is invalid or malformed: the refresh token was issued to a different client.'),
  userNotFound: (who: string) => new AadstsError('invalid_grant', 50034, `The user account ${who} does not exist in the directory.`),
  notAgentUser: (who: string, agent: string) => new AadstsError('invalid_grant', 50034, `The user account ${who} is not an agent user of agent identity '${agent}'.`),
  agentGrantBarred: (why: string) => new AadstsError('unauthorized_client', 82001, why), // [choice]
  fmiPathInvalid: (why: string) => new AadstsError('invalid_request', 90014, why), // [choice]
  invalidReqCnf: () => new AadstsError('invalid_request', 5000811, "The 'req_cnf' parameter must be base64url-encoded JSON with a string 'kid'."), // [choice]
  invalidClaims: () => new AadstsError('invalid_request', 90100, "The 'claims' parameter is not valid JSON."), // [choice]
  invalidInstance: () => new AadstsError('invalid_instance', 50049, "Unknown or invalid instance."),
};
