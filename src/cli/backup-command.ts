import type { Command } from 'commander';
import { latestVerification, listBackups, listRestorePoints, RestorePointSchema, type BackupRecord, type RestorePoint, type VerifyReport } from '../backup/catalog.js';
import { primaryOf, sqlOn, type BackupContext } from '../backup/context.js';
import { listDumps, takeDump, type DumpRecord } from '../backup/dump.js';
import { BackupError } from '../backup/errors.js';
import { initRepository, lookupOsUser, openBackupContext } from '../backup/open.js';
import { parseTarget, planRestore, restoreBackup } from '../backup/restore.js';
import { applyRetention } from '../backup/retention.js';
import { takeBackup } from '../backup/take.js';
import { verifyBackup } from '../backup/verify.js';
import { archiveEnd, walGaps } from '../backup/wal.js';
import { InitRecordSchema } from '../cluster/types.js';
import { CliError, withCluster, type ClusterHandle } from './context.js';
import { formatBytes, renderTable } from './table.js';

const note = (line: string) => {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  console.error(line);
};

/** On a terminal: one line with percent, rate and time left, redrawn at most twice a second. */
function progressBar(): (label: string, done: number, total: number) => void {
  const started = performance.now();
  let drawn = 0;
  return (label, done, total) => {
    if (!process.stderr.isTTY || performance.now() - drawn < 500) return;
    drawn = performance.now();
    const seconds = (performance.now() - started) / 1000;
    const rate = done / Math.max(seconds, 0.001);
    const fraction = total > 0 ? Math.min(1, done / total) : 0;
    const width = 30;
    const bar = '#'.repeat(Math.round(fraction * width)).padEnd(width, '.');
    const left = rate > 0 && total > done ? `${Math.ceil((total - done) / rate)} s left` : '';
    process.stderr.write(`\r\x1b[K${label} [${bar}] ${(fraction * 100).toFixed(0)}% ${formatBytes(done)}/${formatBytes(total)} ${formatBytes(rate)}/s ${left}`);
  };
}

function withBackup<T>(configOption: string | undefined, repository: string | undefined, work: (ctx: BackupContext, handle: ClusterHandle) => Promise<T>): Promise<T> {
  return withCluster(configOption, async (handle) => {
    const ctx = await openBackupContext(handle.config, handle.store, note, repository);
    const result = await work({ ...ctx, progress: progressBar() }, handle);
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    return result;
  });
}

export interface BackupListing {
  backups: (BackupRecord & { verification: VerifyReport | null; files: never[] })[];
  archive: { end: string | null; endTime: string | null; gaps: { timeline: number; segment: string }[]; conflicts: string[] };
  restorePoints: RestorePoint[];
  dumps: DumpRecord[];
}

export async function backupListing(ctx: BackupContext): Promise<BackupListing> {
  const backups = await listBackups(ctx.repository);
  const out: BackupListing['backups'] = [];
  for (const b of backups) out.push({ ...b, files: [], verification: (await latestVerification(ctx.repository, b.id)) ?? null });
  const end = await archiveEnd(ctx.repository);
  const first = backups[0];
  const gaps = first ? (await walGaps(ctx.repository, first.timeline, first.startLsn)).gaps : [];
  const conflicts = (await ctx.repository.list('conflicts')).map((c) => c.key);
  return { backups: out, archive: { end: end?.lsn ?? null, endTime: end?.at.toISOString() ?? null, gaps, conflicts }, restorePoints: await listRestorePoints(ctx.repository), dumps: await listDumps(ctx) };
}

function seconds(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? '-' : `${(ms / 1000).toFixed(1)} s`;
}

export function renderBackupListing(listing: BackupListing): string {
  const rows = listing.backups.map((b) => [
    b.id,
    b.type,
    b.parent ?? '-',
    b.startedAt.replace('T', ' ').slice(0, 19),
    seconds(b.durationMs),
    `${b.startLsn}..${b.endLsn} (TL ${b.timeline})`,
    formatBytes(b.sizeBytes),
    formatBytes(b.storedBytes),
    b.source,
    b.verification ? `${b.verification.ok ? 'ok' : `FAILED (${b.verification.failedStep})`} ${b.verification.at.replace('T', ' ').slice(0, 19)}` : 'never',
    seconds(b.verification?.restoreMs),
  ]);
  const lines = [renderTable(['Backup', 'Type', 'Parent', 'Started (UTC)', 'Took', 'WAL range', 'Size', 'Stored', 'Source', 'Last verification', 'Restore time'], rows)];
  lines.push(`WAL archive: up to ${listing.archive.end ?? 'nothing archived'}${listing.archive.endTime ? ` (archived ${listing.archive.endTime})` : ''}`);
  if (listing.archive.gaps.length > 0) lines.push(`WARNING: ${listing.archive.gaps.length} WAL segments missing after the oldest backup, first ${listing.archive.gaps[0]!.segment}: point-in-time recovery cannot cross them`);
  if (listing.archive.conflicts.length > 0) lines.push(`WARNING: ${listing.archive.conflicts.length} conflicting WAL copies kept aside (a second primary wrote the same segment): ${listing.archive.conflicts.slice(0, 3).join(', ')}`);
  if (listing.dumps.length > 0) lines.push(`Logical dumps: ${listing.dumps.map((d) => `${d.id} (${d.databases.map((x) => x.name).join(', ')})`).join('; ')}`);
  if (listing.restorePoints.length > 0) lines.push(`Restore points: ${listing.restorePoints.map((p) => `${p.name} (${p.lsn}, ${p.at})`).join(', ')}`);
  return lines.join('\n');
}

const configOption = ['-c, --config <file>', 'member configuration file (default: $RELEVO_CONFIG)'] as const;
const repoOption = ['--repository <dir>', 'repository location (default: the cluster setting backup.repository)'] as const;

export function registerBackupCommands(program: Command): void {
  const backup = program
    .command('backup')
    .description('take a base backup (from a streaming replica unless --from-primary); subcommands list, verify, init, expire')
    .option(...configOption)
    .option('--full', 'a full backup (default)')
    .option('--incremental', 'store only files changed since the newest backup')
    .option('--from-primary', 'copy from the primary instead of a streaming replica')
    .option('--compress-level <n>', 'gzip level 1-9 (default: backup.compressLevel)')
    .option('--no-expire', 'skip the retention policy afterwards')
    .option('--verify', 'run the restore drill on the new backup')
    .option('--json', 'machine-readable output')
    .action(async (options: { config?: string; full?: boolean; incremental?: boolean; fromPrimary?: boolean; compressLevel?: string; expire: boolean; verify?: boolean; json?: boolean }) => {
      if (options.full && options.incremental) throw new CliError('BAD_ARGUMENT', 'give --full or --incremental, not both');
      const level = options.compressLevel === undefined ? undefined : Number(options.compressLevel);
      if (level !== undefined && !(Number.isInteger(level) && level >= 1 && level <= 9)) throw new CliError('BAD_ARGUMENT', `--compress-level ${options.compressLevel}: expected 1..9`);
      await withBackup(options.config, undefined, async (ctx) => {
        const record = await takeBackup(ctx, { type: options.incremental ? 'incremental' : 'full', fromPrimary: options.fromPrimary === true, compressLevel: level });
        const deletions = options.expire ? await applyRetention(ctx) : [];
        const report = options.verify ? await verifyBackup(ctx, record.id) : undefined;
        if (options.json) console.log(JSON.stringify({ ...record, files: record.files.length, deletions, verification: report ?? null }, null, 2));
        else {
          console.log(
            `backup ${record.id} (${record.type}${record.parent ? ` on ${record.parent}` : ''}) from ${record.source}: ${formatBytes(record.sizeBytes)} of data, ${formatBytes(record.storedBytes)} stored, ${seconds(record.durationMs)}, WAL ${record.startLsn}..${record.endLsn}`,
          );
          if (report) console.log(report.ok ? `verified: restore drill passed, restore time ${seconds(report.restoreMs)}` : `VERIFY FAILED at ${report.failedStep}: ${report.error}`);
        }
        if (report && !report.ok) throw new BackupError('VERIFY_FAILED', `backup ${record.id} failed its restore drill at "${report.failedStep}": ${report.error}`);
      });
    });

  // `relevo backup list -c FILE --json`: commander hands an option both levels define to the parent.
  const withParent = <T extends object>(options: T): T =>
    ({ ...(backup.opts() as object), ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) }) as T;

  backup
    .command('list')
    .description('every backup: time, LSN range, size, duration, parent, last verification and restore time')
    .option(...configOption)
    .option(...repoOption)
    .option('--json', 'machine-readable output')
    .action(async (given: { config?: string; repository?: string; json?: boolean }) => {
      const options = withParent(given);
      await withBackup(options.config, options.repository, async (ctx) => {
        const listing = await backupListing(ctx);
        console.log(options.json ? JSON.stringify(listing, null, 2) : renderBackupListing(listing));
      });
    });

  backup
    .command('verify [id]')
    .description('restore drill: checksums, restore to a scratch directory, temporary PostgreSQL, recovery, row counts, pg_amcheck, clean up')
    .option(...configOption)
    .option('--scratch <dir>', 'parent directory for the scratch data directory (default: the system temp dir)')
    .option('--json', 'machine-readable output')
    .action(async (id: string | undefined, given: { config?: string; scratch?: string; json?: boolean }) => {
      const options = withParent(given);
      await withBackup(options.config, undefined, async (ctx) => {
        const report = await verifyBackup(ctx, id, options.scratch);
        if (options.json) console.log(JSON.stringify(report, null, 2));
        else {
          console.log(renderTable(['Step', 'Result', 'Time', 'Detail'], report.steps.map((s) => [s.step, s.ok ? 'ok' : 'FAILED', seconds(s.ms), s.detail.slice(0, 160)])));
          console.log(report.ok ? `backup ${report.backup}: restore drill passed; restore time ${seconds(report.restoreMs)}` : `backup ${report.backup}: restore drill FAILED at ${report.failedStep}`);
        }
        if (!report.ok) throw new BackupError('VERIFY_FAILED', `backup ${report.backup} failed at "${report.failedStep}": ${report.error}`);
      });
    });

  backup
    .command('init')
    .description('mark the repository directory (backup.repository) and create this cluster\'s directory in it')
    .option(...configOption)
    .option(...repoOption)
    .action(async (given: { config?: string; repository?: string }) => {
      const options = withParent(given);
      await withCluster(options.config, async (handle) => {
        const initKv = await handle.store.get(handle.keys.initialize);
        const systemIdentifier = initKv ? InitRecordSchema.parse(JSON.parse(initKv.value)).systemIdentifier : undefined;
        const settingsKv = await handle.store.get(handle.keys.config);
        const location = options.repository ?? (settingsKv ? (JSON.parse(settingsKv.value) as { backup?: { repository?: string } }).backup?.repository : undefined);
        if (!location) throw new BackupError('BACKUP_NOT_CONFIGURED', 'no repository: pass --repository or set backup.repository');
        console.log(`repository ready: ${initRepository(location, handle.config.cluster, systemIdentifier, lookupOsUser(handle.config.postgres.osUser))}`);
      });
    });

  backup
    .command('expire')
    .description('apply the retention policy now (backup.retention): every deletion is printed and logged with its reason')
    .option(...configOption)
    .option('--json', 'machine-readable output')
    .action(async (given: { config?: string; json?: boolean }) => {
      const options = withParent(given);
      await withBackup(options.config, undefined, async (ctx) => {
        const deletions = await applyRetention(ctx);
        console.log(options.json ? JSON.stringify(deletions, null, 2) : deletions.length === 0 ? 'nothing to delete' : deletions.map((d) => `deleted ${d.what}: ${d.reason}`).join('\n'));
      });
    });

  program
    .command('restore')
    .description('restore a backup into a new data directory (or --delta onto a stopped one) and recover to a target')
    .option(...configOption)
    .option(...repoOption)
    .requiredOption('--to <dir>', 'destination data directory')
    .option('--time <time>', 'recover to this time (ISO 8601)')
    .option('--lsn <lsn>', 'recover to this LSN')
    .option('--xid <xid>', 'recover to this transaction id')
    .option('--name <name>', "recover to a named restore point ('relevo restore-point')")
    .option('--latest', 'recover to the end of the archive (default)')
    .option('--backup <id>', 'restore this backup (default: the newest one before the target)')
    .option('--delta', 'update an existing stopped data directory, copying only files that differ')
    .option('--target-action <action>', 'at the target: promote, pause or shutdown', 'promote')
    .option('--json', 'machine-readable output')
    .action(async (options: { config?: string; repository?: string; to: string; time?: string; lsn?: string; xid?: string; name?: string; latest?: boolean; backup?: string; delta?: boolean; targetAction: string; json?: boolean }) => {
      if (!['promote', 'pause', 'shutdown'].includes(options.targetAction)) throw new CliError('BAD_ARGUMENT', `--target-action ${options.targetAction}: expected promote, pause or shutdown`);
      if (!options.to.startsWith('/')) throw new CliError('BAD_ARGUMENT', `--to ${options.to}: expected an absolute path`);
      const target = parseTarget(options);
      await withBackup(options.config, options.repository, async (ctx) => {
        const plan = await planRestore(ctx, target, options.backup, options.targetAction as 'promote');
        const result = await restoreBackup(ctx, plan, options.to, { delta: options.delta === true });
        if (options.json) console.log(JSON.stringify({ ...result, recovery: plan.recovery }, null, 2));
        else
          console.log(
            `restored backup ${result.backup} into ${options.to}: ${result.files - result.unchanged} files written (${formatBytes(result.bytes)}), ${result.unchanged} unchanged, ${result.removed} removed, ${seconds(result.ms)}; recovery settings in postgresql.auto.conf (${Object.entries(plan.recovery).map(([k, v]) => `${k}=${v}`).join(', ')}). Start it with pg_ctl -D ${options.to} start`,
          );
      });
    });

  program
    .command('dump')
    .description('pg_dump (custom format) of every database into the repository, under the same retention')
    .option(...configOption)
    .option('--json', 'machine-readable output')
    .action(async (options: { config?: string; json?: boolean }) => {
      await withBackup(options.config, undefined, async (ctx) => {
        const record = await takeDump(ctx);
        console.log(options.json ? JSON.stringify(record, null, 2) : `dump ${record.id} from ${record.source}: ${record.databases.map((d) => `${d.name} (${formatBytes(d.bytes)}) in ${ctx.repository.location}/${d.key}`).join(', ')}`);
      });
    });

  program
    .command('restore-point <name>')
    .description('create a named restore point on the primary and record it in the repository')
    .option(...configOption)
    .action(async (name: string, options: { config?: string }) => {
      if (!/^[A-Za-z0-9_.-]{1,63}$/.test(name)) throw new CliError('BAD_ARGUMENT', `restore point name "${name}": use 1-63 letters, digits, "_", "." or "-"`);
      await withBackup(options.config, undefined, async (ctx) => {
        const existing = await listRestorePoints(ctx.repository);
        if (existing.some((p) => p.name === name)) throw new BackupError('RESTORE_POINT_EXISTS', `restore point "${name}" already exists`);
        const primary = primaryOf(ctx);
        if (!primary) throw new BackupError('NO_SOURCE', `cluster ${ctx.cluster} has no primary`);
        const point = await sqlOn(ctx, primary, async (c) => {
          const row = (await c.query<{ lsn: string; tli: number }>('SELECT pg_create_restore_point($1)::text AS lsn, (SELECT timeline_id FROM pg_control_checkpoint()) AS tli', [name])).rows[0]!;
          return RestorePointSchema.parse({ name, lsn: row.lsn, timeline: row.tli, at: new Date().toISOString() });
        });
        const put = await ctx.repository.putIfAbsent(`restore-points/${name}.json`, Buffer.from(JSON.stringify(point)));
        if (put.status === 'conflict') throw new BackupError('RESTORE_POINT_EXISTS', `restore point "${name}" was recorded at the same moment by someone else`);
        console.log(`restore point ${name} at ${point.lsn} on timeline ${point.timeline}`);
      });
    });
}
