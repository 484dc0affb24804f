import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decide } from '../../src/agent/decide.js';
import { freshMemory, type Observation } from '../../src/agent/observation.js';
import { siteLinkOf } from '../../src/agent/source.js';
import { sourceArchiveParameters } from '../../src/backup/archive.js';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { member, observation, primaryInspection, replicaInspection, storeView } from './observations.js';

const types = (d: ReturnType<typeof decide>) => d.actions.map((a) => a.type);
const settings = { ...defaultClusterSettings(), standbyCluster: { sourceCluster: 'src' } };
const source: NonNullable<Observation['source']> = {
  reachable: true,
  cluster: 'src',
  systemIdentifier: '42',
  primary: { member: 'p1', address: '127.0.0.1:5999', timeline: 2, lsn: '0/6000100' },
  optime: undefined,
  standby: false,
};
const running = (overrides = {}) => ({ kind: 'running' as const, postmasterPid: 2, inspection: replicaInspection({ streaming: true, replayedLsn: '0/6000000', ...overrides }) });
/** Member b leads the standby cluster; a and c follow it. */
const led = storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 3 }, members: [member('a'), member('b', { state: 'standby_leader', upstream: 'src/p1' }), member('c')], history: [] });

describe('standby cluster decisions (docs/sites.md)', () => {
  it("the standby leader streams from the source's current primary, without a slot there, and keeps slots for its members", () => {
    const d = decide(observation({ settings, source, store: led, server: running(), previous: { state: 'standby_leader', since: 0 } }, 'b'));
    assert.equal(d.state, 'standby_leader');
    const configure = d.actions.find((a) => a.type === 'configure');
    assert.ok(configure && configure.type === 'configure' && configure.as === 'replica');
    assert.deepEqual(configure.upstream, { member: 'src/p1', address: '127.0.0.1:5999', slot: '' });
    assert.ok(types(d).includes('syncSlots'));
    // After a failover in the source, the next cycle points at the new primary.
    const moved = decide(observation({ settings, source: { ...source, primary: { ...source.primary!, member: 'p2', address: '127.0.0.1:6000' } }, store: led, server: running(), previous: { state: 'standby_leader', since: 0 } }, 'b'));
    const next = moved.actions.find((a) => a.type === 'configure');
    assert.ok(next && next.type === 'configure' && next.as === 'replica' && next.upstream.address === '127.0.0.1:6000');
  });

  it('keeps its upstream and says why while the source is unreachable, has no primary, or is another system', () => {
    for (const [view, why] of [
      [{ reachable: false, cluster: 'src', error: 'etcd down' }, /unreachable: etcd down/],
      [{ ...source, primary: undefined }, /no running primary/],
      [{ ...source, systemIdentifier: '99' }, /SITE_FOREIGN_SOURCE/],
    ] as const) {
      const d = decide(observation({ settings, source: view as Observation['source'], store: led, server: running(), previous: { state: 'standby_leader', since: 0 } }, 'b'));
      assert.equal(d.state, 'standby_leader');
      assert.ok(!types(d).includes('configure'));
      assert.match(d.reason, why);
    }
  });

  it('the other members follow the standby leader like a primary (cascading)', () => {
    const d = decide(observation({ settings, source, store: led, server: running(), previous: { state: 'replica', since: 0 } }, 'a'));
    assert.equal(d.state, 'replica');
    const configure = d.actions.find((a) => a.type === 'configure');
    assert.ok(configure && configure.type === 'configure' && configure.as === 'replica' && configure.upstream.member === 'b' && configure.upstream.slot === 'a');
  });

  it('without a standby leader the most advanced member takes the lease and never promotes', () => {
    const store = storeView({ leader: undefined, members: [member('a'), member('b'), member('c')], history: [] });
    const peers = [
      { name: 'a', status: member('a', { replayedLsn: '0/5000000' }) },
      { name: 'c', status: member('c', { replayedLsn: '0/5000000' }) },
    ];
    const d = decide(observation({ settings, source, store, peers, server: running({ replayedLsn: '0/6000000' }), previous: { state: 'replica', since: 0 } }, 'b'));
    assert.equal(d.state, 'standby_leader');
    assert.deepEqual(types(d), ['acquireLeader']);
    const behind = decide(observation({ settings, source, store, peers, server: running({ replayedLsn: '0/4000000' }), previous: { state: 'replica', since: 0 } }, 'b'));
    assert.equal(behind.state, 'electing');
    assert.ok(!types(behind).includes('promote'));
  });

  it('a running primary of a cluster turned standby shuts down cleanly and records its final position, keeping the lease', () => {
    const store = storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 3 }, members: [member('b', { role: 'primary', state: 'primary' })] });
    const d = decide(observation({ settings: { ...settings, generation: 4 }, source, store, server: { kind: 'running', postmasterPid: 2, inspection: primaryInspection() }, standbyConfigured: false, previous: { state: 'primary', since: 0 } }, 'b'));
    assert.equal(d.state, 'demoting_to_standby');
    assert.deepEqual(d.actions, [{ type: 'stopPostgres', mode: 'fast' }, { type: 'recordDemotion', generation: 4 }]);
  });

  it("the stopped former primary rewinds from the new source's primary, then starts as its standby; never as a primary", () => {
    const store = storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 3 }, members: [member('b', { role: 'unknown', state: 'demoting_to_standby' })] });
    const base = { settings, store, server: { kind: 'stopped' as const }, previous: { state: 'demoting_to_standby' as const, since: 0 } };
    const waiting = decide(observation({ ...base, source: { ...source, primary: undefined }, standbyConfigured: false }, 'b'));
    assert.equal(waiting.state, 'waiting_for_primary');
    assert.deepEqual(waiting.actions, []);
    const rewind = decide(observation({ ...base, source, standbyConfigured: false }, 'b'));
    assert.equal(rewind.state, 'rewinding');
    assert.deepEqual(types(rewind), ['rewind']);
    const start = decide(observation({ ...base, source, standbyConfigured: true, memory: freshMemory() }, 'b'));
    assert.equal(start.state, 'starting_replica');
    const action = start.actions[0];
    assert.ok(action?.type === 'startPostgres' && action.as === 'replica' && action.upstream?.member === 'src/p1');
  });

  it('fed from the archive, a stopped standby leader starts from it while the source is unreachable; streaming only, it waits', () => {
    const store = storeView({ leader: { member: 'b', ttlMs: 6000, acquiredAt: 'x', revision: 3 }, members: [member('b', { role: 'unknown', state: 'standby_leader' })] });
    const gone = { reachable: false as const, cluster: 'src', error: 'etcd down' };
    const base = { store, server: { kind: 'stopped' as const }, source: gone, standbyConfigured: true, memory: freshMemory(), previous: { state: 'standby_leader' as const, since: 0 } };
    for (const feed of ['archive', 'both'] as const) {
      const fed = { ...defaultClusterSettings(), standbyCluster: { sourceCluster: 'src', sourceRepository: '/srv/backup', feed } };
      const d = decide(observation({ ...base, settings: fed }, 'b'));
      assert.equal(d.state, 'starting_replica', d.reason);
      const action = d.actions[0];
      assert.ok(action?.type === 'startPostgres' && action.as === 'replica' && action.upstream?.archiveOnly === true);
      assert.match(d.reason, /etcd down; starting from the source's WAL archive/);
    }
    assert.equal(decide(observation({ ...base, settings }, 'b')).state, 'waiting_for_primary');
  });

  it('the first member of a new standby cluster clones the source instead of running initdb', () => {
    const store = storeView({ init: { member: 'b', startedAt: 'x' }, leader: undefined, members: [] });
    const d = decide(observation({ settings, source, dataDir: 'empty', server: { kind: 'stopped' }, store, previous: { state: 'initializing', since: 0 } }, 'b'));
    assert.equal(d.state, 'cloning_source');
    assert.deepEqual(types(d), ['clone', 'startPostgres']);
  });

  it('once the cluster is no longer a standby cluster, the standby leader promotes', () => {
    const d = decide(observation({ source: undefined, store: led, server: running(), previous: { state: 'standby_leader', since: 0 } }, 'b'));
    assert.equal(d.state, 'resuming_promotion');
    assert.deepEqual(types(d), ['promote']);
  });

  it('the link record carries the cross-site lag against the source primary', () => {
    const link = siteLinkOf(observation({ settings, source, store: led, server: running({ replayedLsn: '0/6000000', lagSeconds: 0.5 }) }, 'b'), 'dr');
    assert.equal(link?.lagBytes, 0x100);
    assert.equal(link?.upstream, 'p1');
    assert.equal(link?.lagSeconds, 0.5);
    assert.equal(siteLinkOf(observation({ settings, source, store: led, server: running() }, 'a'), 'dr'), undefined, 'only the standby leader publishes the link');
  });

  it('feed: archive: the standby leader gets no primary_conninfo and never stops to rewind for not streaming; the link says archive and its lag in seconds is the replay age', () => {
    const archive = { ...defaultClusterSettings(), standbyCluster: { sourceCluster: 'src', sourceRepository: '/srv/backup', feed: 'archive' as const } };
    const cut = running({ streaming: false, replayedLsn: '0/5000000', lagSeconds: 0, replayAgeSeconds: 42 });
    const lostLongAgo = { ...freshMemory(), streamingLost: { leader: 'src/p1', revision: 0, since: 0, replayedLsn: '0/5000000' } };
    const d = decide(observation({ settings: archive, source, store: led, server: cut, memory: lostLongAgo, previous: { state: 'standby_leader', since: 0 } }, 'b'));
    assert.equal(d.state, 'standby_leader', d.reason);
    assert.match(d.reason, /from its WAL archive/);
    const configure = d.actions.find((a) => a.type === 'configure');
    assert.ok(configure && configure.type === 'configure' && configure.as === 'replica');
    assert.deepEqual(configure.upstream, { member: 'src/p1', address: '127.0.0.1:5999', slot: '', archiveOnly: true });
    assert.equal(d.memory.streamingLost, undefined);
    const link = siteLinkOf(observation({ settings: archive, source, store: led, server: cut }, 'b'), 'dr');
    assert.equal(link?.feed, 'archive');
    assert.equal(link?.lagBytes, 0x1000100);
    assert.equal(link?.lagSeconds, 42);
  });

  it('feed: both: not streaming counts towards pg_rewind only while replay stands still and the source is ahead', () => {
    const both = { ...defaultClusterSettings(), standbyCluster: { sourceCluster: 'src', sourceRepository: '/srv/backup' } };
    const at = (replayedLsn: string) => running({ streaming: false, replayedLsn });
    const since0 = (replayedLsn: string) => ({ ...freshMemory(), streamingLost: { leader: 'src/p1', revision: 0, since: 0, replayedLsn } });
    const run = (server: ReturnType<typeof running>, memory: ReturnType<typeof since0>, src = source) =>
      decide(observation({ settings: both, source: src, store: led, server, memory, previous: { state: 'standby_leader', since: 0 } }, 'b'));
    // Replay advanced since (the archive feeds it): the count starts again.
    const fed = run(at('0/5800000'), since0('0/5000000'));
    assert.equal(fed.state, 'standby_leader');
    assert.equal(fed.memory.streamingLost?.since, 100_000);
    // Nothing missing (the source is not ahead): no count either.
    const idle = run(at('0/6000100'), since0('0/6000100'));
    assert.equal(idle.state, 'standby_leader');
    // Stuck behind the source for longer than the grace: reconcile, as with streaming only.
    assert.equal(run(at('0/5000000'), since0('0/5000000')).state, 'stopping_to_rewind');
    // stream only (no repository): as before, not streaming for the grace is enough.
    const stream = decide(observation({ settings, source, store: led, server: at('0/5800000'), memory: since0('0/5000000'), previous: { state: 'standby_leader', since: 0 } }, 'b'));
    assert.equal(stream.state, 'stopping_to_rewind');
  });

  it('feed "archive" or "both" without sourceRepository is refused by the settings schema', async () => {
    const { StandbyClusterSchema } = await import('../../src/cluster/site.js');
    assert.equal(StandbyClusterSchema.safeParse({ sourceCluster: 'src', feed: 'archive' }).success, false);
    assert.equal(StandbyClusterSchema.safeParse({ sourceCluster: 'src', feed: 'stream' }).success, true);
    assert.equal(StandbyClusterSchema.safeParse({ sourceCluster: 'src', sourceRepository: '/r', feed: 'both' }).success, true);
  });

  it("with sourceRepository, restore_command reads the source cluster's archive", () => {
    const dir = mkdtempSync(join(tmpdir(), 'relevo-unit-'));
    try {
      mkdirSync(join(dir, 'global'));
      const id = Buffer.alloc(8);
      id.writeBigUInt64LE(7714195836052298694n);
      writeFileSync(join(dir, 'global', 'pg_control'), id);
      assert.deepEqual(sourceArchiveParameters(undefined, 'src', dir), {});
      const p = sourceArchiveParameters('/srv/backup', 'src', dir);
      assert.match(p.restore_command!, /relevo-wal-get' '\/srv\/backup' src-7714195836052298694 %f %p$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
