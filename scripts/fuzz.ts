/**
 * `npm run fuzz [-- --runs N] [--seed S]`: the fuzz campaign of test/fuzz/campaign.ts with many more
 * inputs (default 2000 per property) against the BUILT sidecar and the emulator. Prints the case
 * counts and the seed; exits 1 on the first counterexample (fast-check prints it, shrunk).
 */
import { assertNoSecrets, secretsOf } from '../test/helpers/e2e.js';
import { runCampaign, startFuzzTarget } from '../test/fuzz/campaign.js';

function arg(name: string): number | undefined {
  const i = process.argv.indexOf(name);
  if (i < 0) return undefined;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v)) {
    process.stderr.write(`${name} needs a number\n`);
    process.exit(2);
  }
  return v;
}

const runs = arg('--runs') ?? 2000;
const seed = arg('--seed');
const stack = await startFuzzTarget();
let code = 0;
try {
  const t0 = Date.now();
  const result = await runCampaign(stack, { runs, ...(seed !== undefined ? { seed } : {}), log: (l) => process.stdout.write(l + '\n') });
  assertNoSecrets(result.sidecarLines, secretsOf(stack.emu, [...result.tokens]));
  process.stdout.write(`fuzz: ${result.total} cases in ${((Date.now() - t0) / 1000).toFixed(1)} s, seed ${result.seed}: no counterexample\n`);
} catch (err) {
  process.stderr.write(`fuzz: FAILED: ${(err as Error).message}\n`);
  code = 1;
} finally {
  await stack.close();
  await stack.emu.close();
}
process.exit(code);
