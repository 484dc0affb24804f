import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ROLE_NAMES } from '../config/secrets.js';
import { runPostgresProgram } from '../postgres/exec.js';
import { withConnection } from '../postgres/sql.js';
import { makeOwnedTempDir } from '../postgres/owned-fs.js';
import { backupChain, dataKey, listBackups, loadBackup, type BackupRecord, type VerifyReport } from './catalog.js';
import type { BackupContext } from './context.js';
import { BackupError } from './errors.js';
import { appendNoFollow } from './files.js';
import { JobPool } from './pool.js';
import { planRestore, restoreBackup } from './restore.js';
import { countAll, DATABASES_SQL } from './rows.js';

type Step = VerifyReport['steps'][number];

/** Checks every stored object of a backup (and the ancestors it refers to) against its recorded sha256. */
export async function verifyChecksums(ctx: BackupContext, record: BackupRecord): Promise<string> {
  const pool = new JobPool(ctx.settings.parallel);
  for (const file of record.files) {
    await pool.run(async () => {
      const key = dataKey(file.ref, file.path);
      const hash = createHash('sha256');
      try {
        await pipeline(ctx.repository.read(key), hash);
      } catch (error) {
        throw new BackupError('BACKUP_CORRUPT', `backup ${record.id}: ${key} (file ${file.path}) cannot be read: ${(error as Error).message}`);
      }
      const actual = hash.digest('hex');
      if (actual !== file.storedSha256) throw new BackupError('BACKUP_CORRUPT', `backup ${record.id}: ${key} (file ${file.path}) has sha256 ${actual}, recorded ${file.storedSha256}`);
    });
  }
  await pool.drain();
  return `${record.files.length} files match their sha256`;
}

/**
 * The restore drill: checksums, a real restore into a scratch directory, a
 * temporary PostgreSQL (Unix socket only, inside the scratch directory),
 * recovery to the backup's check point (or consistency), row counts against
 * the backup's record, recovery on to the end of the archive, pg_amcheck,
 * stop and clean up. The report is stored beside the backup.
 */
export async function verifyBackup(ctx: BackupContext, id?: string, scratchParent = tmpdir()): Promise<VerifyReport> {
  const backups = await listBackups(ctx.repository);
  const record = id ? await loadBackup(ctx.repository, id) : backups[backups.length - 1];
  if (!record) throw new BackupError('NO_BACKUP', `no backup of cluster ${ctx.cluster} to verify`);
  const steps: Step[] = [];
  let failedStep: string | null = null;
  let failure: string | null = null;
  let restoreMs: number | null = null;
  const scratch = makeOwnedTempDir(join(scratchParent, `relevo-verify-${record.id}-`), ctx.osUser);
  const dataDir = join(scratch, 'data');
  const pgctl = (args: string[], context: string) =>
    runPostgresProgram(ctx.binDir, ctx.osUser, 'pg_ctl', ['-D', dataDir, ...args], { context, timeoutMs: 3_600_000 });
  const sql = <T>(work: (c: import('pg').Client) => Promise<T>, database = 'postgres') =>
    withConnection({ host: scratch, port: 5432, user: ROLE_NAMES.agent, password: ctx.credentials.agentPassword, database }, work, 600_000);
  let started = false;
  const logFile = join(scratch, 'postgres.log');
  /** pg_ctl start; a failure carries the end of the server log, which says why. */
  const startWithLog = async () => {
    try {
      await pgctl(['-l', logFile, '-w', '-t', '3600', 'start'], `restore drill of backup ${record.id}`);
    } catch (error) {
      let tail = '';
      try {
        tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-5).join(' | ');
      } catch {
        tail = '(no server log)';
      }
      throw new Error(`${(error as Error).message}; server log: ${tail}`);
    }
  };
  const run = async (step: string, work: () => Promise<string>): Promise<boolean> => {
    if (failedStep) return false;
    const t0 = performance.now();
    ctx.note(`verify ${record.id}: ${step}`);
    try {
      const detail = await work();
      steps.push({ step, ok: true, ms: Math.round(performance.now() - t0), detail });
      return true;
    } catch (error) {
      failedStep = step;
      failure = (error as Error).message;
      steps.push({ step, ok: false, ms: Math.round(performance.now() - t0), detail: failure });
      return false;
    }
  };
  const restoreStarted = performance.now();
  try {
    await run('checksums', async () => {
      const chain = await backupChain(ctx.repository, record);
      return `${await verifyChecksums(ctx, record)} (chain ${chain.map((b) => b.id).join(' <- ')})`;
    });
    const target = record.rowCheck ? ({ kind: 'lsn', lsn: record.rowCheck.lsn, inclusive: false } as const) : ({ kind: 'immediate' } as const);
    await run('restore', async () => {
      const plan = await planRestore(ctx, target, record.id, 'pause');
      const result = await restoreBackup(ctx, plan, dataDir, {
        extraSettings: {
          port: '5432',
          listen_addresses: '',
          unix_socket_directories: scratch,
          hot_standby: 'on',
          cluster_name: `relevo-verify-${record.id}`,
          logging_collector: 'off',
          synchronous_standby_names: '',
        },
      });
      return `${result.files} files, ${Math.round(result.bytes / 1048576)} MB in ${result.ms} ms`;
    });
    await run('start temporary PostgreSQL', async () => {
      await startWithLog();
      started = true;
      return `socket in ${scratch}`;
    });
    await run(record.rowCheck ? `recover to the check point ${record.rowCheck.lsn}` : 'recover to consistency', async () => {
      for (;;) {
        const state = await sql(async (c) => (await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s);
        if (state === 'paused') break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      restoreMs = Math.round(performance.now() - restoreStarted);
      const lsn = await sql(async (c) => (await c.query<{ l: string }>('SELECT pg_last_wal_replay_lsn()::text AS l')).rows[0]!.l);
      return `paused at ${lsn} after ${restoreMs} ms from the start of the restore`;
    });
    await run('row counts', async () => {
      if (!record.rowCheck) return 'skipped: backup taken from the primary records no counts';
      const databases = await sql(async (c) => (await c.query<{ datname: string }>(DATABASES_SQL)).rows.map((r) => r.datname));
      const counts = await countAll((database, work) => sql(work, database), databases);
      const wrong = Object.entries(record.rowCheck.counts).filter(([table, n]) => counts[table] !== n);
      if (wrong.length > 0) {
        throw new Error(`row counts differ: ${wrong.slice(0, 5).map(([t, n]) => `${t} has ${counts[t] ?? 'no table'}, backup recorded ${n}`).join('; ')}`);
      }
      return `${Object.keys(record.rowCheck.counts).length} tables, counts equal`;
    });
    await run('recover to the end of the archive', async () => {
      await pgctl(['-m', 'fast', '-w', 'stop'], `restore drill of backup ${record.id}`);
      started = false;
      await appendNoFollow(join(dataDir, 'postgresql.auto.conf'), "recovery_target = ''\nrecovery_target_lsn = ''\nrecovery_target_action = 'promote'\n");
      await startWithLog();
      started = true;
      for (;;) {
        const recovering = await sql(async (c) => (await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r);
        if (!recovering) break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const lsn = await sql(async (c) => (await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l);
      return `recovered and promoted at ${lsn}`;
    });
    await run('pg_amcheck', async () => {
      const out = await runPostgresProgram(ctx.binDir, ctx.osUser, 'pg_amcheck', ['-h', scratch, '-p', '5432', '-U', ROLE_NAMES.superuser, '--all', '--install-missing'], {
        context: `pg_amcheck in the restore drill of backup ${record.id}`,
        timeoutMs: 3_600_000,
      });
      return out.trim() === '' ? 'no corruption found' : out.trim().slice(0, 500);
    });
  } finally {
    // Always, also after a failed step.
    const t0 = performance.now();
    if (started) await pgctl(['-m', 'immediate', '-w', 'stop'], `restore drill of backup ${record.id}`).catch(() => undefined);
    rmSync(scratch, { recursive: true, force: true });
    steps.push({ step: 'stop and clean up', ok: true, ms: Math.round(performance.now() - t0), detail: 'temporary server stopped, scratch directory removed' });
  }
  const report: VerifyReport = { backup: record.id, at: new Date().toISOString(), ok: failedStep === null, failedStep, error: failure, steps, restoreMs };
  const stamp = report.at.replace(/[-:.]/g, '');
  await ctx.repository.putIfAbsent(`backups/${record.id}/verify-${stamp}.json`, Buffer.from(JSON.stringify(report, null, 1)));
  return report;
}
