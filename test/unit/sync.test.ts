import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decide } from '../../src/agent/decide.js';
import { freshMemory } from '../../src/agent/observation.js';
import { AWAITING_STANDBY_POLL_MS, NO_STANDBY, planSync, renderAnyStandby, renderStandbyNames } from '../../src/agent/sync.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { member, observation, primaryInspection, storeView } from './observations.js';

const syncRow = (name: string, flushLsn: string, syncState = 'sync') => ({ member: name, state: 'streaming', syncState, sentLsn: flushLsn, flushLsn, replayLsn: flushLsn, replayLagSeconds: 0 });
/** A primary whose pg_stat_replication shows b and c streaming (asynchronously) unless told otherwise. */
const primary = (over: Parameters<typeof primaryInspection>[0] = {}) =>
  primaryInspection({ replication: [syncRow('b', '0/5000000', 'async'), syncRow('c', '0/5000000', 'async')], ...over });
const plan = (store: ReturnType<typeof storeView>, inspection = primary(), memory = freshMemory(), settings = defaultClusterSettings()) =>
  planSync(observation({ store, memory, settings }, 'a'), store, inspection);

describe('synchronous standby planning: the sync record only ever lists members holding every acknowledged commit', () => {
  it('grows synchronous_standby_names first, the record only once the standby is sync and flushed past the switch', () => {
    const store = storeView({ sync: { leader: 'a', members: [], updatedAt: 'x' } });
    const first = plan(store, primary({ synchronousStandbyNames: '' }));
    assert.equal(first.synchronousStandbyNames, renderStandbyNames(['b']));
    assert.deepEqual(first.actions, []);
    assert.equal(first.remember.syncSwitchLsn, undefined, 'taken once the new setting is in effect');
    const inEffect = plan(store, primary({ synchronousStandbyNames: renderStandbyNames(['b']), replication: [syncRow('b', '0/4000000'), syncRow('c', '0/4000000', 'async')] }));
    assert.equal(inEffect.remember.syncSwitchLsn, '0/5000000');
    const memory = { ...freshMemory(), syncSwitchLsn: '0/5000000' };
    const behind = plan(store, primary({ synchronousStandbyNames: renderStandbyNames(['b']), replication: [syncRow('b', '0/4FFFFFF')] }), memory);
    assert.deepEqual(behind.actions, [], 'not yet flushed past the switch point');
    const caughtUp = plan(store, primary({ synchronousStandbyNames: renderStandbyNames(['b']), replication: [syncRow('b', '0/5000000')] }), memory);
    assert.deepEqual(caughtUp.actions, [{ type: 'writeSyncRecord', members: ['b'], revision: 8 }]);
  });

  it('shrinks the record first, then names the replacement in the same cycle (the record write comes before the reload)', () => {
    const store = storeView({ members: [member('a', { role: 'primary', state: 'primary' }), member('b', { streaming: false }), member('c')] });
    const step = plan(store, primary({ synchronousStandbyNames: renderStandbyNames(['b']) }));
    // Never "nobody holds our commits": b (former member) and c (named next) may, until c is verified.
    assert.deepEqual(step.actions, [{ type: 'writeSyncRecord', members: [], previous: ['b', 'c'], revision: 8 }]);
    assert.equal(step.synchronousStandbyNames, renderStandbyNames(['c']));
    assert.equal(step.remember.syncSwitchLsn, undefined, 'the switch position is taken once the new setting is in effect');
    const d = decide(observation({ store, server: { kind: 'running', postmasterPid: 2, inspection: primary({ synchronousStandbyNames: renderStandbyNames(['b']) }) }, standbyConfigured: false, previous: { state: 'primary', since: 0 } }, 'a'));
    const types = d.actions.map((a) => a.type);
    assert.ok(types.indexOf('writeSyncRecord') < types.indexOf('configure'), `record shrinks before the names change: ${types.join(', ')}`);
  });

  it('a standby whose walsender is gone is replaced at once, although its published status still says streaming', () => {
    // b was killed: its member key lives on until its lease expires, but pg_stat_replication no longer lists it.
    const store = storeView();
    const step = plan(store, primary({ synchronousStandbyNames: renderStandbyNames(['b']), replication: [syncRow('c', '0/5000000', 'async')] }));
    assert.deepEqual(step.actions, [{ type: 'writeSyncRecord', members: [], previous: ['b', 'c'], revision: 8 }]);
    assert.equal(step.synchronousStandbyNames, renderStandbyNames(['c']));
    assert.match(step.note ?? '', /b replaced by c/);
    const healthy = plan(store, primary({ synchronousStandbyNames: renderStandbyNames(['b']), replication: [syncRow('b', '0/5000000'), syncRow('c', '0/5000000', 'async')] }));
    assert.deepEqual(healthy.actions, [], 'a streaming synchronous standby is kept');
    assert.equal(healthy.synchronousStandbyNames, renderStandbyNames(['b']));
  });

  it('sync-standby-loss window: while the set changes the record keeps who may hold commits, until the replacement is verified', () => {
    const changing = storeView({ sync: { leader: 'a', members: [], previous: ['b', 'c'], updatedAt: 'x' } });
    const memory = { ...freshMemory(), syncSwitchLsn: '0/5000000' };
    // c named and catching up: nothing to write, previous stays.
    const behind = plan(changing, primary({ synchronousStandbyNames: renderStandbyNames(['c']), replication: [syncRow('c', '0/4FFFFFF')] }), memory);
    assert.deepEqual(behind.actions, []);
    // c verified (sync, flushed past the switch): it joins the record and previous is cleared in the same swap.
    const verified = plan(changing, primary({ synchronousStandbyNames: renderStandbyNames(['c']), replication: [syncRow('c', '0/5000000')] }), memory);
    assert.deepEqual(verified.actions, [{ type: 'writeSyncRecord', members: ['c'], revision: 8 }]);
    // c lost too, d takes its place: d is added to previous before it is named (write first, reload after).
    const store = storeView({ members: [member('a', { role: 'primary', state: 'primary' }), member('b', { streaming: false }), member('c', { streaming: false }), member('d')], sync: { leader: 'a', members: [], previous: ['b', 'c'], updatedAt: 'x' } });
    const next = plan(store, primary({ synchronousStandbyNames: renderStandbyNames(['c']), replication: [syncRow('d', '0/5000000', 'async')] }), memory);
    assert.deepEqual(next.actions, [{ type: 'writeSyncRecord', members: [], previous: ['b', 'c', 'd'], revision: 8 }]);
    assert.equal(next.synchronousStandbyNames, renderStandbyNames(['d']));
    // Nobody to name for synchronousFallbackMs: falling back to asynchronous replication clears previous first.
    const none = storeView({ members: [member('a', { role: 'primary', state: 'primary' }), member('b', { streaming: false }), member('c', { streaming: false })], sync: { leader: 'a', members: [], previous: ['b', 'c'], updatedAt: 'x' } });
    const settings = defaultClusterSettings();
    const waiting = plan(none, primary({ synchronousStandbyNames: renderAnyStandby([]), replication: [] }), { ...freshMemory(), noSyncCandidateSince: 100_000 - 1_000 });
    assert.deepEqual(waiting.actions, [], 'while commits wait, previous stays');
    const fallback = plan(none, primary({ synchronousStandbyNames: renderAnyStandby([]), replication: [] }), { ...freshMemory(), noSyncCandidateSince: 100_000 - settings.synchronousFallbackMs });
    assert.deepEqual(fallback.actions, [{ type: 'writeSyncRecord', members: [], revision: 8 }]);
    assert.equal(fallback.synchronousStandbyNames, '');
  });

  it('with its only standby gone, commits wait; non-strict falls back to asynchronous after the timeout, record emptied first', () => {
    const store = storeView({ members: [member('a', { role: 'primary', state: 'primary' }), member('b', { streaming: false }), member('c', { streaming: false })] });
    const inspection = primary({ synchronousStandbyNames: renderStandbyNames(['b']) });
    const waiting = plan(store, inspection, { ...freshMemory(), noSyncCandidateSince: 100_000 - 1_000 });
    assert.equal(waiting.synchronousStandbyNames, renderStandbyNames(['b']));
    assert.deepEqual(waiting.actions, []);
    const settings = defaultClusterSettings();
    const late = plan(store, inspection, { ...freshMemory(), noSyncCandidateSince: 100_000 - settings.synchronousFallbackMs });
    assert.deepEqual(late.actions, [{ type: 'writeSyncRecord', members: [], revision: 8 }]);
    const strict = plan(store, inspection, { ...freshMemory(), noSyncCandidateSince: 0 }, { ...settings, synchronousStrict: true });
    assert.deepEqual(strict.actions, [], 'strict never falls back');
    assert.equal(strict.synchronousStandbyNames, renderStandbyNames(['b']));
  });

  it('right after a promotion (empty record, replicas still re-pointing) commits wait for a provisional standby, never for "*"', () => {
    const store = storeView({ members: [member('a', { role: 'primary', state: 'primary' }), member('b', { upstream: 'x' }), member('c', { upstream: 'x' })], sync: { leader: 'a', members: [], updatedAt: 'x' } });
    const provisional = plan(store, primary({ synchronousStandbyNames: 'FIRST 1 ("b")' }), { ...freshMemory(), provisionalStandbys: ['b'] });
    assert.equal(provisional.synchronousStandbyNames, 'FIRST 1 ("b")');
    const none = plan(store, primary({ synchronousStandbyNames: 'FIRST 1 ("relevo.none")' }));
    assert.equal(none.synchronousStandbyNames, `FIRST 1 ("${NO_STANDBY}")`, 'no provisional standby: commits wait for a verified one');
    assert.equal(none.awaitingStandby, true, 'looks again soon while replicas re-point');
    const lasting = plan(store, primary({ synchronousStandbyNames: 'FIRST 1 ("relevo.none")' }), { ...freshMemory(), noSyncCandidateSince: 100_000 - AWAITING_STANDBY_POLL_MS - 1 });
    assert.equal(lasting.awaitingStandby, false, 'a lasting wait is polled at the normal period');
    const alone = plan(storeView({ members: [member('a', { role: 'primary', state: 'primary' })], sync: { leader: 'a', members: [], updatedAt: 'x' } }));
    assert.equal(alone.synchronousStandbyNames, '', 'a primary with no other member does not wait');
  });

  it('names only standbys streaming our own timeline: one still asking for an older timeline (diverged) is never named', () => {
    const onOld = storeView({ members: [member('a', { role: 'primary', state: 'primary', timeline: 2 }), member('b', { receivedTimeline: 1 })], sync: { leader: 'a', members: [], updatedAt: 'x' } });
    const d = plan(onOld, primary({ timeline: 2, synchronousStandbyNames: 'FIRST 1 ("relevo.none")' }));
    assert.equal(d.synchronousStandbyNames, `FIRST 1 ("${NO_STANDBY}")`);
    assert.deepEqual(d.actions, []);
    const onOurs = storeView({ members: [member('a', { role: 'primary', state: 'primary', timeline: 2 }), member('b', { receivedTimeline: 2 })], sync: { leader: 'a', members: [], updatedAt: 'x' } });
    assert.equal(plan(onOurs, primary({ timeline: 2, synchronousStandbyNames: 'FIRST 1 ("relevo.none")' })).synchronousStandbyNames, renderStandbyNames(['b']));
  });

  it('never renders "*" and quotes every name', () => {
    assert.equal(renderAnyStandby([]), `FIRST 1 ("${NO_STANDBY}")`);
    assert.equal(renderAnyStandby(['b', 'c']), 'FIRST 1 ("b", "c")');
  });

  it('asynchronous mode empties the record and the names', () => {
    const d = plan(storeView(), primary({ synchronousStandbyNames: renderStandbyNames(['b']) }), freshMemory(), { ...defaultClusterSettings(), synchronousMode: 'off' });
    assert.deepEqual(d.actions, [{ type: 'writeSyncRecord', members: [], revision: 8 }]);
  });
});
