/**
 * No Docker engine runs in CI, so the Dockerfile is checked as text: the rules of reference
 * style-and-ecosystem Part 2 (b), and that the files it names exist in the compiled output.
 */
import { expect } from 'chai';
import { execSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { imageEnv, memoryQuantityBytes, podMemoryLimitMib } from '../../bench/setup.js';
import { execForm, parseDockerfile, stages } from './dockerfile.js';
import { outRoot, repoRoot } from './paths.js';

/**
 * Pinned enough for the default build: a digest, or a tag that names a concrete version
 * (`24.21.0-bookworm-slim`), or a distroless image whose repository name fixes the runtime major
 * and Debian release (`nodejs24-debian12:nonroot`). That last tag moves (distroless rebuilds it in
 * place and publishes no versioned tags besides `latest`/`debug`), so production builds pin it by
 * digest through a build argument (the test below, and docs/deployment.md).
 */
function isPinned(image: string, stageNames: ReadonlySet<string>): boolean {
  if (stageNames.has(image)) return true;
  if (/@sha256:[0-9a-f]{64}$/.test(image)) return true;
  const slash = image.lastIndexOf('/');
  const colon = image.indexOf(':', slash + 1);
  if (colon === -1) return false;
  const repo = image.slice(0, colon);
  const tag = image.slice(colon + 1);
  if (tag === 'latest' || tag === '') return false;
  if (/^\d+\.\d+(\.\d+)?(-|$)/.test(tag)) return true;
  return /^gcr\.io\/distroless\/nodejs\d+-debian\d+$/.test(repo) && /^nonroot(-amd64|-arm64)?$/.test(tag);
}

describe('Dockerfile', () => {
  const text = readFileSync(path.join(repoRoot, 'Dockerfile'), 'utf8');
  const instructions = parseDockerfile(text);
  const all = stages(instructions);
  const runtime = all[all.length - 1];
  const runtimeOf = (keyword: string) => runtime.instructions.filter((i) => i.keyword === keyword);

  it('is multi-stage with named stages', () => {
    expect(all.length).to.be.at.least(2);
    for (const s of all) expect(s.name, s.image).to.be.a('string');
  });

  it('never uses latest and pins every base image to a version tag or digest', () => {
    expect(text).to.not.match(/:latest\b/);
    const names = new Set(all.map((s) => s.name ?? ''));
    for (const s of all) expect(isPinned(s.image, names), s.image).to.equal(true);
  });

  it('takes every base image from a build argument that docs/deployment.md shows pinned by digest', () => {
    // The runtime's distroless tag is rebuilt in place: a reproducible build passes digests as
    // --build-arg, which works only when FROM names an ARG rather than a literal image.
    const stageNames = new Set(all.map((s) => s.name ?? ''));
    const fromArgs = instructions
      .filter((i) => i.keyword === 'FROM')
      .map((i) => /^(?:--platform=\S+\s+)?(\S+)/.exec(i.args)![1])
      .filter((image) => !stageNames.has(image))
      .map((image) => {
        const m = /^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$/.exec(image);
        expect(m, `FROM ${image} is not a build argument`).to.not.equal(null);
        return m![1];
      });
    expect(fromArgs).to.have.length.greaterThan(0);
    const docs = readFileSync(path.join(repoRoot, 'docs', 'deployment.md'), 'utf8');
    for (const arg of new Set(fromArgs)) expect(docs, arg).to.match(new RegExp(`--build-arg ${arg}=\\S+@sha256:`));
  });

  it('builds on Node 24 and runs on a Node 24 image', () => {
    expect(all[0].image).to.match(/^node:24\./);
    expect(runtime.image).to.match(/nodejs24|node:24\./);
  });

  it('pins one Node release for the build stages, and CI runs the suite on exactly that release', () => {
    // The build stages' tag names the release; the distroless runtime follows the same major's
    // patches (the Dockerfile's header). `npm run test:node24` asks the Dockerfile which release
    // to fetch, so moving NODE_IMAGE moves CI with it.
    const nodeStages = all.filter((s) => s.image.startsWith('node:'));
    expect(new Set(nodeStages.map((s) => s.image)).size, 'one NODE_IMAGE for every build stage').to.equal(1);
    const pinned = /^node:(\d+)\.\d+\.\d+(?=-)/.exec(nodeStages[0].image);
    expect(pinned, nodeStages[0].image).to.not.equal(null);
    const [version, major] = [pinned![0].slice('node:'.length), pinned![1]];
    expect(/nodejs(\d+)-|^node:(\d+)\./.exec(runtime.image)?.slice(1).find((m) => m !== undefined), 'the runtime image has the same major').to.equal(major);

    const scripts = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    const imageScript = `test:node${major}`;
    const run = /^npx -y node@\$\((.+)\) node_modules\/mocha\/bin\/mocha\.js$/.exec(scripts[imageScript] ?? '');
    expect(run, `${imageScript} fetches the Node release the Dockerfile names`).to.not.equal(null);
    // What npm's shell substitutes into node@…, run here the same way.
    expect(execSync(run![1], { cwd: repoRoot, encoding: 'utf8' }).trim()).to.equal(version);
    expect(readFileSync(path.join(repoRoot, '.ci', 'run'), 'utf8')).to.match(new RegExp(`^npm run ${imageScript}$`, 'm'));
  });

  it('runs as a non-root user in the runtime stage', () => {
    const users = runtimeOf('USER').map((u) => u.args.split(':')[0]);
    const last = users[users.length - 1];
    const nonRootImage = /:nonroot(-|$)/.test(runtime.image);
    expect(nonRootImage || last !== undefined, 'no USER and not a nonroot image').to.equal(true);
    if (last !== undefined) expect(['root', '0']).to.not.include(last);
  });

  it('installs production dependencies only for the runtime', () => {
    const runs = all.flatMap((s) => s.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args));
    expect(runs.some((r) => /npm ci\b.*--omit=dev|npm prune\b.*--omit=dev/.test(r))).to.equal(true);
    expect(runs.some((r) => /npm run build/.test(r))).to.equal(true);
    // The runtime stage copies node_modules from a stage that omitted dev dependencies.
    const depsStage = all.find((s) => s.instructions.some((i) => i.keyword === 'RUN' && /--omit=dev/.test(i.args)));
    expect(depsStage?.name).to.be.a('string');
    expect(runtimeOf('COPY').some((c) => c.args.includes(`--from=${depsStage?.name}`) && c.args.includes('node_modules'))).to.equal(true);
  });

  it('copies only the compiled sources, production node_modules and package.json into the runtime', () => {
    const sources = runtimeOf('COPY').map((c) => c.args.replace(/--\S+\s+/g, '').split(/\s+/)[0]);
    expect(sources.sort()).to.deep.equal(['/app/dist/src', '/app/node_modules', 'package.json']);
  });

  it('leaves source maps, and TypeScript sources and declarations of packages, out of the runtime', () => {
    // What the image-runtime test mirrors: it runs the sidecar from the tree these deletions leave.
    const runsIn = (stage: string) => all.find((s) => s.name === stage)!.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
    expect(runsIn('build').some((r) => /\bnpm run build\b.*&& find dist\/src -type f -name '\*\.map' -delete\b/.test(r))).to.equal(true);
    const deps = runsIn('deps').find((r) => /--omit=dev/.test(r)) ?? '';
    const deleted = /\bfind node_modules -type f \\\( (.*) \\\) -delete\b/.exec(deps)?.[1];
    expect(deleted?.split(' -o ').sort()).to.deep.equal(["-name '*.cts'", "-name '*.map'", "-name '*.mts'", "-name '*.ts'"]);
  });

  it('sets NODE_ENV=production and exposes 5000, 9191 and 9090', () => {
    expect(runtimeOf('ENV').some((e) => /\bNODE_ENV=production\b/.test(e.args))).to.equal(true);
    const ports = runtimeOf('EXPOSE').flatMap((e) => e.args.split(/\s+/)).map((p) => p.replace(/\/tcp$/, ''));
    expect(ports).to.include.members(['5000', '9191', '9090']);
  });

  it('tunes memory for the pod: heap caps in NODE_OPTIONS, a fixed glibc mmap threshold, and the bench runs with the same', () => {
    const env = runtimeOf('ENV').map((e) => e.args);
    const nodeOptions = env.map((a) => /^NODE_OPTIONS="([^"]*)"$/.exec(a)?.[1]).find((v) => v !== undefined);
    expect(nodeOptions).to.match(/--max-old-space-size=\d+/).and.match(/--max-semi-space-size=\d+/);
    expect(env).to.include('MALLOC_MMAP_THRESHOLD_=131072');
    expect(imageEnv()).to.deep.equal({ NODE_OPTIONS: nodeOptions, MALLOC_MMAP_THRESHOLD_: '131072' });
  });

  it('caps the heap well inside the memory limit of k8s/deployment.yaml', () => {
    const nodeOptions = imageEnv().NODE_OPTIONS ?? '';
    const oldSpace = Number(/--max-old-space-size=(\d+)/.exec(nodeOptions)?.[1]);
    const semiSpace = Number(/--max-semi-space-size=(\d+)/.exec(nodeOptions)?.[1]);
    // Outside V8's old generation and its two semi-spaces, the image's Node 24 holds ~75 MiB of its
    // own (code, the binary, native buffers: 86 MiB idle with a ~10 MiB heap). With every cache
    // full at the defaults it measured 277–280 MiB (bench/README.md finding 33): over a 256Mi limit.
    const processOutsideHeap = 96;
    expect(podMemoryLimitMib()).to.be.at.least(oldSpace + 2 * semiSpace + processOutsideHeap);
  });

  it('reads Kubernetes memory quantities as the bench needs them', () => {
    expect(memoryQuantityBytes('384Mi')).to.equal(384 * 2 ** 20);
    expect(memoryQuantityBytes('1Gi')).to.equal(2 ** 30);
    expect(memoryQuantityBytes('1.5Gi')).to.equal(1.5 * 2 ** 30);
    expect(memoryQuantityBytes('400M')).to.equal(400e6);
    expect(memoryQuantityBytes('128974848')).to.equal(128974848);
    expect(() => memoryQuantityBytes('256 MB')).to.throw(/not a Kubernetes memory quantity/);
    expect(() => memoryQuantityBytes('')).to.throw(/not a Kubernetes memory quantity/);
  });

  it('has an exec-form HEALTHCHECK and ENTRYPOINT running the compiled files', () => {
    const [healthcheck] = runtimeOf('HEALTHCHECK');
    expect(healthcheck, 'HEALTHCHECK').to.not.equal(undefined);
    const cmd = /\bCMD\s+(\[.*\])$/.exec(healthcheck.args);
    const hcArgs = cmd ? execForm(cmd[1]) : undefined;
    expect(hcArgs, 'HEALTHCHECK CMD must be exec form').to.be.an('array');
    expect(hcArgs).to.include('dist/src/healthcheck.js');

    const entry = [...runtimeOf('ENTRYPOINT'), ...runtimeOf('CMD')].map((e) => execForm(e.args));
    expect(entry.every((e) => e !== undefined), 'ENTRYPOINT/CMD must be exec form').to.equal(true);
    expect(entry.flat()).to.include('dist/src/main.js');
    // The node binary path of the runtime image (distroless: /nodejs/bin/node).
    if (runtime.image.includes('distroless')) expect(entry.flat()[0]).to.equal('/nodejs/bin/node');
    expect(text).to.not.match(/npm (start|run start)/);
  });

  it('names files that exist in the compiled output', () => {
    // The image compiles with tsconfig's outDir, `dist`; locally the same files sit under outRoot.
    const tsconfig = JSON.parse(readFileSync(path.join(repoRoot, 'tsconfig.json'), 'utf8')) as { compilerOptions: { outDir: string } };
    expect(tsconfig.compilerOptions.outDir).to.equal('dist');
    const named = new Set([...text.matchAll(/"dist\/(src\/[\w./-]+\.js)"/g)].map((m) => m[1]));
    expect([...named].sort()).to.deep.equal(['src/healthcheck.js', 'src/main.js']);
    for (const file of named) expect(existsSync(path.join(outRoot, file)), file).to.equal(true);
  });

  it('has a .dockerignore that keeps local builds, dependencies and secrets out of the context', () => {
    const ignore = readFileSync(path.join(repoRoot, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const entry of ['**/node_modules', 'dist', '.git', '.tmp', 'coverage', '**/*.pem', '**/*.pfx']) expect(ignore, entry).to.include(entry);
    // What the build needs must not be ignored.
    for (const needed of ['src', 'package.json', 'package-lock.json', 'tsconfig.json']) expect(ignore, needed).to.not.include(needed);
  });
});
