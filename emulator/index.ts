/**
 * The local Entra ID emulator (reference entra-protocol.md §9). Test and demo code only:
 * production code (src/) never imports it.
 *
 * `startEmulator()` starts an HTTPS "login" origin on 127.0.0.1 (discovery, token endpoint,
 * Key Vault, optional admin API) with a throw-away CA, plus a plain-HTTP managed-identity origin.
 */
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createHttpServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmulatorCore, materialFor } from './core.js';
import { certify, generateRsaKey } from './pki.js';
import type { CertifiedKey } from './pki.js';
import { createRequestHandler } from './server.js';
import { mintToken } from './mint.js';
import { defaultScenario } from './scenario.js';
import type { CertificateCredential, EmulatorScenario } from './scenario.js';
import type { Emulator, FederatedAssertionOptions, StartEmulatorOptions } from './types.js';
import { EMULATOR_HOST_NAME } from './types.js';

export type { ConditionalAccessSpec, Emulator, FaultSpec, FederatedAssertionOptions, MintRequest, RecordedRequest, StartEmulatorOptions, EmulatorRoute } from './types.js';
export type * from './scenario.js';
export { defaultScenario, SCENARIO_IDS, WELL_KNOWN_APP_IDS } from './scenario.js';
export { redactionFingerprint } from './core.js';
export { EMULATOR_HOST_NAME } from './types.js';

let tlsMaterial: Promise<{ ca: CertifiedKey; leaf: CertifiedKey }> | undefined;

/**
 * Throw-away CA and server leaf (SAN IP:127.0.0.1, DNS:localhost, and the optional host name with
 * its regional names, as ESTS-R's `<region>.login.microsoft.com`), made once per process.
 */
function tls(): Promise<{ ca: CertifiedKey; leaf: CertifiedKey }> {
  tlsMaterial ??= (async () => {
    const [caKey, leafKey] = await Promise.all([generateRsaKey(), generateRsaKey()]);
    const ca = certify(caKey, { commonName: 'entra-sidecar emulator test CA', isCa: true, validDays: 30 });
    const leaf = certify(leafKey, { commonName: 'localhost', issuer: ca, dnsNames: ['localhost', EMULATOR_HOST_NAME, `*.${EMULATOR_HOST_NAME}`], ipAddresses: ['127.0.0.1'], validDays: 30 });
    return { ca, leaf };
  })();
  return tlsMaterial;
}

function fillCertificate(credential: CertificateCredential, material: CertifiedKey): void {
  credential.certPem = material.certPem;
  credential.keyPem = material.keyPem;
  credential.thumbprintSha1 = material.thumbprintSha1;
  credential.thumbprintSha256 = material.thumbprintSha256;
  credential.x5t = material.x5t;
  credential.x5tS256 = material.x5tS256;
  credential.subject = material.subject;
  credential.notAfter ??= material.notAfter.toISOString();
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** Starts an emulator on loopback (random ports unless given). */
export async function startEmulator(opts: StartEmulatorOptions = {}): Promise<Emulator> {
  const scenario: EmulatorScenario = structuredClone(opts.scenario ?? defaultScenario());
  const core = new EmulatorCore(scenario, opts.tokenLifetimeSec ?? 3599);
  // Each tenant has its own service principal of a multi-tenant app: publish their object ids.
  for (const app of Object.values(scenario.apps)) {
    if (!app.multiTenant) continue;
    const others = Object.values(scenario.tenants).filter((t) => t.id.toLowerCase() !== app.tenant.toLowerCase());
    app.servicePrincipalIds = { ...app.servicePrincipalIds, ...Object.fromEntries(others.map((t) => [t.id, core.servicePrincipalIdIn(app, t.id)])) };
  }

  // Key material: generated in parallel (and memoised per process) unless the scenario gives PEMs.
  const pending: Array<Promise<void>> = [];
  const tlsPromise = tls();
  const signing = Promise.all([materialFor('signing-0', 'emulator token signing 0'), materialFor('signing-1', 'emulator token signing 1')]);
  for (const app of Object.values(scenario.apps)) {
    for (const credential of app.certificates) {
      pending.push(materialFor(`app:${app.appId}:${credential.name}`, `${app.displayName} ${credential.name}`, credential).then((m) => {
        fillCertificate(credential, m);
        core.certificates.set(`${app.appId.toLowerCase()}:${credential.name}`, m);
      }));
    }
    const enc = app.encryptionCertificate;
    if (enc) {
      pending.push(materialFor(`enc:${app.appId}:${enc.name}`, `${app.displayName} token encryption`, enc).then((m) => {
        fillCertificate(enc, m);
        core.encryptionCertificates.set(app.appId.toLowerCase(), m);
      }));
    }
  }
  for (const issuer of Object.values(scenario.federatedIssuers)) {
    pending.push(materialFor(`issuer:${issuer.issuer}`, 'federated issuer').then((m) => {
      issuer.keyPem = m.keyPem;
      issuer.kid = m.x5t;
      core.issuerKeys.set(issuer.issuer, { key: m.privateKey, publicKey: m.publicKey, kid: m.x5t });
    }));
  }
  const [{ ca, leaf }, signingKeys] = await Promise.all([tlsPromise, signing, ...pending]);
  core.addSigningKey(signingKeys[0], true);
  core.addSigningKey(signingKeys[1], false);

  const appServiceSecret = randomBytes(24).toString('base64url');
  const loginServer = createHttpsServer({ key: leaf.keyPem, cert: leaf.certPem }, createRequestHandler(core, { kind: 'login', admin: opts.admin === true, appServiceSecret }));
  const miServer = createHttpServer(createRequestHandler(core, { kind: 'managed-identity', admin: false, appServiceSecret }));
  const port = await listen(loginServer, opts.port ?? 0);
  let miPort: number;
  try {
    miPort = await listen(miServer, opts.imdsPort ?? 0);
  } catch (err) {
    await closeServer(loginServer);
    throw err;
  }
  core.origin = `https://${opts.hostName ?? '127.0.0.1'}:${port}`;
  const imdsOrigin = `http://127.0.0.1:${miPort}`;

  // Now that the origin is known: FIC issuers that name the emulator, vault URLs.
  for (const app of Object.values(scenario.apps)) {
    for (const fic of app.federatedCredentials) fic.issuer = fic.issuer.replace('{origin}', core.origin);
  }
  for (const vault of Object.values(scenario.keyVaults)) vault.url = `${core.origin}/keyvault/${vault.name}`;

  const tempDir = await mkdtemp(join(tmpdir(), 'entra-emulator-'));
  const caFile = join(tempDir, 'ca.pem');
  await writeFile(caFile, ca.certPem, { mode: 0o600 });

  const federatedAssertion = async (o: FederatedAssertionOptions = {}): Promise<string> => {
    const issuer = o.issuer ?? scenario.federatedIssuers.kubernetes.issuer;
    const subject = o.subject ?? scenario.apps.sidecarApi.federatedCredentials.find((f) => f.name === 'kubernetes')?.subject ?? 'system:serviceaccount:default:default';
    const [, , namespace, name] = subject.split(':');
    const now = core.nowSec();
    return core.signAsExternalIssuer(issuer, {
      aud: [o.audience ?? 'api://AzureADTokenExchange'],
      exp: now + (o.expiresInSec ?? 3600),
      iat: now,
      nbf: now,
      iss: issuer,
      sub: subject,
      'kubernetes.io': { namespace: namespace ?? 'default', serviceaccount: { name: name ?? 'default', uid: randomUUID() } },
    });
  };

  let closed = false;
  const emulator: Emulator = {
    origin: core.origin,
    instance: `${core.origin}/`,
    caPem: ca.certPem,
    caFile,
    imdsOrigin,
    appServiceSecret,
    scenario,
    mint: (req) => mintToken(core, req),
    mintFederatedAssertion: federatedAssertion,
    async writeFederatedAssertionFile(o) {
      const file = join(tempDir, `sa-token-${randomUUID()}`);
      await writeFile(file, await federatedAssertion(o), { mode: 0o600 });
      return file;
    },
    rotateKeys: (o) => core.rotateKeys(o?.dropOld === true),
    setClockOffset: (s) => core.setClockOffset(s),
    fault: (spec) => core.addFault(spec),
    clearFaults: () => core.clearFaults(),
    conditionalAccess: (spec) => core.setConditionalAccess(spec),
    counters: () => core.counters(),
    requests: () => core.requests(),
    reset: () => core.reset(),
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all([closeServer(loginServer), closeServer(miServer)]);
      await rm(tempDir, { recursive: true, force: true });
    },
  };
  return emulator;
}
