/**
 * A base backup read straight from the data directory, for a source member on
 * this host: the files go from the page cache to zlib without PostgreSQL's
 * walsender, pg_basebackup and a tar stream in between (pgBackRest works the
 * same way). The caller holds a non-exclusive backup open (pg_backup_start)
 * for the whole walk. What is copied, and how a file that changes under the
 * reader is treated, follow PostgreSQL's own base backup
 * (src/backend/backup/basebackup.c, sendDir and sendFile):
 *  - skipped: the contents of pg_wal (the archive has the WAL), of
 *    pg_replslot, pg_dynshmem, pg_notify, pg_serial, pg_snapshots,
 *    pg_stat_tmp and pg_subtrans; postmaster.pid/.opts, a stale backup_label
 *    or tablespace_map, pg_internal.init, *.tmp leftovers of the server,
 *    pgsql_tmp*, temporary relations, and the non-init forks of unlogged ones;
 *  - a file that vanished before it was opened is left out (a dropped table:
 *    WAL replay drops it too);
 *  - a file is read up to the size it had when listed: what was appended
 *    after that comes back from WAL; a file that shrank meanwhile is padded
 *    with zeros to that size, as pg_basebackup does (the truncation is in WAL);
 *  - torn pages are fine: the backup starts with a checkpoint and full-page
 *    writes are on for the duration, so replay overwrites them.
 * global/pg_control is read last, like the server sends it.
 * The entries go to the same sink as pg_basebackup's tar stream (tar.ts), so
 * both paths store identical backups.
 */
import { constants } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { TarEntry, TarSink } from './tar.js';

const EXCLUDED_CONTENTS = new Set(['pg_wal', 'pg_replslot', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_stat_tmp', 'pg_subtrans']);
const EXCLUDED_FILES = new Set(['postmaster.pid', 'postmaster.opts', 'backup_label', 'tablespace_map', 'backup_manifest', 'postgresql.auto.conf.tmp', 'current_logfiles.tmp']);
/** A relation file name: relfilenode, optional fork, optional segment. */
const RELATION = /^(\d+)(?:_(fsm|vm|init))?(?:\.\d+)?$/;
const TEMP_RELATION = /^t\d+_\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$/;
/** Reads of a big file, and the unit a sink gets them in. */
export const READ_BYTES = 4 * 1024 * 1024;

export type DataDirEntry = TarEntry;

/** Whether `dir` (relative) holds relation files: base/<oid> and global. */
function isDatabaseDir(rel: string): boolean {
  return rel === 'global' || /^base\/\d+$/.test(rel);
}

/** Lists what a base backup copies, parents before children, global/pg_control last. */
export async function listDataDir(root: string): Promise<DataDirEntry[]> {
  const out: DataDirEntry[] = [];
  let control: DataDirEntry | undefined;
  const walk = async (rel: string): Promise<void> => {
    let names: string[];
    try {
      names = (await readdir(rel ? join(root, rel) : root)).sort();
    } catch (error) {
      // A database dropped while we walk.
      if (rel && (error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    const unloggedWithInit = new Set<string>();
    if (isDatabaseDir(rel)) for (const name of names) if (/^\d+_init$/.test(name)) unloggedWithInit.add(name.slice(0, -'_init'.length));
    for (const name of names) {
      const path = rel ? `${rel}/${name}` : name;
      if (EXCLUDED_FILES.has(name) || name.startsWith('pg_internal.init') || name.startsWith('pgsql_tmp')) continue;
      if (isDatabaseDir(rel)) {
        if (TEMP_RELATION.test(name)) continue;
        const relation = RELATION.exec(name);
        if (relation && unloggedWithInit.has(relation[1]!) && relation[2] !== 'init') continue;
      }
      let info;
      try {
        info = await lstat(join(root, path));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw error;
      }
      const common = { name: path, mode: info.mode & 0o7777, mtime: Math.floor(info.mtimeMs / 1000), size: 0, linkTarget: '' };
      // pg_wal may be a symbolic link (initdb -X): an empty directory in the backup either way.
      if (path === 'pg_wal') {
        out.push({ ...common, type: 'directory', mode: 0o700 }, { ...common, name: 'pg_wal/archive_status', type: 'directory', mode: 0o700 });
        continue;
      }
      if (info.isSymbolicLink()) {
        out.push({ ...common, type: 'symlink', linkTarget: await readlink(join(root, path)) });
      } else if (info.isDirectory()) {
        out.push({ ...common, type: 'directory' });
        if (!EXCLUDED_CONTENTS.has(name)) await walk(path);
      } else if (info.isFile()) {
        const entry: DataDirEntry = { ...common, type: 'file', size: info.size };
        if (path === 'global/pg_control') control = entry;
        else out.push(entry);
      }
      // Sockets, pipes and devices: not data.
    }
  };
  await walk('');
  if (!control) throw new Error(`${root} has no global/pg_control: not a PostgreSQL data directory`);
  out.push(control);
  return out;
}

/** Tablespaces (links under pg_tblspc): the direct read covers the main data directory only. */
export async function hasTablespaces(root: string): Promise<boolean> {
  try {
    return (await readdir(join(root, 'pg_tblspc'))).length > 0;
  } catch {
    return false;
  }
}

export interface FeedStats {
  files: number;
  bytes: number;
  /** Files gone before they could be opened. */
  vanished: string[];
  /** Files shorter than listed, padded with zeros. */
  shrunk: string[];
}

/**
 * Reads every listed entry into `sink`, as the tar reader would: a file's
 * body is written in chunks (whole for a small file, READ_BYTES otherwise)
 * and ended. A small file's chunk is a fresh buffer the sink may keep; a big
 * file's chunks are read into the body's buffer() when it has one, else into
 * one reused buffer, valid until the write resolves.
 */
export async function feedDataDir(root: string, entries: DataDirEntry[], sink: TarSink, wholeFileBytes: number): Promise<FeedStats> {
  const stats: FeedStats = { files: 0, bytes: 0, vanished: [], shrunk: [] };
  let readBuffer: Buffer | undefined;
  const bigFileBuffer = (offered: Buffer | undefined, want: number) => (offered && offered.length >= want ? offered : (readBuffer ??= Buffer.allocUnsafeSlow(READ_BYTES)));
  for (const entry of entries) {
    if (entry.type !== 'file') {
      await sink.entry(entry);
      continue;
    }
    let handle;
    try {
      // O_NOFOLLOW: a link planted in place of a file is not followed.
      handle = await open(join(root, entry.name), constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        stats.vanished.push(entry.name);
        continue;
      }
      throw error;
    }
    try {
      const body = await sink.entry(entry);
      if (!body) continue;
      let done = 0;
      let short = false;
      while (done < entry.size) {
        const want = Math.min(entry.size - done, entry.size <= wholeFileBytes ? entry.size : READ_BYTES);
        const chunk = entry.size <= wholeFileBytes ? Buffer.allocUnsafe(want) : bigFileBuffer(body.buffer?.(), want).subarray(0, want);
        let filled = 0;
        while (filled < want && !short) {
          const { bytesRead } = await handle.read(chunk, filled, want - filled, done + filled);
          if (bytesRead === 0) short = true;
          filled += bytesRead;
        }
        // Shrunk while we read: zeros to the listed size (the truncation is replayed from WAL).
        if (filled < want) chunk.fill(0, filled);
        await body.write(chunk);
        done += want;
      }
      if (short) stats.shrunk.push(entry.name);
      await body.end();
      stats.files++;
      stats.bytes += entry.size;
    } finally {
      await handle.close();
    }
  }
  return stats;
}
