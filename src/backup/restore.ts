import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, readdirSync, readFileSync } from 'node:fs';
import { lchown, lstat, mkdir, open, readdir, rename, rm, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGunzip, gunzip } from 'node:zlib';
import { parseLsn } from '../postgres/lsn.js';
import { runningAsRoot, type OsUser } from '../util/os-user.js';
import { LIBEXEC } from './archive.js';
import { dataKey, listBackups, listRestorePoints, loadBackup, type BackupFile, type BackupRecord } from './catalog.js';
import type { BackupContext } from './context.js';
import { BackupError } from './errors.js';
import { appendNoFollow, CREATE_NEW, fsyncPath, sha256File } from './files.js';
import { HashWorker } from './hasher.js';
import { JobPool } from './pool.js';
import { DirectoryRepository, type Repository } from './repository.js';

const gunzipAsync = promisify(gunzip);
/** A big file's blocks (4 MB each) between two fdatasync calls while it is restored. */
const WRITEBACK_EVERY_BLOCKS = 16;
import { archiveEnd } from './wal.js';

export type RestoreTarget =
  | { kind: 'latest' }
  /** Stop at the end of the backup (consistency), no further WAL. */
  | { kind: 'immediate' }
  | { kind: 'time'; time: Date }
  | { kind: 'lsn'; lsn: string; inclusive?: boolean }
  | { kind: 'xid'; xid: string }
  | { kind: 'name'; name: string };

/** One recovery target from the command line's options (or backup.bootstrapFrom); none: the latest. */
export function parseTarget(options: { time?: string; lsn?: string; xid?: string; name?: string; latest?: boolean }): RestoreTarget {
  const given = (['time', 'lsn', 'xid', 'name', 'latest'] as const).filter((k) => options[k] !== undefined && options[k] !== false);
  if (given.length > 1) throw new BackupError('TARGET_INVALID', `give one recovery target, not ${given.map((g) => `--${g}`).join(' and ')}`);
  if (options.time !== undefined) {
    const time = new Date(options.time);
    if (Number.isNaN(time.getTime())) throw new BackupError('TARGET_INVALID', `--time "${options.time}" is not a time (ISO 8601, e.g. 2026-12-01T10:15:00Z)`);
    return { kind: 'time', time };
  }
  if (options.lsn !== undefined) {
    if (!/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(options.lsn)) throw new BackupError('TARGET_INVALID', `--lsn "${options.lsn}" is not an LSN (e.g. 0/3000060)`);
    return { kind: 'lsn', lsn: options.lsn.toUpperCase() };
  }
  if (options.xid !== undefined) return { kind: 'xid', xid: options.xid };
  if (options.name !== undefined) return { kind: 'name', name: options.name };
  return { kind: 'latest' };
}

export interface RestorePlan {
  backup: BackupRecord;
  /** Recovery parameters for postgresql.auto.conf. */
  recovery: Record<string, string>;
  range: string;
}

function sanitize(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/**
 * Picks the backup for a target and refuses targets the repository cannot
 * reach, naming the range it can: from the oldest backup's consistency point
 * to the end of the newest archived segment.
 */
export async function planRestore(ctx: BackupContext, target: RestoreTarget, backupId?: string, action: 'promote' | 'pause' | 'shutdown' = 'promote'): Promise<RestorePlan> {
  const backups = await listBackups(ctx.repository);
  if (backups.length === 0) throw new BackupError('NO_BACKUP', `no backup of cluster ${ctx.cluster} in ${ctx.repository.location}`);
  const end = await archiveEnd(ctx.repository);
  const first = backups[0]!;
  const range = `available: times ${first.finishedAt} .. ${end?.at.toISOString() ?? first.finishedAt}, LSNs ${first.endLsn} .. ${end?.lsn ?? first.endLsn}`;
  const candidates = backupId ? [await loadBackup(ctx.repository, backupId)] : backups;
  const recovery: Record<string, string> = { recovery_target_timeline: 'latest', recovery_target_action: action };
  let backup: BackupRecord | undefined;
  const byLsn = (lsn: string, what: string) => {
    if (end && parseLsn(lsn) > parseLsn(end.lsn)) throw new BackupError('TARGET_OUT_OF_RANGE', `${what} is past the end of the archive; ${range}`);
    backup = [...candidates].reverse().find((b) => parseLsn(b.endLsn) <= parseLsn(lsn));
    if (!backup) throw new BackupError('TARGET_OUT_OF_RANGE', `${what} is before the ${backupId ? `end of backup ${backupId}` : 'oldest backup'}; ${range}`);
  };
  switch (target.kind) {
    case 'latest':
      backup = candidates[candidates.length - 1];
      break;
    case 'immediate':
      backup = candidates[candidates.length - 1];
      recovery.recovery_target = 'immediate';
      break;
    case 'time': {
      const what = `target time ${target.time.toISOString()}`;
      if (end && target.time.getTime() > end.at.getTime()) throw new BackupError('TARGET_OUT_OF_RANGE', `${what} is after the newest archived WAL; ${range}`);
      backup = [...candidates].reverse().find((b) => Date.parse(b.finishedAt) <= target.time.getTime());
      if (!backup) throw new BackupError('TARGET_OUT_OF_RANGE', `${what} is before the ${backupId ? `end of backup ${backupId}` : 'oldest backup'}; ${range}`);
      // PostgreSQL's own format: it refuses ISO 8601's "T" and "Z" here.
      recovery.recovery_target_time = target.time.toISOString().replace('T', ' ').replace('Z', '+00');
      break;
    }
    case 'lsn':
      byLsn(target.lsn, `target LSN ${target.lsn}`);
      recovery.recovery_target_lsn = target.lsn;
      recovery.recovery_target_inclusive = target.inclusive === false ? 'off' : 'on';
      break;
    case 'name': {
      const point = (await listRestorePoints(ctx.repository)).find((p) => p.name === target.name);
      if (!point) {
        const known = (await listRestorePoints(ctx.repository)).map((p) => p.name);
        throw new BackupError('TARGET_OUT_OF_RANGE', `no restore point "${target.name}" in the repository; known: ${known.join(', ') || 'none'}`);
      }
      byLsn(point.lsn, `restore point ${point.name} (${point.lsn})`);
      recovery.recovery_target_name = target.name;
      break;
    }
    case 'xid':
      if (!/^\d+$/.test(target.xid)) throw new BackupError('TARGET_INVALID', `transaction id "${target.xid}" is not a number`);
      backup = candidates[candidates.length - 1];
      recovery.recovery_target_xid = target.xid;
      break;
  }
  return { backup: backup!, recovery, range };
}

export interface RestoreResult {
  backup: string;
  files: number;
  /** Files already identical in the destination (delta restore). */
  unchanged: number;
  removed: number;
  bytes: number;
  ms: number;
}

function postmasterRunning(dataDir: string): boolean {
  const pidFile = join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return false;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function own(path: string, user: OsUser): Promise<void> {
  // lchown: never through a link planted in a PostgreSQL-owned directory.
  if (runningAsRoot()) await lchown(path, user.uid, user.gid);
}

export interface RestoreFileOptions {
  /** Takes a big file's content sha256 off the main thread. */
  hasher?: HashWorker;
  /** fsync the file before closing it (instead of opening it again to sync). */
  sync?: boolean;
  /** chown through the open descriptor (never through a link), when running as root. */
  owner?: { uid: number; gid: number };
}

/** Small files are read, checked and written whole: a few calls each instead of a stream pipeline's dozens. */
const WHOLE_FILE_BYTES = 8 * 1024 * 1024;

const corrupt = (key: string, file: BackupFile, error: unknown) =>
  new BackupError('BACKUP_CORRUPT', `${key} (file ${file.path} of backup ${file.ref}) cannot be read back: ${(error as Error).message}`);
const sha256Hex = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * Reads one stored file back: the stored object's sha256 and the restored
 * content's sha256 are both checked, so a damaged object is named, never restored.
 */
export async function restoreFile(repository: Repository, file: BackupFile, destination: string, options: RestoreFileOptions = {}): Promise<void> {
  const key = dataKey(file.ref, file.path);
  if (file.blocks && file.blockSize && repository instanceof DirectoryRepository) return restoreBlocks(repository, key, file, destination, options);
  if (file.size <= WHOLE_FILE_BYTES) return restoreWhole(repository, key, file, destination, options);
  const storedHash = createHash('sha256');
  const rawHash = createHash('sha256');
  const tap = (hash: ReturnType<typeof createHash>) =>
    new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        done(null, chunk);
      },
    });
  try {
    await pipeline(repository.read(key), tap(storedHash), createGunzip(), tap(rawHash), createWriteStream(destination, { flags: 'wx', mode: 0o600 }));
  } catch (error) {
    throw corrupt(key, file, error);
  }
  const stored = storedHash.digest('hex');
  if (stored !== file.storedSha256) throw new BackupError('BACKUP_CORRUPT', `${key} (file ${file.path} of backup ${file.ref}) has sha256 ${stored}, the backup recorded ${file.storedSha256}`);
  const raw = rawHash.digest('hex');
  if (raw !== file.sha256) throw new BackupError('BACKUP_CORRUPT', `${file.path} of backup ${file.ref} restores with sha256 ${raw}, the backup recorded ${file.sha256}`);
  if (options.sync || options.owner) {
    const handle = await open(destination, 'r');
    try {
      if (options.owner) await handle.chown(options.owner.uid, options.owner.gid);
      if (options.sync) await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

/** A small file: both checksums are checked before anything is written. */
async function restoreWhole(repository: Repository, key: string, file: BackupFile, destination: string, options: RestoreFileOptions): Promise<void> {
  let object: Buffer;
  try {
    object = await repository.readBuffer(key);
  } catch (error) {
    throw corrupt(key, file, error);
  }
  const stored = sha256Hex(object);
  if (stored !== file.storedSha256) throw new BackupError('BACKUP_CORRUPT', `${key} (file ${file.path} of backup ${file.ref}) has sha256 ${stored}, the backup recorded ${file.storedSha256}`);
  let content: Buffer;
  try {
    content = await gunzipAsync(object);
  } catch (error) {
    throw corrupt(key, file, error);
  }
  const raw = sha256Hex(content);
  if (raw !== file.sha256) throw new BackupError('BACKUP_CORRUPT', `${file.path} of backup ${file.ref} restores with sha256 ${raw}, the backup recorded ${file.sha256}`);
  const handle = await open(destination, CREATE_NEW, 0o600);
  try {
    await handle.writeFile(content);
    if (options.owner) await handle.chown(options.owner.uid, options.owner.gid);
    if (options.sync) await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * A big file's gzip members decompressed in parallel on the thread pool and
 * written at their offsets; both checksums are still taken in order, the
 * content's on the hash worker when there is one (each block moves there once written).
 */
async function restoreBlocks(repository: DirectoryRepository, key: string, file: BackupFile, destination: string, options: RestoreFileOptions): Promise<void> {
  const { hasher } = options;
  const storedHash = createHash('sha256');
  const rawHash = hasher ? undefined : createHash('sha256');
  const rawStream = hasher?.open();
  const input = await open(repository.pathOf(key), 'r');
  const output = await open(destination, CREATE_NEW, 0o600);
  try {
    let offset = 0;
    let hashed: Promise<void> = Promise.resolve();
    const inFlight: Promise<void>[] = [];
    for (const [index, size] of file.blocks!.entries()) {
      const member = Buffer.allocUnsafe(size); // filled by the read below (a short read is an error)
      const { bytesRead } = await input.read(member, 0, size, offset);
      if (bytesRead !== size) throw new Error(`short read at block ${index}`);
      offset += size;
      storedHash.update(member);
      // One output chunk per block: zlib's default 16 kB chunks halve the inflate rate.
      const raw = gunzipAsync(member, { chunkSize: file.blockSize! + 65_536 });
      raw.catch(() => undefined);
      const written = raw.then(async (data) => void (await output.write(data, 0, data.length, index * file.blockSize!)));
      written.catch(() => undefined);
      hashed = hashed.then(async () => {
        const data = await raw;
        if (!hasher) return void rawHash!.update(data);
        await written; // the block moves to the worker: the write must be done with it
        await hasher.update(rawStream!, data, true);
      });
      inFlight.push(Promise.all([written, hashed]).then(() => undefined));
      inFlight[inFlight.length - 1]!.catch(() => undefined);
      // Write back as we go: the fsync before the rename then finds little left to write,
      // instead of the whole file (the kernel starts on its own only past its dirty limit).
      if ((index + 1) % WRITEBACK_EVERY_BLOCKS === 0) {
        inFlight.push(written.then(() => output.datasync()));
        inFlight[inFlight.length - 1]!.catch(() => undefined);
      }
      if (inFlight.length >= 6) await inFlight.shift();
    }
    await Promise.all(inFlight);
    await hashed;
  } catch (error) {
    await input.close();
    await output.close();
    throw new BackupError('BACKUP_CORRUPT', `${key} (file ${file.path} of backup ${file.ref}) cannot be read back: ${(error as Error).message}`);
  }
  try {
    // Not a damaged backup if these fail (a full disk, an I/O error): their own errors go up.
    if (options.owner) await output.chown(options.owner.uid, options.owner.gid);
    if (options.sync) await output.sync();
  } finally {
    await input.close();
    await output.close();
  }
  const stored = storedHash.digest('hex');
  if (stored !== file.storedSha256) throw new BackupError('BACKUP_CORRUPT', `${key} (file ${file.path} of backup ${file.ref}) has sha256 ${stored}, the backup recorded ${file.storedSha256}`);
  const raw = hasher ? await hasher.digest(rawStream!) : rawHash!.digest('hex');
  if (raw !== file.sha256) throw new BackupError('BACKUP_CORRUPT', `${file.path} of backup ${file.ref} restores with sha256 ${raw}, the backup recorded ${file.sha256}`);
}

async function walkFiles(root: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(join(root, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await walkFiles(root, rel)));
    else out.push(rel);
  }
  return out;
}

/**
 * Writes a backup's files into `destination` (a new directory, or with
 * `delta` an existing stopped one: identical files are kept, others replaced,
 * files the backup does not have removed), then the recovery settings.
 */
export async function restoreBackup(
  ctx: BackupContext,
  plan: RestorePlan,
  destination: string,
  options: { delta?: boolean; parallel?: number; extraSettings?: Record<string, string> } = {},
): Promise<RestoreResult> {
  const started = performance.now();
  const { backup } = plan;
  if (existsSync(destination) && readdirSync(destination).length > 0) {
    if (!options.delta) throw new BackupError('DESTINATION_NOT_EMPTY', `${destination} is not empty`);
    if (postmasterRunning(destination)) throw new BackupError('DESTINATION_RUNNING', `a PostgreSQL server is running on ${destination}`);
  }
  await mkdir(destination, { recursive: true, mode: 0o700 });
  await own(destination, ctx.osUser);
  const wanted = new Set(backup.files.map((f) => f.path));
  let removed = 0;
  if (options.delta) {
    for (const rel of await walkFiles(destination)) {
      if (wanted.has(rel)) continue;
      await rm(join(destination, rel), { force: true, recursive: true });
      removed++;
    }
  }
  for (const dir of backup.directories) {
    await mkdir(join(destination, dir.path), { recursive: true, mode: 0o700 });
    await own(join(destination, dir.path), ctx.osUser);
  }
  for (const link of backup.symlinks) {
    await rm(join(destination, link.path), { force: true, recursive: true });
    await symlink(link.target, join(destination, link.path));
  }
  const pool = new JobPool(options.parallel ?? ctx.settings.parallel);
  const hasher = new HashWorker();
  /** Directories known to exist: one mkdir per directory, not per file. */
  const created = new Set([destination, ...backup.directories.map((dir) => join(destination, dir.path))]);
  let unchanged = 0;
  let bytes = 0;
  const total = backup.files.reduce((sum, f) => sum + f.size, 0);
  let lastNote = performance.now();
  try {
    for (const file of backup.files) {
      await pool.run(async () => {
        const path = join(destination, file.path);
        if (options.delta) {
          const info = await lstat(path).catch(() => undefined);
          if (info?.isFile() && info.size === file.size && (await sha256File(path)) === file.sha256) {
            unchanged++;
            return;
          }
        }
        const parent = dirname(path);
        if (!created.has(parent)) {
          await mkdir(parent, { recursive: true, mode: 0o700 });
          created.add(parent);
        }
        const tmp = `${path}.relevo-restore`;
        // A leftover of an interrupted restore (rm removes a link, never its target); a new destination has none.
        if (options.delta) await rm(tmp, { force: true });
        let renamed = false;
        try {
          // Written, owned and fsynced through one descriptor, then renamed: durable before it has its name.
          await restoreFile(ctx.repository, file, tmp, { hasher, sync: true, owner: runningAsRoot() ? ctx.osUser : undefined });
          await rename(tmp, path);
          renamed = true;
        } finally {
          if (!renamed) await rm(tmp, { force: true });
        }
        bytes += file.size;
        ctx.progress?.(`restore ${backup.id}`, bytes, total);
        if (performance.now() - lastNote > 5_000 && !ctx.progress) {
          lastNote = performance.now();
          ctx.note(`restore: ${Math.round(bytes / 1048576)} MB written`);
        }
      });
    }
    await pool.drain();
  } finally {
    await hasher.close();
  }
  for (const dir of [destination, ...backup.directories.map((d) => join(destination, d.path))]) await fsyncPath(dir).catch(() => undefined);
  await writeRecoverySettings(ctx, destination, plan, options.extraSettings ?? {});
  return { backup: backup.id, files: backup.files.length, unchanged, removed, bytes, ms: Math.round(performance.now() - started) };
}

/**
 * Recovery settings go to postgresql.auto.conf, read after relevo.conf, so
 * they win over the settings the backup carried from its source member: no
 * streaming from the old primary, and no archiving into the repository (a
 * restored copy on a new timeline must not mix its WAL with the cluster's).
 */
async function writeRecoverySettings(ctx: BackupContext, destination: string, plan: RestorePlan, extra: Record<string, string>): Promise<void> {
  const repository = ctx.repository.location;
  const location = dirname(repository);
  const dirName = repository.slice(location.length + 1);
  const settings: Record<string, string> = {
    restore_command: `'${join(LIBEXEC, 'relevo-wal-get')}' '${location}' ${dirName} %f %p`,
    archive_mode: 'off',
    primary_conninfo: '',
    primary_slot_name: '',
    ...plan.recovery,
    ...extra,
  };
  const lines = [`# relevo restore of backup ${plan.backup.id} at ${new Date().toISOString()}`];
  for (const [name, value] of Object.entries(settings)) lines.push(`${name} = ${sanitize(value)}`);
  const auto = join(destination, 'postgresql.auto.conf');
  await appendNoFollow(auto, `${lines.join('\n')}\n`);
  await own(auto, ctx.osUser);
  await rm(join(destination, 'standby.signal'), { force: true });
  const signal = join(destination, 'recovery.signal');
  await rm(signal, { force: true });
  await (await open(signal, CREATE_NEW, 0o600)).close();
  await own(signal, ctx.osUser);
}
