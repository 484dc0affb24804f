/**
 * Timeline history files a standby lacks, written before it promotes.
 *
 * PostgreSQL names the timeline of a promotion after the newest N.history it
 * finds in pg_wal (or the archive), plus one. A standby that never streamed
 * from the member that started timeline N (it was cut off, or rewound from an
 * older primary) has no N.history and would start timeline N a second time:
 * two promotions, one timeline number (chaos seed 2027, fault 73), and
 * pg_rewind and timeline following can no longer tell the two lines apart.
 * The cluster's history record names every timeline started so far; the
 * missing files are written from it, so the promotion takes a number nobody
 * has used. Their lines are what the record knows (parent, fork position); the
 * new timeline's own history file is written by PostgreSQL from our real one.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { HistoryEntry } from '../cluster/types.js';
import { writeOwnedFile } from './owned-fs.js';
import type { OsUser } from '../util/os-user.js';

export function historyFileName(timeline: number): string {
  return `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
}

/**
 * The text of `timeline`'s history file from the cluster's history record:
 * one line per earlier promotion ("parent TAB fork position TAB reason"),
 * oldest first, the parent being the previous entry's timeline.
 */
export function historyFileText(history: readonly HistoryEntry[], timeline: number): string {
  const entries = history
    .filter((h) => h.timeline <= timeline && h.lsn !== null && /^[0-9A-F]+\/[0-9A-F]+$/i.test(h.lsn))
    .sort((a, b) => a.timeline - b.timeline);
  const lines: string[] = [];
  let parent = 1;
  for (const h of entries) {
    // A reused number (written before this fix) keeps its first entry: one line per switch.
    if (h.timeline <= parent) continue;
    lines.push(`${parent}\t${h.lsn!.toUpperCase()}\trelevo: ${h.to} promoted (${h.reason.replace(/[\t\n]/g, ' ')}); written from the cluster history`);
    parent = h.timeline;
  }
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

/** Timelines from `localNewest + 1` to `upTo` whose history file is missing in pg_wal. */
export function missingHistoryTimelines(pgWal: string, localNewest: number, upTo: number): number[] {
  const out: number[] = [];
  for (let t = Math.max(2, localNewest + 1); t <= upTo; t++) if (!existsSync(join(pgWal, historyFileName(t)))) out.push(t);
  return out;
}

/** Writes the missing history files up to `upTo`; returns the timelines written. */
export function writeMissingHistoryFiles(dataDir: string, user: OsUser, history: readonly HistoryEntry[], localNewest: number, upTo: number): number[] {
  const pgWal = join(dataDir, 'pg_wal');
  const missing = missingHistoryTimelines(pgWal, localNewest, upTo);
  for (const t of missing) writeOwnedFile(join(pgWal, historyFileName(t)), historyFileText(history, t), user);
  return missing;
}
