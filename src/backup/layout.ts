import { parseLsn } from '../postgres/lsn.js';

/**
 * Repository layout (docs/backup.md draws it):
 *   <location>/relevo-repository.json            marker: format version (written by `relevo backup init`)
 *   <location>/<cluster>-<system id>/            one directory per cluster; several share a location
 *     wal/<timeline+log, 16 hex>/<segment>        WAL segments (+ .sha256 sidecars)
 *     wal/other/<name>                            timeline history, .partial and .backup files
 *     backups/<id>/backup.json                    the backup record, written last: the backup exists once it does
 *     backups/<id>/data/<path>.gz                 the backup's files (only changed ones for an incremental)
 *     backups/<id>/backup_manifest                PostgreSQL's manifest (pg_verifybackup), from pg_basebackup only
 *     backups/<id>/verify-<time>.json             each restore drill's report
 *     restore-points/<name>.json                  named restore points
 *     conflicts/                                  WAL refused because a different copy was there first
 *     log/<time>-<what>.json                      deletions by retention, with their reason
 */
export const WAL_SEGMENT_BYTES = 16 * 1024 * 1024;
const SEGMENTS_PER_LOG = 0x100000000 / WAL_SEGMENT_BYTES;

export function clusterDirName(cluster: string, systemIdentifier: string): string {
  return `${cluster}-${systemIdentifier}`;
}

export function walKey(name: string): string {
  return /^[0-9A-F]{24}/.test(name) ? `wal/${name.slice(0, 16)}/${name}` : `wal/other/${name}`;
}

export interface Segment {
  timeline: number;
  /** Segment number from the start of WAL. */
  number: bigint;
}

export function parseSegmentName(name: string): Segment | undefined {
  const match = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/.exec(name);
  if (!match) return undefined;
  return { timeline: parseInt(match[1]!, 16), number: BigInt(`0x${match[2]}`) * BigInt(SEGMENTS_PER_LOG) + BigInt(`0x${match[3]}`) };
}

const hex8 = (n: number | bigint) => n.toString(16).toUpperCase().padStart(8, '0');

export function segmentName(segment: Segment): string {
  const perLog = BigInt(SEGMENTS_PER_LOG);
  return `${hex8(segment.timeline)}${hex8(segment.number / perLog)}${hex8(segment.number % perLog)}`;
}

export function segmentOfLsn(lsn: string): bigint {
  return parseLsn(lsn) / BigInt(WAL_SEGMENT_BYTES);
}

export function formatLsn(value: bigint): string {
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Timeline history file content: "parentTLI switchpoint reason" per line. */
export interface TimelineSwitch {
  parent: number;
  child: number;
  /** First LSN that belongs to the child timeline. */
  switchLsn: bigint;
}

export function parseHistory(child: number, text: string): TimelineSwitch[] {
  const out: TimelineSwitch[] = [];
  const lines = text.split('\n').filter((line) => /^\s*\d+\s+[0-9A-Fa-f]+\/[0-9A-Fa-f]+/.test(line));
  lines.forEach((line, index) => {
    const [parent, lsn] = line.trim().split(/\s+/);
    const next = index + 1 < lines.length ? Number(lines[index + 1]!.trim().split(/\s+/)[0]) : child;
    out.push({ parent: Number(parent), child: next, switchLsn: parseLsn(lsn!) });
  });
  return out;
}

export interface ChainGap {
  timeline: number;
  segment: string;
}

/**
 * Which segments a recovery from `fromLsn` on `fromTimeline` to the newest
 * archived WAL reads, given the archived segment names and the newest
 * timeline's history, and which of those are missing. At a switch point the
 * child timeline's copy of the segment carries the parent's records, so the
 * parent's own copy of that segment (often only a .partial) is not needed.
 */
export function walChainGaps(archived: Set<string>, history: TimelineSwitch[], fromTimeline: number, fromLsn: string): { gaps: ChainGap[]; last: string | undefined } {
  const byTimeline = new Map<number, bigint[]>();
  for (const name of archived) {
    const seg = parseSegmentName(name);
    if (seg) byTimeline.set(seg.timeline, [...(byTimeline.get(seg.timeline) ?? []), seg.number]);
  }
  const newest = Math.max(fromTimeline, ...history.map((h) => h.child), ...byTimeline.keys());
  const gaps: ChainGap[] = [];
  let timeline = fromTimeline;
  let next = segmentOfLsn(fromLsn);
  let last: string | undefined;
  for (;;) {
    const switchHere = history.find((h) => h.parent === timeline && h.child <= newest);
    const end = switchHere ? switchHere.switchLsn / BigInt(WAL_SEGMENT_BYTES) : Math.max(-1, ...(byTimeline.get(timeline) ?? []).map(Number));
    const endSegment = typeof end === 'bigint' ? end : BigInt(end);
    for (let n = next; switchHere ? n < endSegment : n <= endSegment; n++) {
      const name = segmentName({ timeline, number: n });
      if (!archived.has(name)) gaps.push({ timeline, segment: name });
      else last = name;
    }
    if (!switchHere) break;
    timeline = switchHere.child;
    next = endSegment;
  }
  return { gaps, last };
}
