/**
 * Issue 10 (C7) on a real 3-member cluster: WAL archive, base backups from a
 * replica under write load, point-in-time recovery past a TRUNCATE,
 * incremental backups, restore drills (also of a corrupted backup), archiving
 * across a failover, retention, an unreachable repository, and bad input.
 * The cases run in order on one cluster (each builds on the repository the
 * previous ones filled).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { loadCredentials } from '../../src/config/secrets.js';
import { runPostgresProgram } from '../../src/postgres/exec.js';
import { lookupOsUser } from '../../src/util/os-user.js';
import { FAULT_TEST_SETTINGS, MAIN, TestCluster } from '../helpers/cluster.js';
import { freePort } from '../helpers/ports.js';
import { PG_BIN } from '../helpers/standalone-postgres.js';
import { sleep, waitFor } from '../helpers/wait.js';

const execFileAsync = promisify(execFile);
const NAMES = ['node1', 'node2', 'node3'];

interface Insert {
  id: number;
  sentAt: number;
  ackAt: number;
}

interface Listing {
  backups: { id: string; type: string; parent: string | null; sizeBytes: number; storedBytes: number; verification: { ok: boolean; restoreMs: number | null } | null; startLsn: string; timeline: number }[];
  archive: { end: string | null; endTime: string | null; gaps: { segment: string }[]; conflicts: string[] };
  dumps: { id: string; databases: { name: string; bytes: number }[] }[];
}

describe('backups, WAL archive and point-in-time recovery', { timeout: 600_000 }, () => {
  let cluster: TestCluster;
  let repo: string;
  let primary: string;
  const user = lookupOsUser('postgres');

  const relevo = async (args: string[], timeoutMs = 240_000, member = NAMES[0]!) => {
    const file = cluster.member(member).file;
    try {
      const { stdout, stderr } = await execFileAsync(process.execPath, [MAIN, ...args, '-c', file], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  };
  const ok = async (args: string[]) => {
    const result = await relevo(args);
    assert.equal(result.code, 0, `relevo ${args.join(' ')} failed: ${result.stderr}`);
    return result.stdout;
  };
  const listing = async (): Promise<Listing> => JSON.parse(await ok(['backup', 'list', '--json'])) as Listing;
  const currentPrimary = async () => (await cluster.memberStatuses()).find((m) => m.role === 'primary' && m.state === 'primary')!.name;
  /** Finishes the primary's segment and waits until the archive holds WAL past `lsn`. */
  const archivedPast = async (lsn: string) => {
    await waitFor(`WAL past ${lsn} in the archive`, async () => {
      await cluster.sql(primary, 'SELECT pg_switch_wal()');
      const l = await listing();
      return l.archive.end !== null && (await cluster.sql<{ ok: boolean }>(primary, 'SELECT $1::pg_lsn >= $2::pg_lsn AS ok', [l.archive.end, lsn]))[0]!.ok;
    }, 90_000, 1_000);
  };
  /** The value of the first sample of `metric` whose labels include `labels`, from a member's /metrics. */
  const metric = async (name: string, series: string, labels = ''): Promise<number | undefined> => {
    const response = await cluster.api(name, '/metrics');
    assert.equal(response.status, 200);
    const line = response.body.split('\n').find((l) => l.startsWith(`${series}{`) && l.includes(labels));
    return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
  };
  const repoFiles = (dir = repo): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? repoFiles(join(dir, e.name)) : [join(dir, e.name)]));

  /** Starts a restored data directory on its own port and socket; returns a client factory and a stop function. */
  const startRestored = async (dataDir: string) => {
    const port = await freePort();
    const socketDir = `${dataDir}.run`;
    mkdirSync(socketDir, { recursive: true });
    chownSync(socketDir, user.uid, user.gid);
    const logFile = join(socketDir, 'postgres.log');
    try {
      await runPostgresProgram(PG_BIN, user, 'pg_ctl', ['-D', dataDir, '-o', `-p ${port} -k ${socketDir} -c listen_addresses=''`, '-l', logFile, '-w', '-t', '120', 'start'], { context: 'restored copy', timeoutMs: 150_000 });
    } catch (error) {
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '(no log)';
      throw new Error(`${(error as Error).message}\nserver log:\n${log}\npostgresql.auto.conf:\n${readFileSync(join(dataDir, 'postgresql.auto.conf'), 'utf8')}`);
    }
    const credentials = loadCredentials(cluster.member(NAMES[0]!).config)!;
    const query = async <R extends pg.QueryResultRow>(text: string): Promise<R[]> => {
      const client = new pg.Client({ host: socketDir, port, user: 'relevo', password: credentials.agentPassword, database: 'postgres' });
      await client.connect();
      try {
        return (await client.query<R>(text)).rows;
      } finally {
        await client.end();
      }
    };
    const stop = () => runPostgresProgram(PG_BIN, user, 'pg_ctl', ['-D', dataDir, '-m', 'immediate', '-w', 'stop'], { context: 'restored copy', timeoutMs: 60_000 }).catch(() => undefined);
    return { query, stop };
  };

  before(async () => {
    const settings = { ...FAULT_TEST_SETTINGS, synchronousMode: 'off' as const };
    cluster = await TestCluster.create({ store: 'embedded', settings });
    repo = join(cluster.dir, 'repo');
    mkdirSync(repo);
    chownSync(repo, user.uid, user.gid);
    for (const name of NAMES) await cluster.defineMember(name);
    await ok(['config', 'set', `backup.repository=${repo}`, 'backup.backlogWarnBytes=33554432', 'backup.archiveTimeoutSeconds=0', 'backup.schedule.checkSeconds=2']);
    await ok(['backup', 'init']);
    cluster.startAgent(NAMES[0]!);
    await cluster.waitHealthy([NAMES[0]!]);
    for (const name of NAMES.slice(1)) cluster.startAgent(name);
    await cluster.waitHealthy(NAMES);
    primary = await currentPrimary();
    await ok(['backup', 'init']);
  });

  after(async () => {
    if (repo && existsSync(repo)) chmodSync(repo, 0o750);
    await cluster?.destroy();
  });

  let full: string;
  it('backs up a replica under write load; a restore to a noted time has every row committed before it and none after, despite a later TRUNCATE', async () => {
    await cluster.sql(primary, 'CREATE TABLE items (id bigserial PRIMARY KEY, payload text NOT NULL)');
    await cluster.sql(primary, "INSERT INTO items (payload) SELECT repeat('x', 200) FROM generate_series(1, 50000)");
    const credentials = loadCredentials(cluster.member(primary).config)!;
    const member = cluster.member(primary).config.postgres;
    const writer = new pg.Client({ host: member.socketDir, port: member.port, user: 'relevo', password: credentials.agentPassword, database: 'postgres' });
    await writer.connect();
    const inserts: Insert[] = [];
    let writing = true;
    const loop = (async () => {
      while (writing) {
        const sentAt = Date.now();
        const result = await writer.query<{ id: string }>("INSERT INTO items (payload) VALUES ('w') RETURNING id");
        inserts.push({ id: Number(result.rows[0]!.id), sentAt, ackAt: Date.now() });
      }
    })();
    try {
      // Run on a replica's host: that replica is the source, its files read directly (the incremental below goes through pg_basebackup).
      const replica = NAMES.find((n) => n !== primary)!;
      const run = await relevo(['backup', '--full', '--json'], 240_000, replica);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, /reading \S+ directly/);
      const out = JSON.parse(run.stdout) as { id: string; source: string; fromPrimary: boolean; rowCheck: unknown };
      full = out.id;
      assert.equal(out.source, replica, 'the backup comes from the replica on the host it runs on');
      assert.equal(out.fromPrimary, false);
      assert.ok(out.rowCheck, 'a replica backup records row counts');
      await sleep(1_000);
    } finally {
      // keep writing across the noted time
    }
    const noted = Date.now();
    await sleep(500);
    writing = false;
    await loop;
    await writer.end();
    const afterNoted = inserts.filter((i) => i.sentAt > noted);
    const beforeNoted = inserts.filter((i) => i.ackAt < noted);
    assert.ok(beforeNoted.length > 50 && afterNoted.length > 5, `writes on both sides of the noted time (${beforeNoted.length}, ${afterNoted.length})`);
    await cluster.sql(primary, 'TRUNCATE items');
    const lsn = (await cluster.sql<{ l: string }>(primary, 'SELECT pg_current_wal_lsn()::text AS l'))[0]!.l;
    await archivedPast(lsn);

    const target = join(cluster.dir, 'restored-pitr');
    const restored = await relevo(['restore', '--to', target, '--time', new Date(noted).toISOString()]);
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(restored.stdout, new RegExp(`restored backup ${full}`));
    const copy = await startRestored(target);
    try {
      await waitFor('the restored copy to finish recovery', async () => !(await copy.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r'))[0]!.r, 120_000, 500);
      const ids = new Set((await copy.query<{ id: string }>('SELECT id FROM items')).map((r) => Number(r.id)));
      assert.ok(ids.size >= 50_000, `the rows from before the backup are there (${ids.size})`);
      const missing = beforeNoted.filter((i) => !ids.has(i.id));
      assert.deepEqual(missing.map((i) => i.id), [], 'every row committed before the noted time is restored');
      const extra = afterNoted.filter((i) => ids.has(i.id));
      assert.deepEqual(extra.map((i) => i.id), [], 'no row sent after the noted time is restored');
    } finally {
      await copy.stop();
      rmSync(target, { recursive: true, force: true });
    }
  });

  let incremental: string;
  it('an incremental after a small change stores a small fraction of a full and passes the restore drill (same row counts, pg_amcheck)', async () => {
    await cluster.sql(primary, 'CREATE TABLE small (id int)');
    await cluster.sql(primary, 'INSERT INTO small SELECT generate_series(1, 10)');
    const run = await relevo(['backup', '--incremental', '--json']);
    assert.equal(run.code, 0, run.stderr);
    // Run on the primary's host, from a replica: through pg_basebackup, on top of a full read directly.
    if (primary === NAMES[0]) assert.match(run.stderr, /copying through pg_basebackup/);
    const out = JSON.parse(run.stdout) as { id: string; type: string; parent: string; storedBytes: number };
    incremental = out.id;
    assert.equal(out.type, 'incremental');
    assert.equal(out.parent, full);
    const l = await listing();
    const fullRecord = l.backups.find((b) => b.id === full)!;
    assert.ok(out.storedBytes < fullRecord.storedBytes * 0.25, `incremental stored ${out.storedBytes} bytes, full ${fullRecord.storedBytes}`);
    const verify = await relevo(['backup', 'verify', incremental, '--json']);
    assert.equal(verify.code, 0, `${verify.stdout}\n${verify.stderr}`);
    const report = JSON.parse(verify.stdout) as { ok: boolean; at: string; steps: { step: string; ok: boolean; detail: string }[]; restoreMs: number };
    assert.ok(report.ok);
    assert.match(report.steps.find((s) => s.step === 'row counts')!.detail, /counts equal/);
    assert.ok(report.steps.some((s) => s.step === 'pg_amcheck' && s.ok));
    const after = await listing();
    const shown = after.backups.find((b) => b.id === incremental)!;
    assert.equal(shown.verification?.ok, true);
    assert.ok((shown.verification?.restoreMs ?? 0) > 0, 'backup list shows the measured restore time');
    const list = await ok(['list']);
    assert.match(list, new RegExp(`last verified restore ${incremental}`));
    const reportAt = Date.parse(report.at) / 1000;
    await waitFor('the verified restore in the metrics of every member', async () => {
      for (const name of NAMES) if ((await metric(name, 'relevo_backup_last_verified_timestamp_seconds')) !== reportAt) return false;
      return true;
    }, 20_000, 500);
    assert.equal(await metric(NAMES[1]!, 'relevo_backup_verified_restore_duration_seconds'), report.restoreMs / 1000);
    assert.equal(await metric(NAMES[1]!, 'relevo_backup_verify_failed'), 0);
    assert.equal(await metric(primary, 'relevo_archive_backlog_level', 'level="ok"'), 1);
    assert.equal(readdirSync('/tmp').filter((n) => n.startsWith(`relevo-verify-${incremental}`)).length, 0, 'the scratch directory is gone');
  });

  it('relevo dump writes a custom-format dump per database; one table restores from it', async () => {
    const record = JSON.parse(await ok(['dump', '--json'])) as { id: string; databases: { name: string; key: string; bytes: number }[] };
    const postgres = record.databases.find((d) => d.name === 'postgres')!;
    assert.ok(postgres.bytes > 0);
    const dir = join(repo, readdirSync(repo).find((n) => n.startsWith('test-'))!);
    const dump = readFileSync(join(dir, postgres.key));
    const socket = cluster.member(primary).config.postgres;
    await cluster.sql(primary, 'CREATE DATABASE table_restore');
    execFileSync(join(PG_BIN, 'pg_restore'), ['-h', socket.socketDir!, '-p', String(socket.port), '-U', 'postgres', '-d', 'table_restore', '-t', 'small'], { input: dump, uid: user.uid, gid: user.gid, cwd: '/' });
    const credentials = loadCredentials(cluster.member(primary).config)!;
    const client = new pg.Client({ host: socket.socketDir, port: socket.port, user: 'relevo', password: credentials.agentPassword, database: 'table_restore' });
    await client.connect();
    try {
      assert.equal(Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM small')).rows[0]!.n), 10, 'the one table came back with its rows');
    } finally {
      await client.end();
    }
    assert.match(await ok(['backup', 'list']), new RegExp(`Logical dumps: ${record.id}`));
  });

  it('verify fails on a corrupted backup and names the file', async () => {
    const record = JSON.parse(readFileSync(join(repo, readdirSync(repo).find((n) => n.startsWith('test-'))!, 'backups', incremental, 'backup.json'), 'utf8')) as { files: { path: string; ref: string; size: number }[] };
    const victim = record.files.find((f) => f.ref === incremental && f.path.startsWith('base/') && f.size >= 8192)!;
    assert.ok(victim, 'the incremental stored at least one relation file itself');
    const object = join(repo, readdirSync(repo).find((n) => n.startsWith('test-'))!, 'backups', incremental, 'data', `${victim.path}.gz`);
    const bytes = readFileSync(object);
    for (let i = 20; i < Math.min(bytes.length, 60); i++) bytes[i] = bytes[i]! ^ 0xff;
    writeFileSync(object, bytes);
    const verify = await relevo(['backup', 'verify', incremental]);
    assert.equal(verify.code, 3, verify.stderr);
    assert.ok(verify.stderr.includes(victim.path), `the error names ${victim.path}: ${verify.stderr}`);
    assert.match(verify.stderr, /BACKUP_CORRUPT|VERIFY_FAILED/);
  });

  it('archiving continues across a failover: the history file is archived and the WAL chain has no gap across timelines', async () => {
    const old = primary;
    await cluster.signalAgent(old, 'SIGKILL');
    const pid = cluster.postmasterPid(old);
    if (pid) process.kill(pid, 'SIGKILL');
    primary = await waitFor('a new primary', async () => {
      const p = (await cluster.memberStatuses()).find((m) => m.name !== old && m.role === 'primary' && m.state === 'primary');
      return p?.name;
    }, 60_000, 250);
    await cluster.sql(primary, "INSERT INTO small SELECT generate_series(11, 5000)");
    const lsn = (await cluster.sql<{ l: string }>(primary, 'SELECT pg_current_wal_lsn()::text AS l'))[0]!.l;
    await archivedPast(lsn);
    const dir = join(repo, readdirSync(repo).find((n) => n.startsWith('test-'))!);
    assert.ok(existsSync(join(dir, 'wal', 'other', '00000002.history')), 'timeline 2 history archived');
    const l = await listing();
    assert.deepEqual(l.archive.gaps, [], 'no missing segment from the oldest backup to the newest archived WAL');
    assert.match(l.archive.end!, /.+/);
    assert.ok(readdirSync(join(dir, 'wal')).some((d) => d.startsWith('00000002')), 'segments on the new timeline');
    assert.deepEqual(l.archive.conflicts, []);
  });

  it('retention keeps the newest full backup, deletes older ones and only WAL no kept backup needs, logging each reason', async () => {
    await waitFor('a replica streaming from the new primary', async () => (await cluster.memberStatuses()).some((m) => m.role === 'replica' && m.streaming), 60_000, 500);
    // The schedule, run by the new leader (elected by the failover above), takes the full and verifies it.
    const known = new Set((await listing()).backups.map((b) => b.id));
    // Due at once (the full above is older than 3.6 s); switched off again as soon as the run has started,
    // long before it ends: the next check is armed only after the run, so it finds nothing due.
    const leaderLog = () => readFileSync(cluster.member(primary).logFile, 'utf8');
    await ok(['config', 'set', 'backup.schedule.fullEveryHours=0.001']);
    // Watched in the leader's log (a file read), not by polling `backup list` (a node process a second, competing for the CPU).
    await waitFor('the scheduled backup to start', () => leaderLog().includes('scheduled backup starting'), 60_000, 250);
    await ok(['config', 'set', 'backup.schedule.fullEveryHours=0']);
    await waitFor('the scheduled full backup, verified by its restore drill', () => /scheduled backup (verified by a restore drill|FAILED its restore drill|failed)/.test(leaderLog()), 180_000, 250);
    const scheduled = (await listing()).backups.filter((b) => !known.has(b.id));
    assert.equal(scheduled.length, 1, `one scheduled backup, not one per member: ${scheduled.map((b) => b.id).join(', ')}`);
    const out = scheduled[0]!;
    assert.equal(out.type, 'full');
    assert.equal(out.verification?.ok, true, 'the scheduled full backup passes its restore drill');
    for (const name of NAMES) {
      const log = readFileSync(cluster.member(name).logFile, 'utf8');
      assert.equal(log.includes('scheduled backup starting'), name === primary, `only the leader (${primary}) ran the schedule; ${name}'s log`);
    }
    assert.match(readFileSync(cluster.member(primary).logFile, 'utf8'), /scheduled backup verified by a restore drill/);
    // The scheduled logical dump, by the same leader under the same claim.
    const knownDumps = new Set((await listing()).dumps.map((d) => d.id));
    await ok(['config', 'set', 'backup.schedule.dumpEveryHours=0.001']);
    await waitFor('the scheduled dump to start', () => leaderLog().includes('scheduled dump starting'), 60_000, 250);
    await ok(['config', 'set', 'backup.schedule.dumpEveryHours=0']);
    await waitFor('the scheduled dump to end', () => /scheduled dump done|scheduled backup failed/.test(leaderLog()), 60_000, 250);
    assert.match(leaderLog(), /scheduled dump done/);
    const dumps = (await listing()).dumps.filter((d) => !knownDumps.has(d.id));
    assert.equal(dumps.length, 1, `one scheduled dump: ${dumps.map((d) => d.id).join(', ')}`);
    assert.ok(dumps[0]!.databases.some((d) => d.name === 'postgres' && d.bytes > 0), 'the scheduled dump holds the postgres database');
    await ok(['config', 'set', 'backup.retention.fullCount=1']);
    const deletions = JSON.parse(await ok(['backup', 'expire', '--json'])) as { what: string; reason: string }[];
    const l = await listing();
    assert.deepEqual(l.backups.map((b) => b.id), [out.id]);
    assert.ok(deletions.some((d) => d.what.includes(full)) && deletions.some((d) => d.what.includes(incremental)), JSON.stringify(deletions));
    assert.ok(deletions.some((d) => /WAL segments/.test(d.what) && /oldest kept backup/.test(d.reason)), JSON.stringify(deletions));
    assert.deepEqual(l.archive.gaps, [], 'every segment from the kept backup on is still there');
    const dir = join(repo, readdirSync(repo).find((n) => n.startsWith('test-'))!);
    assert.ok(readdirSync(join(dir, 'log')).filter((n) => n.endsWith('.json')).length >= deletions.length, 'each deletion is logged in the repository');
  });

  it('an unreachable repository raises the backlog warning; once it returns nothing is lost', async () => {
    chmodSync(repo, 0o000);
    try {
      for (let i = 0; i < 3; i++) {
        await cluster.sql(primary, 'INSERT INTO small SELECT generate_series(1, 1000)');
        await cluster.sql(primary, 'SELECT pg_switch_wal()');
      }
      await waitFor('the backlog warning in relevo list', async () => {
        const out = JSON.parse(await ok(['list', '--json'])) as { archive: { member: string; level: string; readyFiles: number }[] };
        return out.archive.find((a) => a.member === primary && a.level !== 'ok' && a.readyFiles >= 2);
      }, 60_000, 1_000);
      assert.match(readFileSync(cluster.member(primary).logFile, 'utf8'), /WAL archive backlog/);
      assert.match(await ok(['list']), /WARN/);
      await waitFor('the backlog in the metrics', async () => ((await metric(primary, 'relevo_archive_backlog_bytes')) ?? 0) >= 2 * 16 * 1024 * 1024 && (await metric(primary, 'relevo_archive_backlog_level', 'level="ok"')) === 0, 20_000, 500);
    } finally {
      chmodSync(repo, 0o750);
    }
    const lsn = (await cluster.sql<{ l: string }>(primary, 'SELECT pg_current_wal_lsn()::text AS l'))[0]!.l;
    await archivedPast(lsn);
    assert.deepEqual((await listing()).archive.gaps, []);
  });

  it('bad input gets a clear error and changes nothing', async () => {
    // WAL keeps arriving in the background; what a bad command could damage is everything else.
    const notWal = () => repoFiles().filter((f) => !f.includes('/wal/')).sort();
    const before = notWal();
    const unknown = await relevo(['backup', 'verify', '20000101-000000F']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /no backup "20000101-000000F".*known: \d/);
    const target = join(cluster.dir, 'never');
    const early = await relevo(['restore', '--to', target, '--time', '2000-01-01T00:00:00Z']);
    assert.equal(early.code, 2);
    assert.match(early.stderr, /TARGET_OUT_OF_RANGE/);
    assert.match(early.stderr, /available: times .* LSNs/);
    const late = await relevo(['restore', '--to', target, '--lsn', 'FF/0']);
    assert.equal(late.code, 2);
    assert.match(late.stderr, /past the end of the archive/);
    const unreachable = await relevo(['restore', '--to', target, '--repository', join(cluster.dir, 'no-such-repository'), '--latest']);
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /REPOSITORY_UNREACHABLE/);
    const other = join(cluster.dir, 'other-repo');
    mkdirSync(join(other, 'prod-123'), { recursive: true });
    writeFileSync(join(other, 'relevo-repository.json'), '{"format":1}');
    const foreign = await relevo(['backup', 'list', '--repository', other]);
    assert.equal(foreign.code, 2);
    assert.match(foreign.stderr, /holds prod-123 but not cluster test/);
    assert.equal(existsSync(target), false, 'no destination directory was created');
    assert.deepEqual(notWal(), before, 'the repository is unchanged');
  });
});
