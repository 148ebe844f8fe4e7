/**
 * Lays out, in a local folder, the files the Dockerfile's runtime stage holds, without Docker or
 * network: each runtime COPY is followed to what its stage made (the compiled `dist/`, the
 * production `node_modules`, files from the build context), and the files the stages delete with
 * `find … -delete` are left out. The production `node_modules` is the tree `npm ci --omit=dev`
 * installs from package-lock.json (every package not flagged `dev`, nested where the lock nests
 * it), copied from the repository's full install. A COPY or a stage this module does not know how
 * to follow fails the layout instead of being skipped.
 */
import { copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { envOf, execForm, parseDockerfile, stages, workdirOf, type Stage } from './dockerfile.js';
import { outRoot, repoRoot } from './paths.js';

/** The image's runtime stage laid out in a folder, and how the image starts what is in it. */
export interface ImageLayout {
  /** The folder standing for the runtime stage's WORKDIR. */
  readonly root: string;
  /** ENTRYPOINT after the node binary (paths relative to `root`). */
  readonly entry: readonly string[];
  /** HEALTHCHECK's command after the node binary. */
  readonly healthcheck: readonly string[];
  /** The runtime stage's ENV. */
  readonly env: Readonly<Record<string, string>>;
  /** The runtime stage's USER (distroless `nonroot` images: 65532). */
  readonly user: { readonly uid: number; readonly gid: number };
}

interface LockEntry {
  readonly version?: string;
  readonly dev?: boolean;
  readonly optional?: boolean;
  readonly link?: boolean;
}

/**
 * Puts the tree at `from` at `to` (which must not exist), leaving out what `keep` refuses: files
 * hard-linked where the file system allows it (fast, and the modification times stay those of the
 * build), else copied with their modification times. Never a symlink to a file outside: Node
 * resolves a module's imports from its real path, which would reach the repository's full
 * node_modules.
 */
function place(from: string, to: string, keep: (file: string) => boolean): void {
  const stat = lstatSync(from);
  if (stat.isSymbolicLink()) {
    symlinkSync(readlinkSync(from), to);
  } else if (stat.isDirectory()) {
    mkdirSync(to, { recursive: true });
    for (const name of readdirSync(from)) {
      const file = path.join(from, name);
      if (keep(file)) place(file, path.join(to, name), keep);
    }
  } else {
    try {
      linkSync(from, to);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV' && (err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      copyFileSync(from, to);
      utimesSync(to, stat.atime, stat.mtime);
    }
  }
}

/** Which files a `find <dir> … -name '*.<ext>' … -delete` in a stage's RUN removes, by folder (relative to its WORKDIR). */
function deletionsOf(stage: Stage): { dir: string; suffixes: string[] }[] {
  const out: { dir: string; suffixes: string[] }[] = [];
  for (const run of stage.instructions.filter((i) => i.keyword === 'RUN')) {
    for (const m of run.args.matchAll(/\bfind\s+(\S+)\s+(.*?)\s-delete\b/g)) {
      if (!/(^|\s)-type f\b/.test(m[2])) throw new Error(`RUN find ${m[1]}: only \`-type f\` deletions are mirrored`);
      const suffixes = [...m[2].matchAll(/-name\s+'([^']*)'/g)].map((n) => {
        if (!/^\*\.[\w.]+$/.test(n[1])) throw new Error(`RUN find ${m[1]} -name '${n[1]}': only '*.<ext>' patterns are mirrored`);
        return n[1].slice(1);
      });
      if (suffixes.length === 0) throw new Error(`RUN find ${m[1]} … -delete names no files`);
      out.push({ dir: path.posix.normalize(m[1]), suffixes });
    }
  }
  return out;
}

/** A filter that leaves out the files a stage deleted under `source` (a path relative to its WORKDIR). */
function keepFilter(stage: Stage, source: string): (file: string) => boolean {
  const suffixes = deletionsOf(stage)
    .filter((d) => d.dir === '.' || source === d.dir || source.startsWith(`${d.dir}/`))
    .flatMap((d) => d.suffixes);
  if (suffixes.length === 0) return () => true;
  return (file) => !suffixes.some((s) => file.endsWith(s)) || !lstatSync(file).isFile();
}

/** Copies the production tree of package-lock.json from the repository's node_modules into `into`. */
function copyProductionTree(into: string, keep: (file: string) => boolean): void {
  const lock = JSON.parse(readFileSync(path.join(repoRoot, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  // Sorted, so a package is in place before the ones nested in its node_modules.
  for (const [key, entry] of Object.entries(lock.packages).sort(([a], [b]) => a.localeCompare(b))) {
    if (key === '' || entry.dev || entry.link) continue;
    if (!key.startsWith('node_modules/')) throw new Error(`package-lock.json: ${key} is not under node_modules (workspaces are not mirrored)`);
    const from = path.join(repoRoot, key);
    if (!existsSync(from)) {
      if (entry.optional) continue;
      throw new Error(`${key} is in package-lock.json's production tree but not installed: run npm ci`);
    }
    const installed = (JSON.parse(readFileSync(path.join(from, 'package.json'), 'utf8')) as { version: string }).version;
    if (installed !== entry.version) throw new Error(`${key} is ${installed}, package-lock.json says ${entry.version}: run npm ci`);
    // Packages nested in this one's node_modules come from their own lock entries.
    const nested = path.join(from, 'node_modules');
    place(from, path.join(into, key.slice('node_modules/'.length)), (file) => file !== nested && keep(file));
  }
}

/** Lays out the Dockerfile's runtime stage in `root` (which must not exist yet). */
export function layOutImage(root: string): ImageLayout {
  const all = stages(parseDockerfile(readFileSync(path.join(repoRoot, 'Dockerfile'), 'utf8')));
  const runtime = all[all.length - 1];
  const byName = new Map(all.filter((s) => s.name !== undefined).map((s) => [s.name!, s]));
  const runs = (stage: Stage, re: RegExp) => stage.instructions.some((i) => i.keyword === 'RUN' && re.test(i.args));
  const workdir = workdirOf(runtime);

  for (const copy of runtime.instructions.filter((i) => i.keyword === 'COPY')) {
    const words = copy.args.split(/\s+/);
    const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
    const [source, dest, ...more] = words.filter((w) => !w.startsWith('--'));
    if (dest === undefined || more.length > 0) throw new Error(`COPY ${copy.args}: one source and one destination are mirrored`);
    const target = path.join(root, path.posix.relative(workdir, path.posix.resolve(workdir, dest)));
    if (from === undefined) {
      // From the build context: the repository's own file, into the destination folder when it ends in /.
      const to = dest.endsWith('/') ? path.join(target, path.basename(source)) : target;
      mkdirSync(path.dirname(to), { recursive: true });
      place(path.join(repoRoot, source), to, () => true);
      continue;
    }
    const stage = byName.get(from);
    if (!stage) throw new Error(`COPY --from=${from}: not a stage of this Dockerfile`);
    const relative = path.posix.relative(workdirOf(stage), source);
    const keep = keepFilter(stage, relative);
    if (relative === 'node_modules' && runs(stage, /\bnpm ci\b.*--omit=dev/)) {
      copyProductionTree(target, keep);
    } else if (relative.startsWith('dist/') && runs(stage, /\bnpm run build\b/)) {
      // The stage's `dist` is tsconfig's outDir, which is outRoot here. Timestamps are kept:
      // main.js runs the bundle only when it is not older than the compiled modules.
      mkdirSync(path.dirname(target), { recursive: true });
      place(path.join(outRoot, relative.slice('dist/'.length)), target, keep);
    } else {
      throw new Error(`COPY --from=${from} ${source}: no rule mirrors what that stage makes there`);
    }
  }

  const nodeArgs = (args: string[] | undefined, what: string): string[] => {
    if (!args || !/(^|\/)node$/.test(args[0] ?? '')) throw new Error(`${what} does not run node in exec form`);
    return args.slice(1);
  };
  const entrypoint = runtime.instructions.filter((i) => i.keyword === 'ENTRYPOINT').at(-1);
  const healthcheck = runtime.instructions.filter((i) => i.keyword === 'HEALTHCHECK').at(-1);
  const user = runtime.instructions.filter((i) => i.keyword === 'USER').at(-1)?.args ?? (/:nonroot\b/.test(runtime.image) ? '65532:65532' : '0:0');
  const [uid, gid = uid] = user.split(':').map(Number);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error(`USER ${user}: only numeric uid[:gid] is mirrored`);
  return {
    root,
    entry: nodeArgs(entrypoint && execForm(entrypoint.args), 'ENTRYPOINT'),
    healthcheck: nodeArgs(healthcheck && execForm(/\bCMD\s+(\[.*\])$/.exec(healthcheck.args)?.[1] ?? ''), 'HEALTHCHECK'),
    env: envOf(runtime),
    user: { uid, gid },
  };
}
