/**
 * Request dispatch for the emulator's two listeners: the HTTPS "login" origin (discovery, token,
 * Key Vault, admin) and the plain-HTTP managed-identity origin (IMDS, App Service).
 * Every request is counted, logged (redacted) and checked against injected faults first.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { EmulatorCore } from './core.js';
import { applyFault, readBody, sendJson } from './http.js';
import type { Exchange } from './http.js';
import type { EmulatorRoute } from './types.js';
import { instanceDiscovery, jwks, openIdConfiguration } from './routes/discovery.js';
import { tokenEndpoint } from './routes/token.js';
import { appServiceToken, imdsToken } from './routes/managed-identity.js';
import { keyVaultSecret } from './routes/keyvault.js';
import { adminRoute } from './routes/admin.js';

interface Routed {
  route: EmulatorRoute;
  tenant?: string;
  run: (ex: Exchange) => Promise<void> | void;
}

/** Maps a path on the HTTPS origin to a handler. */
function routeLogin(path: string[], adminEnabled: boolean): Routed | undefined {
  const [a, b, c, d, e] = path;
  const n = path.length;
  if (n === 3 && a.toLowerCase() === 'common' && b === 'discovery' && c === 'instance') return { route: 'instance', run: instanceDiscovery };
  if (n === 4 && b.toLowerCase() === 'v2.0' && c === '.well-known' && d === 'openid-configuration') return { route: 'metadata', tenant: a, run: (ex) => openIdConfiguration(ex, a, 2) };
  if (n === 3 && b === '.well-known' && c === 'openid-configuration') return { route: 'metadata', tenant: a, run: (ex) => openIdConfiguration(ex, a, 1) };
  if (n === 4 && b === 'discovery' && c.toLowerCase() === 'v2.0' && d === 'keys') return { route: 'jwks', tenant: a, run: (ex) => jwks(ex, a, 2) };
  if (n === 3 && b === 'discovery' && c === 'keys') return { route: 'jwks', tenant: a, run: (ex) => jwks(ex, a, 1) };
  if (n === 4 && b === 'oauth2' && c.toLowerCase() === 'v2.0' && d === 'token') return { route: 'token', tenant: a, run: (ex) => tokenEndpoint(ex, a, false) };
  if (n === 3 && b === 'oauth2' && c === 'token') return { route: 'token', tenant: a, run: (ex) => tokenEndpoint(ex, a, true) };
  if ((n === 4 || n === 5) && a === 'keyvault' && c === 'secrets') return { route: 'keyvault', run: (ex) => keyVaultSecret(ex, b, d, e) };
  if (adminEnabled && a === '_emulator' && n >= 2) return { route: 'admin', run: (ex) => adminRoute(ex, path.slice(1).join('/')) };
  return undefined;
}

/** Maps a path on the managed-identity origin to a handler. */
function routeManagedIdentity(pathname: string, appServiceSecret: string): Routed | undefined {
  // msal canonicalises the IMDS URL with a trailing slash before the query (§4.1): accept both.
  if (pathname === '/metadata/identity/oauth2/token' || pathname === '/metadata/identity/oauth2/token/') return { route: 'imds', run: imdsToken };
  if (pathname === '/msi/token' || pathname === '/msi/token/') return { route: 'appservice', run: (ex) => appServiceToken(ex, appServiceSecret) };
  return undefined;
}

/** Builds the request listener for one of the two origins. */
export function createRequestHandler(core: EmulatorCore, opts: { kind: 'login' | 'managed-identity'; admin: boolean; appServiceSecret: string }) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    handle(core, req, res, opts).catch(() => {
      // Never leak internals; an unexpected failure is a plain 500 JSON.
      if (!res.headersSent && !res.destroyed) {
        res.writeHead(500, { 'content-type': 'application/json; charset=utf-8', 'x-ms-request-id': core.newRequestId() });
        res.end(JSON.stringify({ error: 'server_error', error_description: 'emulator internal error' }));
      }
    });
  };
}

/**
 * The caller's correlation id, echoed as `correlation_id` (§2.8): msal-node sends it in the query
 * and the body (§1.5), MSAL.NET and other clients as the `client-request-id` header, the managed-
 * identity clients as `x-ms-client-request-id`.
 */
function correlationIdOf(req: IncomingMessage, url: URL, form: Record<string, string>): string | undefined {
  const header = (name: string): string | undefined => {
    const v = req.headers[name];
    return typeof v === 'string' ? v : undefined;
  };
  const id = url.searchParams.get('client-request-id') ?? form['client-request-id'] ?? header('client-request-id') ?? header('x-ms-client-request-id');
  return id ? id : undefined;
}

async function handle(core: EmulatorCore, req: IncomingMessage, res: ServerResponse, opts: { kind: 'login' | 'managed-identity'; admin: boolean; appServiceSecret: string }): Promise<void> {
  const url = new URL(req.url ?? '/', core.origin);
  const routed = opts.kind === 'login'
    ? routeLogin(url.pathname.split('/').filter(Boolean), opts.admin)
    : routeManagedIdentity(url.pathname, opts.appServiceSecret);
  const { body, tooLarge } = await readBody(req);
  const contentType = String(req.headers['content-type'] ?? '').toLowerCase();
  const isForm = contentType.startsWith('application/x-www-form-urlencoded');
  const form: Record<string, string> = {};
  if (isForm && !tooLarge) for (const [k, v] of new URLSearchParams(body.toString('utf8'))) form[k] = v;
  const ex: Exchange = {
    core,
    req,
    res,
    url,
    route: routed?.route ?? 'other',
    body,
    bodyTooLarge: tooLarge,
    form,
    isForm,
    correlationId: correlationIdOf(req, url, form) ?? core.newRequestId(),
  };
  core.count(ex.route);
  if (ex.route === 'token' && form.grant_type) core.count(`token:${form.grant_type}`);
  if (ex.route === 'admin') {
    await (routed as Routed).run(ex);
    return;
  }
  const entry = core.record(ex.route, req.method ?? 'GET', url, req.headers, form);
  res.on('finish', () => { entry.status = res.statusCode; });
  if (!routed) {
    sendJson(ex, 404, { error: 'not_found', error_description: `No emulator route for ${req.method ?? 'GET'} ${url.pathname}` });
    return;
  }
  const fault = core.takeFault(ex.route, { tenant: routed.tenant, grantType: form.grant_type, clientId: form.client_id });
  if (fault && await applyFault(ex, fault)) return;
  await routed.run(ex);
}
