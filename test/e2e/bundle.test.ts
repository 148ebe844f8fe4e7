/**
 * The one-file bundle `npm run build` writes (src/build-bundle.ts): the built sidecar runs from it,
 * and loads none of the files it replaced. Module loads are recorded by a preload (NODE_OPTIONS
 * --import) with a resolve hook for ES modules and, at exit, require's cache for CommonJS ones.
 */
import { expect } from 'chai';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { build } from 'esbuild';
import { BUNDLE_EXTERNAL, BUNDLE_FILE, BUNDLED_AT_START, builtinsThroughRequire } from '../../src/build-bundle.js';
import { builtinRecorder, envReadRecorder } from '../helpers/recorders.js';
import { outRoot, staleBundleCopy, startSidecar } from '../helpers/sidecar.js';
import { call, sidecarEnv } from '../helpers/e2e.js';

/** A preload that appends every module the process loads to `log`. */
function moduleRecorder(dir: string, log: string): string {
  const hooks = path.join(dir, 'hooks.mjs');
  writeFileSync(
    hooks,
    `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(${JSON.stringify(log)}, 'esm ' + r.url + '\\n');
  return r;
}
`,
  );
  const preload = path.join(dir, 'preload.mjs');
  writeFileSync(
    preload,
    `import { register, createRequire } from 'node:module';
import { appendFileSync } from 'node:fs';
register(${JSON.stringify(pathToFileURL(hooks).href)});
process.on('exit', () => {
  appendFileSync(${JSON.stringify(log)}, Object.keys(createRequire(import.meta.url).cache).map((f) => 'cjs ' + f + '\\n').join(''));
});
`,
  );
  return preload;
}

describe('the sidecar bundle (built sidecar)', function () {
  this.timeout(40_000);
  let emu: Emulator;
  let dir: string;
  before(async () => {
    emu = await startEmulator();
    dir = mkdtempSync(path.join(tmpdir(), 'bundle-test-'));
  });
  after(async () => {
    await emu?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Starts the built sidecar with the module recorder, validates one token, stops it; returns the
   * log and what the listening line said of the bundle.
   */
  async function validateOnce(logName: string, entry?: string): Promise<{ log: string; bundle: unknown }> {
    const log = path.join(dir, logName);
    const s = await startSidecar(sidecarEnv(emu, { NODE_OPTIONS: `--import=${pathToFileURL(moduleRecorder(dir, log)).href}` }), entry !== undefined ? { entry } : {});
    try {
      const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      expect((await call(`${s.url}/Validate`, { token })).status).to.equal(200);
    } finally {
      expect(await s.stop()).to.equal(0);
    }
    return { log: readFileSync(log, 'utf8'), bundle: s.listening.bundle };
  }

  it('is written by the build, with the Envoy descriptor inlined', () => {
    expect(existsSync(BUNDLE_FILE)).to.equal(true);
    // esbuild replaced the free identifier protos.ts tests for with the descriptor's JSON.
    const text = readFileSync(BUNDLE_FILE, 'utf8');
    expect(text).to.not.contain('typeof __ENVOY_EXT_AUTHZ_DESCRIPTOR__');
    // V8 keeps the source for the life of the process, twice as large if any character is not Latin-1.
    expect(/[^\x00-\x7f]/.test(text), 'the bundle is ASCII only').to.equal(false);
  });

  it('is what main.js runs: no other compiled module, and no bundled package, is loaded from disk; the listening line says so', async () => {
    const { log, bundle } = await validateOnce('modules.log');
    expect(bundle).to.equal(true);
    const lines = log.trim().split('\n');
    const files = lines.map((l) => l.slice(4).replace(/^file:\/\//, ''));
    const ours = files.filter((f) => f.startsWith(path.join(outRoot, 'src') + path.sep));
    expect([...new Set(ours)].sort()).to.deep.equal([path.join(outRoot, 'src', 'main.js'), BUNDLE_FILE].sort());
    const packages = new Set(files.map((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(f)?.[1]).filter((p) => p !== undefined));
    for (const p of BUNDLED_AT_START) expect(packages.has(p), p).to.equal(false);
    for (const p of packages) expect(BUNDLE_EXTERNAL, p).to.include(p);
    // The descriptor came from the bundle: no .proto file from @grpc/grpc-js-xds, no parser.
    expect(packages.has('@grpc/grpc-js-xds')).to.equal(false);
  });

  it("loads Node's built-ins through require: no module namespace reads their lazy exports (Node's own undici, Web Crypto)", async () => {
    // An ES module import of node:http or node:crypto makes Node read every export once, which loads
    // Node's copy of undici (http's WebSocket, Node >= 22) and the Web Crypto API (crypto's
    // webcrypto): 40-50 ms of a start on Node 24 (bench/README.md finding 39).
    const recorder = builtinRecorder(dir, 'builtins');
    const s = await startSidecar(sidecarEnv(emu, { NODE_OPTIONS: recorder.nodeArg }));
    try {
      const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
      expect((await call(`${s.url}/Validate`, { token })).status).to.equal(200);
    } finally {
      expect(await s.stop()).to.equal(0);
    }
    const loaded = recorder.loaded();
    expect(loaded, 'the preload saw the built-ins the sidecar uses').to.include('NativeModule http2');
    expect(loaded.filter((m) => /^NativeModule internal\/(deps\/undici|crypto\/webcrypto)/.test(m))).to.deep.equal([]);
  });

  it('evaluates the gRPC stack only when the ext_authz server is on: an HTTP-only sidecar never runs grpc-js', async () => {
    // grpc-js reads GRPC_NODE_VERBOSITY and GRPC_TRACE from the environment when it loads, and
    // nothing else in the sidecar reads a GRPC_ name: a preload that records those reads shows
    // whether grpc-js ran. The same start with the server on proves the record works.
    const grpcEnvReads = async (enabled: boolean): Promise<string[]> => {
      const recorder = envReadRecorder(dir, `grpc-env-${enabled}`, 'GRPC_');
      const s = await startSidecar(sidecarEnv(emu, { NODE_OPTIONS: recorder.nodeArg, Sidecar__ExtAuthz__Enabled: String(enabled) }));
      try {
        const token = await emu.mint({ kind: 'user', scp: 'access_as_user' });
        expect((await call(`${s.url}/Validate`, { token })).status).to.equal(200);
        expect(s.listening.extAuthz === null, 'no ext_authz listener').to.equal(!enabled);
      } finally {
        expect(await s.stop()).to.equal(0);
      }
      return recorder.loaded();
    };
    expect(await grpcEnvReads(true)).to.include('GRPC_NODE_VERBOSITY');
    expect(await grpcEnvReads(false)).to.deep.equal([]);
  });

  it('routes every import of a built-in through require, with or without the node: prefix', async () => {
    const out = await build({
      stdin: { contents: "import http from 'http'; import { createHash } from 'node:crypto'; import { readFile } from 'fs/promises'; export { http, createHash, readFile };", resolveDir: outRoot },
      bundle: true,
      platform: 'node',
      format: 'esm',
      write: false,
      plugins: [builtinsThroughRequire],
      logLevel: 'silent',
    });
    const text = out.outputFiles[0].text;
    expect(text).to.not.match(/^import /m);
    for (const m of ['http', 'node:crypto', 'fs/promises']) expect(text).to.contain(`require(${JSON.stringify(m)})`);
  });

  it('is passed over when the compiled modules are newer (a plain tsc run after a build), and the listening line says so', async function () {
    const { entry, modules, bundle } = staleBundleCopy(dir);
    expect(path.basename(bundle)).to.equal(path.basename(BUNDLE_FILE));
    const { log: loaded, bundle: fromBundle } = await validateOnce('stale.log', entry);
    expect(fromBundle).to.equal(false);
    expect(loaded).to.contain(pathToFileURL(modules).href);
    expect(loaded).to.not.contain(pathToFileURL(bundle).href);
    expect(loaded).to.not.contain(pathToFileURL(outRoot).href);
  });
});
