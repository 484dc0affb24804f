/** Delayed replica and recover-table: the pure parts (docs/undo.md). */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { decide } from '../../src/agent/decide.js';
import { checkRecoveryTarget, delayParameters, effectiveTags, renderRecoveryTarget } from '../../src/agent/delayed.js';
import { RecoverCopyBody } from '../../src/agent/recover-copy.js';
import { REPLAY_ERROR_CODES } from '../../src/agent/replay.js';
import { planSlots } from '../../src/agent/slots.js';
import { candidatesFor } from '../../src/agent/sync.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { parseDurationMs } from '../../src/config/delay.js';
import { MemberConfigSchema } from '../../src/config/member.js';
import { renderRelevoConf } from '../../src/postgres/conf.js';
import { proposeTarget, WaldumpScanner } from '../../src/postgres/waldump.js';
import { readOnlyCandidates } from '../../src/router/view.js';
import { member, observation, primaryInspection, replicaInspection, storeView } from './observations.js';

const base = { cluster: 'c', name: 'n3', store: { backend: 'embedded', path: '/tmp/x.db' }, postgres: { dataDir: '/data/n3' }, secrets: { file: '/etc/relevo/secrets.yaml' } };
const delayed = (delay: Record<string, unknown>) => MemberConfigSchema.parse({ ...base, delay });

describe('delay setting', () => {
  it('parses durations and refuses nonsense', () => {
    assert.equal(parseDurationMs('30min'), 1_800_000);
    assert.equal(parseDurationMs('15s'), 15_000);
    assert.equal(parseDurationMs('2h'), 7_200_000);
    assert.equal(parseDurationMs(45_000), 45_000);
    assert.equal(parseDurationMs('soon'), undefined);
    assert.equal(delayed({ apply: '30min' }).delay?.apply, 1_800_000);
    assert.throws(() => delayed({ apply: '500ms' }), /from 1s to 7d/);
    assert.throws(() => delayed({ apply: '1min', feed: 'ftp' }));
  });

  it('renders recovery_min_apply_delay and publishes the tags every rule reads', () => {
    const config = delayed({ apply: '20s' });
    assert.deepEqual(delayParameters(config), { recovery_min_apply_delay: '20000ms' });
    assert.deepEqual(delayParameters(MemberConfigSchema.parse(base)), {});
    const tags = effectiveTags(config, defaultClusterSettings());
    assert.equal(tags.nofailover, true, 'never promoted, whatever tags.nofailover says');
    assert.equal(tags.nosync, true);
    assert.equal(tags.noloadbalance, true);
    assert.equal(tags.walFeed, 'stream');
    assert.equal(effectiveTags(delayed({ apply: '20s', routeReads: true }), defaultClusterSettings()).noloadbalance, false);
    // Archive feed needs a repository to restore from; without one the member streams (and says so).
    assert.equal(effectiveTags(delayed({ apply: '20s', feed: 'archive' }), defaultClusterSettings()).walFeed, 'stream');
    const withRepo = { ...defaultClusterSettings(), backup: { ...defaultClusterSettings().backup, repository: '/repo' } };
    assert.equal(effectiveTags(delayed({ apply: '20s', feed: 'archive' }), withRepo).walFeed, 'archive');
  });

  it('an archive-fed standby has no primary_conninfo or slot; the recovery target file is included last', () => {
    const upstream = { address: '10.0.0.1:5432', slot: 'n3' };
    const streamed = renderRelevoConf({ recovery_min_apply_delay: '20000ms' }, { upstream, passfile: '/p', includeFile: 'relevo-recovery.conf' }, 'n3');
    assert.match(streamed, /primary_slot_name = 'n3'/);
    assert.match(streamed, /include_if_exists = 'relevo-recovery.conf'\n$/);
    const archived = renderRelevoConf({}, { upstream, passfile: '/p', archiveFed: true }, 'n3');
    assert.doesNotMatch(archived, /primary_conninfo|primary_slot_name/);
  });

  it('recovery targets: validated, rendered without delay, paused (never promoted) at the target', () => {
    assert.deepEqual(checkRecoveryTarget({ lsn: '0/5062a1b8' }), { lsn: '0/5062A1B8' });
    assert.deepEqual(checkRecoveryTarget({ xid: '975' }), { xid: '975' });
    assert.equal(typeof checkRecoveryTarget({ xid: "1'; drop" }), 'string');
    assert.equal(typeof checkRecoveryTarget({ xid: '1', time: '2026-01-01T00:00:00Z' }), 'string');
    const text = renderRecoveryTarget({ lsn: '0/5062A1B8' });
    assert.match(text, /^recovery_min_apply_delay = 0$/m);
    assert.match(text, /^recovery_target_lsn = '0\/5062A1B8'$/m);
    assert.match(text, /^recovery_target_inclusive = off$/m);
    assert.match(text, /^recovery_target_action = 'pause'$/m);
  });
});

describe('a delayed replica is never promoted, synchronous or routed to', () => {
  const tags = { nofailover: true, nosync: true, noloadbalance: true, applyDelayMs: 20_000, walFeed: 'stream', priority: 100 };

  it('is no synchronous standby candidate (on and quorum modes share candidatesFor)', () => {
    const store = storeView({ members: [member('a', { role: 'primary', state: 'primary', upstream: null }), member('b'), member('c', { tags })] });
    const row = (name: string) => ({ member: name, state: 'streaming', syncState: 'async', sentLsn: '0/5000000', flushLsn: '0/5000000', replayLsn: '0/5000000', replayLagSeconds: 0 });
    const inspection = primaryInspection({ replication: [row('b'), row('c')] });
    assert.deepEqual(candidatesFor(observation({ store }, 'a'), store, [], inspection).map((m) => m.name), ['b']);
  });

  it('does not run for leader when the lease is gone, even as the only, most advanced replica', () => {
    const store = storeView({ leader: undefined, members: [member('c', { tags, receivedLsn: '0/9000000' })] });
    const d = decide(observation({ store, member: { name: 'c', connectAddress: '127.0.0.1:5433', nofailover: true, priority: 100 }, server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ receivedLsn: '0/9000000' }) }, previous: { state: 'replica', since: 0 } }, 'c'));
    assert.ok(!d.actions.some((a) => a.type === 'acquireLeader' || a.type === 'promote'), `${d.state}: ${d.reason}`);
  });

  it('takes no read-only connections unless its member file says routeReads', () => {
    const snap = { leader: undefined, failover: undefined, members: new Map([['c', member('c', { tags })], ['d', member('d', { tags: { ...tags, noloadbalance: false } })]]) };
    const { eligible, excluded } = readOnlyCandidates(snap, { maxLagBytes: null, maxLagSeconds: null, fallbackToPrimary: false, requireStreaming: false } as never);
    assert.deepEqual(eligible.map((b) => b.member), ['d']);
    assert.match(excluded.find((e) => e.member === 'c')!.reason, /noloadbalance/);
  });

  it('an archive-fed delayed replica loses its slot on the primary once it runs from the archive', () => {
    const archiveTags = { ...tags, walFeed: 'archive' };
    const store = storeView({ members: [member('a', { role: 'primary', state: 'primary' }), member('b'), member('c', { tags: archiveTags })], slotRegistry: { b: { lastSeenAt: null }, c: { lastSeenAt: null } } });
    const action = planSlots(observation({ store }, 'a'), store, [{ name: 'b', active: true }, { name: 'c', active: false }]);
    assert.deepEqual(action?.create, []);
    assert.deepEqual(action?.drop.map((d) => d.slot), ['c']);
    assert.deepEqual(Object.keys(action?.registry ?? {}), ['b']);
    // Still cloning (not yet running from the archive): its slot stays, pg_basebackup streams through it.
    const cloning = storeView({ members: [member('a', { role: 'primary', state: 'primary' }), member('c', { tags: archiveTags, state: 'cloning', role: 'unknown' })], slotRegistry: { c: { lastSeenAt: null } } });
    assert.equal(planSlots(observation({ store: cloning }, 'a'), cloning, [{ name: 'c', active: true }]), undefined);
  });
});

describe('pg_waldump scan (--find)', () => {
  const target = { tablespace: 1663, database: 5, relfilenode: 16384 };
  const line = (rmgr: string, tx: number, lsn: string, desc: string) => `rmgr: ${rmgr.padEnd(11)} len (rec/tot):     54/    54, tx: ${String(tx).padStart(10)}, lsn: ${lsn}, prev 0/01000000, desc: ${desc}`;

  it('finds a TRUNCATE by the file its commit drops, starting at its lock record', () => {
    const scanner = new WaldumpScanner(target);
    for (const text of [
      line('Heap', 900, '0/05000100', 'INSERT off 3 flags 0x00, blkref #0: rel 1663/5/16390 blk 0'),
      line('Transaction', 900, '0/05000180', 'COMMIT 2026-12-01 04:50:00.000001 UTC'),
      line('Standby', 0, '0/05000200', 'LOCK xid 901 db 5 rel 16384 '),
      line('Heap', 901, '0/05000280', 'INPLACE off 9, blkref #0: rel 1663/5/1259 blk 0'),
      line('Transaction', 901, '0/05000300', 'COMMIT 2026-12-01 04:50:06.393356 UTC; rels: base/5/16384; inval msgs: catcache 51 relcache 16384'),
      'pg_waldump: error: error in WAL record at 0/5000400: invalid record length at 0/5000400: wanted 24, got 0',
    ]) scanner.line(text);
    const found = scanner.results();
    assert.deepEqual(found, [{ xid: '901', kind: 'drop-storage', deletedRows: 0, firstLsn: '0/05000200', commitLsn: '0/05000300', commitTime: '2026-12-01T04:50:06.393356Z' }]);
    assert.equal(proposeTarget(found, 100)?.xid, '901');
  });

  it('counts DELETEs per committed transaction (subtransactions included); aborted ones destroyed nothing; small deletes are not proposed', () => {
    const scanner = new WaldumpScanner(target, '950');
    const del = (tx: number, lsn: string) => line('Heap', tx, lsn, 'DELETE off 1 flags 0x00 KEYS_UPDATED , blkref #0: rel 1663/5/16384 blk 0');
    scanner.line(del(950, '0/06000010'));
    scanner.line(line('Transaction', 950, '0/06000020', 'COMMIT 2026-12-01 05:00:00 UTC'));
    for (let i = 0; i < 200; i += 1) scanner.line(del(951, `0/0610${String(i).padStart(4, '0')}`));
    scanner.line(line('Transaction', 951, '0/06200000', 'ABORT 2026-12-01 05:00:01 UTC'));
    for (let i = 0; i < 150; i += 1) scanner.line(del(i % 2 === 0 ? 952 : 953, `0/0630${String(i).padStart(4, '0')}`));
    scanner.line(del(954, '0/06400000'));
    scanner.line(line('Heap', 954, '0/06400010', 'DELETE off 2 flags 0x00 , blkref #0: rel 1663/5/99999 blk 0'));
    scanner.line(line('Transaction', 952, '0/06500000', 'COMMIT 2026-12-01 05:00:02.5 UTC; subxacts: 953'));
    const found = scanner.results();
    assert.deepEqual(found.map((t) => [t.xid, t.kind, t.deletedRows, t.firstLsn]), [['950', 'delete', 1, '0/06000010'], ['952', 'delete', 150, '0/06300000']]);
    assert.equal(proposeTarget(found, 100)?.xid, '952', 'the first delete of at least massRows rows');
    assert.equal(proposeTarget(found, 1_000), undefined);
    assert.equal(scanner.watchedStart(), '0/06000010');
  });
});

describe('POST /recover-table/copy body', () => {
  const ok = { from: 'node3', table: 'shop.orders', into: 'orders_before', database: 'shop' };
  it('accepts a member, a table, a new unquoted name and a database', () => {
    assert.deepEqual(RecoverCopyBody.parse(ok), ok);
    assert.equal(RecoverCopyBody.safeParse({ ...ok, into: 'shop.orders_before' }).success, true);
  });
  it('refuses SQL in the new name, a bad member name and unknown keys (the superuser runs the CREATE TABLE)', () => {
    for (const into of ['x; DROP TABLE orders', 'x (a int); --', '"quoted"', 'a.b.c', '1abc', '']) assert.equal(RecoverCopyBody.safeParse({ ...ok, into }).success, false, into);
    assert.equal(RecoverCopyBody.safeParse({ ...ok, from: '127.0.0.1:5432' }).success, false, 'a member name, never an address');
    assert.equal(RecoverCopyBody.safeParse({ ...ok, host: 'evil' }).success, false);
    assert.equal(RecoverCopyBody.safeParse({ from: 'node3', table: 'orders', into: 'x' }).success, false, 'database required');
  });
});

describe('docs/undo.md', () => {
  it('lists every error code of replay and recover-table', () => {
    const doc = readFileSync(new URL('../../../docs/undo.md', import.meta.url), 'utf8');
    assert.deepEqual(Object.keys(REPLAY_ERROR_CODES).filter((code) => !doc.includes(`| \`${code}\` |`)), []);
  });
});
