import type { Logger } from 'pino';
import { clusterKeys } from '../cluster/keys.js';
import type { ClusterSettings } from '../cluster/settings.js';
import { LeaderRecordSchema } from '../cluster/types.js';
import type { MemberConfig } from '../config/member.js';
import type { LocalPostgres } from '../postgres/local.js';
import type { Store } from '../store/store.js';
import { listBackups } from './catalog.js';
import { startArchiveMonitor } from './monitor.js';
import { openBackupContext } from './open.js';
import { applyRetention } from './retention.js';
import { takeBackup } from './take.js';
import { verifyBackup } from './verify.js';

/**
 * What a schedule asks for now, or nothing (pure). Hours since the newest full
 * and the newest backup of any type decide; a full is due first.
 */
export function dueBackup(schedule: ClusterSettings['backup']['schedule'], now: number, newestFull: number | undefined, newestAny: number | undefined): 'full' | 'incremental' | undefined {
  const hours = (since: number | undefined) => (since === undefined ? Infinity : (now - since) / 3_600_000);
  if (schedule.fullEveryHours > 0 && hours(newestFull) >= schedule.fullEveryHours) return 'full';
  if (schedule.incrementalEveryHours > 0 && hours(newestAny) >= schedule.incrementalEveryHours) return 'incremental';
  return undefined;
}

/**
 * The agent's backup duties: every member watches its archive backlog; the
 * member holding the leader key runs the schedules (once: the leader key is
 * unique, so after a failover the new leader carries on from the repository's
 * catalogue), then retention, then the restore drill.
 */
export function startBackupDuties(config: MemberConfig, local: LocalPostgres, store: Store, log: Logger, settings: () => ClusterSettings): () => void {
  const keys = clusterKeys(config.cluster);
  const stopMonitor = startArchiveMonitor({ member: config.name, dataDir: local.dataDir, user: local.user, store, keys, log, settings });
  let stopped = false;
  let busy = false;
  const note = (line: string) => log.info(line);
  const tick = async () => {
    const schedule = settings().backup.schedule;
    if (busy || !settings().backup.repository || (schedule.fullEveryHours === 0 && schedule.incrementalEveryHours === 0)) return;
    const leader = await store.get(keys.leader);
    if (!leader || LeaderRecordSchema.parse(JSON.parse(leader.value)).member !== config.name) return;
    busy = true;
    try {
      const ctx = await openBackupContext(config, store, note);
      const backups = await listBackups(ctx.repository);
      const newest = (type?: string) => {
        const found = backups.filter((b) => !type || b.type === type).pop();
        return found ? Date.parse(found.startedAt) : undefined;
      };
      const due = dueBackup(schedule, Date.now(), newest('full'), newest());
      if (!due) return;
      log.info({ type: due }, 'scheduled backup starting');
      const hasReplica = ctx.members.some((m) => m.role === 'replica' && m.streaming);
      const record = await takeBackup(ctx, { type: due, fromPrimary: !hasReplica });
      log.info({ id: record.id, durationMs: record.durationMs, storedBytes: record.storedBytes }, 'scheduled backup done');
      await applyRetention(ctx);
      if (schedule.verify) {
        const report = await verifyBackup(ctx, record.id);
        if (report.ok) log.info({ id: record.id, restoreMs: report.restoreMs }, 'scheduled backup verified by a restore drill');
        else log.error({ id: record.id, step: report.failedStep, err: report.error }, 'scheduled backup FAILED its restore drill');
      }
    } catch (error) {
      log.error({ err: (error as Error).message }, 'scheduled backup failed');
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => {
    if (!stopped) void tick();
  }, 60_000);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
    stopMonitor();
  };
}
