import type { MemberStatus } from '../cluster/types.js';
import type { ClusterSettings } from '../cluster/settings.js';
import type { MemberConfig } from '../config/member.js';

/**
 * A delayed replica (member setting `delay`, docs/undo.md) in the tags it
 * publishes: every rule that reads tags (election, manual failover and
 * switchover, rolling restart, synchronous standby choice, read-only routing)
 * then treats it the same way without knowing about delays.
 */
export function effectiveTags(config: MemberConfig, settings: ClusterSettings): MemberConfig['tags'] {
  const delay = config.delay;
  if (!delay) return config.tags;
  const walFeed = archiveFeedUsable(config, settings) ? 'archive' : 'stream';
  return { ...config.tags, nofailover: true, nosync: true, noloadbalance: !delay.routeReads, applyDelayMs: delay.apply, walFeed };
}

/** The configured apply delay a member publishes, or undefined when it is not a delayed replica. */
export function applyDelayOf(status: Pick<MemberStatus, 'tags'>): number | undefined {
  const ms = status.tags.applyDelayMs;
  return typeof ms === 'number' && ms > 0 ? ms : undefined;
}

/** A running replica fed from the WAL archive: the primary keeps no slot for it. */
export function isArchiveFed(status: Pick<MemberStatus, 'tags' | 'role' | 'state'>): boolean {
  return status.tags.walFeed === 'archive' && status.role === 'replica' && status.state === 'replica';
}

/** relevo.conf includes this file last: recover-table's recovery target lives here while it runs (src/agent/replay.ts). */
export const RECOVERY_TARGET_FILE = 'relevo-recovery.conf';

/** PostgreSQL parameters a delayed member adds to relevo.conf (ignored while it is a primary). */
export function delayParameters(config: MemberConfig): Record<string, string> {
  return config.delay ? { recovery_min_apply_delay: `${config.delay.apply}ms` } : {};
}

/**
 * A recovery target: just before a WAL position (the destructive transaction's first record, as
 * recover-table uses it), just before a transaction commits, or just before a time.
 */
export type RecoveryTarget = { lsn: string } | { xid: string } | { time: string };

/**
 * The target settings a recover-table run puts in RECOVERY_TARGET_FILE: replay
 * without delay up to just before the target, then pause (never promote).
 */
export function renderRecoveryTarget(target: RecoveryTarget): string {
  const lines = [
    '# Written by relevo recover-table while it runs; removed (and the delay restored) when it ends.',
    `recovery_min_apply_delay = 0`,
    'lsn' in target ? `recovery_target_lsn = '${target.lsn}'` : 'xid' in target ? `recovery_target_xid = '${target.xid}'` : `recovery_target_time = '${target.time}'`,
    `recovery_target_inclusive = off`,
    `recovery_target_action = 'pause'`,
  ];
  return `${lines.join('\n')}\n`;
}

/** Checks a target's shape before it goes into a configuration file. */
export function checkRecoveryTarget(target: { lsn?: unknown; xid?: unknown; time?: unknown }): RecoveryTarget | string {
  const given = [target.lsn, target.xid, target.time].filter((v) => v !== undefined).length;
  if (given !== 1) return 'expected one of {"lsn": "<X/Y>"}, {"xid": "<transaction id>"} or {"time": "<ISO time>"}';
  if (typeof target.lsn === 'string' && /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/i.test(target.lsn)) return { lsn: target.lsn.toUpperCase() };
  if (typeof target.xid === 'string' && /^\d{1,10}$/.test(target.xid) && target.time === undefined) return { xid: target.xid };
  if (typeof target.time === 'string' && target.xid === undefined && !Number.isNaN(Date.parse(target.time))) return { time: new Date(Date.parse(target.time)).toISOString() };
  return 'expected one of {"lsn": "<X/Y>"}, {"xid": "<transaction id>"} or {"time": "<ISO time>"}';
}

/**
 * How a delayed member follows: the recovery target file is included, and
 * with feed "archive" (and a backup repository to restore from) no
 * primary_conninfo or slot is written. Without a repository it streams.
 */
export function delayedStandby(config: MemberConfig, settings: ClusterSettings): { archiveFed?: boolean; includeFile?: string } {
  if (!config.delay) return {};
  return { includeFile: RECOVERY_TARGET_FILE, ...(archiveFeedUsable(config, settings) ? { archiveFed: true } : {}) };
}

export function archiveFeedUsable(config: MemberConfig, settings: ClusterSettings): boolean {
  return config.delay?.feed === 'archive' && settings.backup.repository !== undefined;
}
