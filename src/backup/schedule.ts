import { z } from 'zod';
import type { ClusterKeys } from '../cluster/keys.js';
import type { BackupSettings } from '../cluster/backup-settings.js';

/**
 * The claim of a scheduled run, one record in the store
 * (`<root>backup/schedule`): created atomically by the leader's agent before
 * it starts, its heartbeat refreshed while the backup, retention and restore
 * drill run, deleted (on its revision) when done. A new leader after a
 * failover or switchover sees the old leader's run still going and waits for
 * it instead of starting a second backup; a claim whose holder died stops
 * counting once its heartbeat is older than CLAIM_STALE_MS.
 */
export const ScheduleClaimSchema = z.object({
  member: z.string(),
  type: z.enum(['full', 'incremental', 'dump']),
  startedAt: z.string(),
  heartbeatAt: z.string(),
});
export type ScheduleClaim = z.infer<typeof ScheduleClaimSchema>;

export const scheduleClaimKey = (keys: ClusterKeys) => `${keys.root}backup/schedule`;

/** The holder refreshes its claim this often... */
export const CLAIM_HEARTBEAT_MS = 30_000;
/** ...and others take over a claim not refreshed for this long (the holder's agent died or hangs; clocks may differ a little). */
export const CLAIM_STALE_MS = 180_000;

export interface ScheduleView {
  schedule: BackupSettings['schedule'];
  /** Wall time now (ms since the epoch). */
  now: number;
  self: string;
  /** The member holding the leader key; undefined when none does. */
  leader: string | undefined;
  /**
   * The claim in the store, read BEFORE the catalogue: a holder writes its
   * backup's record before it deletes the claim, so a missing claim means the
   * catalogue already shows that run's backup.
   */
  claim: ScheduleClaim | undefined;
  /** Start times (ms) of the newest full and the newest backup of any type in the repository's catalogue. */
  newestFull: number | undefined;
  newestAny: number | undefined;
  /** Start time (ms) of the newest logical dump in the repository. */
  newestDump: number | undefined;
}

export type ScheduleDecision =
  | { run: ScheduleClaim['type']; takeOver: boolean; reason: string }
  | { run: null; reason: string };

const hoursSince = (now: number, since: number | undefined) => (since === undefined ? Infinity : (now - since) / 3_600_000);

/**
 * Whether this agent starts a scheduled backup now (pure: the clock and every
 * record are inputs). Only the leader runs schedules; a full is due first;
 * a live claim of another member means its run is still going.
 */
export function decideSchedule(v: ScheduleView): ScheduleDecision {
  const { fullEveryHours, incrementalEveryHours, dumpEveryHours } = v.schedule;
  if (fullEveryHours === 0 && incrementalEveryHours === 0 && dumpEveryHours === 0) return { run: null, reason: 'no schedule' };
  if (v.leader !== v.self) return { run: null, reason: v.leader ? `${v.leader} holds the leader key and runs the schedules` : 'no leader: schedules wait for one' };
  let takeOver = false;
  if (v.claim) {
    const age = v.now - Date.parse(v.claim.heartbeatAt);
    // Our own claim with no run of ours going (the caller checks that first) was left by a previous agent process.
    // An unreadable heartbeat (NaN) is stale: a claim must never block schedules for ever.
    if (v.claim.member !== v.self && age <= CLAIM_STALE_MS) {
      return { run: null, reason: `${v.claim.member} is still running the scheduled ${v.claim.type === 'dump' ? 'dump' : `${v.claim.type} backup`} it started at ${v.claim.startedAt}` };
    }
    takeOver = true;
  }
  const stale = takeOver ? ` (taking over the claim ${v.claim!.member} left at ${v.claim!.heartbeatAt})` : '';
  if (fullEveryHours > 0 && hoursSince(v.now, v.newestFull) >= fullEveryHours) {
    return { run: 'full', takeOver, reason: `${v.newestFull === undefined ? 'no full backup yet' : `the newest full backup started ${hoursSince(v.now, v.newestFull).toFixed(2)} h ago`}, schedule every ${fullEveryHours} h${stale}` };
  }
  // An incremental needs a parent: with no full at all, the full above is due (or, with no full schedule, an incremental becomes a full in takeBackup).
  if (incrementalEveryHours > 0 && hoursSince(v.now, v.newestAny) >= incrementalEveryHours) {
    return { run: 'incremental', takeOver, reason: `the newest backup started ${hoursSince(v.now, v.newestAny).toFixed(2)} h ago, incrementals every ${incrementalEveryHours} h${stale}` };
  }
  // Base backups first: a dump due at the same time waits for the next check.
  if (dumpEveryHours > 0 && hoursSince(v.now, v.newestDump) >= dumpEveryHours) {
    return { run: 'dump', takeOver, reason: `${v.newestDump === undefined ? 'no dump yet' : `the newest dump started ${hoursSince(v.now, v.newestDump).toFixed(2)} h ago`}, dumps every ${dumpEveryHours} h${stale}` };
  }
  return { run: null, reason: 'no backup is due' };
}
