import type { Logger } from 'pino';
import { clusterKeys, type ClusterKeys } from '../cluster/keys.js';
import type { ClusterSettings } from '../cluster/settings.js';
import { InitRecordSchema, LeaderRecordSchema } from '../cluster/types.js';
import type { MemberConfig } from '../config/member.js';
import type { LocalPostgres } from '../postgres/local.js';
import type { Store } from '../store/store.js';
import { listBackups } from './catalog.js';
import { listDumps, takeDump } from './dump.js';
import { startArchiveMonitor, type ArchiveStatus } from './monitor.js';
import { openBackupContext } from './open.js';
import { applyRetention } from './retention.js';
import { CLAIM_HEARTBEAT_MS, decideSchedule, scheduleClaimKey, ScheduleClaimSchema, type ScheduleClaim, type ScheduleDecision } from './schedule.js';
import { backupSummary, type BackupSummary } from './summary.js';
import { takeBackup } from './take.js';
import { verifyBackup } from './verify.js';

/** Told what the backup duties saw: the metrics (src/agent/metrics.ts). Must return at once and never throw. */
export interface BackupObserver {
  onArchiveStatus(status: ArchiveStatus | undefined): void;
  onBackupSummary(summary: BackupSummary | undefined): void;
}

const parseJson = <T>(schema: { parse(value: unknown): T }, text: string | undefined): T | undefined => {
  if (text === undefined) return undefined;
  try {
    return schema.parse(JSON.parse(text));
  } catch {
    return undefined;
  }
};

/**
 * The agent's backup duties: every member watches its archive backlog and
 * reads the repository's catalogue for its metrics; the member holding the
 * leader key runs the schedules (decideSchedule, src/backup/schedule.ts) under
 * a claim in the store, so a run is never started twice, also across a
 * failover: backup, retention, then the restore drill.
 */
export function startBackupDuties(config: MemberConfig, local: LocalPostgres, store: Store, log: Logger, settings: () => ClusterSettings, observer?: BackupObserver): () => void {
  const keys = clusterKeys(config.cluster);
  const stopMonitor = startArchiveMonitor({ member: config.name, dataDir: local.dataDir, user: local.user, store, keys, log, settings, onStatus: (s) => observer?.onArchiveStatus(s) });
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  /** The catalogue for the metrics (the same figures as `relevo list`). */
  const summarise = async (repository: string) => {
    try {
      const init = parseJson(InitRecordSchema, (await store.get(keys.initialize))?.value);
      observer?.onBackupSummary(await backupSummary(repository, config.cluster, init?.systemIdentifier));
    } catch (error) {
      observer?.onBackupSummary(undefined);
      log.warn({ err: (error as Error).message }, 'cannot read the backup catalogue for the metrics');
    }
  };
  // One check at a time: the next is armed only when this one is over (a scheduled run may take hours).
  const tick = async () => {
    const repository = settings().backup.repository;
    if (!repository) {
      observer?.onArchiveStatus(undefined);
      observer?.onBackupSummary(undefined);
    } else {
      await summarise(repository);
      try {
        if (await runSchedule(config, store, keys, log, settings)) await summarise(repository);
      } catch (error) {
        log.error({ err: (error as Error).message }, 'scheduled backup failed');
      }
    }
    if (!stopped) timer = setTimeout(() => void tick(), settings().backup.schedule.checkSeconds * 1_000);
  };
  timer = setTimeout(() => void tick(), 2_000);
  return () => {
    stopped = true;
    clearTimeout(timer);
    stopMonitor();
  };
}

/** One check of the schedules on this member; true when it ran a backup. */
async function runSchedule(config: MemberConfig, store: Store, keys: ClusterKeys, log: Logger, settings: () => ClusterSettings): Promise<boolean> {
  const schedule = settings().backup.schedule;
  if (schedule.fullEveryHours === 0 && schedule.incrementalEveryHours === 0 && schedule.dumpEveryHours === 0) return false;
  const leader = parseJson(LeaderRecordSchema, (await store.get(keys.leader))?.value)?.member;
  if (leader !== config.name) return false;
  const key = scheduleClaimKey(keys);
  // The claim before the catalogue (see ScheduleView.claim).
  const claimKv = await store.get(key);
  const claim = parseJson(ScheduleClaimSchema, claimKv?.value);
  const note = (line: string) => log.info(line);
  const ctx = await openBackupContext(config, store, note);
  const backups = await listBackups(ctx.repository);
  const newest = (type?: string) => {
    const found = backups.filter((b) => !type || b.type === type).pop();
    return found ? Date.parse(found.startedAt) : undefined;
  };
  const newestDump = schedule.dumpEveryHours > 0 ? (await listDumps(ctx)).pop()?.startedAt : undefined;
  const decision: ScheduleDecision = decideSchedule({
    schedule,
    now: Date.now(),
    self: config.name,
    leader,
    claim,
    newestFull: newest('full'),
    newestAny: newest(),
    newestDump: newestDump === undefined ? undefined : Date.parse(newestDump),
  });
  if (!decision.run) {
    if (claim && claim.member !== config.name) log.debug(decision.reason);
    return false;
  }
  const now = new Date().toISOString();
  const mine: ScheduleClaim = { member: config.name, type: decision.run, startedAt: now, heartbeatAt: now };
  // Atomic: a new claim only where none is, a stale one only on the revision we judged.
  let revision = claimKv ? await store.compareAndSwap(key, JSON.stringify(mine), claimKv.revision) : await store.create(key, JSON.stringify(mine));
  if (revision === undefined) {
    log.info('the scheduled backup claim changed while we looked: not starting');
    return false;
  }
  log.info({ type: decision.run, reason: decision.reason }, decision.run === 'dump' ? 'scheduled dump starting' : 'scheduled backup starting');
  let beating: Promise<unknown> = Promise.resolve();
  const heartbeat = setInterval(() => {
    beating = store
      .compareAndSwap(key, JSON.stringify({ ...mine, heartbeatAt: new Date().toISOString() }), revision!)
      .then((next) => {
        if (next !== undefined) revision = next;
      })
      .catch(() => undefined);
  }, CLAIM_HEARTBEAT_MS);
  try {
    if (decision.run === 'dump') {
      const dump = await takeDump(ctx);
      log.info({ id: dump.id, databases: dump.databases.length, bytes: dump.databases.reduce((sum, d) => sum + d.bytes, 0) }, 'scheduled dump done');
      await applyRetention(ctx);
      return true;
    }
    const hasReplica = ctx.members.some((m) => m.role === 'replica' && m.streaming);
    const record = await takeBackup(ctx, { type: decision.run, fromPrimary: !hasReplica });
    log.info({ id: record.id, durationMs: record.durationMs, storedBytes: record.storedBytes }, 'scheduled backup done');
    await applyRetention(ctx);
    if (schedule.verify) {
      const report = await verifyBackup(ctx, record.id);
      if (report.ok) log.info({ id: record.id, restoreMs: report.restoreMs }, 'scheduled backup verified by a restore drill');
      else log.error({ id: record.id, step: report.failedStep, err: report.error }, 'scheduled backup FAILED its restore drill');
    }
    return true;
  } finally {
    clearInterval(heartbeat);
    await beating;
    // On its revision: a claim another member took over (ours went stale) stays theirs.
    await store.delete(key, revision).catch(() => false);
  }
}
