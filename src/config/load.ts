/**
 * loadConfig: reads the sources of sources.ts in Microsoft's precedence, binds them into the typed
 * SidecarConfig of types.ts with the defaults of defaults.ts, reports every problem together, and
 * returns a deeply frozen result. The only module that reads process.env (see processConfigInputs).
 */
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, basename, join, resolve } from 'node:path';
import { CONFIG_KEYS, DEFAULT_HTTP_URL, EXT_AUTHZ_TRANSPORT_MAX_BYTES, defaultOf, describeMax, findIgnoredKey, findKeyDoc, keyPattern } from './defaults.js';
import { formatHostPort, listenersCollide, parseHostPort, parseListenUrl } from './listeners.js';
import { hasForbiddenValueChar, isToken } from '../net/http-fields.js';
import { isReservedHeaderName, isValidHeaderValue } from '../downstream/request-headers.js';
import { ANY_HOST } from '../net/listen.js';
import { parseGuid } from '../guid.js';
import { needsCallerToken } from '../pipeline/api-options.js';
import { isDnsName } from '../net/host-names.js';
import { proxyFromEnvironment } from '../net/proxy.js';
import { isLoopback } from '../http/loopback.js';
import {
  buildConfigTree, commandLineEntries, environmentEntries, getNode, leafPaths, readSettingsFile,
  type ConfigEntry, type ConfigNode,
} from './sources.js';
import type {
  AcquireTokenOptions, AzureAdConfig, CredentialDescription, CredentialSourceType, DownstreamApiOptions,
  ExtAuthzOptions, ExtAuthzRouteRule, ListenAddress, RuntimeEnvironment, SidecarConfig, SidecarSettings,
} from './types.js';

export interface ConfigInputs {
  /** User arguments only, i.e. `process.argv.slice(2)`. */
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
}

export type ConfigResult = { ok: true; config: SidecarConfig; warnings: string[] } | { ok: false; errors: string[] };

/** The real process inputs; main.ts calls this so no other module touches process.env/argv/cwd. */
export function processConfigInputs(): ConfigInputs {
  return { argv: process.argv.slice(2), env: { ...process.env }, cwd: process.cwd() };
}

/** Recursively freezes plain objects and arrays. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as object)) deepFreeze(v);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Binding helpers. Messages name the key and never contain a secret; a value is quoted only from a
// setting that holds none (docs/configuration.md, Validation).

const BOOL_HINT = 'must be true or false';

class Binder {
  readonly errors: string[] = [];
  readonly warnings: string[] = [];
  readonly root: ConfigNode;
  constructor(root: ConfigNode) {
    this.root = root;
  }

  error(message: string): void {
    this.errors.push(message);
  }

  warn(message: string): void {
    this.warnings.push(message);
  }

  node(path: string): ConfigNode | undefined {
    return getNode(this.root, path);
  }

  /** The explicitly configured, non-blank value (trimmed), or undefined. */
  explicit(path: string): string | undefined {
    const v = this.node(path)?.value?.trim();
    return v === undefined || v === '' ? undefined : v;
  }

  /** Explicit value, else the table default, else undefined. */
  string(path: string): string | undefined {
    const v = this.explicit(path);
    if (v !== undefined) return v;
    const d = defaultOf(path);
    return d === '' ? undefined : d;
  }

  /** Like string() but keeps surrounding whitespace (secrets are taken verbatim). */
  verbatim(path: string): string | undefined {
    const v = this.node(path)?.value;
    return v === undefined || v.trim() === '' ? undefined : v;
  }

  bool(path: string): boolean {
    const text = this.string(path) ?? 'false';
    const t = text.toLowerCase();
    if (t === 'true') return true;
    if (t === 'false') return false;
    this.error(`${path} ${BOOL_HINT}`);
    return defaultOf(path).toLowerCase() === 'true';
  }

  /** A non-negative integer ≥ min and ≤ the key's `max` in the defaults table (a duration's timer bound). */
  int(path: string, min: number): number {
    const text = this.string(path) ?? '0';
    const fallback = Number(defaultOf(path));
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
      this.error(`${path} must be a whole number${min > 0 ? ` ≥ ${min}` : ' ≥ 0'}`);
      return fallback;
    }
    const n = Number(text);
    if (n < min) {
      this.error(`${path} must be at least ${min}`);
      return fallback;
    }
    const doc = findKeyDoc(path);
    if (doc?.max !== undefined && n > doc.max) {
      this.error(`${path} must be at most ${describeMax(doc)}`);
      return fallback;
    }
    return n;
  }

  /** A .NET TimeSpan `[d.]hh:mm[:ss[.fffffff]]`, in seconds; must be > 0 (or ≥ 0 with `allowZero`). */
  durationSec(path: string, allowZero = false): number {
    const text = this.string(path) ?? '';
    const m = /^(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$/.exec(text);
    if (!m || Number(m[2]) > 23 || Number(m[3]) > 59 || Number(m[4] ?? 0) > 59) {
      this.error(`${path} must be a duration written hh:mm:ss (e.g. 00:05:00)`);
      return 300;
    }
    const sec = Number(m[1] ?? 0) * 86400 + Number(m[2]) * 3600 + Number(m[3]) * 60 + Number(m[4] ?? 0) + Number(`0.${m[5] ?? '0'}`);
    if (sec < 0 || (sec === 0 && !allowZero)) {
      this.error(`${path} must be greater than zero`);
      return 300;
    }
    return sec;
  }

  /** Children of an index-keyed list, in index order. A scalar or a non-numeric child is an error. */
  elements(path: string, hint: string): ConfigNode[] | undefined {
    const node = this.node(path);
    if (!node) return undefined;
    if (node.value !== undefined && node.value.trim() !== '') {
      this.error(`${path} is a single value but must be an array; ${hint}`);
    }
    const out: { index: number; node: ConfigNode }[] = [];
    for (const child of node.children.values()) {
      if (!/^\d+$/.test(child.name)) {
        this.error(`${path}:${child.name} is not an array index; ${hint}`);
        continue;
      }
      out.push({ index: Number(child.name), node: child });
    }
    return out.sort((a, b) => a.index - b.index).map((e) => e.node);
  }

  /** An array of strings (`X:0`, `X:1`, or a JSON array); blanks are dropped. */
  stringArray(path: string): string[] | undefined {
    const last = path.slice(path.lastIndexOf(':') + 1);
    const hint = `use ${path.replace(/:/g, '__')}__0=… (environment), --${path}:0=… (command line) or a JSON array ("${last}": ["…"])${last.toLowerCase() === 'scopes' ? '; Microsoft\'s sidecar silently ignores a single value, entra-sidecar refuses it' : ''}`;
    const nodes = this.elements(path, hint);
    if (!nodes) return undefined;
    const out: string[] = [];
    for (const n of nodes) {
      if (n.children.size > 0) this.error(`${n.path} must be a string, not a section`);
      const v = n.value?.trim();
      if (v) out.push(v);
    }
    return out;
  }

  /** A name → value dictionary (`X:name=value`); names keep their configured casing. */
  dictionary(path: string, validateName?: (name: string) => boolean): Record<string, string> {
    const node = this.node(path);
    const out: Record<string, string> = {};
    if (!node) return out;
    if (node.value !== undefined && node.value.trim() !== '') {
      this.error(`${path} must be a set of named values (${path.replace(/:/g, '__')}__<name>=<value>), not a single value`);
    }
    for (const child of node.children.values()) {
      if (child.children.size > 0) {
        this.error(`${child.path} must be a single value, not a section`);
        continue;
      }
      if (validateName && !validateName(child.name)) {
        this.error(`${child.path}: "${child.name}" is not a valid name here`);
        continue;
      }
      out[child.name] = child.value ?? '';
    }
    return out;
  }
}


/**
 * Header names `AcquireTokenOptions:ExtraHeadersParameters` may not set on the token request:
 * message framing and connection management, what the token client writes itself (content type,
 * accepted media type and encodings, the correlation id, msal's routing hint and telemetry), and
 * credentials (the client authenticates in the form body; an Authorization or Cookie header would
 * only confuse Entra or reach a proxy).
 */
const TOKEN_REQUEST_RESERVED_HEADERS = new Set([
  'host', 'transfer-encoding', 'te', 'trailer', 'connection', 'keep-alive', 'upgrade', 'expect',
  'accept', 'accept-encoding', 'authorization', 'cookie',
  'client-request-id', 'return-client-request-id', 'x-ms-client-request-id', 'x-anchormailbox', 'x-ms-lib-capability',
]);
const TOKEN_REQUEST_RESERVED_PREFIXES = ['content-', 'proxy-', 'sec-', 'x-client-'];

function isReservedTokenRequestHeader(name: string): boolean {
  const lower = name.toLowerCase();
  return TOKEN_REQUEST_RESERVED_HEADERS.has(lower) || TOKEN_REQUEST_RESERVED_PREFIXES.some((p) => lower.startsWith(p));
}

function httpUrl(text: string, schemes: readonly string[]): URL | undefined {
  try {
    const u = new URL(text);
    return schemes.includes(u.protocol) && u.hostname !== '' ? u : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// AzureAd

/** Names and enum numbers of reference §3.2, in enum order. */
const SOURCE_TYPES: readonly CredentialSourceType[] = [
  'Certificate', 'KeyVault', 'Base64Encoded', 'Path', 'StoreWithThumbprint', 'StoreWithDistinguishedName',
  'ClientSecret', 'SignedAssertionFromManagedIdentity', 'SignedAssertionFilePath', 'SignedAssertionFromVault',
  'AutoDecryptKeys', 'CustomSignedAssertion',
];

function parseSourceType(text: string): CredentialSourceType | undefined {
  if (/^\d+$/.test(text)) return SOURCE_TYPES[Number(text)];
  return SOURCE_TYPES.find((t) => t.toLowerCase() === text.toLowerCase());
}

const LINUX_CERT_SOURCES = 'use Path, Base64Encoded, KeyVault or SignedAssertionFilePath';

function bindCredentials(
  b: Binder,
  list: 'AzureAd:ClientCredentials' | 'AzureAd:TokenDecryptionCredentials',
  env: RuntimeEnvironment,
  cwd: string,
): CredentialDescription[] {
  const forDecryption = list === 'AzureAd:TokenDecryptionCredentials';
  const nodes = b.elements(list, `use ${list.replace(/:/g, '__')}__0__SourceType=… (a list of credential objects)`) ?? [];
  const out: CredentialDescription[] = [];
  for (const node of nodes) {
    const p = node.path.replace(/^[^:]+:[^:]+/, list); // canonical casing for messages
    const field = (name: string): string | undefined => b.explicit(`${p}:${name}`);
    const skip = b.bool(`${p}:Skip`);
    const typeText = field('SourceType');
    if (typeText === undefined) {
      b.error(`${p}:SourceType is required`);
      continue;
    }
    const sourceType = parseSourceType(typeText);
    if (sourceType === undefined) {
      b.error(`${p}:SourceType is not a known credential source; expected one of ${SOURCE_TYPES.join(', ')} (or its number 0-11)`);
      continue;
    }
    const cred: { -readonly [K in keyof CredentialDescription]: CredentialDescription[K] } = {
      sourceType,
      tokenExchangeUrl: field('TokenExchangeUrl') ?? defaultOf('AzureAd:ClientCredentials:0:TokenExchangeUrl'),
      skip,
    };
    const clientSecret = b.verbatim(`${p}:ClientSecret`);
    const certificatePassword = b.verbatim(`${p}:CertificatePassword`);
    const base64 = field('Base64EncodedValue');
    const certificateDiskPath = field('CertificateDiskPath');
    const keyVaultUrl = field('KeyVaultUrl');
    const keyVaultCertificateName = field('KeyVaultCertificateName');
    const managedIdentityClientId = field('ManagedIdentityClientId');
    const assertionFile = field('SignedAssertionFileDiskPath') ?? field('SignedAssertionFilePath');
    if (clientSecret !== undefined) cred.clientSecret = clientSecret;
    if (certificatePassword !== undefined) cred.certificatePassword = certificatePassword;
    if (base64 !== undefined) cred.base64EncodedValue = base64;
    if (certificateDiskPath !== undefined) cred.certificateDiskPath = resolve(cwd, certificateDiskPath);
    if (keyVaultUrl !== undefined) cred.keyVaultUrl = keyVaultUrl;
    if (keyVaultCertificateName !== undefined) cred.keyVaultCertificateName = keyVaultCertificateName;
    if (managedIdentityClientId !== undefined) cred.managedIdentityClientId = managedIdentityClientId;

    const require = (name: string, value: string | undefined): void => {
      if (value === undefined && !skip) b.error(`${p}:${name} is required for SourceType ${sourceType}`);
    };
    const notForDecryption = (): void => {
      if (forDecryption) b.error(`${p}:SourceType ${sourceType} cannot decrypt tokens; use Path, Base64Encoded or KeyVault`);
    };
    const keyVault = (): void => {
      require('KeyVaultUrl', keyVaultUrl);
      require('KeyVaultCertificateName', keyVaultCertificateName);
      if (keyVaultUrl !== undefined && !httpUrl(keyVaultUrl, ['https:'])) b.error(`${p}:KeyVaultUrl must be an absolute https URL`);
    };
    switch (sourceType) {
      case 'Certificate':
        b.error(`${p}:SourceType Certificate can only be set from .NET code; ${LINUX_CERT_SOURCES}`);
        break;
      case 'StoreWithThumbprint':
      case 'StoreWithDistinguishedName':
        b.error(`${p}:SourceType ${sourceType} has no meaning on Linux; ${LINUX_CERT_SOURCES}`);
        break;
      case 'CustomSignedAssertion':
        b.error(`${p}:SourceType CustomSignedAssertion needs a .NET provider and is not supported; ${LINUX_CERT_SOURCES}`);
        break;
      case 'KeyVault':
        keyVault();
        break;
      case 'Base64Encoded':
        require('Base64EncodedValue', base64);
        if (base64 !== undefined && !/^[A-Za-z0-9+/\s]*={0,2}\s*$/.test(base64)) b.error(`${p}:Base64EncodedValue is not valid base64`);
        break;
      case 'Path':
        require('CertificateDiskPath', certificateDiskPath);
        break;
      case 'ClientSecret':
        notForDecryption();
        require('ClientSecret', clientSecret);
        break;
      case 'SignedAssertionFromManagedIdentity':
        notForDecryption();
        break;
      case 'SignedAssertionFilePath': {
        notForDecryption();
        const file = assertionFile ?? env.federatedTokenFile;
        if (file === undefined) {
          if (!skip) b.error(`${p}:SignedAssertionFileDiskPath is required for SourceType SignedAssertionFilePath when AZURE_FEDERATED_TOKEN_FILE is not set`);
        } else cred.signedAssertionFileDiskPath = resolve(cwd, file);
        break;
      }
      case 'SignedAssertionFromVault':
        // Accepted by Microsoft's schema but not implemented here: refused now rather than skipped
        // at run time, where every acquisition would fail.
        if (forDecryption) notForDecryption();
        else b.error(`${p}:SourceType SignedAssertionFromVault is not supported by entra-sidecar; use KeyVault (a certificate), SignedAssertionFilePath or SignedAssertionFromManagedIdentity`);
        break;
      case 'AutoDecryptKeys':
        if (!forDecryption) b.error(`${p}:SourceType AutoDecryptKeys only applies to AzureAd:TokenDecryptionCredentials`);
        else b.error(`${p}:SourceType AutoDecryptKeys is not supported by entra-sidecar; use Path, Base64Encoded or KeyVault`);
        break;
    }
    out.push(cred);
  }
  return out;
}

/** Splits `AzureAd:Authority` into instance + tenant (`https://host/tenant[/v2.0]`). */
function parseAuthority(b: Binder, text: string): { instance: string; tenantId: string } | undefined {
  const u = httpUrl(text, ['https:']);
  if (!u || u.search || u.hash) {
    b.error('AzureAd:Authority must be an absolute https URL such as https://login.microsoftonline.com/<tenant>/v2.0');
    return undefined;
  }
  const segments = u.pathname.split('/').filter((s) => s !== '');
  if (segments.length > 0 && segments[segments.length - 1].toLowerCase() === 'v2.0') segments.pop();
  const instance = `${u.origin}/`;
  if (segments.length === 0 && u.hostname.toLowerCase().endsWith('.ciamlogin.com')) {
    // External ID (CIAM) authorities may omit the tenant; Microsoft.Identity.Web derives it from the host.
    return { instance, tenantId: `${u.hostname.split('.')[0]}.onmicrosoft.com` };
  }
  if (segments.length !== 1) {
    b.error('AzureAd:Authority must have the form https://<host>/<tenant>[/v2.0]');
    return undefined;
  }
  return { instance, tenantId: segments[0] };
}

function bindAzureAd(b: Binder, env: RuntimeEnvironment, cwd: string): AzureAdConfig {
  const clientId = b.explicit('AzureAd:ClientId');
  if (clientId === undefined) b.error('AzureAd:ClientId is required (environment variable AzureAd__ClientId)');

  let instance = b.explicit('AzureAd:Instance');
  let tenantId = b.explicit('AzureAd:TenantId');
  const authorityText = b.explicit('AzureAd:Authority');
  if (authorityText !== undefined) {
    if (instance !== undefined && tenantId !== undefined) {
      b.warn('AzureAd:Authority is ignored because AzureAd:Instance and AzureAd:TenantId are both set');
    } else {
      const parsed = parseAuthority(b, authorityText);
      if (parsed) {
        instance ??= parsed.instance;
        tenantId ??= parsed.tenantId;
      }
    }
  } else {
    if (instance === undefined) b.error('AzureAd:Instance is required unless AzureAd:Authority is set (e.g. https://login.microsoftonline.com/)');
    if (tenantId === undefined) b.error('AzureAd:TenantId is required unless AzureAd:Authority is set');
  }
  if (instance !== undefined) {
    const u = httpUrl(instance, ['https:']);
    if (!u || u.search || u.hash) {
      b.error('AzureAd:Instance must be an absolute https URL (msal-node refuses http authorities), e.g. https://login.microsoftonline.com/');
    } else if (!instance.endsWith('/')) instance = `${instance}/`;
  }
  // The tenant becomes a path segment of the authority: a GUID or a domain, both DNS names.
  if (tenantId !== undefined && !isDnsName(tenantId)) {
    b.error('AzureAd:TenantId must be a tenant GUID, a domain name, or common/organizations/consumers');
  }

  const scopesNode = b.node('AzureAd:Scopes');
  if (scopesNode && scopesNode.children.size > 0) {
    b.error('AzureAd:Scopes is a single scope string (used by /Validate), not an array');
  }

  let clientCredentials = bindCredentials(b, 'AzureAd:ClientCredentials', env, cwd);
  const legacySecret = b.verbatim('AzureAd:ClientSecret');
  if (legacySecret !== undefined) {
    if (clientCredentials.length === 0) {
      clientCredentials = [{ sourceType: 'ClientSecret', clientSecret: legacySecret, tokenExchangeUrl: defaultOf('AzureAd:ClientCredentials:0:TokenExchangeUrl'), skip: false }];
    } else {
      b.warn('AzureAd:ClientSecret is ignored because AzureAd:ClientCredentials is set');
    }
  }

  const audience = b.explicit('AzureAd:Audience');
  const scopes = b.explicit('AzureAd:Scopes');
  const azureRegion = b.explicit('AzureAd:AzureRegion');
  return {
    instance: instance ?? '',
    tenantId: tenantId ?? '',
    clientId: clientId ?? '',
    authority: instance !== undefined && tenantId !== undefined ? `${instance.endsWith('/') ? instance : `${instance}/`}${tenantId}/v2.0` : '',
    ...(audience !== undefined ? { audience } : {}),
    // Microsoft.Identity.Web binds TokenValidationParameters onto JwtBearer, where the singular
    // ValidAudience / ValidIssuer are accepted beside the lists.
    validAudiences: withSingular(b.stringArray('AzureAd:TokenValidationParameters:ValidAudiences') ?? [], b.explicit('AzureAd:TokenValidationParameters:ValidAudience')),
    validIssuers: withSingular(b.stringArray('AzureAd:TokenValidationParameters:ValidIssuers') ?? [], b.explicit('AzureAd:TokenValidationParameters:ValidIssuer')),
    ...(scopes !== undefined && !(scopesNode && scopesNode.children.size > 0) ? { scopes } : {}),
    clientCredentials,
    tokenDecryptionCredentials: bindCredentials(b, 'AzureAd:TokenDecryptionCredentials', env, cwd),
    sendX5C: b.bool('AzureAd:SendX5C'),
    ...(azureRegion !== undefined ? { azureRegion } : {}),
    clientCapabilities: b.stringArray('AzureAd:ClientCapabilities') ?? [],
    allowWebApiToBeAuthorizedByACL: b.bool('AzureAd:AllowWebApiToBeAuthorizedByACL'),
    extraQueryParameters: b.dictionary('AzureAd:ExtraQueryParameters'),
  };
}

// ---------------------------------------------------------------------------------------------
// DownstreamApis

function withSingular(list: string[], one: string | undefined): string[] {
  return one === undefined || list.includes(one) ? list : [...list, one];
}

/**
 * The tolerance on `exp`/`nbf`: `Sidecar:Validation:ClockSkewSec`, else Microsoft's
 * `AzureAd:TokenValidationParameters:ClockSkew` (a TimeSpan, which JwtBearer honours: a deployment
 * that tightened it must not run with the 5-minute default here), else 300 s.
 */
function clockSkewSec(b: Binder): number {
  const tvp = 'AzureAd:TokenValidationParameters:ClockSkew';
  const ours = 'Sidecar:Validation:ClockSkewSec';
  if (b.explicit(ours) !== undefined || b.explicit(tvp) === undefined) return b.int(ours, 0);
  const sec = Math.floor(b.durationSec(tvp, true));
  const doc = findKeyDoc(ours);
  if (doc?.max !== undefined && sec > doc.max) {
    b.error(`${tvp} must be at most ${describeMax(doc)}, the maximum of ${ours}`);
    return Number(doc.default);
  }
  return sec;
}

const KNOWN_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'TRACE', 'CONNECT'];

/**
 * `AcquireTokenOptions:ExtraHeadersParameters`: headers sent on the token request (Microsoft.Identity.Web
 * passes them to MSAL's WithExtraHttpHeaders). Names the protocol needs are refused, and so are values
 * a header cannot carry, here rather than at the first acquisition.
 */
function tokenRequestHeaders(b: Binder, path: string): Record<string, string> {
  const headers = b.dictionary(path, isToken);
  for (const [name, value] of Object.entries(headers)) {
    if (isReservedTokenRequestHeader(name)) {
      b.error(`${path}:${name} cannot be set: the token request needs that header as the protocol and the token client write it (the reserved names are listed in docs/configuration.md)`);
      delete headers[name];
    } else if (hasForbiddenValueChar(value)) {
      b.error(`${path}:${name} has a control character (such as CR or LF) in its value, which a header cannot carry`);
      delete headers[name];
    }
  }
  return headers;
}

/**
 * `DownstreamApis:<name>:ProtocolScheme`: Microsoft's sidecar sends Bearer tokens only (reference
 * sidecar-http-api §3.3: `MTLS_POP` exists in the library, not in the sidecar), and accepts the key
 * without using it. So do we, but another value gets a start-up warning instead of a silent Bearer.
 */
function protocolScheme(b: Binder, p: string): 'Bearer' {
  const scheme = b.explicit(`${p}:ProtocolScheme`);
  if (scheme !== undefined && scheme.toLowerCase() !== 'bearer') {
    b.warn(`${p}:ProtocolScheme is ignored: the token is always sent as Bearer, as by Microsoft's sidecar (for a PoP-bound request use SignHttpRequest=true)`);
  }
  return 'Bearer';
}

/**
 * `DownstreamApis:<name>:ExtraHeaderParameters`. Microsoft skips the entries a call can never send
 * and logs them, on every call (reference sidecar-http-api §2.4 step 7: skips are not errors). A
 * configured entry is the same on every call, so here it is dropped once, with one start-up
 * warning: a reserved name, a value a header cannot carry, or an Accept that AcceptHeader sets.
 */
function downstreamRequestHeaders(b: Binder, path: string, acceptHeader: string): Record<string, string> {
  const headers = b.dictionary(path, isToken);
  for (const [name, value] of Object.entries(headers)) {
    let why: string | undefined;
    if (isReservedHeaderName(name)) why = 'it is a reserved name; docs/downstream-api.md lists them';
    else if (!isValidHeaderValue(value)) why = 'its value has a control character such as CR or LF, which a header cannot carry';
    else if (name.toLowerCase() === 'accept' && acceptHeader.trim() !== '') why = `the Accept header comes from ${path.slice(0, path.lastIndexOf(':'))}:AcceptHeader`;
    if (why === undefined) continue;
    b.warn(`${path}:${name} is never sent (${why}); ignored`);
    delete headers[name];
  }
  return headers;
}

function bindDownstreamApi(b: Binder, p: string): DownstreamApiOptions {
  const baseUrl = b.explicit(`${p}:BaseUrl`);
  if (baseUrl !== undefined && !httpUrl(baseUrl, ['http:', 'https:'])) b.error(`${p}:BaseUrl must be an absolute http(s) URL`);
  let httpMethod = b.string(`${p}:HttpMethod`) ?? 'GET';
  if (!isToken(httpMethod)) {
    b.error(`${p}:HttpMethod is not a valid HTTP method`);
  } else if (KNOWN_METHODS.includes(httpMethod.toUpperCase())) {
    httpMethod = httpMethod.toUpperCase();
  }
  const a = `${p}:AcquireTokenOptions`;
  // Read as the query override is (Guid.TryParse's forms, `{…}` included, as .NET binds a Guid),
  // and kept in the plain form the token request sends as client-request-id.
  const correlationIdText = b.explicit(`${a}:CorrelationId`);
  const correlationId = correlationIdText === undefined ? undefined : parseGuid(correlationIdText);
  if (correlationIdText !== undefined && correlationId === undefined) b.error(`${a}:CorrelationId must be a GUID`);
  const mi = b.node(`${a}:ManagedIdentity`);
  const miClientId = b.explicit(`${a}:ManagedIdentity:UserAssignedClientId`);
  const optional = (name: string): Record<string, string> => {
    const v = b.explicit(`${a}:${name}`);
    return v === undefined ? {} : { [name.charAt(0).toLowerCase() + name.slice(1)]: v };
  };
  const tenant = b.explicit(`${a}:Tenant`);
  if (tenant !== undefined && !isDnsName(tenant)) b.error(`${a}:Tenant must be a tenant ID (GUID) or a domain name`);
  const acquireTokenOptions: AcquireTokenOptions = {
    ...optional('Tenant'),
    forceRefresh: b.bool(`${a}:ForceRefresh`),
    ...optional('Claims'),
    ...(correlationId !== undefined ? { correlationId } : {}),
    ...optional('FmiPath'),
    ...optional('LongRunningWebApiSessionKey'),
    ...optional('PopPublicKey'),
    ...optional('PopClaim'),
    ...(mi ? { managedIdentity: miClientId !== undefined ? { userAssignedClientId: miClientId } : {} } : {}),
    extraQueryParameters: b.dictionary(`${a}:ExtraQueryParameters`),
    extraHeadersParameters: tokenRequestHeaders(b, `${a}:ExtraHeadersParameters`),
    extraParameters: b.dictionary(`${a}:ExtraParameters`),
  };
  const scopes = b.stringArray(`${p}:Scopes`);
  const acceptHeader = b.string(`${p}:AcceptHeader`) ?? '';
  return {
    ...(baseUrl !== undefined ? { baseUrl } : {}),
    relativePath: b.node(`${p}:RelativePath`)?.value?.trim() ?? '',
    httpMethod,
    ...(scopes !== undefined && scopes.length > 0 ? { scopes } : {}),
    requestAppToken: b.bool(`${p}:RequestAppToken`),
    acceptHeader,
    contentType: b.string(`${p}:ContentType`) ?? '',
    protocolScheme: protocolScheme(b, p),
    extraHeaderParameters: downstreamRequestHeaders(b, `${p}:ExtraHeaderParameters`, acceptHeader),
    extraQueryParameters: b.dictionary(`${p}:ExtraQueryParameters`),
    acquireTokenOptions,
    ...(b.bool(`${p}:SignHttpRequest`) ? { signHttpRequest: true } : {}),
  };
}

function bindDownstreamApis(b: Binder): Record<string, DownstreamApiOptions> {
  const section = b.node('DownstreamApis');
  const out: Record<string, DownstreamApiOptions> = {};
  if (!section) return out;
  if (section.value?.trim()) b.error('DownstreamApis must be a section of named APIs (DownstreamApis__<name>__BaseUrl=…), not a single value');
  for (const api of section.children.values()) {
    if (api.value?.trim()) {
      b.error(`DownstreamApis:${api.name} must be a section (DownstreamApis__${api.name}__BaseUrl=…), not a single value`);
      continue;
    }
    // The name keeps the first casing seen; callers look it up case-sensitively (Microsoft's named options).
    out[api.name] = bindDownstreamApi(b, `DownstreamApis:${api.name}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sidecar

const PINO_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
type PinoLevel = (typeof PINO_LEVELS)[number];
const DOTNET_LEVELS: Record<string, PinoLevel> = {
  trace: 'trace', debug: 'debug', information: 'info', warning: 'warn', error: 'error', critical: 'fatal', none: 'silent',
};

/** .NET's LogLevel enum by number (0 Trace … 6 None): Enum.Parse accepts the number too. */
const DOTNET_LEVEL_NUMBERS: readonly PinoLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

function logLevelOf(text: string): PinoLevel | undefined {
  const t = text.toLowerCase();
  if (/^[0-6]$/.test(t)) return DOTNET_LEVEL_NUMBERS[Number(t)];
  return DOTNET_LEVELS[t] ?? PINO_LEVELS.find((l) => l === t);
}

/** Where the value of a host key (`urls`, `http_ports`) came from, named the way the user wrote it. */
function hostKeyName(node: ConfigNode, fallback: string): string {
  const m = /^environment variable (.+)$/.exec(node.source ?? '');
  return m ? m[1] : fallback;
}

/** The identity HTTP listeners, with the warning for Development on a non-loopback one. */
function bindHttpListeners(b: Binder, env: RuntimeEnvironment): ListenAddress[] {
  const { listen, key } = httpListeners(b);
  warnIfDevelopmentExposed(b, env, listen, key);
  return listen;
}

/** The identity HTTP listeners and the setting they came from (named in messages). */
function httpListeners(b: Binder): { listen: ListenAddress[]; key: string } {
  const parseList = (text: string, key: string): ListenAddress[] => {
    const out: ListenAddress[] = [];
    for (const part of text.split(';').map((s) => s.trim()).filter((s) => s !== '')) {
      const r = parseListenUrl(part);
      if (r.ok) out.push(r.address);
      else b.error(`${key} ${r.problem}`);
    }
    return out;
  };
  const httpsPorts = b.node('https_ports');
  if (httpsPorts?.value?.trim()) {
    b.error(`${hostKeyName(httpsPorts, 'https_ports')} is set, but https is not supported: entra-sidecar serves plain HTTP (keep it on loopback or let the mesh terminate TLS)`);
  }

  const ours = b.explicit('Sidecar:Http:Url');
  if (ours !== undefined) return { listen: parseList(ours, 'Sidecar:Http:Url'), key: 'Sidecar:Http:Url' };

  const endpoints = b.node('Kestrel:Endpoints');
  const kestrel: ListenAddress[] = [];
  let kestrelSeen = false;
  for (const ep of endpoints?.children.values() ?? []) {
    const url = getNode(ep, 'Url')?.value?.trim();
    if (!url) {
      // Kestrel refuses to start with an endpoint that has no Url (a misspelt key, say).
      b.error(`Kestrel:Endpoints:${ep.name} has no Url`);
      continue;
    }
    kestrelSeen = true;
    kestrel.push(...parseList(url, `Kestrel:Endpoints:${ep.name}:Url`));
  }
  const urlsNode = b.node('urls');
  const urls = urlsNode?.value?.trim();
  if (kestrelSeen) {
    if (urls) b.warn(`${hostKeyName(urlsNode!, 'urls')} is overridden by Kestrel:Endpoints (as in ASP.NET)`);
    return { listen: kestrel, key: 'Kestrel:Endpoints:<name>:Url' };
  }
  if (urls) return { listen: parseList(urls, hostKeyName(urlsNode!, 'urls')), key: hostKeyName(urlsNode!, 'urls') };

  const portsNode = b.node('http_ports');
  const ports = portsNode?.value?.trim();
  if (ports) {
    const key = hostKeyName(portsNode!, 'http_ports');
    const out: ListenAddress[] = [];
    for (const part of ports.split(/[;,]/).map((s) => s.trim()).filter((s) => s !== '')) {
      const r = parseListenUrl(`http://*:${part}`);
      if (r.ok && /^\d+$/.test(part)) out.push(r.address);
      else b.error(`${key} must be a comma-separated list of ports (0-65535)`);
    }
    return { listen: out, key };
  }
  const def = parseListenUrl(DEFAULT_HTTP_URL);
  return { listen: def.ok ? [def.address] : [], key: 'Sidecar:Http:Url' };
}

/** `Sidecar:Http:AllowedHosts`: exact host names (no port, no wildcard), lower-cased as hosts compare. */
function allowedHosts(b: Binder): string[] {
  const out: string[] = [];
  for (const [i, name] of (b.stringArray('Sidecar:Http:AllowedHosts') ?? []).entries()) {
    const host = name.toLowerCase();
    const v6 = host.startsWith('[') && host.endsWith(']') && isIP(host.slice(1, -1)) === 6;
    if (isDnsName(host) || isIP(host) === 4 || v6) out.push(host);
    else b.error(`Sidecar:Http:AllowedHosts:${i} must be a host name or an IP address (IPv6 in brackets), without port or wildcard`);
  }
  return out;
}

/**
 * Development lifts the loopback rule (reference sidecar-http-api §1.3); with a listener on another
 * address every peer that reaches it can get this app's tokens, and nothing else says so.
 */
function warnIfDevelopmentExposed(b: Binder, env: RuntimeEnvironment, listen: readonly ListenAddress[], key: string): void {
  if (!env.isDevelopment) return;
  if (listen.every((a) => isLoopback(a.host))) return;
  b.warn(
    `SECURITY: the environment is Development (ASPNETCORE_ENVIRONMENT / DOTNET_ENVIRONMENT), which lifts the loopback-only rule of the identity HTTP API, ` +
      `and ${key} binds it to an address that is not loopback: any host that can reach that port can get tokens as this app and call the downstream APIs with them. ` +
      `Use Development only with a loopback listener (e.g. Sidecar__Http__Url=http://127.0.0.1:5000), or not at all where others can reach the port.`,
  );
}

/**
 * The Check trusts its caller: context_extensions, which any gRPC client can send, choose the
 * policy (`validate: none`, any configured downstream API), and the allow answer carries the
 * injected token. Loopback leaves that to the proxy in the pod; another address is legitimate
 * (Envoy in another pod) but needs the network to keep other peers out, and nothing else says so.
 */
function warnIfExtAuthzExposed(b: Binder, address: ListenAddress, key: string): void {
  if (isLoopback(address.host)) return;
  b.warn(
    `SECURITY: ${key} binds the ext_authz gRPC listener to ${formatHostPort(address.host, address.port)}, which is not loopback: ` +
      'any peer that can reach that port can choose the policy through context_extensions (skip token validation, have any configured downstream API\'s token injected) and read the token from the answer. ' +
      'Bind it to loopback (e.g. Sidecar__ExtAuthz__Address=127.0.0.1:9191) when the proxy runs in the same pod, or let only the proxy reach the port (a Kubernetes NetworkPolicy).',
  );
}

function bindExtAuthz(b: Binder): ExtAuthzOptions {
  const s = 'Sidecar:ExtAuthz';
  const enabled = b.bool(`${s}:Enabled`);
  const parsed = parseHostPort(b.string(`${s}:Address`) ?? '');
  if (!parsed.ok && enabled) b.error(`${s}:Address ${parsed.problem}`);
  if (parsed.ok && enabled) warnIfExtAuthzExposed(b, parsed.address, `${s}:Address`);
  const validateText = (b.string(`${s}:Validate`) ?? '').toLowerCase();
  let validate: ExtAuthzOptions['validate'] = 'required';
  if (validateText === 'required' || validateText === 'optional' || validateText === 'none') validate = validateText;
  else b.error(`${s}:Validate must be one of required, optional, none`);
  const injectHeader = (b.string(`${s}:InjectHeader`) ?? '').toLowerCase();
  if (!isToken(injectHeader)) b.error(`${s}:InjectHeader must be a valid HTTP header name`);
  const claimsToHeaders: Record<string, string> = {};
  for (const [header, claim] of Object.entries(b.dictionary(`${s}:ClaimsToHeaders`, isToken))) {
    if (claim.trim() === '') b.error(`${s}:ClaimsToHeaders:${header} must name a claim`);
    else claimsToHeaders[header.toLowerCase()] = claim.trim();
  }
  const downstreamApi = b.explicit(`${s}:DownstreamApi`);
  const maxReceiveMessageBytes = b.int(`${s}:MaxReceiveMessageBytes`, 1024);
  return {
    enabled,
    address: parsed.ok ? parsed.address : { host: '127.0.0.1', port: 9191 },
    validate,
    ...(downstreamApi !== undefined ? { downstreamApi } : {}),
    injectHeader,
    requiredScopes: b.stringArray(`${s}:RequiredScopes`) ?? [],
    requiredRoles: b.stringArray(`${s}:RequiredRoles`) ?? [],
    requireAll: b.bool(`${s}:RequireAll`),
    claimsToHeaders,
    stripInboundAuthorization: b.bool(`${s}:StripInboundAuthorization`),
    allowCorsPreflight: b.bool(`${s}:AllowCorsPreflight`),
    reflection: b.bool(`${s}:Reflection`),
    maxReceiveMessageBytes,
    maxBufferedRequestBytes: requestBudgetBytes(b, maxReceiveMessageBytes),
    requestReceiveTimeoutMs: b.int(`${s}:RequestReceiveTimeoutMs`, 1),
    routes: bindExtAuthzRoutes(b, `${s}:Routes`),
  };
}


/** The same test the Check applies to a request's path (src/extauthz/policy.ts), for a rule's own path. */
const RULE_PATH_NOT_NORMAL = /\/\.\.?(?:\/|$)|\/\/|\\|%|[?#;]|[^\x21-\x7e]/;

/**
 * `Sidecar:ExtAuthz:Routes:<i>`: each rule's match and its policy keys, under the context_extensions
 * names the policy code already validates (src/extauthz/policy.ts). What can be checked without
 * the DownstreamApis section is checked here, so a mistake fails the start naming its key.
 */
function bindExtAuthzRoutes(b: Binder, base: string): ExtAuthzRouteRule[] {
  const env = base.replace(/:/g, '__');
  const nodes = b.elements(base, `use ${env}__0__PathPrefix=/api (environment), --${base}:0:PathPrefix=/api (command line) or a JSON array of objects ("Routes": [{"PathPrefix": "/api", …}])`) ?? [];
  const rules: ExtAuthzRouteRule[] = [];
  for (const node of nodes) {
    const key = `${base}:${node.name}`;
    if (node.value?.trim()) {
      b.error(`${key} must be a section (${env}__${node.name}__PathPrefix=…), not a single value`);
      continue;
    }
    const hosts: string[] = [];
    for (const h of b.stringArray(`${key}:Hosts`) ?? []) {
      const host = h.toLowerCase().replace(/\.$/, '');
      // A DNS name (an IPv4 literal is one too), optionally under `*.`.
      if (isDnsName(host.startsWith('*.') ? host.slice(2) : host)) hosts.push(host);
      else b.error(`${key}:Hosts has "${h.slice(0, 100)}", which is not a host name (letters, digits, hyphens and dots, optionally starting with *.; no port)`);
    }
    const path = b.explicit(`${key}:Path`);
    const pathPrefix = b.explicit(`${key}:PathPrefix`);
    if (path !== undefined && pathPrefix !== undefined) b.error(`${key} sets both Path and PathPrefix; a rule matches one way`);
    if (path === undefined && pathPrefix === undefined && hosts.length === 0) {
      b.error(`${key} sets no Path, PathPrefix or Hosts, so it would take every request; set the policy for every request in Sidecar:ExtAuthz:* instead`);
    }
    for (const [name, p] of [['Path', path], ['PathPrefix', pathPrefix]] as const) {
      if (p !== undefined && (!p.startsWith('/') || RULE_PATH_NOT_NORMAL.test(p))) {
        b.error(`${key}:${name} must be a path in normal form starting with / (no dot or empty segments, backslashes, semicolons, percent-encoding, spaces, non-ASCII, query or fragment)`);
      }
    }
    const settings: Record<string, string> = {};
    const validate = b.explicit(`${key}:Validate`)?.toLowerCase();
    if (validate !== undefined) {
      if (validate === 'required' || validate === 'optional' || validate === 'none') settings.validate = validate;
      else b.error(`${key}:Validate must be one of required, optional, none`);
    }
    const downstreamApi = b.explicit(`${key}:DownstreamApi`);
    if (downstreamApi !== undefined) settings.downstream_api = downstreamApi;
    // Set but empty: this route injects no token, whatever Sidecar:ExtAuthz:DownstreamApi says (as
    // `downstream_api: ""` in context_extensions), e.g. a public route under an On-Behalf-Of default.
    else if (b.node(`${key}:DownstreamApi`)?.value !== undefined) settings.downstream_api = '';
    const injectHeader = b.explicit(`${key}:InjectHeader`);
    if (injectHeader !== undefined) {
      if (isToken(injectHeader)) settings.inject_header = injectHeader.toLowerCase();
      else b.error(`${key}:InjectHeader must be a valid HTTP header name`);
    }
    for (const [name, ext] of [['RequiredScopes', 'required_scopes'], ['RequiredRoles', 'required_roles']] as const) {
      const list = b.stringArray(`${key}:${name}`);
      if (list === undefined) continue;
      if (list.some((v) => /\s/.test(v))) b.error(`${key}:${name} entries must not contain spaces (one scope or role per index)`);
      settings[ext] = list.join(' ');
    }
    for (const [name, ext] of [['RequireAll', 'require_all'], ['StripInboundAuthorization', 'strip_inbound_authorization']] as const) {
      const v = b.explicit(`${key}:${name}`)?.toLowerCase();
      if (v === undefined) continue;
      if (v === 'true' || v === 'false') settings[ext] = v;
      else b.error(`${key}:${name} ${BOOL_HINT}`);
    }
    for (const [name, ext] of [['AgentIdentity', 'agent_identity'], ['AgentUsername', 'agent_username'], ['AgentUserId', 'agent_user_id']] as const) {
      const v = b.explicit(`${key}:${name}`);
      if (v !== undefined) settings[ext] = v;
    }
    if (!settings.agent_identity && (settings.agent_username || settings.agent_user_id)) b.error(`${key}:AgentUsername and AgentUserId need ${key}:AgentIdentity`);
    if (settings.validate === 'none' && (settings.required_scopes || settings.required_roles)) {
      b.error(`${key} requires scopes or roles but sets Validate=none, so they could never be checked`);
    }
    rules.push({ key, hosts, ...(path !== undefined ? { path } : {}), ...(pathPrefix !== undefined ? { pathPrefix } : {}), settings });
  }
  return rules;
}

function readableFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function bindSidecar(b: Binder, env: Readonly<Record<string, string | undefined>>, cwd: string, environment: RuntimeEnvironment): SidecarSettings {
  const mgmtEnabled = b.bool('Sidecar:Management:Enabled');
  const mgmt = parseListenUrl(b.string('Sidecar:Management:Url') ?? '');
  if (!mgmt.ok && mgmtEnabled) b.error(`Sidecar:Management:Url ${mgmt.problem}`);

  const extraCaFiles: string[] = [];
  const nodeExtra = env.NODE_EXTRA_CA_CERTS?.trim();
  if (nodeExtra) {
    const file = resolve(cwd, nodeExtra);
    if (readableFile(file)) extraCaFiles.push(file);
    else b.warn('NODE_EXTRA_CA_CERTS names a file that cannot be read; it is not added to the outbound trust');
  }
  const caText = b.explicit('Sidecar:Outbound:CaFile');
  const caFile = caText === undefined ? undefined : resolve(cwd, caText);
  if (caFile !== undefined) {
    if (readableFile(caFile)) extraCaFiles.push(caFile);
    else b.error('Sidecar:Outbound:CaFile names a file that does not exist or is not a regular file');
  }

  const egress = proxyFromEnvironment(env);
  for (const e of egress.errors) b.error(e);

  let logLevel: PinoLevel = 'info';
  const ours = b.explicit('Sidecar:LogLevel');
  if (ours !== undefined) {
    const l = logLevelOf(ours);
    if (l) logLevel = l;
    else b.error(`Sidecar:LogLevel must be one of ${PINO_LEVELS.join(', ')} (or a .NET level name)`);
  } else {
    const dotnet = b.string('Logging:LogLevel:Default') ?? 'Information';
    const l = logLevelOf(dotnet);
    if (l) logLevel = l;
    else b.error('Logging:LogLevel:Default must be one of Trace, Debug, Information, Warning, Error, Critical, None');
  }

  const popKeyText = b.explicit('Sidecar:Pop:KeyFile');
  const popKeyFile = popKeyText === undefined || popKeyText.trim() === '' ? undefined : resolve(cwd, popKeyText.trim());
  if (popKeyFile !== undefined && !readableFile(popKeyFile)) b.error('Sidecar:Pop:KeyFile names a file that does not exist or is not a regular file');
  const pop = 'Sidecar:PopValidation';
  const claimsToValidate = b.stringArray(`${pop}:ClaimsToValidateWhenPresent`) ?? defaultOf(`${pop}:ClaimsToValidateWhenPresent:0`).split(',');
  // Microsoft's PopValidationOptions has ValidateTs (default true); a signed request's age is always checked here.
  if (!b.bool(`${pop}:ValidateTs`)) b.error(`${pop}:ValidateTs=false is not supported: entra-sidecar always checks a signed HTTP request's ts against SignedHttpRequestLifetime`);
  const maxBodyBytes = intOrKestrel(b, 'Sidecar:Http:MaxBodyBytes', 'Kestrel:Limits:MaxRequestBodySize', 1);
  return {
    allowOverrides: {
      getAuthorizationHeader: b.bool('Sidecar:AllowOverrides:GetAuthorizationHeader'),
      getAuthorizationHeaderUnauthenticated: b.bool('Sidecar:AllowOverrides:GetAuthorizationHeaderUnauthenticated'),
      callDownstreamApi: b.bool('Sidecar:AllowOverrides:CallDownstreamApi'),
      callDownstreamApiUnauthenticated: b.bool('Sidecar:AllowOverrides:CallDownstreamApiUnauthenticated'),
    },
    allowOutboundRedirects: b.bool('Sidecar:AllowOutboundRedirects'),
    popValidation: {
      validateM: b.bool(`${pop}:ValidateM`),
      validateU: b.bool(`${pop}:ValidateU`),
      validateP: b.bool(`${pop}:ValidateP`),
      validateQ: b.bool(`${pop}:ValidateQ`),
      acceptUnsignedQueryParameters: b.bool(`${pop}:AcceptUnsignedQueryParameters`),
      signedHttpRequestLifetimeSec: b.durationSec(`${pop}:SignedHttpRequestLifetime`),
      replayCache: b.bool(`${pop}:ReplayCache`),
      validatePresentClaims: b.bool(`${pop}:ValidatePresentClaims`),
      claimsToValidateWhenPresent: claimsToValidate,
    },
    pop: popKeyFile !== undefined ? { keyFile: popKeyFile } : {},
    http: {
      listen: bindHttpListeners(b, environment),
      maxHeaderBytes: intOrKestrel(b, 'Sidecar:Http:MaxHeaderBytes', 'Kestrel:Limits:MaxRequestHeadersTotalSize', 1024),
      maxBodyBytes,
      maxBufferedBodyBytes: bodyBudgetBytes(b, maxBodyBytes),
      requestTimeoutMs: b.int('Sidecar:Http:RequestTimeoutMs', 1),
      headersTimeoutMs: b.int('Sidecar:Http:HeadersTimeoutMs', 1),
      keepAliveTimeoutMs: b.int('Sidecar:Http:KeepAliveTimeoutMs', 1),
      allowedHosts: allowedHosts(b),
    },
    management: {
      enabled: mgmtEnabled,
      address: mgmt.ok ? mgmt.address : { host: ANY_HOST, port: 9090 },
      gcMetrics: b.bool('Sidecar:Management:GcMetrics'),
    },
    extAuthz: bindExtAuthz(b),
    outbound: {
      ...(caFile !== undefined ? { caFile } : {}),
      extraCaFiles,
      ...(egress.proxy !== undefined ? { proxy: egress.proxy } : {}),
      connectTimeoutMs: b.int('Sidecar:Outbound:ConnectTimeoutMs', 1),
      timeoutMs: b.int('Sidecar:Outbound:TimeoutMs', 1),
      maxResponseBytes: b.int('Sidecar:Outbound:MaxResponseBytes', 1),
    },
    validation: {
      clockSkewSec: clockSkewSec(b),
      signingKeysRefreshIntervalSec: b.int('Sidecar:Validation:SigningKeysRefreshIntervalSec', 60),
      unknownKidCooldownSec: b.int('Sidecar:Validation:UnknownKidCooldownSec', 0),
      verifiedTokenCacheSize: b.int('Sidecar:Validation:VerifiedTokenCacheSize', 0),
    },
    tokenCache: {
      maxEntries: b.int('Sidecar:TokenCache:MaxEntries', 1),
      expiryBufferSec: b.int('Sidecar:TokenCache:ExpiryBufferSec', 0),
    },
    downstreamApi: {
      returnAllResponseHeaders: b.bool('Sidecar:DownstreamApi:ReturnAllResponseHeaders'),
      maxResponseBytes: b.int('Sidecar:DownstreamApi:MaxResponseBytes', 1),
      maxRedirects: b.int('Sidecar:DownstreamApi:MaxRedirects', 0),
    },
    logLevel,
  };
}

function checkListenerCollisions(b: Binder, s: SidecarSettings): void {
  const named: [string, ListenAddress][] = s.http.listen.map((a) => ['the identity HTTP listener', a]);
  if (s.management.enabled) named.push(['Sidecar:Management:Url', s.management.address]);
  if (s.extAuthz.enabled) named.push(['Sidecar:ExtAuthz:Address', s.extAuthz.address]);
  for (let i = 0; i < named.length; i++) {
    for (let j = i + 1; j < named.length; j++) {
      if (named[i][0] !== named[j][0] && listenersCollide(named[i][1], named[j][1])) {
        b.error(`${named[j][0]} uses port ${named[j][1].port}, which ${named[i][0]} also uses`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Unknown keys

/** Regexes for every proper prefix of a documented key, so empty sections (`"Sidecar": {}`) are fine. */
let sectionPatterns: RegExp[] | undefined;
function isKnownSection(path: string): boolean {
  sectionPatterns ??= CONFIG_KEYS.flatMap((d) => {
    const segs = d.key.split(':');
    return segs.slice(1).map((_, i) => keyPattern(segs.slice(0, i + 1).join(':')));
  });
  const k = path.toLowerCase();
  return sectionPatterns.some((r) => r.test(k));
}

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}

/** The documented key closest to `path`, with `<…>` segments filled from the path itself. */
function didYouMean(path: string): string {
  const segs = path.split(':');
  let best: { key: string; d: number } | undefined;
  for (const doc of CONFIG_KEYS) {
    const cand = doc.key.split(':').map((seg, i) => (/^<[^>]+>$/.test(seg) && segs[i] !== undefined ? segs[i] : seg)).join(':');
    const d = levenshtein(path.toLowerCase(), cand.toLowerCase());
    if (!best || d < best.d) best = { key: cand, d };
  }
  return best && best.d <= Math.max(2, Math.floor(best.key.length / 5)) ? `; did you mean ${best.key}?` : '';
}

/** Our key, else Kestrel's limit of the same meaning (a Microsoft configuration that set it keeps it). */
function intOrKestrel(b: Binder, ours: string, kestrel: string, min: number): number {
  return b.explicit(ours) === undefined && b.explicit(kestrel) !== undefined ? b.int(kestrel, min) : b.int(ours, min);
}

/**
 * Sidecar:Http:MaxBufferedBodyBytes. Below MaxBodyBytes it would refuse every body between the
 * two (with a 503 a client would retry for ever), so that is an error; left unset it follows a
 * MaxBodyBytes raised above its default, as a deployment moved over with a larger Kestrel limit
 * expects such bodies to work.
 */
function bodyBudgetBytes(b: Binder, maxBodyBytes: number): number {
  const key = 'Sidecar:Http:MaxBufferedBodyBytes';
  if (b.explicit(key) === undefined) return Math.max(b.int(key, 1), maxBodyBytes);
  const bytes = b.int(key, 1);
  if (bytes < maxBodyBytes) b.error(`${key} must be at least Sidecar:Http:MaxBodyBytes (or Kestrel:Limits:MaxRequestBodySize), or no body that large could ever be read`);
  return bytes;
}

/**
 * Sidecar:ExtAuthz:MaxBufferedRequestBytes. Below the largest CheckRequest that is denied in band
 * (max(MaxReceiveMessageBytes, 16 MiB)) such a request would be cut before it was whole and never
 * get its 413 or 431, so that is an error; left unset it follows a MaxReceiveMessageBytes raised
 * past it.
 */
function requestBudgetBytes(b: Binder, maxReceiveMessageBytes: number): number {
  const key = 'Sidecar:ExtAuthz:MaxBufferedRequestBytes';
  const floor = Math.max(maxReceiveMessageBytes, EXT_AUTHZ_TRANSPORT_MAX_BYTES);
  if (b.explicit(key) === undefined) return Math.max(b.int(key, 1), floor);
  const bytes = b.int(key, 1);
  if (bytes < floor) b.error(`${key} must be at least ${floor} (Sidecar:ExtAuthz:MaxReceiveMessageBytes, and no less than 16 MiB), or a request that large could never be received whole to be denied`);
  return bytes;
}

const KESTREL_KEYS_READ = /^Kestrel:(Endpoints:[^:]+:Url|Limits:(MaxRequestBodySize|MaxRequestHeadersTotalSize))$/i;

function checkUnknownKeys(b: Binder): void {
  // Kestrel's other settings would change what Microsoft's container does; say they are not read.
  const kestrel = b.node('Kestrel');
  for (const leaf of kestrel ? leafPaths(kestrel) : []) {
    if (KESTREL_KEYS_READ.test(leaf.path)) continue;
    const why = /^Kestrel:Endpoints:[^:]+:Protocols$/i.test(leaf.path) ? 'the identity API serves HTTP/1.1 only' : 'only Kestrel:Endpoints:<name>:Url and Kestrel:Limits:MaxRequestBodySize / MaxRequestHeadersTotalSize are read';
    b.warn(`${leaf.path} is not used by entra-sidecar (${why}); ignored`);
  }
  for (const section of ['Sidecar', 'AzureAd', 'DownstreamApis']) {
    const node = b.node(section);
    if (!node) continue;
    for (const leaf of leafPaths(node)) {
      const path = leaf.path;
      if (findKeyDoc(path)) continue;
      if (leaf.value === '' && isKnownSection(path)) continue;
      if (/^AzureAd:(ClientCredentials|TokenDecryptionCredentials):\d+:SignedAssertionFilePath$/i.test(path)) continue; // README alias
      if (/^DownstreamApis:[^:]*$/i.test(path)) continue; // reported by bindDownstreamApis
      if (section === 'Sidecar') {
        b.error(`${path} is not a known setting${didYouMean(path)}`);
        continue;
      }
      const ignored = findIgnoredKey(path);
      if (ignored) b.warn(`${path} is not used by entra-sidecar (${ignored.reason}); ignored`);
      else b.warn(`${path} is not a known setting; ignored${didYouMean(path)}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------

function readTextIfExists(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function runtimeEnvironment(name: string, env: Readonly<Record<string, string | undefined>>): RuntimeEnvironment {
  const nonBlank = (v: string | undefined): string | undefined => (v === undefined || v.trim() === '' ? undefined : v.trim());
  const federatedTokenFile = nonBlank(env.AZURE_FEDERATED_TOKEN_FILE) ?? nonBlank(env.AZURE_ACCESS_TOKEN_FILE);
  const managedIdentityEnv: Record<string, string> = {};
  for (const k of ['IDENTITY_ENDPOINT', 'IDENTITY_HEADER', 'IDENTITY_SERVER_THUMBPRINT', 'IMDS_ENDPOINT', 'MSI_ENDPOINT', 'MSI_SECRET', 'AZURE_POD_IDENTITY_AUTHORITY_HOST', 'DEFAULT_IDENTITY_CLIENT_ID']) {
    const v = env[k];
    if (v !== undefined && v !== '') managedIdentityEnv[k] = v;
  }
  return {
    name,
    isDevelopment: name.toLowerCase() === 'development',
    ...(federatedTokenFile !== undefined ? { federatedTokenFile } : {}),
    managedIdentityEnv,
  };
}

/** Reads every source, binds and validates; all problems are returned together. Never throws for bad input. */
export function loadConfig(inputs: ConfigInputs): ConfigResult {
  const errors: string[] = [];
  const { host, app } = environmentEntries(inputs.env);
  const cli = commandLineEntries(inputs.argv);
  errors.push(...cli.errors);

  // Host-level settings (environment name, settings file) come from the environment and command line only.
  const hostTree = buildConfigTree([host, app, cli.entries]);
  // Not trimmed: .NET compares the name as given, so "Development " is not Development.
  const envName = getNode(buildConfigTree([host, cli.entries]), 'environment')?.value || 'Production';
  const settingsText = getNode(hostTree, 'Sidecar:SettingsFile')?.value?.trim();
  const settingsFile = resolve(inputs.cwd, settingsText || defaultOf('Sidecar:SettingsFile'));
  const envFile = join(dirname(settingsFile), `${basename(settingsFile).replace(/\.json$/i, '')}.${envName}.json`);

  const layers: ConfigEntry[][] = [host];
  for (const [file, required] of [[settingsFile, settingsText !== undefined && settingsText !== ''], [envFile, false]] as const) {
    const r = readSettingsFile(file, basename(file), required, readTextIfExists);
    errors.push(...r.errors);
    layers.push(r.entries);
  }
  layers.push(app, cli.entries);

  const b = new Binder(buildConfigTree(layers));
  const environment = runtimeEnvironment(envName, inputs.env);
  const azureAd = bindAzureAd(b, environment, inputs.cwd);
  const downstreamApis = bindDownstreamApis(b);
  const sidecar = bindSidecar(b, inputs.env, inputs.cwd, environment);
  checkListenerCollisions(b, sidecar);
  const extAuthzApi = sidecar.extAuthz.downstreamApi;
  if (sidecar.extAuthz.enabled && extAuthzApi !== undefined && !Object.hasOwn(downstreamApis, extAuthzApi)) {
    b.error('Sidecar:ExtAuthz:DownstreamApi names an API that is not configured under DownstreamApis (names are case-sensitive)');
  }
  const ext = sidecar.extAuthz;
  const policies = [{ key: 'Sidecar:ExtAuthz', settings: {} as Readonly<Record<string, string>> }, ...ext.routes];
  for (const { key, settings } of ext.enabled ? policies : []) {
    const api = settings.downstream_api ?? ext.downstreamApi;
    if (api === undefined || api === '') continue;
    if (!Object.hasOwn(downstreamApis, api)) {
      if (settings.downstream_api !== undefined) b.error(`${key}:DownstreamApi names an API that is not configured under DownstreamApis (names are case-sensitive)`);
      continue;
    }
    // A route that checks no token cannot act on behalf of its caller; at run time its every Check
    // would be a 500 misconfigured deny (src/extauthz/check.ts).
    const agent = settings.agent_identity ? { agentIdentity: settings.agent_identity, ...(settings.agent_username ? { username: settings.agent_username } : {}), ...(settings.agent_user_id ? { userId: settings.agent_user_id } : {}) } : undefined;
    if ((settings.validate ?? ext.validate) === 'none' && needsCallerToken({ ...downstreamApis[api], apiName: api }, agent)) {
      b.error(`${key} validates no token (Validate=none) but its DownstreamApi ${api} acts on behalf of the caller (On-Behalf-Of), which needs the caller's token; set RequestAppToken=true on the API for an app token, or validate the caller`);
    }
  }
  checkUnknownKeys(b);
  errors.push(...b.errors);
  if (errors.length > 0) return { ok: false, errors };
  const config: SidecarConfig = { azureAd, downstreamApis, sidecar, environment };
  return { ok: true, config: deepFreeze(config), warnings: b.warnings };
}
