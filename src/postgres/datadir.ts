import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { OsUser } from '../util/os-user.js';
import { runPostgresProgram } from './exec.js';

export type DataDirState = 'empty' | 'initialized';

/** 'empty' covers a missing directory too: both mean "nothing to lose here". */
export function dataDirState(dataDir: string): DataDirState {
  if (!existsSync(dataDir)) return 'empty';
  if (existsSync(join(dataDir, 'PG_VERSION'))) return 'initialized';
  return readdirSync(dataDir).length === 0 ? 'empty' : 'initialized';
}

export function isStandbyConfigured(dataDir: string): boolean {
  return existsSync(join(dataDir, 'standby.signal'));
}

/** relevo.conf names an upstream: the walreceiver streams from it, or keeps reconnecting to it. */
export function isUpstreamConfigured(dataDir: string): boolean {
  try {
    return /^primary_conninfo\s*=/m.test(readFileSync(join(dataDir, 'relevo.conf'), 'utf8'));
  } catch {
    return false;
  }
}

export interface ControlData {
  systemIdentifier: string;
  clusterState: string;
  /**
   * The timeline this data directory is on: the newest of its last checkpoint's,
   * its minimum recovery point's, and the newest timeline history file in
   * pg_wal (a standby fetches N.history when it follows timeline N, long before
   * its next restartpoint records N in pg_control).
   */
  timeline: number;
  checkpointLsn: string;
  /** A standby's minimum recovery point (null when 0/0). */
  minRecoveryLsn: string | null;
}

/** Reads pg_control through pg_controldata (works whether or not PostgreSQL runs). */
export async function readControlData(binDir: string, user: OsUser, dataDir: string): Promise<ControlData> {
  const output = await runPostgresProgram(binDir, user, 'pg_controldata', ['-D', dataDir], {
    context: `reading pg_control of ${dataDir}`,
    timeoutMs: 10_000,
  });
  const field = (label: string): string => {
    const line = output.split('\n').find((l) => l.startsWith(`${label}:`));
    if (!line) throw new Error(`pg_controldata output of ${dataDir} lacks "${label}"`);
    return line.slice(label.length + 1).trim();
  };
  return {
    systemIdentifier: field('Database system identifier'),
    clusterState: field('Database cluster state'),
    timeline: Math.max(Number(field("Latest checkpoint's TimeLineID")), Number(field("Min recovery ending loc's timeline")), newestHistoryTimeline(dataDir)),
    checkpointLsn: field('Latest checkpoint location'),
    minRecoveryLsn: field('Minimum recovery ending location') === '0/0' ? null : field('Minimum recovery ending location'),
  };
}

/** The highest N of the N.history files in pg_wal (1 when there is none). */
export function newestHistoryTimeline(dataDir: string): number {
  let newest = 1;
  try {
    for (const name of readdirSync(join(dataDir, 'pg_wal'))) {
      const match = /^([0-9A-F]{8})\.history$/.exec(name);
      if (match) newest = Math.max(newest, parseInt(match[1]!, 16));
    }
  } catch {
    // no pg_wal (yet): timeline 1
  }
  return newest;
}

/**
 * Where `timeline` forked off its parent, from its history file (the last
 * line: "parent<TAB>switch LSN<TAB>reason"). The exact switch point: a
 * standby of the parent that replayed past it has diverged.
 */
export function timelineSwitchPoint(dataDir: string, timeline: number): { parent: number; lsn: string } | undefined {
  let text: string;
  try {
    text = readFileSync(join(dataDir, 'pg_wal', `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`), 'utf8');
  } catch {
    return undefined;
  }
  const last = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => /^\d+\s+[0-9A-F]+\/[0-9A-F]+/i.test(line))
    .at(-1);
  if (!last) return undefined;
  const [parent, lsn] = last.split(/\s+/);
  return { parent: Number(parent), lsn: lsn!.toUpperCase() };
}

/** PID of the running postmaster from postmaster.pid, or undefined when none runs. */
export function runningPostmasterPid(dataDir: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(join(dataDir, 'postmaster.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM means it exists but belongs to someone else: still running.
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  return isPostmaster(pid, dataDir) ? pid : undefined;
}

/** Guards against PID reuse: the process must be a postgres whose -D is this data directory. */
function isPostmaster(pid: number, dataDir: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return cmdline.some((arg) => arg.endsWith('postgres') || arg.endsWith('postmaster')) && cmdline.includes(dataDir);
  } catch {
    return false;
  }
}
