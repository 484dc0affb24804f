/**
 * Delayed replica and recover-table (issue 11, items 1–2; docs/undo.md).
 * One cluster: node1 primary, node2 replica, node3 delayed by DELAY_S.
 *   - node3 publishes nofailover/nosync/noloadbalance and is never named synchronous;
 *   - under write load no row younger than the delay is visible on it (a guarantee of
 *     recovery_min_apply_delay, so the check cannot flake), its measured delay lies in
 *     [delay − 1 s, delay + 30 s], and old rows do arrive;
 *   - bad recover-table input (and failover --to it, --force included) is refused and changes nothing;
 *   - relevo replay pause|resume work; a mass DELETE is what --find proposes (--dry-run changes nothing);
 *   - TRUNCATE, then recover-table --find: the TRUNCATE's transaction is found, every row
 *     comes back in a new table, the primary's postmaster never restarts, the delay returns;
 *   - killing the primary promotes node2, never node3.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import pg from 'pg';
import { loadCredentials } from '../../src/config/secrets.js';
import { clusterKeys } from '../../src/cluster/keys.js';
import { FAULT_TEST_SETTINGS, TestCluster } from '../helpers/cluster.js';
import { Faults } from '../helpers/faults.js';
import { sleep, waitFor } from '../helpers/wait.js';

const NAMES = ['node1', 'node2', 'node3'];

/** A destructive statement in a transaction of its own; returns its transaction id. */
async function destroy(cluster: TestCluster, name: string, statement: string): Promise<string> {
  const config = cluster.member(name).config;
  const client = new pg.Client({ host: config.postgres.socketDir, port: config.postgres.port, user: 'relevo', password: loadCredentials(config)!.agentPassword, database: 'postgres' });
  await client.connect();
  try {
    await client.query('BEGIN');
    await client.query(statement);
    const xid = (await client.query<{ xid: string }>('SELECT pg_current_xact_id()::text AS xid')).rows[0]!.xid;
    await client.query('COMMIT');
    return xid;
  } finally {
    await client.end();
  }
}
const DELAY_S = 5;
const ROWS = 1_000;

test('delayed replica: stays behind, is never promoted or synchronous, and recovers a truncated table', { timeout: 300_000 }, async (t) => {
  const cluster = await TestCluster.create({ store: 'embedded', settings: FAULT_TEST_SETTINGS });
  const faults = new Faults(cluster);
  let writing = false;
  let writer: Promise<void> | undefined;
  t.after(async () => {
    writing = false;
    await writer?.catch(() => undefined);
    await faults.cleanup();
    await cluster.destroy();
  });
  const passwordFile = join(cluster.dir, 'api-password');
  writeFileSync(passwordFile, 'undo-Me-7\n', { mode: 0o600 });
  const auth = { api: { auth: { username: 'ops', password: { file: passwordFile } } } };
  await cluster.defineMember('node1', auth);
  await cluster.defineMember('node2', auth);
  await cluster.defineMember('node3', { ...auth, delay: { apply: `${DELAY_S}s` } });
  const started = Date.now();
  cluster.startAgent('node1');
  await waitFor('node1 primary', async () => (await cluster.status('node1'))?.state === 'primary', 90_000);
  cluster.startAgent('node2');
  cluster.startAgent('node3');
  await cluster.waitHealthy(NAMES, 90_000);
  t.diagnostic(`cluster healthy after ${Date.now() - started} ms`);
  const diagnostics = async () => (await cluster.memberStatuses()).map((m) => `${m.name}: ${m.state}/${m.role} ${m.reason}`).join('\n') + `\n${cluster.logTail('node3', 30)}`;

  try {
    const node3 = (await cluster.status('node3'))!;
    assert.equal(node3.tags.nofailover, true);
    assert.equal(node3.tags.nosync, true);
    assert.equal(node3.tags.noloadbalance, true);
    assert.equal(node3.tags.applyDelayMs, DELAY_S * 1000);
    const settings = await cluster.sql<{ setting: string }>('node3', `SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'`);
    assert.equal(settings[0]!.setting, String(DELAY_S * 1000), 'recovery_min_apply_delay rendered in ms');

    await cluster.sql('node1', 'CREATE TABLE precious (id int PRIMARY KEY, label text NOT NULL, at timestamptz DEFAULT now())');
    await cluster.sql('node1', `INSERT INTO precious (id, label) SELECT g, 'row ' || g FROM generate_series(1, ${ROWS}) g`);
    // The application's role owns the table: the recovered copy must be usable by it.
    await cluster.sql('node1', 'CREATE ROLE shop_app NOLOGIN');
    await cluster.sql('node1', 'ALTER TABLE precious OWNER TO shop_app');
    await cluster.sql('node1', 'CREATE TABLE ledger (id int PRIMARY KEY, amount numeric NOT NULL)');
    await cluster.sql('node1', 'INSERT INTO ledger SELECT g, g * 1.5 FROM generate_series(1, 300) g');
    await cluster.sql('node1', 'CREATE TABLE guarded (id int PRIMARY KEY)');
    await cluster.sql('node1', 'ALTER TABLE guarded ENABLE ROW LEVEL SECURITY');
    await cluster.sql('node1', 'CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())');
    // Write load: one commit every 50 ms on the primary.
    writing = true;
    writer = (async () => {
      while (writing) {
        await cluster.sql('node1', 'INSERT INTO ticks DEFAULT VALUES').catch(() => undefined);
        await sleep(50);
      }
    })();
    const loadStart = Date.now();
    // Old rows do arrive on node3 (replay runs), and a full delay of load has passed.
    await waitFor('the first ticks replayed on node3', async () => Number((await cluster.sql<{ n: string }>('node3', 'SELECT count(*) AS n FROM ticks'))[0]!.n) > 0, (DELAY_S + 60) * 1000, 500);
    await sleep(Math.max(0, loadStart + (DELAY_S + 3) * 1000 - Date.now()));
    // A row is visible on node3 only once DELAY_S passed since its commit (its `at` is earlier still).
    const young = await cluster.sql<{ n: string; newest: Date; behind: number }>(
      'node3',
      `SELECT count(*) FILTER (WHERE at > clock_timestamp() - interval '${DELAY_S - 1} s') AS n, max(at) AS newest, extract(epoch FROM clock_timestamp() - max(at))::float8 AS behind FROM ticks`,
    );
    const onPrimary = await cluster.sql<{ n: string }>('node1', `SELECT count(*) AS n FROM ticks WHERE at > clock_timestamp() - interval '${DELAY_S - 1} s'`);
    t.diagnostic(`under load: newest row on node3 is ${young[0]!.behind.toFixed(1)} s old; rows of the last ${DELAY_S - 1} s: ${onPrimary[0]!.n} on the primary, ${young[0]!.n} on node3`);
    assert.equal(Number(young[0]!.n), 0, 'no row younger than the delay is visible on the delayed replica');
    assert.ok(Number(onPrimary[0]!.n) > 0, 'the primary did take writes in that window');
    const measured = await waitFor('node3 publishing its measured delay', async () => {
      const d = (await cluster.status('node3'))?.delay;
      return d && d.measuredSeconds !== null ? d : undefined;
    }, 20_000);
    t.diagnostic(`measured delay published by node3: ${measured.measuredSeconds!.toFixed(1)} s (configured ${DELAY_S} s)`);
    assert.ok(measured.measuredSeconds! >= DELAY_S - 1 && measured.measuredSeconds! <= DELAY_S + 30, `measured delay ${measured.measuredSeconds} s`);
    const list = await cluster.cli(['list']);
    assert.equal(list.code, 0, `relevo list: exit ${list.code}\n${list.stderr}`);
    assert.match(list.stdout, new RegExp(`Delayed replicas[\\s\\S]*node3\\s+${DELAY_S} s\\s+\\d+\\.\\d s`), list.stdout);
    writing = false;
    await writer;

    // Bad input: refused with its code, nothing changes.
    const pid3 = cluster.postmasterPid('node3');
    const before = await cluster.sql<{ n: string }>('node1', `SELECT count(*) AS n FROM pg_class WHERE relname LIKE 'precious_%'`);
    const refusals: [string[], string][] = [
      [['recover-table', 'precious', '--from', 'nosuch', '--into', 'precious_back', '--find'], 'UNKNOWN_MEMBER'],
      [['recover-table', 'precious', '--from', 'node2', '--into', 'precious_back', '--find'], 'NOT_DELAYED'],
      [['recover-table', 'precious', '--from', 'node3', '--into', 'precious_back', '--time', new Date(Date.now() + 3_600_000).toISOString()], 'TARGET_OUTSIDE_WINDOW'],
      [['recover-table', 'precious', '--from', 'node3', '--into', 'precious_back', '--time', new Date(Date.now() - 3_600_000).toISOString()], 'TARGET_OUTSIDE_WINDOW'],
      [['recover-table', 'nosuch', '--from', 'node3', '--into', 'precious_back', '--find'], 'TABLE_MISSING'],
      [['recover-table', 'precious', '--from', 'node3', '--into', 'ticks', '--find'], 'TARGET_TABLE_EXISTS'],
      // relevo_remote (no BYPASSRLS) would read a subset: refused, never copied in part.
      [['recover-table', 'guarded', '--from', 'node3', '--into', 'guarded_back', '--find'], 'TABLE_ROW_SECURITY'],
    ];
    for (const [args, code] of refusals) {
      const result = await cluster.cli(args);
      assert.equal(result.code, 2, `${args.join(' ')}: exit ${result.code}\n${result.stdout}${result.stderr}`);
      assert.match(result.stderr, new RegExp(`^.*${code}:`, 'm'), `${args.join(' ')}\n${result.stderr}`);
    }
    const forced = await cluster.cli(['failover', '--to', 'node3', '--force']);
    assert.equal(forced.code, 2, `failover --to node3 --force: exit ${forced.code}\n${forced.stdout}${forced.stderr}`);
    assert.match(forced.stderr, /delayed replica/);
    assert.equal(cluster.postmasterPid('node3'), pid3, 'refusals did not restart the delayed replica');
    assert.deepEqual(await cluster.sql('node1', `SELECT count(*) AS n FROM pg_class WHERE relname LIKE 'precious_%'`), before, 'refusals created no table');
    assert.equal((await cluster.status('node3'))?.delay?.recoveryTarget ?? null, null);

    // relevo replay pause|resume through the agent's API.
    const replayState = async () => (await cluster.sql<{ s: string }>('node3', 'SELECT pg_get_wal_replay_pause_state() AS s'))[0]!.s;
    for (const [action, state] of [['pause', 'paused'], ['resume', 'not paused']] as const) {
      const result = await cluster.cli(['replay', action, 'node3']);
      assert.equal(result.code, 0, result.stderr);
      await waitFor(`replay ${state} on node3`, async () => (await replayState()) === state, 10_000, 100);
    }
    // The mistakes, with replay paused on node3 (relevo replay pause): they cannot be replayed before the undo, however slow this machine is.
    const paused = await cluster.cli(['replay', 'pause', 'node3']);
    assert.equal(paused.code, 0, paused.stderr);
    await waitFor('replay paused on node3', async () => (await replayState()) !== 'not paused', 10_000, 100);
    // A mass DELETE: --find proposes it; --dry-run changes nothing.
    const deleteXid = await destroy(cluster, 'node1', 'DELETE FROM ledger');
    const dry = await cluster.cli(['recover-table', 'ledger', '--from', 'node3', '--into', 'ledger_back', '--find', '--dry-run', '--json']);
    assert.equal(dry.code, 0, `${dry.stdout}\n${dry.stderr}`);
    const proposal = (JSON.parse(dry.stdout) as { found: { proposed: { xid: string; kind: string; deletedRows: number } } }).found.proposed;
    assert.deepEqual(proposal && { xid: proposal.xid, kind: proposal.kind, rows: proposal.deletedRows }, { xid: deleteXid, kind: 'delete', rows: 300 });
    assert.equal(cluster.postmasterPid('node3'), pid3, 'a dry run does not restart the delayed replica');
    assert.deepEqual(await cluster.sql('node1', `SELECT to_regclass('ledger_back') AS t`), [{ t: null }], 'a dry run creates no table');
    const pid1 = cluster.postmasterPid('node1');
    const expected = await cluster.sql<{ n: string; sum: string }>('node1', `SELECT count(*) AS n, sum(hashtext(id || label))::text AS sum FROM precious`);
    const truncatedXid = await destroy(cluster, 'node1', 'TRUNCATE precious');
    assert.equal(Number((await cluster.sql<{ n: string }>('node1', 'SELECT count(*) AS n FROM precious'))[0]!.n), 0, 'the table was truncated');
    const recoverStart = Date.now();
    const recovered = await cluster.cli(['recover-table', 'precious', '--from', 'node3', '--into', 'precious_back', '--find', '--json']);
    t.diagnostic(`recover-table --find took ${Date.now() - recoverStart} ms\n${recovered.stderr}`);
    assert.equal(recovered.code, 0, `${recovered.stdout}\n${recovered.stderr}\n${await diagnostics()}`);
    const report = JSON.parse(recovered.stdout) as { xid: string; target: { lsn: string }; rowsAtTarget: number; rowsCopied: number; primaryRowsNow: number; delayRestored: boolean; found: { proposed: { kind: string; xid: string } } };
    assert.equal(report.found.proposed.kind, 'drop-storage', 'the TRUNCATE is what --find proposes');
    assert.equal(report.xid, truncatedXid, 'the proposed transaction is the TRUNCATE');
    assert.match(report.target.lsn, /^[0-9A-F]+\/[0-9A-F]+$/, 'held just before its first WAL record');
    assert.equal(report.rowsAtTarget, ROWS);
    assert.equal(report.rowsCopied, ROWS);
    assert.equal(report.primaryRowsNow, 0);
    assert.equal(report.delayRestored, true);
    const back = await cluster.sql<{ n: string; sum: string }>('node1', `SELECT count(*) AS n, sum(hashtext(id || label))::text AS sum FROM precious_back`);
    assert.deepEqual(back, expected, 'every row is back, with the same content');
    assert.deepEqual(await cluster.sql('node1', `SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE oid = 'precious_back'::regclass`), [{ owner: 'shop_app' }], 'the copy belongs to the original table\'s owner');
    assert.equal(cluster.postmasterPid('node1'), pid1, 'the primary was never stopped');
    const restored = await waitFor('node3 back to its delay (no target, replaying)', async () => {
      const s = await cluster.status('node3');
      return s?.delay && s.delay.recoveryTarget === null && !s.delay.replayPaused && s.role === 'replica' ? s : undefined;
    }, 30_000);
    assert.equal(restored.delay!.applyDelayMs, DELAY_S * 1000);
    const delayAgain = await cluster.sql<{ setting: string }>('node3', `SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'`);
    assert.equal(delayAgain[0]!.setting, String(DELAY_S * 1000), 'the delay is back in force');

    // Kill the primary: node2 (synchronous) takes over, node3 never.
    const keys = clusterKeys(cluster.clusterName);
    const sync = JSON.parse((await cluster.store.get(keys.sync))!.value) as { members: string[] };
    assert.deepEqual(sync.members, ['node2'], 'the delayed replica is never synchronous');
    await faults.kill('node1', 'both');
    let node3Promoted = false;
    await waitFor('node2 primary after killing node1', async () => {
      const all = await cluster.memberStatuses();
      if (all.some((m) => m.name === 'node3' && (m.role === 'primary' || m.state === 'promoting'))) node3Promoted = true;
      return all.some((m) => m.name === 'node2' && m.state === 'primary');
    }, 60_000, 100);
    assert.equal(node3Promoted, false, 'the delayed replica was never promoted');
    await waitFor('node3 following node2', async () => {
      const s = await cluster.status('node3');
      return s?.role === 'replica' && s.upstream === 'node2' ? s : undefined;
    }, 60_000);
    assert.notEqual((JSON.parse((await cluster.store.get(keys.leader))!.value) as { member: string }).member, 'node3');
  } catch (error) {
    t.diagnostic(await diagnostics());
    throw error;
  }
});
