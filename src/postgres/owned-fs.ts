import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { dirname, resolve, sep } from 'node:path';
import { runningAsRoot, spawnIdentity, type OsUser } from '../util/os-user.js';

/**
 * The one place where relevo touches files in directories the PostgreSQL OS
 * user controls (data directory, the directory beside it with the passfile and
 * log, the socket directory).
 *
 * Why: the agent may run as root, and whoever controls the `postgres` OS user
 * (any database superuser, through COPY ... TO PROGRAM) can put symbolic links
 * there. Path-based writes and chowns would follow them and hand root-owned
 * files to `postgres`. So every operation here:
 *  - opens the directory once, with O_NOFOLLOW, and checks that descriptor
 *    (a directory, owned by the PostgreSQL user, not writable by group or others);
 *  - then works relative to that descriptor (through /proc/self/fd/N, Linux's
 *    openat), so the checked directory is the one written;
 *  - opens files with O_NOFOLLOW and checks the descriptor (regular file, one
 *    link, right owner) before trusting them;
 *  - writes a new temporary file (O_CREAT|O_EXCL|O_NOFOLLOW), fchowns it,
 *    fsyncs it, renames it over the target and fsyncs the directory.
 */

export type UnsafePathCode = 'UNSAFE_PATH_SYMLINK' | 'UNSAFE_PATH_OWNER' | 'UNSAFE_PATH_MODE' | 'UNSAFE_PATH_TYPE';

export class UnsafePathError extends Error {
  constructor(
    readonly code: UnsafePathCode,
    readonly path: string,
    problem: string,
    remedy: string,
  ) {
    super(`${code}: refusing ${path}: ${problem}; ${remedy}`);
    this.name = 'UnsafePathError';
  }
}

/** The uid that must own PostgreSQL's files: the OS user when we are root, else ourselves (we then act with our own rights). */
function ownerUid(user: OsUser): number {
  return runningAsRoot() ? user.uid : process.getuid!();
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

function openNoFollow(path: string, flags: number, mode?: number): number {
  try {
    return openSync(path, flags | constants.O_NOFOLLOW, mode);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // ELOOP: the last component is a symbolic link; ENOTDIR with O_DIRECTORY: a link or a file.
    if (code === 'ELOOP' || (code === 'ENOTDIR' && flags & constants.O_DIRECTORY)) {
      throw new UnsafePathError('UNSAFE_PATH_SYMLINK', path, 'it is a symbolic link (or not a directory)', 'replace it with a real directory or file owned by the PostgreSQL OS user; relevo never follows links there');
    }
    throw error;
  }
}

function checkDir(path: string, stats: Stats, user: OsUser): void {
  if (!stats.isDirectory()) throw new UnsafePathError('UNSAFE_PATH_TYPE', path, 'not a directory', 'point the configuration at a directory');
  if (stats.uid !== ownerUid(user)) {
    throw new UnsafePathError(
      'UNSAFE_PATH_OWNER',
      path,
      `owned by uid ${stats.uid}, not by ${runningAsRoot() ? `the PostgreSQL OS user ${user.name} (uid ${user.uid})` : `the agent's user (uid ${process.getuid!()})`}`,
      `if this directory is meant for PostgreSQL, run: chown ${user.name}: ${path}; otherwise choose another path (relevo only chowns directories it creates)`,
    );
  }
  if ((stats.mode & 0o022) !== 0) {
    throw new UnsafePathError('UNSAFE_PATH_MODE', path, `writable by group or others (mode ${(stats.mode & 0o7777).toString(8)})`, `run: chmod go-w ${path}`);
  }
}

/** A checked directory descriptor; every file operation goes through it. */
export class OwnedDir {
  private constructor(
    private readonly fd: number,
    readonly path: string,
    private readonly user: OsUser,
  ) {}

  static open(path: string, user: OsUser): OwnedDir {
    const fd = openNoFollow(path, DIR_FLAGS);
    try {
      checkDir(path, fstatSync(fd), user);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    return new OwnedDir(fd, path, user);
  }

  private at(name: string): string {
    if (name.includes('/') || name === '.' || name === '..') throw new Error(`internal: "${name}" is not a plain file name`);
    return `/proc/self/fd/${this.fd}/${name}`;
  }

  private shown(name: string): string {
    return `${this.path}${sep}${name}`;
  }

  /** Opens an existing file without following links and checks it; undefined when it does not exist. */
  private openExisting(name: string): number | undefined {
    let fd: number;
    try {
      fd = openNoFollow(this.at(name), constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (error) {
      if (error instanceof UnsafePathError) throw new UnsafePathError(error.code, this.shown(name), 'it is a symbolic link', `remove it (rm ${this.shown(name)}); relevo writes its own file there`);
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    try {
      const stats = fstatSync(fd);
      if (!stats.isFile()) throw new UnsafePathError('UNSAFE_PATH_TYPE', this.shown(name), 'not a regular file', `remove it (rm -r ${this.shown(name)})`);
      if (stats.nlink !== 1) throw new UnsafePathError('UNSAFE_PATH_TYPE', this.shown(name), `it has ${stats.nlink} hard links`, `remove it (rm ${this.shown(name)}); relevo writes its own file there`);
      if (stats.uid !== ownerUid(this.user)) {
        throw new UnsafePathError('UNSAFE_PATH_OWNER', this.shown(name), `owned by uid ${stats.uid}, not by ${this.user.name}`, `remove it or run: chown ${this.user.name}: ${this.shown(name)}`);
      }
      return fd;
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  read(name: string): string | undefined {
    const fd = this.openExisting(name);
    if (fd === undefined) return undefined;
    try {
      return readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  }

  exists(name: string): boolean {
    const fd = this.openExisting(name);
    if (fd !== undefined) closeSync(fd);
    return fd !== undefined;
  }

  /** Replaces (or creates) `name` atomically, owned by the PostgreSQL user, with `mode`. */
  write(name: string, content: string | Uint8Array, mode = 0o600): void {
    // Refuses a link or a foreign file in place of the target before touching anything.
    const existing = this.openExisting(name);
    if (existing !== undefined) closeSync(existing);
    const temp = `.${name}.relevo-${randomBytes(6).toString('hex')}`;
    const fd = openNoFollow(this.at(temp), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
    try {
      try {
        if (runningAsRoot()) fchownSync(fd, this.user.uid, this.user.gid);
        fchmodSync(fd, mode);
        if (typeof content === 'string') writeSync(fd, content);
        else writeSync(fd, content);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(this.at(temp), this.at(name));
    } catch (error) {
      try {
        unlinkSync(this.at(temp));
      } catch {
        // already renamed or never created
      }
      throw error;
    }
    fsyncSync(this.fd);
  }

  /** Removes `name` (unlink never follows a link). Returns whether it existed. */
  remove(name: string): boolean {
    try {
      unlinkSync(this.at(name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw error;
    }
    fsyncSync(this.fd);
    return true;
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** Opens and checks `dir`, runs `work` on it, closes it. */
export function withOwnedDir<T>(dir: string, user: OsUser, work: (dir: OwnedDir) => T): T {
  const owned = OwnedDir.open(dir, user);
  try {
    return work(owned);
  } finally {
    owned.close();
  }
}

/** Writes one file in a PostgreSQL-owned directory (see OwnedDir.write). */
export function writeOwnedFile(path: string, content: string | Uint8Array, user: OsUser, mode = 0o600): void {
  withOwnedDir(dirname(path), user, (dir) => dir.write(basename(path), content, mode));
}

/** Reads one file of a PostgreSQL-owned directory without following links; undefined when missing. */
export function readOwnedFile(path: string, user: OsUser): string | undefined {
  return withOwnedDir(dirname(path), user, (dir) => dir.read(basename(path)));
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export type OwnedDirKind =
  /** Must be owned by the PostgreSQL user and not writable by others, whether relevo created it or not. */
  | 'private'
  /**
   * May exist already with any owner (e.g. Debian's /var/run/postgresql, 2775):
   * relevo writes nothing there itself. Only a world-writable directory without
   * the sticky bit is refused (anyone could replace PostgreSQL's socket).
   */
  | 'shared';

/**
 * mkdir -p where only the directories this call creates are given to the
 * PostgreSQL user (fchown on a no-follow descriptor). Existing directories
 * are never chowned or chmodded: they are checked according to `kind`.
 */
export function ensureOwnedDir(path: string, user: OsUser, mode: number, kind: OwnedDirKind = 'private'): void {
  const absolute = resolve(path);
  const missing: string[] = [];
  for (let dir = absolute; ; dir = dirname(dir)) {
    if (existsNoFollow(dir)) break;
    missing.unshift(dir);
    if (dir === dirname(dir)) break;
  }
  for (const dir of missing) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (error) {
      // Someone else created it meanwhile: treated as existing (checked, not chowned).
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw error;
    }
    const fd = openNoFollow(dir, DIR_FLAGS);
    try {
      if (runningAsRoot()) fchownSync(fd, user.uid, user.gid);
      fchmodSync(fd, mode);
    } finally {
      closeSync(fd);
    }
  }
  const fd = openNoFollow(absolute, DIR_FLAGS);
  try {
    const stats = fstatSync(fd);
    if (kind === 'private') checkDir(absolute, stats, user);
    else if (!stats.isDirectory()) throw new UnsafePathError('UNSAFE_PATH_TYPE', absolute, 'not a directory', 'point the configuration at a directory');
    else if ((stats.mode & 0o002) !== 0 && (stats.mode & 0o1000) === 0) {
      throw new UnsafePathError('UNSAFE_PATH_MODE', absolute, `world-writable without the sticky bit (mode ${(stats.mode & 0o7777).toString(8)})`, `run: chmod +t ${absolute}, or choose a directory only PostgreSQL can write`);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * A fresh private directory (mkdtemp: created by this call, so it is ours to
 * give away) handed to the PostgreSQL user through a no-follow descriptor.
 */
export function makeOwnedTempDir(prefix: string, user: OsUser): string {
  const dir = mkdtempSync(prefix);
  const fd = openNoFollow(dir, DIR_FLAGS);
  try {
    if (runningAsRoot()) fchownSync(fd, user.uid, user.gid);
    fchmodSync(fd, 0o700);
  } finally {
    closeSync(fd);
  }
  return dir;
}

function existsNoFollow(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

/**
 * Removes a tree PostgreSQL's user controls (a failed initdb or clone) with
 * that user's rights: a root `rm -r` racing with links planted inside could
 * be steered outside the tree.
 */
export function removeOwnedTree(path: string, user: OsUser): void {
  const result = spawnSync('rm', ['-rf', '--one-file-system', '--', path], { ...spawnIdentity(user), stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`could not remove ${path} as ${user.name}: ${result.stderr.trim()}`);
}
