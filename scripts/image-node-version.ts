/**
 * Prints the Node.js release the Docker image's build stages pin (`ARG NODE_IMAGE=node:<version>-…`
 * in the Dockerfile). `npm run test:node24` runs the compiled suite on exactly that release
 * (`npx -y node@$(node dist/scripts/image-node-version.js) …`), so the Dockerfile is the only place
 * the version is written and CI cannot drift from what the image ships (test/ops/dockerfile.test.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The `x.y.z` of the default `ARG NODE_IMAGE=node:x.y.z-<variant>` in a Dockerfile's text. */
export function imageNodeVersion(dockerfile: string): string {
  const m = /^ARG NODE_IMAGE=node:(\d+\.\d+\.\d+)(?:-[\w.-]+)?(?:@sha256:[0-9a-f]{64})?\s*$/m.exec(dockerfile);
  if (!m) throw new Error('the Dockerfile has no `ARG NODE_IMAGE=node:<x.y.z>-<variant>` line');
  return m[1];
}

/** The repository root: the nearest ancestor holding the Dockerfile and package.json (works from scripts/ and dist/scripts/). */
function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'Dockerfile')) && existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no Dockerfile above ${start}`);
  }
}

const isEntry = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isEntry) {
  const root = findRepoRoot(dirname(fileURLToPath(import.meta.url)));
  process.stdout.write(`${imageNodeVersion(readFileSync(join(root, 'Dockerfile'), 'utf8'))}\n`);
}
