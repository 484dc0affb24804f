/**
 * Logical replication managed by relevo (issue 15, items 1, 2 and 4):
 *  - bad declarations get a stable-coded error and change nothing;
 *  - a subscription declared in the settings of cluster `sub` copies a table
 *    published by cluster `pub` (a partial copy: one table into another
 *    database of another cluster) under continuous writes;
 *  - `pub`'s replica keeps a copy of the subscription's logical slot; after the
 *    primary of `pub` is killed and the replica promoted, the subscription goes
 *    on from the new primary and every acknowledged row arrives;
 *  - drift is reported, and repaired once logical.repairDrift is on.
 */
import assert from 'node:assert/strict';
import { copyFileSync, chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pg from 'pg';
import { clusterKeys } from '../../src/cluster/keys.js';
import { loadCredentials } from '../../src/config/secrets.js';
import { clusterCaFile } from '../../src/tls/member.js';
import type { LogicalStatus } from '../../src/cluster/logical-status.js';
import { LogicalSettingsSchema } from '../../src/cluster/logical-settings.js';
import { FAULT_TEST_SETTINGS, TestCluster } from '../helpers/cluster.js';
import { Faults } from '../helpers/faults.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { Writer } from '../helpers/writer.js';

// A short reconcile period only to keep the test quick (default 5 s).
const LOGICAL = LogicalSettingsSchema.parse({ reconcileIntervalMs: 1_000 });
const SETTINGS = { ...FAULT_TEST_SETTINGS, synchronousFallbackMs: 3_000, postgresql: { wal_level: 'logical' }, logical: LOGICAL };
const TABLE = 'items';
const TABLE_DDL = `CREATE TABLE ${TABLE} (id bigint PRIMARY KEY, server text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`;

async function query<R extends pg.QueryResultRow>(cluster: TestCluster, member: string, database: string, text: string): Promise<R[]> {
  const config = cluster.member(member).config;
  const client = new pg.Client({
    host: config.postgres.socketDir,
    port: config.postgres.port,
    user: 'relevo',
    password: loadCredentials(config)!.agentPassword,
    database,
    connectionTimeoutMillis: 5_000,
  });
  await client.connect();
  try {
    return (await client.query<R>(text)).rows;
  } finally {
    await client.end();
  }
}

async function logicalOf(cluster: TestCluster, member: string): Promise<LogicalStatus | undefined> {
  return (await cluster.status(member))?.logical;
}

async function generation(cluster: TestCluster): Promise<number> {
  const kv = await cluster.store.get(clusterKeys(cluster.clusterName).config);
  return kv ? (JSON.parse(kv.value) as { generation: number }).generation : 0;
}

describe('logical replication as cluster settings', { timeout: 240_000 }, () => {
  it('copies a table into another cluster, keeps following it across a failover of the publisher with no missing row, reports drift', async (t) => {
    const parts: { pub?: TestCluster; sub?: TestCluster; faults?: Faults; writer?: Writer } = {};
    t.after(async () => {
      await parts.writer?.stop().catch(() => undefined);
      await parts.faults?.cleanup();
      await parts.pub?.destroy();
      await parts.sub?.destroy();
    });
    const pub = (parts.pub = await TestCluster.create({ store: 'embedded', name: 'pub', settings: SETTINGS }));
    const sub = (parts.sub = await TestCluster.create({ store: 'embedded', name: 'sub', settings: { loopWaitMs: 300, logical: LOGICAL } }));
    parts.faults = new Faults(pub);
    for (const name of ['node1', 'node2']) await pub.defineMember(name);
    await sub.defineMember('s1');
    // The one that loses the initialisation waits, then clones.
    for (const name of ['node1', 'node2']) pub.startAgent(name);
    sub.startAgent('s1');
    const [members] = await Promise.all([pub.waitHealthy(['node1', 'node2'], 90_000), sub.waitHealthy(['s1'], 90_000)]);
    // Whichever bootstrapped is the primary that fails later; the other takes over.
    const first = members.find((m) => m.role === 'primary')!.name;
    const second = first === 'node1' ? 'node2' : 'node1';

    const diagnostics = async () =>
      [
        ...(await Promise.all(['node1', 'node2'].map(async (n) => `--- pub/${n}: ${JSON.stringify((await pub.status(n).catch(() => undefined))?.logical ?? null)}\n${pub.logTail(n, 25)}`))),
        `--- sub/s1: ${JSON.stringify((await sub.status('s1').catch(() => undefined))?.logical ?? null)}\n${sub.logTail('s1', 25)}`,
      ].join('\n');
    try {
      // Writes through the whole test, acknowledged ids recorded.
      const writer = (parts.writer = Writer.forCluster(pub, TABLE, { intervalMs: 20 }));
      await writer.start();
      await writer.waitForAcks(20);
      await pub.sql(first, `CREATE TABLE nokey (v text)`);
      await pub.sql(first, `CREATE ROLE copier LOGIN REPLICATION PASSWORD 'copier-secret'`);
      await pub.sql(first, `GRANT SELECT ON ${TABLE} TO copier`);
      await sub.sql('s1', `CREATE DATABASE copy`);
      await query(sub, 's1', 'copy', TABLE_DDL);
      const passwordFile = join(sub.dir, 'copier.password');
      writeFileSync(passwordFile, 'copier-secret\n', { mode: 0o600 });
      // The subscriber's PostgreSQL reads the other side's CA itself.
      const caFile = join(sub.dir, 'pub-ca.crt');
      copyFileSync(clusterCaFile(pub.member(first).config)!, caFile);
      chmodSync(caFile, 0o644);
      const hosts = [first, second].map((n) => `127.0.0.1:${pub.member(n).config.postgres.port}`).join(',');
      const subscribe = (name: string, extra: string[]) =>
        sub.cli(['logical', 'subscription', 'add', name, '--publications', 'items_pub', '--dbname', 'postgres', '--user', 'copier', '--password-file', passwordFile, '--sslrootcert', caFile, ...extra]);

      // Bad input: a coded error, nothing written.
      const pubBefore = await generation(pub);
      const noKey = await pub.cli(['logical', 'publication', 'add', 'bad_pub', '--database', 'postgres', '--tables', 'nokey']);
      assert.equal(noKey.code, 2, noKey.stderr);
      assert.match(noKey.stderr, /LOGICAL_NO_REPLICA_IDENTITY: .*public\.nokey/);
      const noDb = await pub.cli(['logical', 'publication', 'add', 'p2', '--database', 'nosuch', '--tables', TABLE]);
      assert.equal(noDb.code, 2, noDb.stderr);
      assert.match(noDb.stderr, /LOGICAL_UNKNOWN_DATABASE/);
      assert.equal(await generation(pub), pubBefore, 'refused declarations changed nothing');

      const declared = await pub.cli(['logical', 'publication', 'add', 'items_pub', '--database', 'postgres', '--tables', TABLE]);
      assert.equal(declared.code, 0, declared.stderr);
      assert.match(declared.stdout, /applied by the leader/);
      assert.equal((await pub.sql(first, `SELECT count(*)::int AS n FROM pg_publication WHERE pubname = 'items_pub'`))[0]!.n, 1);

      const subBefore = await generation(sub);
      const deadPort = await freePort();
      const unreachable = await sub.cli(['logical', 'subscription', 'add', 'dead_sub', '--database', 'copy', '--publications', 'items_pub', '--hosts', `127.0.0.1:${deadPort}`, '--dbname', 'postgres', '--user', 'copier', '--password-file', passwordFile, '--sslmode', 'require']);
      assert.equal(unreachable.code, 2, unreachable.stderr);
      assert.match(unreachable.stderr, /LOGICAL_PUBLISHER_UNREACHABLE/);
      const unknownDb = await subscribe('nodb_sub', ['--database', 'nosuch', '--hosts', hosts]);
      assert.equal(unknownDb.code, 2, unknownDb.stderr);
      assert.match(unknownDb.stderr, /LOGICAL_UNKNOWN_DATABASE/);
      assert.equal(await generation(sub), subBefore, 'refused declarations changed nothing');
      assert.equal((await sub.sql('s1', `SELECT count(*)::int AS n FROM pg_subscription`))[0]!.n, 0);

      const subscribed = await subscribe('items_sub', ['--database', 'copy', '--hosts', hosts]);
      assert.equal(subscribed.code, 0, subscribed.stderr);

      // The copy catches up and streams; status shows state and lag.
      await waitFor('the subscription streaming with its lag known', async () => {
        const s = (await logicalOf(sub, 's1'))?.subscriptions.find((x) => x.name === 'items_sub');
        return s && s.state === 'streaming' && s.copying.length === 0 && s.lagBytes !== null ? s : undefined;
      }, 60_000, 250);
      const listed = await sub.cli(['list']);
      assert.match(listed.stdout, /items_sub\s+copy\s+streaming/);

      // The replica holds a ready copy of the subscription's slot before the primary fails.
      await waitFor(`${second}'s copy of slot items_sub ready`, async () => (await logicalOf(pub, second))?.failoverSlots.find((f) => f.name === 'items_sub' && f.ready), 90_000, 250);
      await writer.waitForAcks(30);

      const { at } = await parts.faults.kill(first, 'both');
      await waitFor(`${second} primary`, async () => {
        const s = await pub.status(second);
        return s?.role === 'primary' && s.state === 'primary';
      }, 60_000, 200);
      await writer.waitForAcks(30, 60_000, second);
      await writer.stop();
      const acked = writer.acks.map((a) => a.id);
      t.diagnostic(`${acked.length} acknowledged rows, ${writer.acks.filter((a) => a.server === second).length} on ${second} after the failover at ${new Date(at).toISOString()}`);

      // Every acknowledged row arrives through the new primary's copy of the slot.
      const missing = await waitFor('every acknowledged row in the copy', async () => {
        const rows = await query<{ id: string }>(sub, 's1', 'copy', `SELECT id::text FROM ${TABLE}`);
        const have = new Set(rows.map((r) => Number(r.id)));
        const lacking = acked.filter((id) => !have.has(id));
        return lacking.length === 0 ? lacking : undefined;
      }, 90_000, 500).catch(async (error: Error) => {
        const rows = await query<{ id: string }>(sub, 's1', 'copy', `SELECT id::text FROM ${TABLE}`);
        const have = new Set(rows.map((r) => Number(r.id)));
        throw new Error(`${error.message}: missing ${acked.filter((id) => !have.has(id)).slice(0, 20).join(',')}`);
      });
      assert.deepEqual(missing, []);
      const streamingFrom = await waitFor(`the subscription streaming from ${second}`, async () => {
        const s = (await logicalOf(sub, 's1'))?.subscriptions.find((x) => x.name === 'items_sub');
        return s?.state === 'streaming' && s.publisher === `127.0.0.1:${pub.member(second).config.postgres.port}` ? s : undefined;
      }, 60_000, 250);
      t.diagnostic(`after failover: ${JSON.stringify(streamingFrom)}`);

      // Drift: changed by hand on the new primary, reported, then repaired when configured.
      await pub.sql(second, `ALTER PUBLICATION items_pub SET (publish = 'insert')`);
      await waitFor('drift reported', async () => (await logicalOf(pub, second))?.drift.find((d) => d.name === 'items_pub' && d.kind === 'different' && !d.repaired), 30_000, 250);
      const driftListed = await pub.cli(['list'], second);
      assert.match(driftListed.stdout, /Drift \(LOGICAL_DRIFT\)[\s\S]*items_pub: different/);
      assert.equal((await pub.sql(second, `SELECT pubupdate FROM pg_publication WHERE pubname = 'items_pub'`))[0]!.pubupdate, false, 'reported only while repairDrift is off');
      const set = await pub.cli(['config', 'set', 'logical.repairDrift=true'], second);
      assert.equal(set.code, 0, set.stderr);
      await waitFor('drift repaired', async () => (await pub.sql(second, `SELECT pubupdate FROM pg_publication WHERE pubname = 'items_pub'`))[0]!.pubupdate === true, 30_000, 250);

      // A partial copy inside the same cluster (another database of the same server): its slot is made first.
      await pub.sql(second, `CREATE DATABASE report`);
      await query(pub, second, 'report', TABLE_DDL);
      const own = await pub.cli(['logical', 'subscription', 'add', 'report_copy', '--database', 'report', '--publications', 'items_pub', '--hosts', hosts, '--dbname', 'postgres', '--user', 'copier', '--password-file', passwordFile, '--sslrootcert', caFile], second);
      assert.equal(own.code, 0, own.stderr);
      await pub.sql(second, `INSERT INTO ${TABLE} (id, server) VALUES (1000000, 'after')`);
      const total = (await pub.sql<{ n: number }>(second, `SELECT count(*)::int AS n FROM ${TABLE}`))[0]!.n;
      await waitFor('the same-cluster copy complete', async () => (await query<{ n: number }>(pub, second, 'report', `SELECT count(*)::int AS n FROM ${TABLE}`))[0]!.n === total, 60_000, 250);
      await waitFor('report_copy streaming in the status', async () => (await logicalOf(pub, second))?.subscriptions.find((x) => x.name === 'report_copy' && x.state === 'streaming'), 30_000, 250);
      const ownListed = await pub.cli(['list'], second);
      assert.match(ownListed.stdout, /report_copy\s+report\s+streaming/);

      // Removing a declaration drops the subscription, its slot on the publishing side and its passfile.
      const removed = await sub.cli(['logical', 'subscription', 'remove', 'items_sub']);
      assert.equal(removed.code, 0, removed.stderr);
      await waitFor('items_sub and its slot dropped', async () => {
        const subs = await sub.sql<{ n: number }>('s1', `SELECT count(*)::int AS n FROM pg_subscription`);
        const slots = await pub.sql<{ n: number }>(second, `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = 'items_sub'`);
        return subs[0]!.n === 0 && slots[0]!.n === 0;
      }, 30_000, 250);
      assert.equal(existsSync(`${sub.member('s1').config.postgres.dataDir}.logical-items_sub.pgpass`), false);
    } catch (error) {
      if (error instanceof Error) error.message = `${error.message}\n${await diagnostics()}`;
      throw error;
    }
  });
});
