/** Regenerates the generated reference docs (docs/errors.md, docs/configuration.md). */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { renderErrorReference } from '../src/error-docs.js';
import { renderConfigReference } from '../src/config/defaults.js';

const root = path.resolve(fileURLToPath(new URL('../../', import.meta.url)));
writeFileSync(path.join(root, 'docs', 'errors.md'), renderErrorReference());
writeFileSync(path.join(root, 'docs', 'configuration.md'), renderConfigReference());
console.log('wrote docs/errors.md and docs/configuration.md');
