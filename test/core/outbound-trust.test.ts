/**
 * Outbound TLS trust (src/net/outbound.ts): the system store, NODE_EXTRA_CA_CERTS and
 * Sidecar:Outbound:CaFile together, in one secure context. Real HTTPS servers on loopback with
 * certificates from three throw-away CAs: two trusted (one by NODE_EXTRA_CA_CERTS, one by the CA
 * file), one not.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect, createSecureContext, type SecureContext } from 'node:tls';
import { certify, generateRsaKey, type CertifiedKey } from '../../emulator/pki.js';
import { createOutboundAgent, outboundSecureContext } from '../../src/net/outbound.js';
import { request } from '../../src/net/undici.js';

async function ca(name: string): Promise<CertifiedKey> {
  return certify(await generateRsaKey(), { commonName: name, isCa: true });
}

async function serverSignedBy(issuer: CertifiedKey): Promise<Server> {
  const leaf = certify(await generateRsaKey(), { commonName: 'localhost', issuer, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  const server = createServer({ key: leaf.keyPem, cert: leaf.certPem }, (_req, res) => res.end('ok'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

const portOf = (s: Server) => (s.address() as AddressInfo).port;

/** Completes a TLS handshake with `secureContext` and says whether the peer was trusted. */
function handshake(port: number, secureContext: SecureContext): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', secureContext }, () => {
      resolve('trusted');
      socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('outbound TLS trust (src/net/outbound.ts)', function () {
  this.timeout(30_000);
  let dir: string;
  let fromEnv: CertifiedKey;
  let fromFile: CertifiedKey;
  let unknown: CertifiedKey;
  const servers: Server[] = [];
  let envSigned: Server;
  let fileSigned: Server;
  let unknownSigned: Server;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'outbound-trust-'));
    [fromEnv, fromFile, unknown] = await Promise.all([ca('env CA'), ca('file CA'), ca('unknown CA')]);
    writeFileSync(path.join(dir, 'env-ca.pem'), fromEnv.certPem);
    writeFileSync(path.join(dir, 'file-ca.pem'), fromFile.certPem);
    [envSigned, fileSigned, unknownSigned] = await Promise.all([serverSignedBy(fromEnv), serverSignedBy(fromFile), serverSignedBy(unknown)]);
    servers.push(envSigned, fileSigned, unknownSigned);
  });

  after(() => {
    for (const s of servers) s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('takes the native route on this Node (the fallback costs ≈ 30 ms and 1.7 MB at start-up)', () => {
    const native = (createSecureContext() as SecureContext & { context?: { addCACert?: unknown } }).context;
    expect(typeof native?.addCACert).to.equal('function');
  });

  for (const preferNative of [true, false]) {
    it(`trusts the extra CA and nothing else (${preferNative ? 'native store copy' : 'fallback: explicit ca list'})`, async () => {
      const context = outboundSecureContext([fromFile.certPem], { preferNative });
      expect(await handshake(portOf(fileSigned), context)).to.equal('trusted');
      expect(await handshake(portOf(unknownSigned), context)).to.equal('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    });
  }

  it('keeps NODE_EXTRA_CA_CERTS trusted next to Sidecar:Outbound:CaFile, through the agent (a fresh process)', async () => {
    // NODE_EXTRA_CA_CERTS is read once at process start, so the agent runs in a child process
    // (asynchronously: the servers it calls live in this one). The configuration passes both files
    // as extraCaFiles (test/config/load.test.ts): Node 20 leaves NODE_EXTRA_CA_CERTS out of a
    // context that gets a CA of its own, so the agent must add it itself.
    const script = `
      const { createOutboundAgent } = await import(${JSON.stringify(new URL('../../src/net/outbound.js', import.meta.url).href)});
      const { request } = await import(${JSON.stringify(new URL('../../src/net/undici.js', import.meta.url).href)});
      const agent = createOutboundAgent({ extraCaFiles: ${JSON.stringify([path.join(dir, 'env-ca.pem'), path.join(dir, 'file-ca.pem')])}, connectTimeoutMs: 5000, timeoutMs: 5000 });
      const out = [];
      for (const port of [${portOf(envSigned)}, ${portOf(fileSigned)}, ${portOf(unknownSigned)}]) {
        try {
          const r = await request('https://localhost:' + port + '/', { dispatcher: agent });
          out.push(r.statusCode + ' ' + (await r.body.text()));
        } catch (err) {
          out.push(err.code ?? err.message);
        }
      }
      console.log(JSON.stringify(out));
      await agent.close();
    `;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        ['--input-type=module', '-e', script],
        { env: { ...process.env, NODE_EXTRA_CA_CERTS: path.join(dir, 'env-ca.pem') }, encoding: 'utf8', timeout: 20_000 },
        (err, out, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(out)),
      );
    });
    expect(JSON.parse(stdout.trim().split('\n').pop() as string)).to.deep.equal(['200 ok', '200 ok', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE']);
  });

  it('sends requests with the agent in this process', async () => {
    const agent = createOutboundAgent({ extraCaFiles: [path.join(dir, 'file-ca.pem')], connectTimeoutMs: 5000, timeoutMs: 5000 });
    try {
      const r = await request(`https://localhost:${portOf(fileSigned)}/`, { dispatcher: agent });
      expect(r.statusCode).to.equal(200);
      expect(await r.body.text()).to.equal('ok');
    } finally {
      await agent.close();
    }
  });
});
