import { z } from 'zod';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BackupError } from './errors.js';
import { clusterDirName } from './layout.js';
import { DirectoryRepository, REPOSITORY_FORMAT, REPOSITORY_MARKER, type Repository } from './repository.js';

export const BackupFileSchema = z.object({
  path: z.string(),
  size: z.number(),
  mtime: z.number(),
  mode: z.number(),
  sha256: z.string(),
  /** Backup whose data/ holds the object: this one, or an ancestor for an unchanged file of an incremental. */
  ref: z.string(),
  storedSize: z.number(),
  storedSha256: z.string(),
  /** Big files: stored as gzip members of blockSize raw bytes each; their stored sizes. */
  blockSize: z.number().optional(),
  blocks: z.array(z.number()).optional(),
});
export type BackupFile = z.infer<typeof BackupFileSchema>;

export const BackupRecordSchema = z.object({
  id: z.string(),
  type: z.enum(['full', 'incremental']),
  parent: z.string().nullable(),
  cluster: z.string(),
  systemIdentifier: z.string(),
  /** Member the files were copied from, and whether it was the primary. */
  source: z.string(),
  fromPrimary: z.boolean(),
  startedAt: z.string(),
  finishedAt: z.string(),
  durationMs: z.number(),
  timeline: z.number(),
  startLsn: z.string(),
  /** Consistency point: recovery must replay WAL at least to here. */
  endLsn: z.string(),
  compression: z.object({ type: z.literal('gzip'), level: z.number() }),
  /** Bytes of the data directory (all files), and bytes this backup added to the repository. */
  sizeBytes: z.number(),
  storedBytes: z.number(),
  files: z.array(BackupFileSchema),
  directories: z.array(z.object({ path: z.string(), mode: z.number() })),
  symlinks: z.array(z.object({ path: z.string(), target: z.string() })),
  /**
   * Rows per table at `checkLsn`, counted on the source replica with replay
   * paused there, so a restore to exactly that LSN must show the same counts.
   * Null when the backup came from the primary (no pause is possible there).
   */
  rowCheck: z
    .object({ lsn: z.string(), counts: z.record(z.string(), z.number()) })
    .nullable(),
});
export type BackupRecord = z.infer<typeof BackupRecordSchema>;

export const VerifyReportSchema = z.object({
  backup: z.string(),
  at: z.string(),
  ok: z.boolean(),
  failedStep: z.string().nullable(),
  error: z.string().nullable(),
  steps: z.array(z.object({ step: z.string(), ok: z.boolean(), ms: z.number(), detail: z.string() })),
  /** Files restored and recovery to the consistency point: how long a real restore of this backup takes. */
  restoreMs: z.number().nullable(),
});
export type VerifyReport = z.infer<typeof VerifyReportSchema>;

export const RestorePointSchema = z.object({ name: z.string(), lsn: z.string(), timeline: z.number(), at: z.string() });
export type RestorePoint = z.infer<typeof RestorePointSchema>;

export const backupKey = (id: string) => `backups/${id}/backup.json`;
export const dataKey = (id: string, path: string) => `backups/${id}/data/${path}.gz`;

/** Opens the repository location for one cluster, refusing what is not a relevo repository. */
export function openClusterRepository(location: string, cluster: string, systemIdentifier: string, owner?: { uid: number; gid: number }): Repository {
  if (!existsSync(location)) throw new BackupError('REPOSITORY_UNREACHABLE', `repository ${location} does not exist (not mounted?)`);
  const marker = join(location, REPOSITORY_MARKER);
  let format: unknown;
  try {
    format = JSON.parse(readFileSync(marker, 'utf8')).format;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new BackupError('REPOSITORY_NOT_INITIALISED', `${location} is not a relevo repository (no ${REPOSITORY_MARKER})`);
    throw new BackupError('REPOSITORY_UNREACHABLE', `cannot read ${marker}: ${(error as Error).message}`);
  }
  if (format !== REPOSITORY_FORMAT) throw new BackupError('REPOSITORY_UNREACHABLE', `${location} has repository format ${String(format)}; this relevo reads format ${REPOSITORY_FORMAT}`);
  const dir = clusterDirName(cluster, systemIdentifier);
  if (!existsSync(join(location, dir))) {
    const held = readdirSync(location).filter((name) => /^[a-z][a-z0-9_-]*-\d+$/.test(name));
    const sameName = held.filter((name) => name.startsWith(`${cluster}-`));
    if (sameName.length > 0) {
      throw new BackupError('REPOSITORY_OTHER_CLUSTER', `repository ${location} holds ${sameName.join(', ')}, not cluster ${cluster} with system identifier ${systemIdentifier} (a re-initialised cluster of the same name?)`);
    }
    if (held.length > 0) throw new BackupError('REPOSITORY_OTHER_CLUSTER', `repository ${location} holds ${held.join(', ')} but not cluster ${cluster} (${dir})`);
    throw new BackupError('REPOSITORY_NOT_INITIALISED', `repository ${location} has no directory for cluster ${cluster} (${dir})`);
  }
  return new DirectoryRepository(join(location, dir), owner);
}

export async function loadBackup(repository: Repository, id: string): Promise<BackupRecord> {
  const info = await repository.stat(backupKey(id));
  if (!info) {
    const known = (await listBackups(repository)).map((b) => b.id);
    throw new BackupError('BACKUP_UNKNOWN', `no backup "${id}" in ${repository.location}; known: ${known.join(', ') || 'none'}`);
  }
  return BackupRecordSchema.parse(JSON.parse((await repository.readBuffer(backupKey(id))).toString('utf8')));
}

/** Complete backups (those with a backup.json), oldest first. */
export async function listBackups(repository: Repository): Promise<BackupRecord[]> {
  const out: BackupRecord[] = [];
  for (const id of await repository.children('backups')) {
    if (!(await repository.stat(backupKey(id)))) continue;
    out.push(BackupRecordSchema.parse(JSON.parse((await repository.readBuffer(backupKey(id))).toString('utf8'))));
  }
  return out.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
}

export async function latestVerification(repository: Repository, id: string): Promise<VerifyReport | undefined> {
  const names = (await repository.children(`backups/${id}`)).filter((n) => n.startsWith('verify-') && n.endsWith('.json') && !n.endsWith('.sha256'));
  const last = names.sort().pop();
  if (!last) return undefined;
  return VerifyReportSchema.parse(JSON.parse((await repository.readBuffer(`backups/${id}/${last}`)).toString('utf8')));
}

export async function listRestorePoints(repository: Repository): Promise<RestorePoint[]> {
  const out: RestorePoint[] = [];
  for (const name of await repository.children('restore-points')) {
    if (!name.endsWith('.json')) continue;
    out.push(RestorePointSchema.parse(JSON.parse((await repository.readBuffer(`restore-points/${name}`)).toString('utf8'))));
  }
  return out;
}

/** The chain of backups a restore of `record` needs, itself last. */
export async function backupChain(repository: Repository, record: BackupRecord): Promise<BackupRecord[]> {
  const chain = [record];
  let current = record;
  while (current.parent) {
    current = await loadBackup(repository, current.parent);
    chain.unshift(current);
  }
  return chain;
}

export function newBackupId(type: 'full' | 'incremental', now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${stamp}${type === 'full' ? 'F' : 'I'}`;
}
