import assert from 'node:assert/strict';
import { test } from 'node:test';
import { longestPause, type ProbeAck } from '../../src/cli/write-probe.js';

const acks = (...list: [number, string][]): ProbeAck[] => list.map(([at, member]) => ({ at, member }));

test('the pause is the longest gap between acknowledged commits up to the first one on the new primary', () => {
  const seen = acks([0, 'a'], [20, 'a'], [40, 'a'], [640, 'b'], [660, 'b'], [2_000, 'b']);
  assert.deepEqual(longestPause(seen, 'a', 'b'), { measured: true, pauseMs: 600, from: 'a', to: 'b' });
});

test('a gap after the new primary took over is not the switchover pause', () => {
  assert.equal((longestPause(acks([0, 'a'], [100, 'b'], [5_000, 'b']), 'a', 'b') as { pauseMs: number }).pauseMs, 100);
});

test('without commits on both sides of the hand-over nothing is reported', () => {
  assert.deepEqual(longestPause(acks([0, 'a'], [20, 'a']), 'a', 'b'), { measured: false, reason: 'no probe commit on b was acknowledged' });
  assert.deepEqual(longestPause(acks([0, 'b']), 'a', 'b'), { measured: false, reason: 'no probe commit on a was acknowledged before the switchover' });
});
