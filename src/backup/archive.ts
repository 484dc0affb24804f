import { closeSync, openSync, readSync } from 'node:fs';
import { readdir, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackupSettings } from '../cluster/backup-settings.js';
import { clusterDirName, WAL_SEGMENT_BYTES } from './layout.js';

/** The shell programs PostgreSQL runs (libexec/ at the top of the installation). */
export const LIBEXEC = fileURLToPath(new URL('../../../libexec/', import.meta.url));

const shellQuote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;

/**
 * The system identifier from global/pg_control: its first field, a uint64 in
 * the server's byte order (little-endian on every platform Debian's
 * PostgreSQL 15 packages target). Read directly: no program start per call.
 */
export function readSystemIdentifier(dataDir: string): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(join(dataDir, 'global', 'pg_control'), 'r');
    const buffer = Buffer.alloc(8);
    if (readSync(fd, buffer, 0, 8, 0) !== 8) return undefined;
    return buffer.readBigUInt64LE(0).toString();
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * PostgreSQL parameters for the WAL archive, merged into relevo.conf. Every
 * member archives (archive_mode = always): a replica pushes each segment it
 * received, so segments the primary finished but had not pushed when it died
 * still reach the repository from the member that takes over. Identical copies
 * are accepted once (same checksum); a different copy is a conflict.
 */
export function archiveParameters(backup: BackupSettings, cluster: string, dataDir: string): Record<string, string | number> {
  if (!backup.repository) return {};
  const systemIdentifier = readSystemIdentifier(dataDir);
  if (!systemIdentifier) return {};
  const dir = clusterDirName(cluster, systemIdentifier);
  const repo = shellQuote(backup.repository);
  return {
    archive_mode: 'always',
    archive_command: `${shellQuote(join(LIBEXEC, 'relevo-wal-push'))} ${repo} ${dir} %p %f`,
    restore_command: `${shellQuote(join(LIBEXEC, 'relevo-wal-get'))} ${repo} ${dir} %f %p`,
    archive_timeout: backup.archiveTimeoutSeconds,
  };
}

export interface ArchiveBacklog {
  /** Segments and other files waiting for archive_command (.ready in pg_wal/archive_status). */
  readyFiles: number;
  bytes: number;
  oldest: string | null;
  /** Free bytes on pg_wal's filesystem. */
  freeBytes: number | null;
}

export async function measureBacklog(dataDir: string): Promise<ArchiveBacklog> {
  const names = (await readdir(join(dataDir, 'pg_wal', 'archive_status'))).filter((n) => n.endsWith('.ready')).sort();
  let freeBytes: number | null = null;
  try {
    const fs = await statfs(join(dataDir, 'pg_wal'));
    freeBytes = fs.bavail * fs.bsize;
  } catch {
    freeBytes = null;
  }
  const segments = names.filter((n) => /^[0-9A-F]{24}\.ready$/.test(n)).length;
  return { readyFiles: names.length, bytes: segments * WAL_SEGMENT_BYTES, oldest: names[0]?.replace(/\.ready$/, '') ?? null, freeBytes };
}

export type BacklogLevel = 'ok' | 'warn' | 'limit';

/** Warn from backlogWarnBytes, or earlier when pg_wal's disk has less free space left than twice the backlog. */
export function backlogLevel(backlog: ArchiveBacklog, settings: BackupSettings): BacklogLevel {
  if (backlog.bytes >= settings.backlogLimitBytes) return 'limit';
  if (backlog.bytes >= settings.backlogWarnBytes) return 'warn';
  if (backlog.bytes > 0 && backlog.freeBytes !== null && backlog.freeBytes < 2 * backlog.bytes) return 'warn';
  return 'ok';
}

/**
 * A standby cluster fed from its source's WAL archive as well as by streaming
 * (docs/sites.md): restore_command reads the source cluster's archive. It
 * replaces the one archiveParameters() gives, which reads this cluster's own.
 */
export function sourceArchiveParameters(sourceRepository: string | undefined, sourceCluster: string, dataDir: string): Record<string, string> {
  if (!sourceRepository) return {};
  const systemIdentifier = readSystemIdentifier(dataDir);
  if (!systemIdentifier) return {};
  return { restore_command: `${shellQuote(join(LIBEXEC, 'relevo-wal-get'))} ${shellQuote(sourceRepository)} ${clusterDirName(sourceCluster, systemIdentifier)} %f %p` };
}
