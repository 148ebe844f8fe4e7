/**
 * Build step (`npm run build`, after tsc and build-descriptor): bundles the compiled sidecar and the
 * packages it loads at every start (@grpc/grpc-js, pino, prom-client, undici's parts, protobufjs's
 * light build) into one ES module,
 * `sidecar.bundle.js`, which main.js loads when it is there.
 *
 * Why: on Node 20, resolving, reading and linking ~250 module files was the largest part of
 * start-up (≈ 130 ms of ≈ 530 ms to ready, pinned to one core; bench/README.md). One file is read
 * and compiled once, and Node ≥ 22's compile cache keeps it.
 *
 * Left outside the bundle, loaded from node_modules as before: what is imported lazily (msal-node,
 * jose, node-forge, proto-loader, reflection) and what only the build reads (@grpc/grpc-js-xds's
 * .proto files, a devDependency the image does not have; protobufjs's full build via require).
 * undici's parts and protobufjs's light build are bundled. The Envoy descriptor is inlined (no file
 * read at start), and server reflection serves it too.
 */
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';
import { DESCRIPTOR_FILE } from './extauthz/protos.js';

const srcDir = path.dirname(fileURLToPath(import.meta.url));
export const BUNDLE_FILE = path.join(srcDir, 'sidecar.bundle.js');

/**
 * The packages the bundle holds because the sidecar loads them at every start (their own
 * dependencies come with them). The build fails if one of them is missing from the bundle.
 */
export const BUNDLED_AT_START: readonly string[] = ['@grpc/grpc-js', 'pino', 'prom-client', 'undici', 'protobufjs'];

/** Packages required at run time from node_modules, never copied into the bundle. */
export const BUNDLE_EXTERNAL = ['@azure/msal-node', 'jose', 'node-forge', '@grpc/proto-loader', '@grpc/reflection', '@grpc/grpc-js-xds'];

/**
 * Routes the sidecar's own imports of Node's built-ins (`import … from 'node:…'`, or without the
 * prefix) through the bundle's `require`. An ES module import of a built-in makes Node build a
 * module namespace for it, which reads every export once, lazy getters included: `node:http`'s WebSocket loads Node's own copy of undici (Node ≥ 22),
 * `node:crypto`'s webcrypto the Web Crypto API (bench/README.md finding 39). `require()` returns
 * the module object as it is, and esbuild's interop reads a named import from it where it is used.
 */
export const builtinsThroughRequire: Plugin = {
  name: 'builtins-through-require',
  setup(b) {
    // Every specifier Node resolves to a built-in, with or without the `node:` prefix.
    const builtin = new RegExp(`^(?:node:.+|${builtinModules.map((m) => m.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|')})$`);
    b.onResolve({ filter: builtin }, (args) => (args.kind === 'import-statement' ? { path: args.path, namespace: 'builtin' } : undefined));
    // This require() is left to the bundle's own (the banner's), as every external require is.
    b.onLoad({ filter: /.*/, namespace: 'builtin' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
};

const isEntry = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isEntry) {
  const result = await build({
    entryPoints: [path.join(srcDir, 'sidecar.js')],
    outfile: BUNDLE_FILE,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: BUNDLE_EXTERNAL,
    plugins: [builtinsThroughRequire],
    // Bundled CommonJS packages call require() for Node's built-ins; an ES module has none of its own.
    banner: { js: "import { createRequire as __bundleCreateRequire } from 'node:module';\nconst require = __bundleCreateRequire(import.meta.url);" },
    // The descriptor inlined (protos.ts), and the flag the listening line reports (sidecar.ts).
    define: { __ENVOY_EXT_AUTHZ_DESCRIPTOR__: readFileSync(DESCRIPTOR_FILE, 'utf8').trim(), __SIDECAR_BUNDLE__: 'true' },
    sourcemap: 'linked',
    // Comments out and the source ASCII only: V8 keeps a script's source in the heap for the life of
    // the process, as UTF-16 if a single character is beyond Latin-1 (our comments' "≈" and "→" did
    // that): 3.9 MB of large-object space, 1.5 MB as plain ASCII without whitespace (measured). Names
    // are not minified, so stack traces stay readable; the source map covers the rest.
    legalComments: 'linked',
    charset: 'ascii',
    minifyWhitespace: true,
    minifySyntax: true,
    logLevel: 'warning',
    metafile: true,
  });
  const inputs = Object.keys(result.metafile.inputs);
  const packages = new Set(inputs.filter((f) => f.includes('node_modules/')).map((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f)?.[1]));
  const missing = BUNDLED_AT_START.filter((p) => !packages.has(p));
  if (missing.length > 0) throw new Error(`the bundle lacks ${missing.join(', ')} (BUNDLED_AT_START)`);
  process.stdout.write(`wrote ${BUNDLE_FILE}: ${inputs.length} modules (${[...packages].sort().join(', ')})\n`);
}
