/**
 * The round plan of the bench's first-sight scenario (bench/scenarios.ts firstSightSchedule): an
 * unmeasured warm round first (finding 35: the first round after the warm-up is where every
 * server's heap grows), then the measured rounds alternating the candidates' order and its reverse.
 */
import { expect } from 'chai';
import { firstSightSchedule } from '../../bench/scenarios.js';

describe('bench first-sight round plan', () => {
  it('runs one unmeasured warm round, then the measured rounds in alternating order', () => {
    const plan = firstSightSchedule(['nop', 'ver', 'verImage', 'side'], 4);
    expect(plan).to.have.length(5);
    expect(plan.map((r) => r.measured)).to.deep.equal([false, true, true, true, true]);
    expect(plan[0].order).to.deep.equal(['side', 'verImage', 'ver', 'nop']);
    expect(plan[1].order).to.deep.equal(['nop', 'ver', 'verImage', 'side']);
    expect(plan[2].order).to.deep.equal(['side', 'verImage', 'ver', 'nop']);
    expect(plan[3].order).to.deep.equal(plan[1].order);
    expect(plan[4].order).to.deep.equal(plan[2].order);
  });

  it('gives every candidate exactly one turn per round, and the warm round even when nothing is measured', () => {
    for (const measured of [0, 1, 2, 5]) {
      const plan = firstSightSchedule(['a', 'b', 'c'], measured);
      expect(plan.filter((r) => r.measured)).to.have.length(measured);
      expect(plan[0].measured).to.equal(false);
      for (const round of plan) expect([...round.order].sort()).to.deep.equal(['a', 'b', 'c']);
    }
  });

  it('gives each round its own array: changing one changes neither the others nor the input', () => {
    const candidates = ['a', 'b'];
    const plan = firstSightSchedule(candidates, 3);
    plan[1].order.pop();
    expect(candidates).to.deep.equal(['a', 'b']);
    expect(plan[3].order).to.deep.equal(['a', 'b']);
    expect(plan[2].order).to.deep.equal(['b', 'a']);
  });
});
