import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import { probe } from '../../src/healthcheck.js';
import { startManagementServer, type ManagementServer } from '../../src/management/server.js';
import { outRoot } from './paths.js';
import { builtinRecorder } from '../helpers/recorders.js';

const script = path.join(outRoot, 'src', 'healthcheck.js');

/** Runs the compiled healthcheck script as Docker would and resolves its exit code. */
function runHealthcheck(args: string[], nodeArgs: string[] = []): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, script, ...args], { stdio: 'ignore' });
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/** A loopback port with nothing listening on it (bound, then released). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as { port: number };
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

describe('container healthcheck script', () => {
  let server: ManagementServer;
  before(async () => {
    server = await startManagementServer({
      address: { host: '127.0.0.1', port: 0 },
      metrics: createMetrics({ version: 't', collectProcess: false }),
      readiness: () => ({ ready: false, reasons: ['signing_keys_not_loaded'] }),
      logger: createLogger('silent'),
    });
  });
  after(async () => {
    await server.close(100);
  });

  it('exits 0 when the management listener answers /healthz', async () => {
    expect(await runHealthcheck([`http://127.0.0.1:${server.port}/healthz`])).to.equal(0);
  });

  it("loads none of node:http's lazy exports (Node's own undici, on Node >= 22)", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'healthcheck-test-'));
    try {
      const recorder = builtinRecorder(dir, 'modules');
      expect(await runHealthcheck([`http://127.0.0.1:${server.port}/healthz`], [recorder.nodeArg])).to.equal(0);
      const loaded = recorder.loaded();
      expect(loaded, 'the preload saw the probe load node:http').to.include('NativeModule http');
      expect(loaded.filter((m) => m.startsWith('NativeModule internal/deps/undici'))).to.deep.equal([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits 1 when nothing listens', async () => {
    expect(await runHealthcheck([`http://127.0.0.1:${await freePort()}/healthz`])).to.equal(1);
  });

  it('exits 1 on a non-2xx answer', async () => {
    expect(await runHealthcheck([`http://127.0.0.1:${server.port}/readyz`])).to.equal(1);
  });

  it('probe() gives up after its deadline when the server never answers', async () => {
    const sockets: import('node:net').Socket[] = [];
    // Accepts and says nothing.
    const silent = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    const started = Date.now();
    try {
      expect(await probe(`http://127.0.0.1:${port}/healthz`, 200)).to.equal(false);
      expect(Date.now() - started).to.be.lessThan(2_000);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('probe() refuses non-http URLs', async () => {
    expect(await probe('https://127.0.0.1:1/healthz')).to.equal(false);
    expect(await probe('not a url')).to.equal(false);
  });
});
