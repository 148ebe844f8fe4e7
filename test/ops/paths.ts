/** Where the ops tests find compiled files and committed source files, from their own location. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The compiled output root: this file is `<outRoot>/test/ops/paths.js`. */
export const outRoot = fileURLToPath(new URL('../../', import.meta.url));

/** The repository root (the first folder above outRoot holding package.json). */
export const repoRoot = (() => {
  let dir = outRoot;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`package.json not found above ${outRoot}`);
    dir = up;
  }
  return dir;
})();
