import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LeaderRecord, MemberStatus } from '../../src/cluster/types.js';
import {
  parseAddress,
  pickReadOnly,
  pickReadWrite,
  readOnlyCandidates,
  switchoverInProgress,
  type SelectionSettings,
  type StoreSnapshot,
  type ViewInput,
} from '../../src/router/view.js';
import { member as fixture } from './observations.js';

/** The shared fixture, with what the router looks at made explicit: addresses it dials and no WAL positions. */
function member(name: string, over: Partial<MemberStatus> = {}): MemberStatus {
  return fixture(name, {
    state: 'running',
    receivedLsn: null,
    replayedLsn: null,
    connectAddress: `10.0.0.${name.charCodeAt(0) - 96}:5432`,
    tags: {},
    ...over,
  });
}

const leaderA: LeaderRecord = { member: 'a', ttlMs: 10_000, acquiredAt: '2024-01-01T00:00:00Z' };

/** `leader: null` = nobody holds the lease. */
function snapshot(members: MemberStatus[], leader: LeaderRecord | null = leaderA, failover?: StoreSnapshot['failover']) {
  return { leader: leader ?? undefined, members: new Map(members.map((m) => [m.name, m])), failover };
}

const settings: SelectionSettings = {
  maxLagBytes: 1_000_000,
  maxLagSeconds: 30,
  fallbackToPrimary: false,
  requireStreaming: true,
  defaultTtlMs: 10_000,
};

const NOW = 1_000_000;

function input(snap: StoreSnapshot, over: Partial<ViewInput> = {}): ViewInput {
  return { snapshot: snap, settings, now: NOW, lastStoreReadAt: NOW - 500, connections: new Map(), ...over };
}

const cluster = [member('a', { role: 'primary', upstream: null, streaming: false }), member('b'), member('c')];

describe('pickReadWrite', () => {
  it('routes to the lease holder', () => {
    const d = pickReadWrite(input(snapshot(cluster)));
    assert.deepEqual(d, {
      action: 'route',
      primary: true,
      backend: { member: 'a', address: '10.0.0.1:5432', host: '10.0.0.1', port: 5432 },
    });
  });

  it('holds read-write connections while the route record holds writes (blue/green upgrade), and routes once released', () => {
    const held = { ...snapshot(cluster), hold: 'writes held: upgrade of app to green' };
    assert.equal(switchoverInProgress(held), true);
    assert.deepEqual(pickReadWrite(input(held)), { action: 'hold', reason: 'writes held: upgrade of app to green' });
    // Read-only connections are not held.
    assert.equal(pickReadOnly(input(held)).action, 'route');
    assert.equal(pickReadWrite(input({ ...held, hold: undefined })).action, 'route');
  });

  it('refuses with 57P03 when the store has not been read for longer than the lease', () => {
    const d = pickReadWrite(input(snapshot(cluster), { lastStoreReadAt: NOW - 10_001 }));
    assert.equal(d.action, 'refuse');
    assert.ok(d.action === 'refuse');
    assert.equal(d.refusal.code, 'store-unreadable');
    assert.equal(d.refusal.fields.code, '57P03');
    assert.match(d.refusal.fields.message, /unreadable for 10\.0 s, longer than the leader lease \(10\.0 s\)/);
    // Exactly at the TTL is still fresh.
    assert.equal(pickReadWrite(input(snapshot(cluster), { lastStoreReadAt: NOW - 10_000 })).action, 'route');
  });

  it('uses the default TTL when no leader was ever read, and refuses before the first read', () => {
    const d = pickReadWrite(input(snapshot(cluster, null), { lastStoreReadAt: undefined }));
    assert.ok(d.action === 'refuse' && d.refusal.code === 'store-unreadable');
  });

  it('refuses when nobody holds the lease', () => {
    const d = pickReadWrite(input(snapshot(cluster, null)));
    assert.ok(d.action === 'refuse' && d.refusal.code === 'no-primary');
  });

  it('holds during a switchover until the new primary holds the lease and is promoted', () => {
    const failover = { kind: 'switchover' as const, from: 'a', to: 'b', requestedAt: '' };
    assert.equal(pickReadWrite(input(snapshot(cluster, leaderA, failover))).action, 'hold');
    assert.equal(pickReadWrite(input(snapshot(cluster, null, failover))).action, 'hold');
    // Lease moved to b but b still reports replica: keep holding.
    const leaderB = { ...leaderA, member: 'b' };
    assert.equal(pickReadWrite(input(snapshot(cluster, leaderB, failover))).action, 'hold');
    // ...unless the caller can check writability itself (session mode): then try b, marked as promoting.
    const early = pickReadWrite(input(snapshot(cluster, leaderB, failover), { acceptPromoting: true }));
    assert.ok(early.action === 'route' && early.backend.member === 'b' && early.promoting === true);
    // Never the old primary, even so.
    assert.equal(pickReadWrite(input(snapshot(cluster, leaderA, failover), { acceptPromoting: true })).action, 'hold');
    const promoted = [member('a', { role: 'replica' }), member('b', { role: 'primary' }), member('c')];
    const d = pickReadWrite(input(snapshot(promoted, leaderB, failover)));
    assert.ok(d.action === 'route' && d.backend.member === 'b' && d.promoting === undefined);
  });

  it('treats a switchover with no target as done once anyone but the old primary leads', () => {
    const failover = { kind: 'switchover' as const, from: 'a', to: null, requestedAt: '' };
    assert.equal(switchoverInProgress(snapshot(cluster, leaderA, failover)), true);
    assert.equal(switchoverInProgress(snapshot(cluster, { ...leaderA, member: 'c' }, failover)), false);
  });

  it('refuses a leader with an unusable address', () => {
    const d = pickReadWrite(input(snapshot([member('a', { role: 'primary', connectAddress: 'nonsense' })])));
    assert.ok(d.action === 'refuse' && d.refusal.code === 'bad-address');
  });
});

describe('pickReadOnly', () => {
  it('picks the replica with the fewest connections, ties by name', () => {
    assert.ok(((d) => d.action === 'route' && d.backend.member === 'b')(pickReadOnly(input(snapshot(cluster)))));
    const d = pickReadOnly(input(snapshot(cluster), { connections: new Map([['b', 3], ['c', 2]]) }));
    assert.ok(d.action === 'route' && d.backend.member === 'c' && !d.primary);
  });

  it('leaves out paused, lagging, non-streaming and unknown-lag replicas, saying why', () => {
    const members = [
      member('a', { role: 'primary' }),
      member('b', { replayPaused: true }),
      member('c', { lagBytes: 2_000_000 }),
      member('d', { lagSeconds: 31 }),
      member('e', { streaming: false }),
      member('f', { lagBytes: null }),
      member('g', { role: 'unknown' }),
      member('h', { lagSeconds: null }),
    ];
    const { eligible, excluded } = readOnlyCandidates(snapshot(members), settings);
    assert.deepEqual(eligible.map((b) => b.member), ['h']);
    assert.deepEqual(excluded, [
      { member: 'b', reason: 'replay is paused' },
      { member: 'c', reason: 'lag 2000000 B over limit 1000000 B' },
      { member: 'd', reason: 'lag 31 s over limit 30 s' },
      { member: 'e', reason: 'not streaming' },
      { member: 'f', reason: 'lag in bytes unknown' },
      { member: 'g', reason: 'role is unknown' },
    ]);
  });

  it('ignores lag when the limits are off', () => {
    const s = { ...settings, maxLagBytes: null, maxLagSeconds: null };
    const { eligible } = readOnlyCandidates(snapshot([member('b', { lagBytes: null, lagSeconds: 1e9 })]), s);
    assert.equal(eligible.length, 1);
  });

  it('never routes read-only to the leader even if its status still says replica', () => {
    const members = [member('a'), member('b', { replayPaused: true })];
    const d = pickReadOnly(input(snapshot(members)));
    assert.ok(d.action === 'refuse' && d.refusal.code === 'no-replica');
    assert.match(d.refusal.fields.message, /b: replay is paused/);
  });

  it('falls back to the primary only when allowed and the store is fresh', () => {
    const members = [member('a', { role: 'primary' }), member('b', { replayPaused: true })];
    const fb = { ...settings, fallbackToPrimary: true };
    const d = pickReadOnly(input(snapshot(members), { settings: fb }));
    assert.ok(d.action === 'route' && d.backend.member === 'a' && d.primary);
    const stale = pickReadOnly(input(snapshot(members), { settings: fb, lastStoreReadAt: NOW - 20_000 }));
    assert.equal(stale.action, 'refuse');
  });

  it('keeps serving replicas from the last view while the store is stale', () => {
    const d = pickReadOnly(input(snapshot(cluster), { lastStoreReadAt: NOW - 60_000 }));
    assert.ok(d.action === 'route' && d.backend.member === 'b');
  });
});

describe('parseAddress', () => {
  it('parses host:port and [v6]:port, rejects the rest', () => {
    assert.deepEqual(parseAddress('127.0.0.1:5432'), { host: '127.0.0.1', port: 5432 });
    assert.deepEqual(parseAddress('db-1.example:6000'), { host: 'db-1.example', port: 6000 });
    assert.deepEqual(parseAddress('[::1]:5433'), { host: '::1', port: 5433 });
    for (const bad of ['x', 'x:', ':5432', 'h:0', 'h:70000', '::1:5432']) assert.equal(parseAddress(bad), undefined, bad);
  });
});
