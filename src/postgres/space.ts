/**
 * Free space before a reclone. relevo never deletes a data directory: one
 * that cannot rejoin is moved aside (`<dataDir>.moved-<time>`) on the same
 * disk. A clone next to such copies may not fit; it then fails with ENOSPC
 * again and again while the member waits (chaos seed 4242: a full pg_wal disk,
 * a copy moved aside, every pg_basebackup failing). Instead the clone is
 * refused up front with CLONE_NO_SPACE, naming each moved-aside copy and its
 * size, so the operator knows what to remove.
 */
import { lstatSync, readdirSync, statfsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export interface MovedAsideCopy {
  path: string;
  bytes: number;
}

/** Bytes used by the files under `path` (symbolic links not followed). */
export function treeBytes(path: string): number {
  let total = 0;
  const stack = [path];
  while (stack.length > 0) {
    const current = stack.pop()!;
    let stats;
    try {
      stats = lstatSync(current);
    } catch {
      continue;
    }
    total += stats.blocks * 512;
    if (!stats.isDirectory()) continue;
    try {
      for (const name of readdirSync(current)) stack.push(join(current, name));
    } catch {
      // unreadable: counted as its own size only
    }
  }
  return total;
}

/** The moved-aside copies of `dataDir` next to it, newest first. */
export function movedAsideCopies(dataDir: string): MovedAsideCopy[] {
  const prefix = `${basename(dataDir)}.moved-`;
  let names: string[];
  try {
    names = readdirSync(dirname(dataDir)).filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
  return names
    .sort()
    .reverse()
    .map((n) => join(dirname(dataDir), n))
    .map((path) => ({ path, bytes: treeBytes(path) }));
}

/** Bytes an unprivileged writer may still use on the filesystem holding `path`. */
export function freeBytes(path: string): number {
  const s = statfsSync(path);
  return s.bavail * s.bsize;
}

const mb = (bytes: number) => `${Math.round(bytes / 1024 / 1024)} MB`;

export class CloneNoSpaceError extends Error {
  readonly code = 'CLONE_NO_SPACE';
  /** Retried with the clone backoff: the operator frees space, the member goes on by itself. */
  readonly retryable = true;
  constructor(dataDir: string, free: number, need: number | undefined, copies: readonly MovedAsideCopy[], cause?: string) {
    super(
      `CLONE_NO_SPACE: the clone into ${dataDir} does not fit: ${mb(free)} free${need !== undefined ? `, about ${mb(need)} needed` : ''}${cause ? ` (${cause.slice(0, 200)})` : ''}; ` +
        (copies.length > 0
          ? `moved-aside copies of this data directory on the same disk (relevo never deletes them): ${copies.map((c) => `${c.path} (${mb(c.bytes)})`).join(', ')}; remove the ones you no longer need`
          : 'no moved-aside copy of this data directory is on that disk: free space or grow the disk'),
    );
    this.name = 'CloneNoSpaceError';
  }
}

/**
 * Before a clone: the size it needs is estimated from the newest moved-aside
 * copy without its pg_wal (the same cluster's data; WAL is streamed anew). Only
 * checked when there is such a copy: a first clone has nothing to compare with
 * and finds out from pg_basebackup.
 */
export function checkCloneSpace(dataDir: string, copies: readonly MovedAsideCopy[], free: number): CloneNoSpaceError | undefined {
  const newest = copies[0];
  if (!newest) return undefined;
  const need = newest.bytes - treeBytes(join(newest.path, 'pg_wal')) + 64 * 1024 * 1024;
  return free < need ? new CloneNoSpaceError(dataDir, free, need, copies) : undefined;
}
