/**
 * One test per violation the seeded simulation found, named after the seed
 * that found it: the decide() rule that fixed it, on a hand-made snapshot,
 * and the shrunk schedule replayed through the simulator.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decide } from '../../src/agent/decide.js';
import { freshMemory } from '../../src/agent/observation.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { makeSchedule, runSchedule } from '../sim/sim.js';
import { switchoverPause } from '../sim/switchover.js';
import { member, observation, primaryInspection, replicaInspection, storeView } from './observations.js';

const types = (d: ReturnType<typeof decide>) => d.actions.map((a) => a.type);

/** The schedule of `seed` (600 fault steps) with only the faults the shrinker kept. */
function replay(seed: number, keep: number[]) {
  const full = makeSchedule(seed, 600);
  return runSchedule({ ...full, faults: full.faults.filter((_, i) => keep.includes(i)) });
}

const stoppedPrimaryHistory = [{ timeline: 2, from: 'a', to: 'b', reason: 'x', lsn: '0/5000000', at: 'x' }];

describe('violations found by the simulation', () => {
  it('sim seeds 183 and 14911: asynchronously, a new primary fences the former one over SQL as it promotes, once the lease is its own (the former primary agent had died)', () => {
    const settings = { ...defaultClusterSettings(), synchronousMode: 'off' as const };
    const detached = { upstreamConfigured: false, server: { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null }) } };
    const d = decide(observation({ ...detached, settings, store: storeView({ leader: undefined }) }));
    assert.equal(d.state, 'promoting');
    const promote = d.actions[0];
    // Inside the promotion, after the lease is taken: a stale decision cannot fence a member that leads again (seed 14911).
    assert.ok(promote?.type === 'promote' && promote.fence?.member === 'a');
    const sync = decide(observation({ ...detached, store: storeView({ leader: undefined }) })).actions[0];
    assert.ok(sync?.type === 'promote' && sync.fence === undefined, 'synchronously the failover is not slowed by a connect timeout');
    assert.equal(replay(183, [0, 1, 3]).violation, undefined);
    assert.equal(replay(14911, [1, 2, 4, 5]).violation, undefined);
  });

  it('sim seed 298: reinitialising a member is refused while no primary runs to clone from', () => {
    const d = decide(observation({ server: { kind: 'stopped' }, operatorRequest: { kind: 'reinit' }, store: storeView({ leader: undefined }) }, 'c'));
    assert.equal(d.state, 'operator_request_refused');
    assert.deepEqual(types(d), ['finishOperatorRequest']);
    assert.match(d.reason, /no primary runs to clone from/);
    const ok = decide(observation({ server: { kind: 'stopped' }, operatorRequest: { kind: 'reinit' } }, 'c'));
    assert.deepEqual(types(ok), ['moveDataAside', 'finishOperatorRequest']);
    assert.equal(replay(298, [1, 3, 4, 6, 7]).violation, undefined);
  });

  it('sim seed 328: the restart count of a crashed primary is forgotten when its leadership ends', () => {
    const d = decide(observation({ store: storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 9 } }), memory: { ...freshMemory(), primaryDownSince: 1 } }, 'c'));
    assert.equal(d.memory.primaryDownSince, undefined);
    const own = decide(
      observation({ server: { kind: 'stopped' }, standbyConfigured: false, previous: { state: 'restarting_primary', since: 0 }, memory: { ...freshMemory(), primaryDownSince: 99_000 } }, 'a'),
    );
    assert.equal(own.state, 'restarting_primary');
    assert.equal(own.memory.primaryDownSince, 99_000, 'kept while we lead');
  });

  it('sim seed 443: a restart request is consumed before the restart, and refused without a data directory', () => {
    const empty = decide(observation({ dataDir: 'empty', server: { kind: 'stopped' }, operatorRequest: { kind: 'restart' } }, 'c'));
    assert.equal(empty.state, 'operator_request_refused');
    assert.deepEqual(types(empty), ['finishOperatorRequest']);
    const replica = decide(observation({ operatorRequest: { kind: 'restart' } }, 'c'));
    assert.deepEqual(types(replica), ['finishOperatorRequest', 'restartPostgres']);
    assert.equal(replay(443, [1, 2]).violation, undefined);
  });

  it('sim seed 987: a restart request never starts a stopped former primary', () => {
    const store = storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 9 }, history: stoppedPrimaryHistory });
    const d = decide(observation({ store, server: { kind: 'stopped' }, standbyConfigured: false, operatorRequest: { kind: 'restart' } }, 'a'));
    assert.equal(d.state, 'operator_request_refused');
    assert.match(d.reason, /not running/);
    const unleased = decide(observation({ store, server: { kind: 'running', postmasterPid: 2, inspection: primaryInspection() }, standbyConfigured: false, operatorRequest: { kind: 'restart' } }, 'a'));
    assert.match(unleased.reason, /runs as primary without the leader lease/);
    assert.equal(replay(987, [0, 2, 3]).violation, undefined);
  });

  it('sim seed 1874: a promotion recorded in history but never carried out does not block every election', () => {
    // b recorded timeline 2 and failed before pg_promote(): it is still a standby on timeline 1.
    const store = storeView({ leader: undefined, history: [{ timeline: 2, from: 'a', to: 'b', reason: 'x', lsn: '0/5000000', at: 'x' }], sync: { leader: 'a', members: ['b'], updatedAt: 'x' } });
    const detached = { upstreamConfigured: false, server: { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null }) } };
    const itself = decide(observation({ ...detached, store }, 'b'));
    assert.equal(itself.state, 'promoting', itself.reason);
    assert.match(itself.reason, /synchronous standby: holds every acknowledged commit/);
    const promote = itself.actions.find((a) => a.type === 'promote');
    assert.ok(promote?.type === 'promote' && promote.timeline === 2 && promote.from === 'a', 'it resumes its own entry, taking over from a');
    const answered = [{ name: 'b', status: member('b', { streaming: false, timeline: 1 }) }];
    const other = decide(observation({ ...detached, store, peers: answered }, 'c'));
    assert.match(other.reason, /peer b is a better candidate/, 'from c too, b is an eligible synchronous standby of a, the real former primary');
    const silent = decide(observation({ ...detached, store, peers: [{ name: 'b', status: undefined, error: 'timeout' }] }, 'c'));
    assert.match(silent.reason, /on timeline 1, cluster is on 2/, 'a member that does not answer keeps its entry');
    assert.equal(replay(1874, [0, 1]).violation, undefined);
  });

  it('sim seed 2438: a primary data directory that does not answer while another member leads is stopped at once', () => {
    const store = storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 9 } });
    const d = decide(observation({ store, standbyConfigured: false, server: { kind: 'unreachable', postmasterPid: 7, error: 'timeout' } }, 'a'));
    assert.equal(d.state, 'fencing_split_brain');
    assert.deepEqual(d.actions, [{ type: 'stopPostgres', mode: 'immediate' }]);
    const ours = decide(observation({ standbyConfigured: false, server: { kind: 'unreachable', postmasterPid: 7, error: 'starting' } }, 'a'));
    assert.equal(ours.state, 'waiting_for_postgres', 'our own primary starting up is waited for');
    assert.equal(replay(2438, [0, 4, 5]).violation, undefined);
  });

  it('sim seed 15084: a primary that hangs while the store is unreachable is stopped before its lease can expire', () => {
    const settings = defaultClusterSettings();
    const hung = { standbyConfigured: false, server: { kind: 'unreachable' as const, postmasterPid: 7, error: 'timeout' }, store: { reachable: false as const, error: 'down' } };
    const late = decide(observation({ ...hung, leaseRenewedAt: 100_000 - (settings.ttlMs - settings.fenceMarginMs) }, 'a'));
    assert.equal(late.state, 'fencing_store_lost');
    assert.deepEqual(late.actions, [{ type: 'stopPostgres', mode: 'immediate' }], 'the signal waits for it to resume');
    const early = decide(observation({ ...hung, leaseRenewedAt: 99_000 }, 'a'));
    assert.equal(early.state, 'primary_store_unreachable');
    const standby = decide(observation({ ...hung, standbyConfigured: true, leaseRenewedAt: 0 }, 'b'));
    assert.equal(standby.state, 'store_unreachable', 'a standby that does not answer is left alone');
    assert.equal(replay(15084, [7, 8]).violation, undefined);
  });

  it('switchover write pause (test/sim/switchover.ts): every hand-over step looks again at once', () => {
    // Effects take no time in the model: what is left is the agents' own timing. Before, a new primary
    // looked again only a loop (1 s) after promoting, and a rejoining standby published `replica` a loop
    // after it started: with two members in synchronous mode writes paused 1.3 s (median), now 0.4 s.
    const pauses = Array.from({ length: 10 }, (_, i) => switchoverPause(i + 1, ['a', 'b'], 'on'));
    assert.ok(Math.max(...pauses) <= 700, `pauses ${pauses.join(', ')} ms`);
    const promoting = decide(observation({ upstreamConfigured: false, server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null }) }, store: storeView({ leader: undefined }) }));
    assert.equal(promoting.retryInMs, 0, 'a promotion looks again at once');
    const started = decide(observation({ server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ streaming: false }) }, previous: { state: 'rewinding', since: 0 } }));
    assert.equal(started.retryInMs, 100, 'a standby just started looks again until it streams');
    const following = decide(observation({ server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ streaming: false }) } }));
    assert.equal(following.retryInMs, undefined, 'not for ever');
    const fenced = decide(
      observation(
        {
          server: { kind: 'running', postmasterPid: 2, inspection: primaryInspection() },
          standbyConfigured: false,
          previous: { state: 'primary', since: 0 },
          memory: { ...freshMemory(), fenceTarget: { member: 'b', address: 'x:1' }, noSyncCandidateSince: 99_000 },
          store: storeView({ sync: { leader: 'a', members: [], updatedAt: 'x' }, members: [member('a', { role: 'primary', state: 'primary', upstream: null }), member('b', { streaming: false })] }),
        },
        'a',
      ),
    );
    assert.equal(fenced.retryInMs, 100, 'the former primary back as a standby does not cancel the planner look-again');
    assert.equal(fenced.memory.fenceTarget, undefined);
  });

  it('sim seed 15170: a standby streaming the leader own timeline is following it, even when history still holds a predicted timeline; the primary corrects its entry', () => {
    // b promoted predicting timeline 3; PostgreSQL chose 2, and the store write correcting the entry failed.
    const history = [{ timeline: 3, from: 'a', to: 'b', reason: 'x', lsn: '0/4000000', at: 'x' }];
    const store = storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 9 }, history, members: [member('b', { role: 'primary', state: 'primary', timeline: 2, upstream: null }), member('a')] });
    const streaming = { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ timeline: 2, receivedTimeline: 2, replayedLsn: '0/5000000' }) };
    const d = decide(observation({ store, server: streaming }, 'a'));
    assert.equal(d.state, 'replica', d.reason);
    const primary = decide(observation({ store, standbyConfigured: false, previous: { state: 'primary', since: 0 }, server: { kind: 'running', postmasterPid: 2, inspection: primaryInspection({ timeline: 2 }) } }, 'b'));
    assert.deepEqual(
      primary.actions.find((a) => a.type === 'recordSwitchPoint'),
      { type: 'recordSwitchPoint', predictedTimeline: 3, timeline: 2 },
    );
    assert.equal(replay(15170, [1, 2, 3, 4]).violation, undefined);
  });

  it('sim seed 30431: a request times out on each member monotonic clock from when it saw it, whatever the wall clocks say', () => {
    const failover = { kind: 'switchover' as const, from: 'a', to: 'c', at: null, force: false, requestedAt: '2026-06-01T00:00:00Z', shutdownLsn: '0/4000000' };
    const store = storeView({ leader: undefined, failover });
    const detached = { upstreamConfigured: false, server: { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null }) } };
    // b's wall clock is two minutes behind the requester's: the request looks fresh by wall clock.
    const behind = Date.parse(failover.requestedAt) - 120_000;
    const fresh = decide(observation({ ...detached, store, now: behind }));
    assert.match(fresh.reason, /switchover to c in progress/);
    const old = decide(observation({ ...detached, store, now: behind, memory: { ...fresh.memory, requestSeen: { requestedAt: failover.requestedAt, since: 100_000 - 30_001 } } }));
    assert.doesNotMatch(old.reason, /switchover to c in progress/, 'seen 30 s ago: timed out, as for every other member');
    assert.equal(replay(30431, [0, 2, 4, 5, 7]).violation, undefined);
  });
});

