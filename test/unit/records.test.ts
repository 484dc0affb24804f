/**
 * Issue 9, items 2 and 3: each record parsed on its own, a damaged one named
 * and never taken as absent where it decides safety; shared writes are
 * conditional and a lost compare-and-swap is seen by the next decision.
 * readCluster runs against a real embedded store in a temporary file.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decide } from '../../src/agent/decide.js';
import { freshMemory } from '../../src/agent/observation.js';
import { planSlots } from '../../src/agent/slots.js';
import { planSync } from '../../src/agent/sync.js';
import { clusterKeys } from '../../src/cluster/keys.js';
import { describeUnreadable, UnreadableReporter, type UnreadableRecord } from '../../src/cluster/records.js';
import { readStoredSettings, writeStoredSettings } from '../../src/cluster/settings-store.js';
import { readCluster } from '../../src/cluster/view.js';
import { storeRepair } from '../../src/cli/store-repair.js';
import type { MemberConfig } from '../../src/config/member.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { member, observation, primaryInspection, replicaInspection, storeView } from './observations.js';

const keys = clusterKeys('t');
const types = (d: { actions: { type: string }[] }) => d.actions.map((a) => a.type);
const bad = (over: Partial<UnreadableRecord> & Pick<UnreadableRecord, 'kind' | 'key'>): UnreadableRecord => ({ revision: 11, problem: 'not JSON (x)', lease: 'none', ...over });

describe('readCluster: each record on its own', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'relevo-records-'));
    store = await openStore({ backend: 'embedded', path: join(dir, 'store.db'), timeoutMs: 2_000 });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a member record that is not JSON leaves the others readable and is named with its key and revision', async () => {
    await store.put(keys.member('a'), JSON.stringify(member('a', { role: 'primary', state: 'primary' })));
    const revision = await store.put(keys.member('b'), '{not json');
    await store.put(keys.sync, JSON.stringify({ leader: 'a', members: 7, updatedAt: 'x' }));
    await store.put(keys.history, JSON.stringify([]));
    const { view } = await readCluster(store, keys);
    assert.ok(view.reachable);
    assert.deepEqual(view.members.map((m) => m.name), ['a']);
    const member_ = view.unreadable.find((r) => r.kind === 'member');
    assert.deepEqual({ ...member_, problem: undefined }, { key: keys.member('b'), kind: 'member', member: 'b', revision, problem: undefined, lease: 'none' });
    assert.match(member_!.problem, /^not JSON/);
    const sync = view.unreadable.find((r) => r.kind === 'sync')!;
    assert.match(sync.problem, /members: got .*number/i, 'the schema problem names the field');
    assert.equal(view.sync, undefined);
    assert.ok(view.revisions.sync! > 0 && view.revisions.history! > 0, 'every record carries its revision');
    assert.match(describeUnreadable(sync), /RECORD_UNREADABLE: record \/relevo\/t\/sync \(revision \d+\) cannot be read: .*relevo store repair/);
  });

  it('a damaged leader key on our own lease is ours: we still lead', async () => {
    const lease = await store.grantLease(60_000);
    await store.put(keys.leader, '[]', { lease });
    const own = await readCluster(store, keys, { name: 'a', lease });
    assert.ok(own.view.reachable);
    assert.equal(own.view.leader?.member, 'a');
    assert.equal(own.view.unreadable.find((r) => r.kind === 'leader')?.lease, 'own');
    const other = await readCluster(store, keys, { name: 'b', lease: 'another' });
    assert.ok(other.view.reachable);
    assert.equal(other.view.leader, undefined);
    assert.equal(other.view.unreadable.find((r) => r.kind === 'leader')?.lease, 'other');
    await store.revokeLease(lease);
  });

  it('settings writers bump the generation by compare-and-swap; a damaged config record is an error naming it', async () => {
    const read = await readStoredSettings(store, keys);
    assert.equal(read.revision, undefined);
    assert.ok(await writeStoredSettings(store, keys, { ...read.settings, paused: true }, read));
    assert.equal(await writeStoredSettings(store, keys, read.settings, read), false, 'a stale read loses');
    const again = await readStoredSettings(store, keys);
    assert.equal(again.settings.generation, 1);
    assert.ok(await writeStoredSettings(store, keys, { ...again.settings, paused: false }, again));
    assert.equal((await readStoredSettings(store, keys)).settings.generation, 2);
    await store.put(keys.config, '{"ttlMs": "soon"}');
    await assert.rejects(readStoredSettings(store, keys), /RECORD_UNREADABLE: record \/relevo\/t\/config .*ttlMs/);
  });

  it('store repair lists damaged records, refuses bad input and readable records, and changes one only at the revision read', async () => {
    const handle = { config: { cluster: 't' } as MemberConfig, store, keys };
    const listed = await storeRepair(handle, {});
    assert.match(listed, /\/relevo\/t\/members\/b \(revision \d+\): not JSON/);
    assert.match(listed, /\/relevo\/t\/sync .*members/);
    await assert.rejects(storeRepair(handle, { delete: 'nonsense/key' }), /not a record of cluster t/);
    await assert.rejects(storeRepair(handle, { delete: 'members/a' }), /is readable: .* nothing changed/);
    await assert.rejects(storeRepair(handle, { delete: 'optime' }), /no record at \/relevo\/t\/optime/);
    await assert.rejects(storeRepair(handle, { set: 'sync', value: '{"leader": "a"}' }), /not a valid sync record: members: .*nothing changed/);
    await assert.rejects(storeRepair(handle, { set: 'sync' }), /needs --value/);
    assert.match(await storeRepair(handle, { delete: 'members/b' }), /^deleted \/relevo\/t\/members\/b \(revision \d+, held "\{not json": not JSON/);
    assert.equal(await store.get(keys.member('b')), undefined);
    const rewritten = await storeRepair(handle, { set: '/relevo/t/sync', value: '{"leader": "a", "members": ["c"], "updatedAt": "x"}' });
    assert.match(rewritten, /^rewrote \/relevo\/t\/sync at revision \d+ \(was revision \d+/);
    assert.deepEqual(JSON.parse((await store.get(keys.sync))!.value).members, ['c']);
  });
});

describe('reporting', () => {
  it('once per key and revision', () => {
    const reporter = new UnreadableReporter();
    const sync = bad({ kind: 'sync', key: keys.sync });
    assert.equal(reporter.fresh([sync]).length, 1);
    assert.equal(reporter.fresh([sync]).length, 0);
    assert.equal(reporter.fresh([{ ...sync, revision: 12 }]).length, 1, 'a new revision is news');
    assert.equal(reporter.fresh([]).length, 0);
    assert.equal(reporter.fresh([{ ...sync, revision: 12 }]).length, 1, 'broken again after a repair');
  });
});

describe('decide: an unreadable record that decides safety is never taken as absent', () => {
  const detached = { upstreamConfigured: false, server: { kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null }) } };

  it('an unreadable leader record blocks promotion, and the replica keeps following', () => {
    const store = storeView({ leader: undefined, unreadable: [bad({ kind: 'leader', key: keys.leader })] });
    for (const over of [{}, detached]) {
      const d = decide(observation({ ...over, store }));
      assert.equal(d.state, 'replica');
      assert.deepEqual(types(d), [], 'neither detaches nor promotes');
      assert.match(d.reason, /not electing a new primary: RECORD_UNREADABLE: \/relevo\/t\/leader/);
    }
    const stopped = decide(observation({ server: { kind: 'stopped' }, standbyConfigured: false, store }, 'a'));
    assert.deepEqual(types(stopped), [], 'a stopped former primary does not take the lease either');
    assert.match(stopped.reason, /RECORD_UNREADABLE/);
  });

  it('a primary that led keeps running under a damaged leader key no lease holds; it stops when another member\'s lease holds it, or when it did not lead', () => {
    // Whether it led a moment ago is its previous state (the primary's), not a memory flag.
    const primary = { server: { kind: 'running' as const, postmasterPid: 2, inspection: primaryInspection() } };
    const orphan = decide(observation({ ...primary, previous: { state: 'primary', since: 0 }, store: storeView({ leader: undefined, unreadable: [bad({ kind: 'leader', key: keys.leader })] }) }, 'a'));
    assert.equal(orphan.state, 'primary');
    assert.ok(!types(orphan).includes('stopPostgres') && !types(orphan).includes('acquireLeader'));
    assert.match(orphan.reason, /RECORD_UNREADABLE: \/relevo\/t\/leader.*replicas will not promote/);
    const request = { kind: 'switchover' as const, from: 'a', to: null, at: null, force: false, requestedAt: new Date(Date.parse('2026-06-01T00:00:00Z')).toISOString(), shutdownLsn: null };
    const noHandOver = decide(observation({ ...primary, previous: { state: 'primary', since: 0 }, store: storeView({ leader: undefined, failover: request, revisions: { failover: 3 }, unreadable: [bad({ kind: 'leader', key: keys.leader })] }) }, 'a'));
    assert.equal(noHandOver.state, 'primary', 'nobody could take over: no switchover under a damaged leader key');
    assert.ok(!types(noHandOver).includes('handOver'));
    const held = decide(observation({ ...primary, store: storeView({ leader: undefined, unreadable: [bad({ kind: 'leader', key: keys.leader, lease: 'other' })] }) }, 'a'));
    assert.equal(held.state, 'fencing_split_brain');
    assert.deepEqual(types(held), ['stopPostgres']);
    const stale = decide(observation({ ...primary, previous: { state: 'starting', since: 0 }, store: storeView({ leader: undefined, unreadable: [bad({ kind: 'leader', key: keys.leader })] }) }, 'a'));
    assert.equal(stale.state, 'fencing_split_brain', 'a primary that did not lead a moment ago cannot tell it is the one');
    assert.match(stale.reason, /RECORD_UNREADABLE.*did not hold the lease/);
  });

  for (const kind of ['sync', 'history', 'optime'] as const) {
    it(`an unreadable ${kind} record blocks the election, naming it`, () => {
      const store = storeView({ leader: undefined, [kind]: kind === 'history' ? [] : undefined, unreadable: [bad({ kind, key: keys[kind] })] });
      const d = decide(observation({ ...detached, store }));
      assert.equal(d.state, 'electing');
      assert.deepEqual(types(d), []);
      assert.match(d.reason, new RegExp(`not taking over: RECORD_UNREADABLE: /relevo/t/${kind}`));
    });
  }

  it('with the former primary\'s member record unreadable, the synchronous standby still takes over, and keeps a slot for it', () => {
    const store = storeView({ leader: undefined, members: [member('b'), member('c')], unreadable: [bad({ kind: 'member', key: keys.member('a'), member: 'a' })] });
    const d = decide(observation({ ...detached, store }));
    assert.equal(d.state, 'promoting');
    const promote = d.actions[0];
    assert.ok(promote?.type === 'promote');
    assert.deepEqual([...promote.slots].sort(), ['a', 'c']);
  });

  it('an unknown member keeps its slot on the primary; an unreadable registry is replaced at its revision, dropping nothing', () => {
    const o = observation({}, 'a');
    const store = storeView({
      members: [member('a', { role: 'primary' }), member('b')],
      slotRegistry: {},
      revisions: { slots: 21 },
      unreadable: [bad({ kind: 'member', key: keys.member('c'), member: 'c' }), bad({ kind: 'slots', key: keys.slots, revision: 21 })],
    });
    const plan = planSlots(o, store, [{ name: 'b', active: true }, { name: 'c', active: false }]);
    assert.deepEqual(plan, { type: 'syncSlots', create: [], drop: [], registry: { b: { lastSeenAt: null }, c: { lastSeenAt: null } }, registryRevision: 21 });
  });

  it('the primary removes an unreadable failover request at its revision', () => {
    const store = storeView({ revisions: { leader: 7, failover: 30 }, unreadable: [bad({ kind: 'failover', key: keys.failover, revision: 30 })] });
    const d = decide(observation({ server: { kind: 'running', postmasterPid: 2, inspection: primaryInspection() }, previous: { state: 'primary', since: 0 }, store }, 'a'));
    const clear = d.actions.find((a) => a.type === 'clearFailoverRequest');
    assert.ok(clear?.type === 'clearFailoverRequest');
    assert.equal(clear.revision, 30);
  });
});

describe('planSync: an unreadable or concurrently changed sync record', () => {
  const primaryOf = (over: Parameters<typeof primaryInspection>[0] = {}) => primaryInspection({ receivedLsn: '0/6000000', ...over });
  const damaged = storeView({ sync: undefined, revisions: { leader: 7, sync: 40 }, unreadable: [bad({ kind: 'sync', key: keys.sync, revision: 40 })] });

  it('keeps synchronous_standby_names and rewrites the record only with standbys verified past the point it started looking', () => {
    const waiting = primaryOf({
      synchronousStandbyNames: 'FIRST 1 ("b")',
      replication: [{ member: 'b', state: 'streaming', syncState: 'sync', sentLsn: '0/6000000', flushLsn: '0/5000000', replayLsn: '0/5000000', replayLagSeconds: 0 }],
    });
    const first = planSync(observation({}, 'a'), damaged, waiting);
    assert.equal(first.synchronousStandbyNames, 'FIRST 1 ("b")', 'no commit gets a weaker guarantee');
    assert.deepEqual(first.actions, [], 'b has not flushed past the point yet');
    assert.equal(first.remember.syncSwitchLsn, '0/6000000');
    assert.match(first.note!, /sync record unreadable/);
    const caughtUp = primaryOf({ synchronousStandbyNames: 'FIRST 1 ("b")', replication: [{ ...waiting.replication[0]!, flushLsn: '0/6000010' }] });
    const second = planSync(observation({ memory: { ...freshMemory(), syncSwitchLsn: '0/6000000' } }, 'a'), damaged, caughtUp);
    assert.deepEqual(second.actions, [{ type: 'writeSyncRecord', members: ['b'], revision: 40 }]);
    const asynchronous = planSync(observation({}, 'a'), damaged, primaryOf({ synchronousStandbyNames: '' }));
    assert.deepEqual(asynchronous.actions, [{ type: 'writeSyncRecord', members: [], revision: 40 }], 'commits wait for nobody: the truth is the empty set');
  });

  it('after a lost compare-and-swap the next plan is made on the fresh read, at its new revision, and says so', () => {
    // The record now (revision 41) lists nobody; c is verified and in effect: the plan writes [c] at 41.
    const store = storeView({ sync: { leader: 'a', members: [], updatedAt: 'x' }, revisions: { leader: 7, sync: 41 }, members: [member('a', { role: 'primary', state: 'primary', upstream: null }), member('b', { streaming: false }), member('c')] });
    const inspection = primaryOf({
      synchronousStandbyNames: 'FIRST 1 ("c")',
      replication: [{ member: 'c', state: 'streaming', syncState: 'sync', sentLsn: '0/6000000', flushLsn: '0/6000000', replayLsn: '0/6000000', replayLagSeconds: 0 }],
    });
    const o = observation({ outcomes: [{ type: 'writeSyncRecord', result: 'lost_cas', key: keys.sync, error: 'changed' }], memory: { ...freshMemory(), syncSwitchLsn: '0/5000000' } }, 'a');
    const plan = planSync(o, store, inspection);
    assert.deepEqual(plan.actions, [{ type: 'writeSyncRecord', members: ['c'], revision: 41 }]);
    assert.match(plan.note!, /lost compare-and-swap\): re-read, retrying/);
    const d = decide({ ...o, server: { kind: 'running', postmasterPid: 2, inspection }, previous: { state: 'primary', since: 0 }, store });
    assert.equal(d.actions[0]?.type, 'writeSyncRecord', 'the record is written before synchronous_standby_names changes');
    assert.match(d.reason, /re-read, retrying/);
  });
});
