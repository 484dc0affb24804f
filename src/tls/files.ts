/**
 * The one place TLS and secret-rotation code writes files. Every write is
 * no-follow: a temporary file opened with O_EXCL|O_NOFOLLOW, fchown'd to the
 * owner when we run as root, fsynced, then renamed over the target, so a
 * symbolic link planted by the PostgreSQL OS user is replaced, never followed.
 * (Switch to the shared safe-write module once it lands; the signature is the same.)
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fchownSync, fsyncSync, lstatSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync, chownSync } from 'node:fs';
import { dirname } from 'node:path';
import { runningAsRoot, type OsUser } from '../util/os-user.js';

export interface WriteOptions {
  mode: number;
  /** Owner of the file when running as root (default: root, i.e. the agent). */
  owner?: OsUser;
}

export class UnsafePathError extends Error {
  readonly code = 'UNSAFE_PATH';
}

export function writeFileSafely(path: string, content: string | Buffer, options: WriteOptions): void {
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, options.mode);
  try {
    if (options.owner && runningAsRoot()) fchownSync(fd, options.owner.uid, options.owner.gid);
    writeSync(fd, typeof content === 'string' ? Buffer.from(content) : content);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temp);
    throw error;
  } finally {
    try {
      closeSync(fd);
    } catch {
      // closed above on failure
    }
  }
  renameSync(temp, path);
  syncDir(dirname(path));
}

/** Renames within one directory and makes the rename durable. */
export function renameDurably(from: string, to: string): void {
  renameSync(from, to);
  syncDir(dirname(to));
}

function syncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A private directory: created with `mode` (and chowned) only when absent; an
 * existing one must be a real directory (not a link), owned by the expected
 * user or root, and not writable by group or others.
 */
export function ensurePrivateDir(path: string, mode: number, owner?: OsUser): void {
  // mkdir first, not lstat-then-mkdir: an agent racing us on the same host then
  // lands on EEXIST and its directory is checked like any existing one.
  try {
    mkdirSync(path, { mode });
    if (owner && runningAsRoot()) chownSync(path, owner.uid, owner.gid);
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const stat = lstatSync(path);
  if (!stat.isDirectory()) throw new UnsafePathError(`${path} exists and is not a directory (a symbolic link?); remove it or choose another path`);
  const expectedUid = owner && runningAsRoot() ? owner.uid : process.getuid?.();
  if (stat.uid !== expectedUid && stat.uid !== 0) throw new UnsafePathError(`${path} belongs to uid ${stat.uid}, expected ${expectedUid}; fix its owner`);
  if ((stat.mode & 0o022) !== 0) throw new UnsafePathError(`${path} is writable by group or others (mode ${(stat.mode & 0o777).toString(8)}); run chmod go-w ${path}`);
}
