/**
 * Writes the generated reference docs: docs/configuration.md from the defaults table
 * (src/config/defaults.ts) and docs/errors.md from the error table (src/errors.ts).
 * `node dist/scripts/gen-docs.js` writes them; `--check` exits 1 when a committed file is stale.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderConfigReference } from '../src/config/defaults.js';
import { renderErrorReference } from '../src/error-docs.js';

/** The repository root: the nearest ancestor holding the entra-sidecar package.json (works from src and any outDir). */
function findRepoRoot(start: string): string {
  let dir = start;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'entra-sidecar') return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no entra-sidecar package.json above ${start}`);
    dir = parent;
  }
}

const docs = join(findRepoRoot(dirname(fileURLToPath(import.meta.url))), 'docs');
const generated: ReadonlyArray<[string, string]> = [
  [join(docs, 'configuration.md'), renderConfigReference()],
  [join(docs, 'errors.md'), renderErrorReference()],
];
let stale = false;
for (const [target, text] of generated) {
  if (process.argv.includes('--check')) {
    const current = existsSync(target) ? readFileSync(target, 'utf8') : '';
    if (current !== text) {
      process.stderr.write(`${target} is out of date; run npm run docs\n`);
      stale = true;
    }
  } else {
    writeFileSync(target, text);
    process.stdout.write(`wrote ${target}\n`);
  }
}
if (stale) process.exit(1);
