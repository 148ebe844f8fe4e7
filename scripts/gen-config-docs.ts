/**
 * Writes docs/configuration.md from the defaults table (src/config/defaults.ts).
 * `node dist/scripts/gen-config-docs.js` writes it; `--check` exits 1 when the committed file is stale.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderConfigReference } from '../src/config/defaults.js';

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

const target = join(findRepoRoot(dirname(fileURLToPath(import.meta.url))), 'docs', 'configuration.md');
const text = renderConfigReference();
if (process.argv.includes('--check')) {
  const current = existsSync(target) ? readFileSync(target, 'utf8') : '';
  if (current !== text) {
    process.stderr.write(`${target} is out of date; run node dist/scripts/gen-config-docs.js\n`);
    process.exit(1);
  }
} else {
  writeFileSync(target, text);
  process.stdout.write(`wrote ${target}\n`);
}
