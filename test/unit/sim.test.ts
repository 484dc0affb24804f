/**
 * The bounded seeded simulation of the default suite: a few thousand fault
 * schedules through the real decide() of every agent (test/sim), checking the
 * invariants of the brief at every step. Longer runs: `npm run sim -- --seeds N --steps M`.
 * docs/state-edges.txt lists the edges this run takes: a change of rules shows there as a diff.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { BOUNDED, explore, renderEdges } from '../sim/explore.js';

describe('seeded simulation', () => {
  const result = explore(BOUNDED.first, BOUNDED.schedules, BOUNDED.faultSteps);

  it(`${BOUNDED.schedules} schedules keep every invariant at every step`, () => {
    console.log(
      `simulation: ${result.schedules} schedules, ${result.steps} steps, ${result.acknowledged} acknowledged commits, ${result.failovers} promotions, ` +
        `${result.agentDownWindows} known-limitation windows`,
    );
    assert.equal(result.failure?.report, undefined);
    assert.ok(result.failovers > 100 && result.acknowledged > 10_000, 'the schedules do exercise failovers and writes');
  });

  it('docs/state-edges.txt lists the edges it takes (run `npm run docs`)', () => {
    assert.equal(readFileSync(new URL('../../../docs/state-edges.txt', import.meta.url), 'utf8'), renderEdges(result.edges));
  });
});
