import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OperationError } from '../../src/cluster/operations.js';
import { planRoll, switchoverTarget } from '../../src/cluster/rolling-restart.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { futureTime } from '../../src/cli/operations.js';
import { member, storeView } from './observations.js';

const pending = { pendingRestart: ['shared_buffers'] };
const allPending = () =>
  storeView({ members: [member('a', { role: 'primary', state: 'primary', upstream: null, ...pending }), member('c', pending), member('b', pending)] });

test('a roll restarts the replicas in order, then the primary by switchover', () => {
  const plan = planRoll(allPending(), defaultClusterSettings(), { mode: 'pending' });
  assert.deepEqual(plan.replicas, ['b', 'c']);
  assert.equal(plan.primary, true);
  assert.match(plan.reasons.get('a')!, /shared_buffers/);
});

test('--pending touches only members with something pending; --all every member', () => {
  const view = storeView({ members: [member('a', { role: 'primary', state: 'primary', upstream: null }), member('b', pending), member('c')] });
  const plan = planRoll(view, defaultClusterSettings(), { mode: 'pending' });
  assert.deepEqual([plan.replicas, plan.primary], [['b'], false]);
  const all = planRoll(view, defaultClusterSettings(), { mode: 'all' });
  assert.deepEqual([all.replicas, all.primary], [['b', 'c'], true]);
});

test('bad requests are refused before anything changes', () => {
  const settings = defaultClusterSettings();
  assert.throws(() => planRoll(storeView(), settings, { mode: 'pending' }), (e: Error) => e instanceof OperationError && e.code === 'NOTHING_TO_ROLL');
  assert.throws(() => planRoll(allPending(), settings, { mode: 'pending', members: ['zz'] }), /unknown member "zz"/);
  assert.throws(() => planRoll({ ...allPending(), leader: undefined }, settings, { mode: 'all' }), /no healthy primary/);
  const downReplica = storeView({ members: [member('a', { role: 'primary', state: 'primary', upstream: null }), member('b', { ...pending, state: 'starting_postgres', streaming: false })] });
  assert.throws(() => planRoll(downReplica, settings, { mode: 'pending' }), /b is not a streaming replica/);
  const onlyPrimary = storeView({ members: [member('a', { role: 'primary', state: 'primary', upstream: null, ...pending }), member('b', { tags: { nofailover: true } })] });
  assert.throws(() => planRoll(onlyPrimary, settings, { mode: 'pending' }), /no streaming replica can take over/);
  assert.throws(() => planRoll(allPending(), { ...settings, paused: true }, { mode: 'pending' }), /paused/);
});

test('the switchover goes to a rolled replica within the lag limit', () => {
  const view = storeView({
    members: [member('a', { role: 'primary', state: 'primary', upstream: null, ...pending }), member('b', { ...pending, lagBytes: 0 }), member('c', { lagBytes: 100 })],
  });
  assert.equal(switchoverTarget(view, defaultClusterSettings(), 'a')?.name, 'c');
  assert.equal(switchoverTarget(view, { ...defaultClusterSettings(), maximumLagOnFailover: 10 }, 'a')?.name, 'b');
});

test('--at must be a future ISO time', () => {
  const now = Date.parse('2026-06-01T00:00:00Z');
  assert.equal(futureTime('2026-06-01T00:05:00Z', now), now + 300_000);
  assert.throws(() => futureTime('2026-05-31T23:00:00Z', now), /in the past/);
  assert.throws(() => futureTime('tomorrow', now), /expected an ISO time/);
});

test('the switchover never goes to another major version and prefers the newest minor', () => {
  const view = storeView({
    members: [
      member('a', { role: 'primary', state: 'primary', upstream: null, postgresVersion: '15.17' }),
      member('b', { postgresVersion: '16.1' }),
      member('c', { postgresVersion: '15.17' }),
      member('d', { postgresVersion: '15.18', lagBytes: 50 }),
    ],
  });
  assert.equal(switchoverTarget(view, defaultClusterSettings(), 'a')?.name, 'd');
  view.members.pop();
  assert.equal(switchoverTarget(view, defaultClusterSettings(), 'a')?.name, 'c');
});
