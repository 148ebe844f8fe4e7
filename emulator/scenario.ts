/**
 * The emulator's state model (reference entra-protocol.md §9.1): tenants, app registrations,
 * users, managed identities, grants, trusted external issuers and key vaults.
 *
 * `defaultScenario()` returns a deterministic set of ids that tests can name. Secrets are random
 * per process and certificates/keys are generated when the emulator starts; the started
 * emulator's `scenario` carries the effective values (secrets, PEMs, thumbprints, URLs).
 */
import { randomBytes } from 'node:crypto';

/** A directory tenant. */
export interface TenantRecord {
  id: string;
  domains: string[];
  displayName: string;
  regionScope: string;
}

/** A client secret; `notAfter` (ISO date) in the past makes it an expired secret (AADSTS7000222). */
export interface ClientSecret {
  value: string;
  notAfter?: string;
}

/**
 * A certificate credential. Give `certPem` + `keyPem`, or leave them out and the emulator
 * generates them at start; the effective scenario then carries the PEMs and thumbprints.
 */
export interface CertificateCredential {
  name: string;
  certPem?: string;
  keyPem?: string;
  /** Upper-case hex thumbprints and their base64url forms (filled in at start). */
  thumbprintSha1?: string;
  thumbprintSha256?: string;
  x5t?: string;
  x5tS256?: string;
  subject?: string;
  notAfter?: string;
}

/**
 * A federated identity credential on an app. `{origin}` in `issuer` is replaced with the
 * emulator's origin at start, so an issuer can name the emulator itself (managed identity, §4.3).
 */
export interface FederatedCredential {
  name: string;
  issuer: string;
  subject: string;
  audiences: string[];
}

/** An app registration together with its service principal (§9.1). */
export interface AppRegistration {
  appId: string;
  /** Object id of the service principal in the home tenant: the `oid` in app tokens issued there. */
  servicePrincipalId: string;
  /**
   * Object ids of the service principals of a multi-tenant app in the other tenants, by tenant id:
   * each tenant has its own service principal, so its own `oid` (§9.1). Derived from (appId,
   * tenant) when absent; the started emulator's scenario carries the effective values.
   */
  servicePrincipalIds?: Record<string, string>;
  displayName: string;
  /** Home tenant id. */
  tenant: string;
  /** Has a service principal in every scenario tenant (well-known Microsoft apps are). */
  multiTenant?: boolean;
  identifierUris: string[];
  accessTokenAcceptedVersion: 1 | 2;
  appRoles: string[];
  /** Delegated permissions this API exposes. */
  scopes: string[];
  secrets: ClientSecret[];
  certificates: CertificateCredential[];
  federatedCredentials: FederatedCredential[];
  /** Certificate whose public key encrypts tokens for this API (§3.4). */
  encryptionCertificate?: CertificateCredential;
  /** Issue tokens for this API as JWE (Entra's tokenEncryptionKeyId is set). */
  encryptTokens?: boolean;
  allowOnBehalfOf?: boolean;
  /**
   * Tokens for this API carry a `nonce` JOSE header and are signed over a header holding its SHA-256
   * instead, so nobody but the API can verify them: Microsoft Graph's tokens (§1.4, §9.4). Set it to
   * false on `apps.graph` for a test that needs verifiable Graph tokens.
   */
  nonceHeader?: boolean;
  /** Takes part in Continuous Access Evaluation: clients declaring `cp1` get long-lived tokens with `xms_cc` (§2.1). */
  caeCapable?: boolean;
  isAgentBlueprint?: boolean;
  agentIdentityIds?: string[];
  /** Set on agent identities: the blueprint app id that acts for them (§5). */
  blueprintId?: string;
  /** Accept certificate assertions by x5c subject name + issuer. */
  subjectNameIssuer?: boolean;
  disabled?: boolean;
}

/** A user account; `agentIdentityId` makes it an agent's user account (§5.3). */
export interface UserAccount {
  oid: string;
  upn: string;
  name: string;
  tenant: string;
  agentIdentityId?: string;
}

/** A system- or user-assigned managed identity (§4). */
export interface ManagedIdentity {
  kind: 'system' | 'user';
  clientId: string;
  objectId: string;
  resourceId?: string;
  tenant: string;
  displayName: string;
}

/**
 * Application permissions: `client` (app id or MI client id) holds `roles` on `resource` (app id)
 * in one tenant. An app-role assignment is an object of the tenant that granted it, so it counts
 * there only: `tenant` (id, domain or scenario key) defaults to the client's home tenant, or the
 * resource's home tenant when the resource has no service principal in the client's.
 */
export interface AppRoleGrant {
  client: string;
  resource: string;
  roles: string[];
  tenant?: string;
}

/**
 * Delegated consent: `client` may call `resource` with `scopes`, tenant-wide or for one `user` oid,
 * in one tenant (`tenant` defaults as for app roles).
 */
export interface DelegatedGrant {
  client: string;
  resource: string;
  scopes: string[];
  user?: string;
  tenant?: string;
}

/** A non-Entra token issuer whose tokens apps may use as federated credentials (e.g. Kubernetes). */
export interface FederatedIssuer {
  issuer: string;
  /** Signing key (generated at start when absent). */
  keyPem?: string;
  kid?: string;
}

/** A Key Vault secret; certificate-backed secrets reference an app certificate by app key + name. */
export interface KeyVaultSecret {
  contentType: 'application/x-pkcs12' | 'application/x-pem-file' | 'text/plain';
  /** A certificate of `app` (its registered credential `name`, or with `encryption` its token-encryption certificate). */
  certificate?: { app: string; name: string; encryption?: boolean };
  value?: string;
}

/** A minimal Azure Key Vault (secrets only). */
export interface KeyVault {
  name: string;
  /** Object ids (MI or service principal) allowed to read secrets. */
  readers: string[];
  secrets: Record<string, KeyVaultSecret>;
  /** Vault URL (filled in at start): `${origin}/keyvault/${name}`. */
  url?: string;
}

/** Everything the emulator knows (§9.1). */
export interface EmulatorScenario {
  tenants: { primary: TenantRecord; secondary: TenantRecord; [key: string]: TenantRecord };
  apps: {
    sidecarApi: AppRegistration;
    clientApp: AppRegistration;
    downstreamApi: AppRegistration;
    v1Api: AppRegistration;
    graph: AppRegistration;
    arm: AppRegistration;
    tokenExchange: AppRegistration;
    keyVault: AppRegistration;
    agentIdentity1: AppRegistration;
    agentIdentity2: AppRegistration;
    [key: string]: AppRegistration;
  };
  /** The agent identity blueprint: the same object as `apps.sidecarApi`. */
  agentBlueprint: AppRegistration;
  users: {
    normal: UserAccount;
    agentUser1: UserAccount;
    agentUser2: UserAccount;
    secondaryUser: UserAccount;
    [key: string]: UserAccount;
  };
  managedIdentities: { systemAssigned: ManagedIdentity; userAssigned: ManagedIdentity; [key: string]: ManagedIdentity };
  grants: { appRoles: AppRoleGrant[]; delegated: DelegatedGrant[] };
  federatedIssuers: { kubernetes: FederatedIssuer; [key: string]: FederatedIssuer };
  keyVaults: { main: KeyVault; [key: string]: KeyVault };
  /** Refresh-token lifetime in seconds (AADSTS700082 after it). */
  refreshTokenLifetimeSec: number;
}

/** Well-known Microsoft first-party app ids (§9.1). */
export const WELL_KNOWN_APP_IDS = {
  graph: '00000003-0000-0000-c000-000000000000',
  arm: '797f4846-ba00-4fd7-ba43-dac1f8f63013',
  tokenExchange: 'fb60f99c-7a34-4190-8149-302f77469936',
  keyVault: 'cfa8b339-82a2-471a-a3c9-0fc0be7a4093',
} as const;

/** Deterministic ids used by the default scenario. */
export const SCENARIO_IDS = {
  primaryTenant: 'aaaaaaaa-0000-4000-8000-000000000001',
  secondaryTenant: 'bbbbbbbb-0000-4000-8000-000000000002',
  sidecarApi: '5ca1ab1e-0000-4000-8000-00000000a001',
  clientApp: '5ca1ab1e-0000-4000-8000-00000000a002',
  downstreamApi: '5ca1ab1e-0000-4000-8000-00000000a003',
  v1Api: '5ca1ab1e-0000-4000-8000-00000000a004',
  agentIdentity1: '5ca1ab1e-0000-4000-8000-00000000a101',
  agentIdentity2: '5ca1ab1e-0000-4000-8000-00000000a102',
  /** Kubernetes service account that the sidecar's workload identity FIC names. */
  kubernetesSubject: 'system:serviceaccount:default:entra-sidecar',
  kubernetesIssuer: 'https://oidc.kubernetes.emulator.test/cluster-1',
} as const;

/** Service-principal object id derived from an app id (last block changed so they differ). */
function spId(appId: string): string {
  return appId.slice(0, 24) + 'b' + appId.slice(25);
}

function newSecret(): string {
  // Entra secrets look like 40 chars with a `~`; any printable string works here.
  return 'emu~' + randomBytes(27).toString('base64url');
}

function app(partial: Partial<AppRegistration> & Pick<AppRegistration, 'appId' | 'displayName' | 'tenant'>): AppRegistration {
  return {
    servicePrincipalId: spId(partial.appId),
    identifierUris: [],
    accessTokenAcceptedVersion: 2,
    appRoles: [],
    scopes: [],
    secrets: [],
    certificates: [],
    federatedCredentials: [],
    ...partial,
  };
}

/** A deterministic scenario (ids and names fixed; secrets random per call, certificates made at start). */
export function defaultScenario(): EmulatorScenario {
  const ids = SCENARIO_IDS;
  const primary: TenantRecord = {
    id: ids.primaryTenant,
    domains: ['contoso.onmicrosoft.com', 'contoso.example'],
    displayName: 'Contoso (emulated)',
    regionScope: 'WW',
  };
  const secondary: TenantRecord = {
    id: ids.secondaryTenant,
    domains: ['fabrikam.onmicrosoft.com'],
    displayName: 'Fabrikam (emulated)',
    regionScope: 'WW',
  };
  const systemAssigned: ManagedIdentity = {
    kind: 'system',
    clientId: '3a1d0000-0000-4000-8000-00000000c001',
    objectId: '3a1d0000-0000-4000-8000-00000000d001',
    tenant: primary.id,
    displayName: 'vm-sidecar (system-assigned)',
  };
  const userAssigned: ManagedIdentity = {
    kind: 'user',
    clientId: '3a1d0000-0000-4000-8000-00000000c002',
    objectId: '3a1d0000-0000-4000-8000-00000000d002',
    resourceId: '/subscriptions/00000000-0000-4000-8000-000000000000/resourceGroups/rg-emulator/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-sidecar',
    tenant: primary.id,
    displayName: 'uami-sidecar',
  };

  const sidecarApi = app({
    appId: ids.sidecarApi,
    displayName: 'entra-sidecar API (agent blueprint)',
    tenant: primary.id,
    identifierUris: [`api://${ids.sidecarApi}`],
    accessTokenAcceptedVersion: 2,
    scopes: ['access_as_user'],
    appRoles: ['Sidecar.Invoke'],
    secrets: [{ value: newSecret() }, { value: newSecret(), notAfter: '2020-01-01T00:00:00Z' }],
    certificates: [{ name: 'primary' }, { name: 'keyvault' }],
    encryptionCertificate: { name: 'encryption' },
    federatedCredentials: [
      { name: 'kubernetes', issuer: ids.kubernetesIssuer, subject: ids.kubernetesSubject, audiences: ['api://AzureADTokenExchange'] },
      { name: 'managed-identity', issuer: `{origin}/${primary.id}/v2.0`, subject: userAssigned.objectId, audiences: ['api://AzureADTokenExchange'] },
      { name: 'managed-identity-system', issuer: `{origin}/${primary.id}/v2.0`, subject: systemAssigned.objectId, audiences: ['api://AzureADTokenExchange'] },
    ],
    allowOnBehalfOf: true,
    isAgentBlueprint: true,
    agentIdentityIds: [ids.agentIdentity1, ids.agentIdentity2],
  });
  const clientApp = app({
    appId: ids.clientApp,
    displayName: 'Caller web app',
    tenant: primary.id,
    multiTenant: true,
    secrets: [{ value: newSecret() }],
    allowOnBehalfOf: true,
  });
  const downstreamApi = app({
    appId: ids.downstreamApi,
    displayName: 'Downstream API',
    tenant: primary.id,
    identifierUris: ['api://downstream'],
    accessTokenAcceptedVersion: 2,
    scopes: ['read', 'write'],
    appRoles: ['Data.Read'],
  });
  const v1Api = app({
    appId: ids.v1Api,
    displayName: 'Legacy v1 API',
    tenant: primary.id,
    identifierUris: ['api://legacy-v1'],
    accessTokenAcceptedVersion: 1,
    scopes: ['user_impersonation'],
    appRoles: ['Legacy.Read'],
  });
  const wellKnown = (appId: string, displayName: string, uris: string[], scopes: string[], appRoles: string[]): AppRegistration =>
    app({ appId, displayName, tenant: primary.id, multiTenant: true, identifierUris: uris, accessTokenAcceptedVersion: 1, scopes, appRoles });
  const graph: AppRegistration = { ...wellKnown(WELL_KNOWN_APP_IDS.graph, 'Microsoft Graph', ['https://graph.microsoft.com'], ['User.Read', 'Mail.Read', 'profile', 'email'], ['User.Read.All']), caeCapable: true, nonceHeader: true };
  const arm = wellKnown(WELL_KNOWN_APP_IDS.arm, 'Azure Resource Manager', ['https://management.azure.com', 'https://management.core.windows.net'], ['user_impersonation'], []);
  // Tokens for AzureADTokenExchange are v2 (reference §4.3 leaves the version unverified; we take the
  // stricter, consistent reading): Entra checks a managed-identity assertion's `iss` against the
  // FIC issuer `https://{host}/{tenant}/v2.0` (Microsoft's "trust a managed identity" doc), and the
  // MI and FMI (T1) tokens seen in the wild carry that issuer, `ver` 2.0 and `aud` = this app id.
  const tokenExchange: AppRegistration = { ...wellKnown(WELL_KNOWN_APP_IDS.tokenExchange, 'AzureADTokenExchange', ['api://AzureADTokenExchange'], [], []), accessTokenAcceptedVersion: 2 };
  const keyVault = wellKnown(WELL_KNOWN_APP_IDS.keyVault, 'Azure Key Vault', ['https://vault.azure.net'], ['user_impersonation'], []);
  const agentIdentity = (appId: string, n: number): AppRegistration =>
    app({ appId, displayName: `Agent identity ${n}`, tenant: primary.id, blueprintId: sidecarApi.appId });
  const agentIdentity1 = agentIdentity(ids.agentIdentity1, 1);
  const agentIdentity2 = agentIdentity(ids.agentIdentity2, 2);

  const users = {
    normal: { oid: '0e000000-0000-4000-8000-00000000e001', upn: 'alice@contoso.onmicrosoft.com', name: 'Alice Example', tenant: primary.id },
    agentUser1: { oid: '0e000000-0000-4000-8000-00000000e101', upn: 'agent1-user@contoso.onmicrosoft.com', name: 'Agent One User', tenant: primary.id, agentIdentityId: agentIdentity1.appId },
    agentUser2: { oid: '0e000000-0000-4000-8000-00000000e102', upn: 'agent2-user@contoso.onmicrosoft.com', name: 'Agent Two User', tenant: primary.id, agentIdentityId: agentIdentity2.appId },
    secondaryUser: { oid: '0e000000-0000-4000-8000-00000000e201', upn: 'bob@fabrikam.onmicrosoft.com', name: 'Bob Fabrikam', tenant: secondary.id },
  };

  return {
    tenants: { primary, secondary },
    apps: { sidecarApi, clientApp, downstreamApi, v1Api, graph, arm, tokenExchange, keyVault, agentIdentity1, agentIdentity2 },
    agentBlueprint: sidecarApi,
    users,
    managedIdentities: { systemAssigned, userAssigned },
    grants: {
      appRoles: [
        { client: sidecarApi.appId, resource: downstreamApi.appId, roles: ['Data.Read'] },
        { client: sidecarApi.appId, resource: v1Api.appId, roles: ['Legacy.Read'] },
        { client: clientApp.appId, resource: sidecarApi.appId, roles: ['Sidecar.Invoke'] },
        { client: userAssigned.clientId, resource: downstreamApi.appId, roles: ['Data.Read'] },
        { client: agentIdentity1.appId, resource: downstreamApi.appId, roles: ['Data.Read'] },
      ],
      delegated: [
        { client: clientApp.appId, resource: sidecarApi.appId, scopes: ['access_as_user'] },
        { client: sidecarApi.appId, resource: downstreamApi.appId, scopes: ['read', 'write'] },
        { client: sidecarApi.appId, resource: graph.appId, scopes: ['User.Read', 'profile', 'email'] },
        { client: sidecarApi.appId, resource: v1Api.appId, scopes: ['user_impersonation'] },
        { client: agentIdentity1.appId, resource: downstreamApi.appId, scopes: ['read'] },
        { client: agentIdentity1.appId, resource: graph.appId, scopes: ['User.Read'] },
        { client: agentIdentity2.appId, resource: downstreamApi.appId, scopes: ['read'] },
      ],
    },
    federatedIssuers: { kubernetes: { issuer: ids.kubernetesIssuer } },
    keyVaults: {
      main: {
        name: 'emulator-kv',
        readers: [systemAssigned.objectId, userAssigned.objectId, sidecarApi.servicePrincipalId],
        secrets: {
          'sidecar-cert': { contentType: 'application/x-pkcs12', certificate: { app: 'sidecarApi', name: 'keyvault' } },
          'sidecar-cert-pem': { contentType: 'application/x-pem-file', certificate: { app: 'sidecarApi', name: 'keyvault' } },
          'sidecar-decryption-cert': { contentType: 'application/x-pkcs12', certificate: { app: 'sidecarApi', name: 'encryption', encryption: true } },
        },
      },
    },
    refreshTokenLifetimeSec: 90 * 24 * 3600,
  };
}
