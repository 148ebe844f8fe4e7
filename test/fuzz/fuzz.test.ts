/**
 * The fuzz campaign in a bounded CI budget (well under 60 s); `npm run fuzz` runs the same
 * properties with many more inputs (scripts/fuzz.ts). The case count is printed and recorded.
 */
import { expect } from 'chai';
import { assertNoSecrets, secretsOf } from '../helpers/e2e.js';
import type { Stack } from '../faults/harness.js';
import { runCampaign, startFuzzTarget } from './campaign.js';

/** Inputs per property in CI (FUZZ_RUNS overrides, e.g. to reproduce with more). */
const CI_RUNS = Number(process.env.FUZZ_RUNS ?? 200);
/**
 * The suite's seed is fixed so a CI run is reproducible and a red run is not luck of the draw;
 * FUZZ_SEED overrides it, and `npm run fuzz` (scripts/fuzz.ts) keeps drawing a random seed per run.
 */
const CI_SEED = 0x5eed_c0de;

describe('fuzzing the front doors and the config loader (fast-check, bounded)', function () {
  this.timeout(60_000);
  let stack: Stack;
  before(async () => {
    stack = await startFuzzTarget();
  });
  after(async () => {
    await stack?.close();
  });

  it('never crashes, never answers 5xx where a 4xx is defined, never allows an invalid token, never emits CR/LF in a header', async () => {
    const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : CI_SEED;
    console.log(`      fuzz: seed ${seed}${process.env.FUZZ_SEED !== undefined ? ' (FUZZ_SEED)' : ' (the suite\'s fixed default; FUZZ_SEED overrides)'}`);
    const result = await runCampaign(stack, { runs: CI_RUNS, seed, log: (l) => console.log(`      ${l}`) });
    expect(result.seed).to.equal(seed);
    console.log(`      fuzz: ${result.total} cases in total (seed ${result.seed}; reproduce with FUZZ_SEED=${result.seed})`);
    expect(result.total).to.be.greaterThan(6 * CI_RUNS);
    assertNoSecrets(result.sidecarLines, secretsOf(stack.emu, [...result.tokens]));
  });
});
