import assert from 'node:assert/strict';
import { test } from 'node:test';
import { autoRollDue, insideWindow } from '../../src/cluster/rolling-restart.js';
import { ClusterSettingsSchema, defaultClusterSettings } from '../../src/cluster/settings.js';
import { member, storeView } from './observations.js';

const on = (window: { start: string; end: string } | null = null) => ({ ...defaultClusterSettings(), autoRestart: { pending: true, window } });
const pendingView = (over: Parameters<typeof storeView>[0] = {}) =>
  storeView({ members: [member('a', { role: 'primary', state: 'primary', upstream: null, pendingRestart: ['shared_buffers'] }), member('b', { pendingRestart: ['shared_buffers'] }), member('c')], ...over });
const noon = Date.parse('2026-06-01T12:00:00Z');

test('autoRestart is off by default and validated', () => {
  assert.deepEqual(defaultClusterSettings().autoRestart, { pending: false, window: null });
  assert.equal(autoRollDue(pendingView(), defaultClusterSettings(), 'a', noon).due, false);
  assert.equal(ClusterSettingsSchema.safeParse({ autoRestart: { pending: true, window: { start: '25:00', end: '03:00' } } }).success, false);
});

test('the leader rolls pending restarts out by itself, planned as relevo restart --pending', () => {
  const verdict = autoRollDue(pendingView(), on(), 'a', noon);
  assert.equal(verdict.due, true);
  assert.match(verdict.reason, /a \(shared_buffers\); b \(shared_buffers\)/);
  assert.deepEqual([verdict.plan!.replicas, verdict.plan!.primary], [['b'], true]);
});

test('not by a replica, not with nothing pending, not paused, not during a switchover, not when impossible', () => {
  assert.match(autoRollDue(pendingView(), on(), 'b', noon).reason, /only the leader/);
  assert.match(autoRollDue(storeView(), on(), 'a', noon).reason, /no member has parameters pending/);
  assert.match(autoRollDue(pendingView(), { ...on(), paused: true }, 'a', noon).reason, /paused/);
  const failover = { kind: 'switchover' as const, from: 'a', to: 'b', at: null, force: false, requestedAt: 'x', shutdownLsn: null };
  assert.match(autoRollDue(pendingView({ failover }), on(), 'a', noon).reason, /in progress/);
  const broken = pendingView({ members: [member('a', { role: 'primary', state: 'primary', upstream: null }), member('b', { pendingRestart: ['x'], streaming: false })] });
  assert.match(autoRollDue(broken, on(), 'a', noon).reason, /not possible now: member b is not a streaming replica/);
});

test('only inside the window, which may wrap midnight (UTC)', () => {
  assert.equal(autoRollDue(pendingView(), on({ start: '02:00', end: '04:00' }), 'a', noon).due, false);
  assert.match(autoRollDue(pendingView(), on({ start: '02:00', end: '04:00' }), 'a', noon).reason, /outside autoRestart.window 02:00-04:00/);
  assert.equal(autoRollDue(pendingView(), on({ start: '11:30', end: '12:30' }), 'a', noon).due, true);
  assert.equal(insideWindow({ start: '23:00', end: '01:00' }, Date.parse('2026-06-01T23:30:00Z')), true);
  assert.equal(insideWindow({ start: '23:00', end: '01:00' }, Date.parse('2026-06-02T00:59:00Z')), true);
  assert.equal(insideWindow({ start: '23:00', end: '01:00' }, Date.parse('2026-06-02T01:00:00Z')), false);
});
