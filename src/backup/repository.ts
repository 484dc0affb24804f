import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, type ReadStream } from 'node:fs';
import { chown, link, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BackupError } from './errors.js';
import { fsyncPath, sha256File } from './files.js';

export interface ObjectInfo {
  key: string;
  size: number;
  mtimeMs: number;
}

export type PutResult =
  | { status: 'created' | 'same'; sha256: string; size: number }
  /** The key held different content: ours was kept aside under `keptAs` (never replacing the original). */
  | { status: 'conflict'; sha256: string; size: number; existingSha256: string; keptAs: string };

export interface PutOptions {
  /**
   * 'sidecar' (default): the sha256 is stored beside the object as KEY.sha256.
   * 'caller': the caller records it (a backup's manifest holds its files' sums).
   */
  checksum?: 'sidecar' | 'caller';
  /**
   * 'now' (default): durable before the call returns. 'batch': durable after
   * flush(): a backup writes hundreds of files and syncs them once, before it
   * writes the record that makes it visible.
   */
  durability?: 'now' | 'batch';
}

/**
 * A backup repository: a flat key space of immutable objects. Keys are
 * '/'-separated relative paths. The contract is what an object store offers too
 * (conditional create, get, list by prefix, delete), so an S3-style backend can
 * implement it later; the directory backend below is for a local disk or a
 * mounted NFS/CephFS. Nothing is ever overwritten with different content.
 */
export interface Repository {
  readonly location: string;
  /** Stores `source` under `key` unless the key exists. Never replaces an object. */
  putIfAbsent(key: string, source: Readable | Buffer, options?: PutOptions): Promise<PutResult>;
  /** Makes every 'batch' write since the last flush durable. */
  flush(): Promise<void>;
  read(key: string): Readable;
  readBuffer(key: string): Promise<Buffer>;
  /** The recorded sha256 of a sidecar-checksummed object. */
  recordedSha256(key: string): Promise<string | undefined>;
  stat(key: string): Promise<ObjectInfo | undefined>;
  /** Every object under `prefix` (recursive), sidecars excluded, sorted by key. */
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Immediate children names (one level) under `prefix`. */
  children(prefix: string): Promise<string[]>;
  /** Deletes one object and its sidecar. The caller logs why. */
  delete(key: string): Promise<void>;
  /** Deletes everything under `prefix`. */
  deletePrefix(prefix: string): Promise<void>;
}

export const REPOSITORY_MARKER = 'relevo-repository.json';
export const REPOSITORY_FORMAT = 1;
export const SIDECAR = '.sha256';

function checkKey(key: string): void {
  if (key === '' || key.startsWith('/') || key.split('/').some((part) => part === '..' || part === '.' || part === '')) {
    throw new Error(`invalid repository key "${key}"`);
  }
}

/** A directory repository: temp file, fsync, link() (atomic, never replaces), fsync the directory. */
export class DirectoryRepository implements Repository {
  private pendingFiles = new Set<string>();
  private pendingDirs = new Set<string>();

  private readonly ownedDirs = new Set<string>();

  /**
   * `owner`: when the command runs as root, files and directories it creates
   * are handed to the PostgreSQL OS user, so the agent, archive_command and
   * restore_command (running as that user) can read and extend them.
   */
  constructor(
    readonly location: string,
    private readonly owner?: { uid: number; gid: number },
  ) {}

  private async own(path: string): Promise<void> {
    if (this.owner && process.getuid?.() === 0) await chown(path, this.owner.uid, this.owner.gid);
  }

  private path(key: string): string {
    checkKey(key);
    return join(this.location, ...key.split('/'));
  }

  /** The file behind a key: for positional reads (parallel restore of a big file's blocks). */
  pathOf(key: string): string {
    return this.path(key);
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.ownedDirs.has(dir)) return;
    try {
      await mkdir(dir, { recursive: true, mode: 0o750 });
      for (let d = dir; d.startsWith(this.location) && d !== dirname(this.location); d = dirname(d)) await this.own(d);
      this.ownedDirs.add(dir);
    } catch (error) {
      throw new BackupError('REPOSITORY_UNREACHABLE', `cannot create ${dir} in repository ${this.location}: ${(error as Error).message}`);
    }
  }

  async putIfAbsent(key: string, source: Readable | Buffer, options: PutOptions = {}): Promise<PutResult> {
    const final = this.path(key);
    const dir = dirname(final);
    await this.ensureDir(dir);
    const tmp = join(dir, `.${key.split('/').pop()}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const hash = createHash('sha256');
    let size = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        size += chunk.length;
        done(null, chunk);
      },
    });
    try {
      if (Buffer.isBuffer(source)) {
        // One write instead of a stream pipeline: a backup stores hundreds of small files.
        hash.update(source);
        size = source.length;
        const handle = await open(tmp, 'wx', 0o640);
        try {
          await handle.writeFile(source);
        } finally {
          await handle.close();
        }
      } else {
        await pipeline(source, tap, createWriteStream(tmp, { mode: 0o640 }));
      }
      const sha256 = hash.digest('hex');
      const batch = options.durability === 'batch';
      await this.own(tmp);
      if (!batch) await fsyncPath(tmp);
      let status: 'created' | 'same' = 'created';
      try {
        await link(tmp, final);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        const existing = (options.checksum !== 'caller' && (await this.recordedSha256(key))) || (await sha256File(final));
        if (existing !== sha256) {
          const keptAs = `conflicts/${key.replaceAll('/', '_')}.${sha256}`;
          const keptPath = this.path(keptAs);
          await this.ensureDir(dirname(keptPath));
          await rename(tmp, keptPath);
          await fsyncPath(dirname(keptPath));
          return { status: 'conflict', sha256, size, existingSha256: existing, keptAs };
        }
        status = 'same';
      }
      await unlink(tmp);
      if (batch) {
        this.pendingFiles.add(final);
        this.pendingDirs.add(dir);
      } else {
        await fsyncPath(dir);
      }
      if (options.checksum !== 'caller' && !(await this.stat(`${key}${SIDECAR}`))) {
        await this.putIfAbsent(`${key}${SIDECAR}`, Buffer.from(`${sha256}\n`), { checksum: 'caller', durability: options.durability });
      }
      return { status, sha256, size };
    } catch (error) {
      await rm(tmp, { force: true });
      if (error instanceof BackupError) throw error;
      throw new BackupError('REPOSITORY_UNREACHABLE', `writing ${key} to repository ${this.location}: ${(error as Error).message}`);
    }
  }

  async flush(): Promise<void> {
    const files = [...this.pendingFiles];
    const dirs = [...this.pendingDirs];
    this.pendingFiles.clear();
    this.pendingDirs.clear();
    // A few at a time: one fsync per file, in parallel on the thread pool.
    for (let i = 0; i < files.length; i += 16) await Promise.all(files.slice(i, i + 16).map(fsyncPath));
    for (const dir of dirs) await fsyncPath(dir);
  }

  read(key: string): ReadStream {
    return createReadStream(this.path(key));
  }

  readBuffer(key: string): Promise<Buffer> {
    return readFile(this.path(key));
  }

  async recordedSha256(key: string): Promise<string | undefined> {
    try {
      return (await readFile(this.path(`${key}${SIDECAR}`), 'utf8')).trim();
    } catch {
      return undefined;
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const info = await stat(this.path(key));
      return info.isFile() ? { key, size: info.size, mtimeMs: info.mtimeMs } : undefined;
    } catch {
      return undefined;
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const walk = async (dir: string, keyPrefix: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw new BackupError('REPOSITORY_UNREACHABLE', `listing ${dir}: ${(error as Error).message}`);
      }
      for (const entry of entries) {
        if (entry.name.startsWith('.')) continue;
        const path = join(dir, entry.name);
        const key = `${keyPrefix}${entry.name}`;
        if (entry.isDirectory()) await walk(path, `${key}/`);
        else if (entry.isFile() && !entry.name.endsWith(SIDECAR)) {
          const info = await stat(path);
          out.push({ key, size: info.size, mtimeMs: info.mtimeMs });
        }
      }
    };
    const trimmed = prefix.replace(/\/+$/, '');
    await walk(trimmed === '' ? this.location : this.path(trimmed), trimmed === '' ? '' : `${trimmed}/`);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async children(prefix: string): Promise<string[]> {
    const trimmed = prefix.replace(/\/+$/, '');
    try {
      return (await readdir(trimmed === '' ? this.location : this.path(trimmed))).filter((name) => !name.startsWith('.')).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new BackupError('REPOSITORY_UNREACHABLE', `listing ${prefix} in ${this.location}: ${(error as Error).message}`);
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    await rm(path, { force: true });
    await rm(`${path}${SIDECAR}`, { force: true });
    await fsyncPath(dirname(path)).catch(() => undefined);
  }

  async deletePrefix(prefix: string): Promise<void> {
    const path = this.path(prefix.replace(/\/+$/, ''));
    await rm(path, { recursive: true, force: true });
    await fsyncPath(dirname(path)).catch(() => undefined);
  }
}

/** Relative path inside the repository directory for a key (for messages). */
export function describeKey(repository: Repository, key: string): string {
  return `${repository.location}${sep}${key}`;
}
