import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { decide, RETRY_NOW_MS, RETRY_SOON_MS } from '../../src/agent/decide.js';
import { RewindStartError } from '../../src/postgres/rewind.js';
import { freshMemory } from '../../src/agent/observation.js';
import { outcomeOf } from '../../src/agent/outcome.js';
import { renderStatesDoc } from '../../src/agent/states-doc.js';
import { AGENT_STATES, TRANSITIONS, checkTransition } from '../../src/agent/states.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { SyncRecordSchema } from '../../src/cluster/types.js';
import { member, observation, primaryInspection, replicaInspection, storeView } from './observations.js';

const types = (d: ReturnType<typeof decide>) => d.actions.map((a) => a.type);
/** A standby cluster's source with a running primary (test/unit/standby-cluster.test.ts). */
const SOURCE = { reachable: true as const, cluster: 'src', systemIdentifier: '42', primary: { member: 'p', address: '127.0.0.1:5999', timeline: 1, lsn: '0/6000000' }, optime: undefined, standby: false };

describe('decide: bootstrap and joining', () => {
  it('races for the initialise key on an empty store', () => {
    const d = decide(observation({ dataDir: 'empty', server: { kind: 'stopped' }, store: storeView({ init: undefined, leader: undefined }), previous: { state: 'starting', since: 0 } }));
    assert.equal(d.state, 'initializing');
    assert.deepEqual(types(d), ['claimInitialize']);
    assert.match(d.reason, /no cluster in the store/);
  });

  it('the winner bootstraps; the others wait', () => {
    const store = storeView({ init: { member: 'b', startedAt: 'x' }, leader: undefined, members: [] });
    const winner = decide(observation({ dataDir: 'empty', server: { kind: 'stopped' }, store, previous: { state: 'initializing', since: 0 } }));
    assert.equal(winner.state, 'bootstrapping');
    assert.deepEqual(types(winner), ['bootstrap']);
    const loser = decide(observation({ dataDir: 'empty', server: { kind: 'stopped' }, store, previous: { state: 'initializing', since: 0 } }, 'c'));
    assert.equal(loser.state, 'waiting_for_initializer');
    assert.match(loser.reason, /member b is initialising/);
  });

  it('chaos lab first setup, failed bootstrap: a member whose bootstrap released the key waits for the next initialiser (no illegal bootstrapping -> waiting_for_initializer)', () => {
    // Our bootstrap failed (UNSAFE_PATH_OWNER in the lab) and deleted the initialise key; c claimed it before our next cycle.
    const store = storeView({ init: { member: 'c', startedAt: 'x' }, leader: undefined, members: [] });
    const d = decide(observation({ dataDir: 'empty', server: { kind: 'stopped' }, store, outcomes: [{ type: 'bootstrap', result: 'failed', code: 'UNSAFE_PATH_OWNER', error: 'parent owned by root', retryable: false }], previous: { state: 'bootstrapping', since: 0 } }));
    assert.equal(d.defect, undefined, d.defect?.message);
    assert.equal(d.state, 'waiting_for_initializer');
    assert.match(d.reason, /member c is initialising/);
  });

  it('an empty member clones once the primary has its slot, never before', () => {
    const waiting = decide(observation({ dataDir: 'empty', server: { kind: 'stopped' }, previous: { state: 'waiting_to_clone', since: 0 } }));
    assert.equal(waiting.state, 'waiting_to_clone');
    assert.match(waiting.reason, /create slot b/);
    const store = storeView({ members: [member('a', { role: 'primary', state: 'primary', slots: [{ name: 'b', active: false, restartLsn: null, retainedBytes: null }] })] });
    const cloning = decide(observation({ dataDir: 'empty', server: { kind: 'stopped' }, store, previous: { state: 'waiting_to_clone', since: 0 } }));
    assert.equal(cloning.state, 'cloning');
    assert.deepEqual(types(cloning), ['clone', 'startPostgres']);
  });

  it('a bootstrap that keeps failing (a restore from a damaged backup) backs off up to 5 min instead of retrying every cycle', () => {
    const store = storeView({ init: { member: 'b', startedAt: 'x' }, leader: undefined, members: [] });
    const empty = { dataDir: 'empty' as const, server: { kind: 'stopped' as const }, store, previous: { state: 'bootstrapping' as const, since: 0 } };
    const failure = { type: 'bootstrap' as const, result: 'failed' as const, code: 'BACKUP_CORRUPT', error: 'base/5/16384 does not match its checksum', retryable: false };
    let memory = freshMemory();
    for (const [count, backoff] of [[1, 500], [2, 1000], [10, 256_000], [11, 300_000]] as const) {
      const failed = decide(observation({ ...empty, outcomes: [failure], memory: { ...memory, bootstrapFailures: count === 1 ? undefined : { count: count - 1, lastAt: 0 } } }));
      assert.equal(failed.defect, undefined, failed.defect?.message);
      assert.equal(failed.state, 'bootstrapping');
      assert.deepEqual(types(failed), [], 'no new attempt inside the backoff');
      assert.match(failed.reason, new RegExp(`initdb failed ${count} time\\(s\\) in a row`));
      assert.equal(failed.retryInMs, backoff);
      memory = failed.memory;
    }
    const retry = decide(observation({ ...empty, monotonic: 100_000 + 300_000, memory }));
    assert.deepEqual(types(retry), ['bootstrap']);
    assert.equal(decide(observation({ ...empty, outcomes: [{ type: 'bootstrap', result: 'ok' }], memory })).memory.bootstrapFailures, undefined);
  });

  it('chaos seed 4242, wal-disk-full: failed clones back off (0.5 s, 1 s, 2 s … 30 s) instead of retrying every cycle', () => {
    const store = storeView({ members: [member('a', { role: 'primary', state: 'primary', slots: [{ name: 'b', active: false, restartLsn: null, retainedBytes: null }] })] });
    const empty = { dataDir: 'empty' as const, server: { kind: 'stopped' as const }, store, previous: { state: 'cloning' as const, since: 0 } };
    let memory = freshMemory();
    for (const [count, backoff] of [[1, 500], [2, 1000], [3, 2000], [8, 30_000]] as const) {
      // The clone failed `count` times in a row, the last at 100_000 (the observation's monotonic time).
      const failed = decide(observation({ ...empty, outcomes: [{ type: 'clone', result: 'failed', code: 'POSTGRES_COMMAND_FAILED', error: 'No space left on device', retryable: true }], memory: { ...memory, cloneFailures: count === 1 ? undefined : { count: count - 1, lastAt: 0 } } }));
      assert.equal(failed.defect, undefined, failed.defect?.message);
      assert.equal(failed.state, 'waiting_to_clone', failed.reason);
      assert.deepEqual(failed.memory.cloneFailures, { count, lastAt: 100_000 });
      assert.equal(failed.retryInMs, backoff);
      memory = failed.memory;
    }
    // Once the backoff has passed it clones again; a clone that works forgets the failures.
    const retry = decide(observation({ ...empty, monotonic: 100_000 + 30_000, memory, previous: { state: 'waiting_to_clone', since: 0 } }));
    assert.deepEqual(types(retry), ['clone', 'startPostgres']);
    const done = decide(observation({ ...empty, outcomes: [{ type: 'clone', result: 'ok' }], memory }));
    assert.equal(done.memory.cloneFailures, undefined);
  });

  it('refuses a data directory of another cluster and does nothing', () => {
    const d = decide(observation({ systemIdentifier: '99' }));
    assert.equal(d.state, 'foreign_data');
    assert.deepEqual(d.actions, []);
    assert.match(d.reason, /belongs to another cluster/);
  });
});

describe('decide: the primary', () => {
  const asPrimary = { server: { kind: 'running' as const, postmasterPid: 2, inspection: primaryInspection() }, standbyConfigured: false, previous: { state: 'primary' as const, since: 0 } };

  it('holds the lease, manages sync names, slots and optime', () => {
    const d = decide(observation({ ...asPrimary, server: { kind: 'running', postmasterPid: 2, inspection: primaryInspection({ receivedLsn: '0/5000100' }) } }, 'a'));
    assert.equal(d.state, 'primary');
    assert.ok(types(d).includes('configure'));
    assert.deepEqual(d.actions.find((a) => a.type === 'writeOptime'), { type: 'writeOptime', lsn: '0/5000100', timeline: 1, revision: 9 });
    assert.ok(types(d).includes('syncSlots'), 'creates the missing slots of b and c');
  });

  it('writes the optime only when it moved (an idle primary rewrote it every loop, waking every watch)', () => {
    // The store's optime is a's at 0/5000000 on timeline 1, as the primary sees itself.
    assert.ok(!types(decide(observation(asPrimary, 'a'))).includes('writeOptime'));
    const optime = storeView().optime!;
    for (const moved of [{ lsn: '0/4000000' }, { timeline: 2, lsn: optime.lsn }, { member: 'b' }, { address: '10.0.0.1:5432' }]) {
      const d = decide(observation({ ...asPrimary, store: storeView({ optime: { ...optime, ...moved } }) }, 'a'));
      assert.ok(types(d).includes('writeOptime'), JSON.stringify(moved));
    }
    // Absent or unreadable (left out of the view): written.
    assert.ok(types(decide(observation({ ...asPrimary, store: storeView({ optime: undefined }) }, 'a'))).includes('writeOptime'));
  });

  it('stops when another member holds the lease', () => {
    const d = decide(observation({ ...asPrimary, store: storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 9 } }) }, 'a'));
    assert.equal(d.state, 'fencing_split_brain');
    assert.deepEqual(types(d), ['stopPostgres']);
    assert.match(d.reason, /member b holds the leader lease/);
  });

  it('fences itself before its lease can expire when the store is unreachable', () => {
    const settings = defaultClusterSettings();
    const base = { ...asPrimary, store: { reachable: false as const, error: 'timeout' } };
    const early = decide(observation({ ...base, leaseRenewedAt: 100_000 - (settings.ttlMs - settings.fenceMarginMs) + 10 }, 'a'));
    assert.equal(early.state, 'primary_store_unreachable');
    assert.deepEqual(early.actions, []);
    const late = decide(observation({ ...base, leaseRenewedAt: 100_000 - (settings.ttlMs - settings.fenceMarginMs) }, 'a'));
    assert.equal(late.state, 'fencing_store_lost');
    assert.deepEqual(types(late), ['stopPostgres']);
    assert.match(late.reason, /before the lease can expire/);
  });

  it('does not take the lease back after the cluster moved to a newer timeline', () => {
    const store = storeView({ leader: undefined, history: [{ timeline: 2, from: 'a', to: 'b', reason: 'x', lsn: '0/5000000', at: 'x' }] });
    const d = decide(observation({ ...asPrimary, store }, 'a'));
    assert.equal(d.state, 'fencing_old_timeline');
    assert.match(d.reason, /moved on to timeline 2/);
  });

  it('chaos seed 1, freeze-agent-postmaster: a primary whose PostgreSQL its fence watchdog stopped between cycles rejoins the new leader (no illegal primary -> rewinding)', () => {
    // The agent and the postmaster were frozen past the lease; on SIGCONT the watchdog stopped PostgreSQL
    // outside the cycle, so the next cycle starts from 'primary' with the server stopped and another leader.
    const store = storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 9 }, history: [{ timeline: 2, from: 'a', to: 'b', reason: 'x', lsn: '0/5000000', at: 'x' }] });
    for (const previous of ['primary', 'primary_store_unreachable'] as const) {
      const d = decide(observation({ ...asPrimary, server: { kind: 'stopped' as const }, previous: { state: previous, since: 0 }, store }, 'a'));
      assert.equal(d.defect, undefined, `${previous} -> ${d.state}: ${d.defect?.message}`);
      assert.ok(['rewinding', 'starting_replica', 'waiting_for_primary'].includes(d.state), `${previous} -> ${d.state}`);
    }
  });

  it('restarts a crashed primary in place, then releases the lease after the timeout', () => {
    const stopped = { ...asPrimary, server: { kind: 'stopped' as const }, previous: { state: 'primary' as const, since: 0 } };
    const first = decide(observation(stopped, 'a'));
    assert.equal(first.state, 'restarting_primary');
    assert.deepEqual(types(first), ['startPostgres']);
    assert.equal(first.memory.primaryDownSince, 100_000);
    const settings = defaultClusterSettings();
    const late = decide(observation({ ...stopped, previous: { state: 'restarting_primary', since: 0 }, memory: { ...freshMemory(), primaryDownSince: 100_000 - settings.primaryRestartTimeoutMs - 1 } }, 'a'));
    assert.equal(late.state, 'releasing_lease');
    assert.deepEqual(types(late), ['releaseLeader']);
    assert.notEqual(late.memory.primaryDownSince, undefined, 'forgotten only once the release is known to have succeeded');
    const released = decide(observation({ ...stopped, previous: { state: 'releasing_lease', since: 0 }, outcomes: [{ type: 'releaseLeader', result: 'ok' }], memory: late.memory }, 'a'));
    assert.equal(released.memory.primaryDownSince, 100_000, 'a new count starts after the release');
  });

  it('hands over cleanly on a switchover request', () => {
    const failover = { kind: 'switchover' as const, from: 'a', to: 'b', at: null, force: false, requestedAt: '2026-06-01T00:00:00Z', shutdownLsn: null };
    const d = decide(observation({ ...asPrimary, store: storeView({ failover }) }, 'a'));
    assert.equal(d.state, 'demoting');
    assert.deepEqual(types(d), ['stopPostgres', 'handOver']);
    assert.deepEqual(d.actions[0], { type: 'stopPostgres', mode: 'fast', checkpointFirst: true }, 'a checkpoint while writes still run keeps the shutdown checkpoint small');
    const busy = { ...asPrimary, server: { kind: 'running' as const, postmasterPid: 2, inspection: primaryInspection({ openTransactions: 2 }) } };
    const draining = decide(observation({ ...busy, store: storeView({ failover }) }, 'a'));
    assert.equal(draining.state, 'draining');
    assert.deepEqual(draining.actions, []);
    assert.match(draining.reason, /waiting up to switchoverDrainMs=5000 for 2 open transaction/);
    assert.equal(draining.retryInMs, RETRY_SOON_MS, 'a drain is watched closely: writes are paused meanwhile');
    assert.deepEqual(draining.memory.requestSeen, { requestedAt: failover.requestedAt, since: 100_000 }, 'the drain is timed from when the request was first seen');
    // Counted on our monotonic clock from then, not by comparing wall clocks across machines.
    const seenEarlier = { ...freshMemory(), requestSeen: { requestedAt: failover.requestedAt, since: 100_000 - 5_001 } };
    const drained = decide(observation({ ...busy, now: 0, store: storeView({ failover }), memory: seenEarlier, previous: { state: 'draining', since: 0 } }, 'a'));
    assert.equal(drained.state, 'demoting');
    assert.deepEqual(types(drained), ['stopPostgres', 'handOver']);
    const impossible = decide(observation({ ...asPrimary, store: storeView({ failover: { ...failover, to: 'zz' } }) }, 'a'));
    assert.deepEqual(types(impossible), ['clearFailoverRequest']);
  });
});

describe('decide: election', () => {
  const noLeader = storeView({ leader: undefined });
  /** A standby that already stopped streaming from the former primary. */
  const detached = { upstreamConfigured: false, server: { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null }) } };
  const observe = (over: Parameters<typeof observation>[0] = {}, name = 'b') => observation({ ...detached, ...over }, name);

  it('first stops streaming from the former primary, so it can no longer acknowledge its commits', () => {
    const d = decide(observation({ store: noLeader }));
    assert.equal(d.state, 'detaching_upstream');
    assert.deepEqual(types(d), ['detachUpstream']);
    assert.match(d.reason, /stopped streaming from it before electing/);
    assert.equal(d.retryInMs, RETRY_NOW_MS, 'the election follows at once, not a whole loop later');
  });

  it('waits while a peer still streams from the former primary', () => {
    const d = decide(observe({ store: storeView({ leader: undefined, sync: { leader: 'a', members: ['b', 'c'], updatedAt: 'x' } }), peers: [{ name: 'c', status: member('c') }] }));
    assert.equal(d.state, 'electing');
    assert.match(d.reason, /peer c still streams from the former primary/);
    assert.equal(d.retryInMs, RETRY_SOON_MS);
    const lost = decide(observe({ store: noLeader }, 'c'));
    assert.match(lost.reason, /not in the synchronous set/);
    assert.equal(lost.retryInMs, undefined, 'a verdict that will not change soon waits for the loop');
  });

  it('the synchronous standby takes over when the lease is gone', () => {
    const d = decide(observe({ store: noLeader }));
    assert.equal(d.state, 'promoting');
    assert.deepEqual(types(d), ['promote']);
    assert.match(d.reason, /synchronous standby/);
  });

  it('a replica outside the synchronous set does not', () => {
    const d = decide(observe({ store: noLeader }, 'c'));
    assert.equal(d.state, 'electing');
    assert.match(d.reason, /not in the synchronous set/);
  });

  it('a replica outside the synchronous set that received at least as much as a synchronous standby is eligible and wins; one behind is not', () => {
    // noLeader's record is [b]; c received more than b (same timeline), so it holds every acknowledged commit.
    const mine = (receivedLsn: string) => ({ ...detached.server, inspection: replicaInspection({ receivedLsn, replayedLsn: receivedLsn, streaming: false, upstreamConninfo: null }) });
    const b = { name: 'b', status: member('b', { receivedLsn: '0/5000000', replayedLsn: '0/5000000', streaming: false }) };
    const ahead = decide(observe({ store: noLeader, peers: [b], server: mine('0/5000100') }, 'c'));
    assert.equal(ahead.state, 'promoting');
    assert.match(ahead.reason, /received at least as much as synchronous standby b/);
    const behind = decide(observe({ store: noLeader, peers: [b], server: mine('0/4FFFF00') }, 'c'));
    assert.equal(behind.state, 'electing');
    assert.match(behind.reason, /not in the synchronous set/);
    const unknown = decide(observe({ store: noLeader, peers: [], server: mine('0/5000100') }, 'c'));
    assert.equal(unknown.state, 'electing', 'without the synchronous standby position nothing is known');
    const c = { name: 'c', status: member('c', { receivedLsn: '0/5000100', replayedLsn: '0/5000100', streaming: false }) };
    const heir = decide(observe({ store: noLeader, peers: [c] }, 'b'));
    assert.equal(heir.state, 'electing');
    assert.match(heir.reason, /peer c is a better candidate/);
  });

  it('sync-standby-loss window: with the set changing, only a member at least as advanced as every one of previous is promoted, and nobody while one is unknown', () => {
    // The record was emptied while b (lost) was replaced by c (catching up): each acknowledged commit is on b or c.
    const store = storeView({ leader: undefined, sync: { leader: 'a', members: [], previous: ['b', 'c'], updatedAt: 'x' } });
    const at = (receivedLsn: string) => ({ ...detached.server, inspection: replicaInspection({ receivedLsn, replayedLsn: receivedLsn, streaming: false, upstreamConninfo: null }) });
    const b = { name: 'b', status: member('b', { receivedLsn: '0/5000000', replayedLsn: '0/5000000', streaming: false }) };
    const lagging = decide(observe({ store, peers: [b], server: at('0/4FFFF00') }, 'c'));
    assert.equal(lagging.state, 'electing', 'c lacks what b acknowledged (the lag check would have let it through)');
    assert.match(lagging.reason, /synchronous set changing \(b, c\): b received more/);
    const unknown = decide(observe({ store, peers: [{ name: 'b', status: undefined, error: 'unreachable' }], server: at('0/5000100') }, 'c'));
    assert.equal(unknown.state, 'electing', 'b cannot be asked: no automatic promotion');
    assert.match(unknown.reason, /position of b unknown/);
    const ahead = decide(observe({ store, peers: [b], server: at('0/5000100') }, 'c'));
    assert.equal(ahead.state, 'promoting');
    assert.match(ahead.reason, /synchronous set changing/);
    const c = { name: 'c', status: member('c', { receivedLsn: '0/4FFFF00', replayedLsn: '0/4FFFF00', streaming: false }) };
    const holder = decide(observe({ store, peers: [c], server: at('0/5000000') }, 'b'));
    assert.equal(holder.state, 'promoting', 'the lost standby, back and most advanced, takes over');
    // The new primary resets the record with itself (it holds every acknowledged commit) and its provisional
    // standbys as previous: if it dies before a standby is verified, the lag check does not apply either (sim sync-loss seed 1379).
    const promote = holder.actions[0];
    assert.ok(promote?.type === 'promote');
    assert.deepEqual(promote.syncPrevious, ['b', 'c']);
    const quorum = decide(observe({ store, peers: [c], server: at('0/5000000'), settings: { ...defaultClusterSettings(), synchronousMode: 'quorum' } }, 'b')).actions[0];
    assert.ok(quorum === undefined || (quorum.type === 'promote' && quorum.syncPrevious === undefined), 'quorum mode keeps its own record');
    // A record written by an older agent (no previous) parses and keeps the former rule.
    assert.equal(SyncRecordSchema.parse({ leader: 'a', members: [], updatedAt: 'x' }).previous, undefined);
  });

  it('defers to a more advanced eligible peer, asked directly', () => {
    const store = storeView({ leader: undefined, sync: { leader: 'a', members: ['b', 'c'], updatedAt: 'x' } });
    const peers = [{ name: 'c', status: member('c', { receivedLsn: '0/6000000', streaming: false }) }];
    const d = decide(observe({ store, peers }));
    assert.equal(d.state, 'electing');
    assert.match(d.reason, /peer c is a better candidate/);
  });

  it('in asynchronous mode, refuses when too far behind the last primary position', () => {
    const settings = { ...defaultClusterSettings(), synchronousMode: 'off' as const };
    const store = storeView({ leader: undefined, optime: { member: 'a', address: 'x:1', lsn: '1/0', timeline: 1, at: 'x' } });
    const d = decide(observe({ settings, store }));
    assert.equal(d.state, 'electing');
    assert.match(d.reason, /maximumLagOnFailover/);
  });

  it('a member whose fencer does not run never takes over (E_FENCER_MISSING)', () => {
    const d = decide(observe({ store: noLeader, member: { name: 'b', connectAddress: 'x:1', nofailover: false, priority: 100, fencerMissing: 'fencer 9 has not ticked for 6000 ms' } }));
    assert.equal(d.state, 'electing');
    assert.match(d.reason, /E_FENCER_MISSING/);
    assert.deepEqual(types(d), []);
  });

  it('nofailover and paused members never promote', () => {
    assert.equal(decide(observe({ store: noLeader, member: { name: 'b', connectAddress: 'x:1', nofailover: true, priority: 100 } })).state, 'electing');
    const paused = decide(observe({ store: noLeader, settings: { ...defaultClusterSettings(), paused: true } }));
    assert.equal(paused.state, 'replica');
    assert.deepEqual(paused.actions, []);
  });

  it('a switchover candidate waits for the old primary last WAL', () => {
    const failover = { kind: 'switchover' as const, from: 'a', to: 'b', at: null, force: false, requestedAt: '2026-06-01T00:00:00Z', shutdownLsn: '0/5000000' };
    const waiting = decide(observe({ store: storeView({ leader: undefined, failover }) }));
    assert.match(waiting.reason, /waiting to receive the old primary's last WAL/);
    const ready = decide(observe({ store: storeView({ leader: undefined, failover }), server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ receivedLsn: '0/5000100', streaming: false, upstreamConninfo: null }) } }));
    assert.equal(ready.state, 'promoting');
    const other = decide(observe({ store: storeView({ leader: undefined, failover, sync: { leader: 'a', members: ['b', 'c'], updatedAt: 'x' } }) }, 'c'));
    assert.match(other.reason, /switchover to b in progress/);
  });

  it('issue 13: the named candidate of a clean hand-over promotes without a detach cycle; others, and a hand-over not received, detach first', () => {
    const failover = { kind: 'switchover' as const, from: 'a', to: 'b', at: null, force: false, requestedAt: '2026-06-01T00:00:00Z', shutdownLsn: '0/5000000' };
    const attached = (receivedLsn: string) => ({ upstreamConfigured: true, server: { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ receivedLsn, streaming: false }) } });
    const received = decide(observation({ ...attached('0/5000100'), store: storeView({ leader: undefined, failover }) }, 'b'));
    assert.equal(received.state, 'promoting');
    assert.equal(received.retryInMs, RETRY_NOW_MS);
    const short = decide(observation({ ...attached('0/4FFFF00'), store: storeView({ leader: undefined, failover }) }, 'b'));
    assert.equal(short.state, 'detaching_upstream', 'not past the shutdown position: the usual election, after detaching');
    const notNamed = decide(observation({ ...attached('0/5000100'), store: storeView({ leader: undefined, failover }) }, 'c'));
    assert.equal(notNamed.state, 'detaching_upstream');
    const noPosition = decide(observation({ ...attached('0/5000100'), store: storeView({ leader: undefined, failover: { ...failover, shutdownLsn: null } }) }, 'b'));
    assert.equal(noPosition.state, 'detaching_upstream', 'no clean shutdown recorded: the former primary may still run');
  });
});

describe('decide: rejoin', () => {
  const newLeader = storeView({
    leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 9 },
    members: [member('a', { role: 'unknown', state: 'fenced' }), member('b', { role: 'primary', state: 'primary', timeline: 2, upstream: null })],
    history: [{ timeline: 2, from: 'a', to: 'b', reason: 'x', lsn: '0/5000000', at: 'x' }],
  });
  const control = { systemIdentifier: '42', clusterState: 'in production', timeline: 1, checkpointLsn: '0/5000100', minRecoveryLsn: null };

  it('a former primary rewinds from the new leader, never starts as primary', () => {
    const d = decide(observation({ store: newLeader, server: { kind: 'stopped' }, standbyConfigured: false, control, previous: { state: 'fencing_split_brain', since: 0 } }, 'a'));
    assert.equal(d.state, 'rewinding');
    assert.deepEqual(types(d), ['rewind']);
  });

  it('failover (b), CI 2026-12-02: a start that fails after a successful pg_rewind is REWIND_START_FAILED, retried, never the rewind fallback', () => {
    const outcome = outcomeOf('rewind', new RewindStartError('b', 'pg_ctl failed (starting PostgreSQL in /data; see /data.log, exit 1)'));
    assert.equal(outcome.result, 'failed');
    assert.equal((outcome as { code: string }).code, 'REWIND_START_FAILED');
    assert.equal((outcome as { retryable: boolean }).retryable, true);
    const d = decide(observation({ store: newLeader, server: { kind: 'stopped' }, standbyConfigured: true, control, outcomes: [outcome], previous: { state: 'rewinding', since: 0 } }, 'a'));
    assert.equal(d.defect, undefined, d.defect?.message);
    assert.equal(d.memory.rewindFailed, false, 'the data directory is not at fault');
    assert.deepEqual(types(d), ['rewind'], 'tried again, not moved aside');
  });

  it('chaos seed 4242, wal-disk-full: pg_rewind failing for a full disk keeps the data in place and retries with a backoff (no moveDataAside, which frees nothing)', () => {
    const base = { store: newLeader, server: { kind: 'stopped' as const }, standbyConfigured: false, control, previous: { state: 'rewinding' as const, since: 0 } };
    // What the effect's error becomes: PostgreSQL's crash recovery inside pg_rewind could not write WAL.
    const outcome = outcomeOf('rewind', Object.assign(new Error('pg_rewind failed: PANIC:  could not write to file "pg_wal/xlogtemp.123": No space left on device'), { code: 'POSTGRES_COMMAND_FAILED' }));
    assert.deepEqual(outcome, { type: 'rewind', result: 'failed', code: 'DISK_FULL', error: (outcome as { error: string }).error, retryable: true });
    let memory = freshMemory();
    for (const [count, backoff] of [[1, 500], [2, 1000], [8, 30_000]] as const) {
      const d = decide(observation({ ...base, outcomes: [outcome], memory: { ...memory, rewindDiskFull: count === 1 ? undefined : { count: count - 1, lastAt: 0 } } }, 'a'));
      assert.equal(d.defect, undefined, d.defect?.message);
      assert.equal(d.state, 'rewind_failed', d.reason);
      assert.deepEqual(d.actions, [], 'never moves the data aside for a full disk');
      assert.match(d.reason, /DISK_FULL/);
      assert.equal(d.memory.rewindFailed, false);
      assert.deepEqual(d.memory.rewindDiskFull, { count, lastAt: 100_000 });
      assert.equal(d.retryInMs, backoff);
      memory = d.memory;
    }
    // Once the backoff has passed (space freed or not), pg_rewind runs again; a rewind that works forgets the failures.
    const retry = decide(observation({ ...base, monotonic: 100_000 + 30_000, memory, previous: { state: 'rewind_failed', since: 0 } }, 'a'));
    assert.equal(retry.defect, undefined, retry.defect?.message);
    assert.deepEqual(types(retry), ['rewind']);
    const done = decide(observation({ ...base, control: { ...control, timeline: 2 }, memory, outcomes: [{ type: 'rewind', result: 'ok' }] }, 'a'));
    assert.equal(done.memory.rewindDiskFull, undefined);
    // Coming from another state (the leader changed meanwhile), it rewinds at once: rewind_failed is only reached from rewinding.
    const elsewhere = decide(observation({ ...base, memory: { ...memory, rewindDiskFull: { count: 3, lastAt: 100_000 } }, previous: { state: 'waiting_for_primary', since: 0 } }, 'a'));
    assert.equal(elsewhere.defect, undefined, elsewhere.defect?.message);
    assert.deepEqual(types(elsewhere), ['rewind']);
  });

  it('after a failed rewind, moves the data aside to reclone, or waits for the operator', () => {
    const base = { store: newLeader, server: { kind: 'stopped' as const }, standbyConfigured: false, control, previous: { state: 'rewinding' as const, since: 0 } };
    const failed = { ...base, outcomes: [{ type: 'rewind' as const, result: 'failed' as const, code: 'E_REWIND_FAILED', error: 'x', retryable: false }] };
    const reclone = decide(observation(failed, 'a'));
    assert.equal(reclone.state, 'recloning');
    assert.deepEqual(types(reclone), ['moveDataAside']);
    assert.equal(reclone.memory.rewindFailed, true, 'learned from the outcome, kept until the data is moved aside');
    const retryable = decide(observation({ ...base, outcomes: [{ ...failed.outcomes[0]!, retryable: true }] }, 'a'));
    assert.deepEqual(types(retryable), ['rewind'], 'a failure that says nothing about our data (source unreachable) tries again');
    const moved = decide(observation({ ...base, dataDir: 'empty', server: { kind: 'stopped' }, previous: { state: 'recloning', since: 0 }, memory: reclone.memory, outcomes: [{ type: 'moveDataAside', result: 'ok' }] }, 'a'));
    assert.equal(moved.memory.rewindFailed, false);
    const none = decide(observation({ ...failed, settings: { ...defaultClusterSettings(), rewindFallback: 'none' } }, 'a'));
    assert.equal(none.state, 'needs_operator');
    assert.deepEqual(none.actions, []);
  });

  it('a stopped former primary with no leader waits when the cluster moved on', () => {
    const store = storeView({ leader: undefined, history: newLeader.history });
    const d = decide(observation({ store, server: { kind: 'stopped' }, standbyConfigured: false, control, previous: { state: 'fencing_split_brain', since: 0 } }, 'a'));
    assert.equal(d.state, 'waiting_for_primary');
    assert.deepEqual(d.actions, []);
  });

  it('a replica that cannot stream from a live leader for a while stops to rewind; a streaming one just follows', () => {
    const notStreaming = { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: false }) };
    // Long in 'replica' (since 0) but only just stopped streaming: the grace counts from the loss of the stream.
    const fresh = decide(observation({ store: newLeader, server: notStreaming, previous: { state: 'replica', since: 0 } }, 'c'));
    assert.equal(fresh.state, 'replica', 'within the grace period it waits');
    assert.deepEqual(fresh.memory.streamingLost, { leader: 'b', revision: 9, since: 100_000 });
    const later = decide(observation({ store: newLeader, server: notStreaming, memory: { ...freshMemory(), streamingLost: { leader: 'b', revision: 9, since: 95_000 } } }, 'c'));
    assert.equal(later.state, 'replica', '5 s without a stream is within the grace period');
    const otherLeader = decide(observation({ store: newLeader, server: notStreaming, memory: { ...freshMemory(), streamingLost: { leader: 'a', revision: 9, since: 0 } } }, 'c'));
    assert.equal(otherLeader.state, 'replica', 'time without a stream from a former leader does not count');
    const earlierTerm = decide(observation({ store: newLeader, server: notStreaming, memory: { ...freshMemory(), streamingLost: { leader: 'b', revision: 3, since: 0 } } }, 'c'));
    assert.equal(earlierTerm.state, 'replica', 'nor time from an earlier leadership of the same member');
    const stuck = decide(observation({ store: newLeader, server: notStreaming, memory: { ...freshMemory(), streamingLost: { leader: 'b', revision: 9, since: 89_000 } } }, 'c'));
    assert.equal(stuck.state, 'stopping_to_rewind');
    assert.match(stuck.reason, /cannot stream from primary b for 10000 ms/);
    assert.deepEqual(types(stuck), ['stopPostgres']);
    assert.equal(stuck.memory.rewindNeeded, true);
    const stopped = decide(observation({ store: newLeader, server: { kind: 'stopped' }, control: { ...control, timeline: 2 }, memory: stuck.memory, previous: { state: 'stopping_to_rewind', since: 0 } }, 'c'));
    assert.deepEqual(types(stopped), ['rewind']);
    const rewound = decide(observation({ store: newLeader, server: { kind: 'stopped' }, control: { ...control, timeline: 2 }, memory: stopped.memory, outcomes: [{ type: 'rewind', result: 'ok' }], previous: { state: 'rewinding', since: 0 } }, 'c'));
    assert.deepEqual(types(rewound), ['startPostgres'], 'once pg_rewind succeeded it is not needed again');
    const streaming = decide(observation({ store: newLeader, server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ timeline: 2 }) }, previous: { state: 'replica', since: 0 } }, 'c'));
    assert.equal(streaming.state, 'replica');
    assert.deepEqual(types(streaming), ['configure']);
  });

  it('a promotion names only peers whose WAL is a prefix of ours: not one that received more, nor a nofailover one', () => {
    const store = storeView({ leader: undefined, sync: { leader: 'a', members: ['b'], updatedAt: 'x' } });
    const mine = replicaInspection({ receivedLsn: '0/5000100', replayedLsn: '0/5000100', streaming: false, upstreamConninfo: null });
    const peers = [
      { name: 'c', status: member('c', { receivedLsn: '0/5000080', replayedLsn: '0/5000080', streaming: false }) },
      // Received less, but replayed more (from WAL it had before): its history goes past ours.
      { name: 'd', status: member('d', { receivedLsn: '0/5000080', replayedLsn: '0/5000200', streaming: false }) },
      { name: 'e', status: member('e', { receivedLsn: '0/5000080', replayedLsn: '0/5000080', streaming: false, tags: { nofailover: true } }) },
    ];
    const d = decide(observation({ store, upstreamConfigured: false, peers, server: { kind: 'running', postmasterPid: 2, inspection: mine } }));
    assert.equal(d.state, 'promoting');
    const promote = d.actions.find((a) => a.type === 'promote');
    assert.ok(promote && promote.type === 'promote');
    assert.equal(promote.synchronousStandbyNames, 'FIRST 1 ("c")');
    assert.deepEqual(d.memory.provisionalStandbys, ['c']);
  });

  it('a replica that replayed past the fork of the new timeline stops to rewind at once; one short of it follows', () => {
    // Its walreceiver keeps asking for timeline 1: PostgreSQL refuses to switch to 2, forked at 0/5000000.
    const past = { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: true, receivedTimeline: 1, replayedLsn: '0/5000100' }) };
    const diverged = decide(observation({ store: newLeader, server: past }, 'c'));
    assert.equal(diverged.state, 'stopping_to_rewind');
    assert.deepEqual(types(diverged), ['stopPostgres']);
    assert.equal(diverged.memory.rewindNeeded, true);
    assert.match(diverged.reason, /replayed timeline 1 to 0\/5000100, past the fork of timeline 2 at 0\/5000000/);
    const atFork = { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: true, receivedTimeline: 1, replayedLsn: '0/5000000' }) };
    assert.equal(decide(observation({ store: newLeader, server: atFork }, 'c')).state, 'replica');
    const onNewTimeline = { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: true, receivedTimeline: 2, replayedLsn: '0/5000100' }) };
    assert.equal(decide(observation({ store: newLeader, server: onNewTimeline }, 'c')).state, 'replica');
  });

  it('does not fall back to a reclone while the leader is not running as primary', () => {
    const store = storeView({ ...newLeader, members: [member('b', { role: 'unknown', state: 'waiting_for_postgres' })] });
    const d = decide(observation({ store, server: { kind: 'stopped' }, standbyConfigured: false, control, memory: { ...freshMemory(), rewindFailed: true }, previous: { state: 'rewinding', since: 0 } }, 'a'));
    assert.equal(d.state, 'rewind_failed');
    assert.deepEqual(d.actions, []);
  });
});

describe('transition table', () => {
  /**
   * Random snapshots, decided first from 'starting' (an agent that just
   * started may find anything), then again from the state that decision
   * chose (the next cycle sees the same): both must follow a row, with only
   * the actions it allows, and every row's target must be reached. Edges
   * between different situations are checked on coherent histories by the
   * seeded simulation (test/unit/sim.test.ts, docs/state-edges.txt).
   */
  it('every decision on random observations follows a declared row, and every target state is reached', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    // Standby-cluster draws come from their own stream, so the draws above stay as they were.
    let siteSeed = 11;
    const siteRandom = () => ((siteSeed = (siteSeed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const sitePick = <T>(xs: readonly T[]): T => xs[Math.floor(siteRandom() * xs.length)]!;
    const taken = new Set<string>();
    for (let i = 0; i < 30_000; i++) {
      const me = pick(['a', 'b', 'c']);
      const initialising = random() < 0.3;
      const init = pick([undefined, { member: 'a', startedAt: 'x', systemIdentifier: '42' }, ...(initialising ? [{ member: me, startedAt: 'x' }, { member: 'z', startedAt: 'x' }] : [])]);
      const leader = pick([undefined, 'a', 'b', 'c']);
      const history = pick([[], [{ timeline: 2, from: 'a', to: 'b', reason: 'x', lsn: '0/4000000', at: 'x' }]]);
      const failover = pick([undefined, undefined, { kind: 'switchover' as const, from: 'a', to: pick(['b', 'c', null]), at: null, force: false, requestedAt: '2026-06-01T00:00:00Z', shutdownLsn: pick([null, '0/4000000']) }]);
      const slots = random() < 0.5 ? [{ name: me, active: true, restartLsn: null, retainedBytes: null }] : [];
      const members = [member('a', { role: 'primary', state: 'primary', upstream: null, slots, timeline: history.length + 1 }), member('b'), member('c')];
      const o = observation(
        {
          dataDir: pick(['empty', 'initialized'] as const),
          systemIdentifier: pick(['42', '42', '99']),
          standbyConfigured: random() < 0.5,
          upstreamConfigured: random() < 0.5,
          control: { systemIdentifier: '42', clusterState: 'shut down', timeline: pick([1, 2]), checkpointLsn: pick(['0/3000000', '0/5000000']), minRecoveryLsn: null },
          haveCredentials: random() < 0.8,
          settings: { ...defaultClusterSettings(), paused: random() < 0.1, rewindFallback: pick(['reclone', 'none'] as const), standbyCluster: siteRandom() < 0.25 ? { sourceCluster: 'src' } : null },
          source: sitePick([undefined, { reachable: false as const, cluster: 'src', error: 'down' }, SOURCE, { ...SOURCE, systemIdentifier: '99' }]),
          server: pick([
            { kind: 'stopped' as const },
            { kind: 'unreachable' as const, postmasterPid: 2, error: 'x' },
            { kind: 'running' as const, postmasterPid: 2, inspection: primaryInspection({ timeline: pick([1, 2]), openTransactions: pick([0, 1]) }) },
            {
              kind: 'running' as const,
              postmasterPid: 2,
              inspection: replicaInspection({ timeline: pick([1, 2]), streaming: random() < 0.7, upstreamConninfo: pick([null, 'host=x']), receivedLsn: pick(['0/5000000', '0/6000000']) }),
            },
          ]),
          store:
            random() < 0.1
              ? { reachable: false, error: 'down' }
              : storeView({ init, members, history, failover, leader: leader ? { member: leader, ttlMs: 6000, acquiredAt: 'x', revision: 1 } : undefined }),
          leaseRenewedAt: pick([undefined, 99_000, 90_000]),
          operatorRequest: pick([undefined, undefined, undefined, { kind: 'restart' as const }, { kind: 'reinit' as const }]),
          memory: {
            ...freshMemory(),
            rewindFailed: random() < 0.2,
            primaryDownSince: pick([undefined, 1]),
          },
          previous: { state: 'starting', since: pick([0, 99_000]) },
        },
        me,
      );
      const frozen = i % 10 === 0 ? structuredClone(o) : undefined;
      const d = decide(o);
      if (frozen) assert.deepEqual(o, frozen, 'decide() never changes its input');
      assert.equal(d.defect, undefined, d.reason);
      const again = decide({ ...o, previous: { state: d.state, since: o.monotonic }, memory: d.memory });
      assert.equal(again.defect, undefined, again.reason);
      taken.add(d.state);
    }
    const unreached = TRANSITIONS.filter((t) => !taken.has(t.to)).map((t) => t.to);
    assert.deepEqual(unreached, []);
  });

  it('a move the table does not allow is a named defect: nothing is done, and the memory is kept', () => {
    // 'primary' is never reached from 'cloning' (a clone starts as a standby).
    const o = observation({ server: { kind: 'running', postmasterPid: 2, inspection: primaryInspection() }, standbyConfigured: false, previous: { state: 'cloning', since: 0 } }, 'a');
    const d = decide(o);
    assert.equal(d.defect?.code, 'E_STATE_ILLEGAL_EDGE');
    assert.equal(d.state, 'cloning');
    assert.deepEqual(d.actions, []);
    assert.match(d.reason, /E_STATE_ILLEGAL_EDGE: no transition cloning -> primary/);
    assert.ok(checkTransition('primary', 'primary', ['promote'])?.code === 'E_STATE_ACTION_NOT_ALLOWED');
    for (const t of TRANSITIONS) if (t.from !== '*') assert.ok(t.from.length > 0 && t.from.every((s) => AGENT_STATES.includes(s)), t.to);
  });

  it('docs/states.md is generated from the table (run `npm run docs`)', () => {
    assert.equal(readFileSync(new URL('../../../docs/states.md', import.meta.url), 'utf8'), renderStatesDoc());
  });
});
