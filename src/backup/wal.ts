import { parseLsn } from '../postgres/lsn.js';
import { primaryOf, sqlOn, type BackupContext } from './context.js';
import { BackupError } from './errors.js';
import { formatLsn, parseHistory, parseSegmentName, segmentName, segmentOfLsn, WAL_SEGMENT_BYTES, walChainGaps, walKey, type TimelineSwitch } from './layout.js';
import type { Repository } from './repository.js';

/** Names of every archived WAL segment (24 hex digits), any timeline. */
export async function archivedSegments(repository: Repository): Promise<Map<string, { size: number; mtimeMs: number }>> {
  const out = new Map<string, { size: number; mtimeMs: number }>();
  for (const info of await repository.list('wal')) {
    const name = info.key.split('/').pop()!;
    if (parseSegmentName(name)) out.set(name, { size: info.size, mtimeMs: info.mtimeMs });
  }
  return out;
}

/** The newest timeline's history as archived (empty on timeline 1). */
export async function archivedHistory(repository: Repository): Promise<{ timeline: number; switches: TimelineSwitch[] }> {
  const names = (await repository.children('wal/other')).filter((n) => /^[0-9A-F]{8}\.history$/.test(n)).sort();
  const newest = names.pop();
  if (!newest) return { timeline: 1, switches: [] };
  const timeline = parseInt(newest.slice(0, 8), 16);
  return { timeline, switches: parseHistory(timeline, (await repository.readBuffer(`wal/other/${newest}`)).toString('utf8')) };
}

export interface ArchiveEnd {
  /** The newest archived segment and the LSN where it ends. */
  segment: string;
  lsn: string;
  /** When it was archived: every commit in it happened before. */
  at: Date;
}

export async function archiveEnd(repository: Repository): Promise<ArchiveEnd | undefined> {
  let best: { name: string; timeline: number; number: bigint; mtimeMs: number } | undefined;
  for (const [name, info] of await archivedSegments(repository)) {
    const seg = parseSegmentName(name)!;
    if (!best || seg.timeline > best.timeline || (seg.timeline === best.timeline && seg.number > best.number)) best = { name, ...seg, mtimeMs: info.mtimeMs };
  }
  if (!best) return undefined;
  return { segment: best.name, lsn: formatLsn((best.number + 1n) * BigInt(WAL_SEGMENT_BYTES)), at: new Date(best.mtimeMs) };
}

/** Missing segments between a backup's start and the newest archived WAL, across timelines. */
export async function walGaps(repository: Repository, timeline: number, fromLsn: string) {
  const segments = new Set((await archivedSegments(repository)).keys());
  const { switches } = await archivedHistory(repository);
  return walChainGaps(segments, switches, timeline, fromLsn);
}

/**
 * Waits until every segment from `fromLsn` to `toLsn` on `timeline` is in the
 * repository, asking the primary to finish its current segment meanwhile.
 */
export async function waitForWal(ctx: BackupContext, timeline: number, fromLsn: string, toLsn: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const first = segmentOfLsn(fromLsn);
  const last = segmentOfLsn(toLsn);
  let next = first;
  const started = Date.now();
  // The end segment is usually archived within a few hundred ms of the backup's end
  // (pg_backup_stop switches segments on a primary): short polls first, a second at most later.
  let pause = 50;
  for (;;) {
    while (next <= last && (await ctx.repository.stat(walKey(segmentName({ timeline, number: next }))))) next++;
    if (next > last) return;
    if (Date.now() > deadline) {
      throw new BackupError('WAL_MISSING', `WAL segment ${segmentName({ timeline, number: next })} (needed for ${fromLsn}..${toLsn}) did not reach the archive within ${timeoutMs / 1000} s`);
    }
    const primary = primaryOf(ctx);
    if (primary && Date.now() - started >= 1_000) await sqlOn(ctx, primary, (c) => c.query('SELECT pg_switch_wal()'), 'postgres', 5_000).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(1_000, pause * 2);
  }
}

export function lsnAtLeast(a: string, b: string): boolean {
  return parseLsn(a) >= parseLsn(b);
}
