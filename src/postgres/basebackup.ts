/**
 * relevo's own base backup client: BASE_BACKUP over a replication
 * connection (new-style protocol, PostgreSQL 15+ servers), the tar archives
 * extracted into an empty data directory, the WAL of the backup included
 * (option WAL, as `pg_basebackup -X fetch`: the member's slot on the
 * primary, created before the clone with its WAL reserved, keeps that WAL).
 *
 * Why: a cluster on a newer major than the host's client packages (Debian 12
 * has PostgreSQL 15 client tools only; the server build of 17 used for
 * upgrades ships initdb, pg_ctl and postgres) cannot clone replicas with
 * pg_basebackup, which refuses a server of a newer major.
 *
 * Runs in a child process as the PostgreSQL OS user (basebackup-main.ts),
 * so every file is created with that user's rights and ownership, like
 * pg_basebackup's.
 */
import { BaseBackupError } from './basebackup-error.js';
import { closeSync, constants, fsyncSync, mkdirSync, openSync, readdirSync, statSync, symlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { BackupCopyStream, type BackupStreamSink } from './basebackup-stream.js';
import { dataRowValues, ReplicationConnection, type ReplicationTarget, type WireMessage } from './replication-client.js';
import { TarReader, type TarEntry, type TarSink } from './tar-reader.js';

export interface BaseBackupOptions {
  dataDir: string;
  label: string;
  fastCheckpoint: boolean;
  /** Called with bytes done and the estimated total (kB from the tablespace list, as bytes), at most once a second by the server. */
  onProgress?: (done: number, total: number) => void;
}

export interface BaseBackupResult {
  startLsn: string;
  endLsn: string;
  timeline: number;
  bytes: number;
  files: number;
  serverVersion: string;
}

export { BaseBackupError };

/** The BASE_BACKUP command relevo sends (parenthesized options: PostgreSQL 15+). */
export function baseBackupCommand(options: Pick<BaseBackupOptions, 'label' | 'fastCheckpoint'> & { progress: boolean }): string {
  const label = options.label.replace(/'/g, "''");
  // PROGRESS makes the server size every directory first (an extra walk): only when someone watches.
  return `BASE_BACKUP (LABEL '${label}', PROGRESS ${options.progress}, CHECKPOINT '${options.fastCheckpoint ? 'fast' : 'spread'}', WAL true, WAIT true, MANIFEST 'no', TARGET 'client')`;
}

/** A name inside an archive, relative and without `..`: the server's names are trusted no further than that. */
export function safeMemberPath(name: string): string {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (name.startsWith('/') || parts.length === 0 || parts.some((p) => p === '..')) throw new BaseBackupError(`unsafe name in the backup archive: ${JSON.stringify(name)}`);
  return parts.join('/');
}

/**
 * Writes the entries of one archive under `root`. Regular files are created
 * new (O_EXCL, no link followed) and fsynced; directories are created as the
 * archive lists them (parents first, as the server sends them); a symbolic
 * link is accepted only as pg_tblspc/<oid> pointing at a tablespace
 * location announced by the server.
 */
export class ArchiveWriter implements TarSink {
  private fd: number | undefined;
  private path = '';
  readonly directories: string[] = [];
  files = 0;

  constructor(
    private readonly root: string,
    private readonly tablespaceLocations: ReadonlySet<string>,
  ) {
    this.directories.push(root);
  }

  entry(entry: TarEntry): void {
    const rel = safeMemberPath(entry.name);
    const path = join(this.root, rel);
    if (entry.type === 'directory') {
      try {
        mkdirSync(path, { mode: (entry.mode & 0o750) | 0o700 });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(path).isDirectory()) throw error;
      }
      this.directories.push(path);
    } else if (entry.type === 'symlink') {
      if (!/^pg_tblspc\/\d+$/.test(rel) || !this.tablespaceLocations.has(entry.linkName)) {
        throw new BaseBackupError(`unexpected symbolic link in the backup: ${rel} -> ${entry.linkName}`);
      }
      symlinkSync(entry.linkName, path);
    } else {
      this.fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, (entry.mode & 0o640) | 0o600);
      this.path = path;
      this.files++;
    }
  }

  data(chunk: Buffer): void {
    if (this.fd === undefined) throw new BaseBackupError('archive data outside a file');
    let at = 0;
    while (at < chunk.length) at += writeSync(this.fd, chunk, at, chunk.length - at);
  }

  end(): void {
    if (this.fd === undefined) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = undefined;
  }

  /** Closes a file left open by a failure (the caller removes the tree). */
  abort(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    void this.path;
  }

  /** fsync every directory written, deepest first (new entries durable). */
  syncDirectories(): void {
    for (const dir of [...this.directories].reverse()) {
      const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }
}

interface ResultSet {
  rows: (string | null)[][];
}

/** Reads RowDescription/DataRow.../CommandComplete; undefined if the next message is something else (returned in `other`). */
async function readResultSet(conn: ReplicationConnection): Promise<{ set?: ResultSet; other?: WireMessage }> {
  const first = await conn.next();
  if (first.type !== 'T') return { other: first };
  const rows: (string | null)[][] = [];
  for (;;) {
    const m = await conn.next();
    if (m.type === 'D') rows.push(dataRowValues(m.body));
    else if (m.type === 'C') return { set: { rows } };
    else throw new BaseBackupError(`unexpected message ${JSON.stringify(m.type)} in a result set`);
  }
}

/** Takes a base backup of the server at `target` into the empty `options.dataDir`. */
export async function takeBaseBackup(target: ReplicationTarget, options: BaseBackupOptions): Promise<BaseBackupResult> {
  if (readdirSync(options.dataDir).length > 0) throw new BaseBackupError(`${options.dataDir} is not empty`);
  const conn = await ReplicationConnection.open(target);
  const writers: ArchiveWriter[] = [];
  try {
    const serverVersion = conn.parameters.get('server_version') ?? '';
    const serverMajor = Number(/^(\d+)/.exec(serverVersion)?.[1] ?? 0);
    if (serverMajor < 15) throw new BaseBackupError(`the server runs PostgreSQL ${serverVersion}; relevo's own base backup needs 15 or newer (use pg_basebackup)`);
    conn.sendQuery(baseBackupCommand({ ...options, progress: options.onProgress !== undefined }));

    // Start position (recptr, tli), then the tablespace list (spcoid, spclocation, size kB), then COPY.
    const start = await readResultSet(conn);
    const startRow = start.set?.rows[0];
    if (!startRow) throw new BaseBackupError('no start position from the server');
    const spaces = await readResultSet(conn);
    if (!spaces.set) throw new BaseBackupError('no tablespace list from the server');
    const locations = new Set(spaces.set.rows.map((r) => r[1]).filter((l): l is string => !!l));
    const totalBytes = spaces.set.rows.reduce((sum, r) => sum + Number(r[2] ?? 0) * 1024, 0);
    for (const location of locations) {
      // As pg_basebackup in plain format without -T: the tablespace goes where it is on the primary, which must be empty.
      mkdirSync(location, { recursive: true, mode: 0o700 });
      if (readdirSync(location).length > 0) throw new BaseBackupError(`tablespace directory ${location} exists and is not empty`);
    }

    const copyStart = await conn.next();
    if (copyStart.type !== 'H') throw new BaseBackupError(`expected CopyOutResponse, got ${JSON.stringify(copyStart.type)}`);

    let reader: TarReader | undefined;
    let bytes = 0;
    const sink: BackupStreamSink = {
      archive(name, location) {
        if (location !== '' && !locations.has(location)) throw new BaseBackupError(`archive ${name} for an unannounced tablespace ${location}`);
        const writer = new ArchiveWriter(location === '' ? options.dataDir : location, locations);
        writers.push(writer);
        reader = new TarReader(writer);
      },
      archiveData(chunk) {
        bytes += chunk.length;
        reader?.push(chunk);
      },
      archiveEnd() {
        reader?.finish();
        reader = undefined;
      },
      manifestData() {
        // Not requested (MANIFEST 'no'); ignored if a server sends one anyway.
      },
      progress(done) {
        options.onProgress?.(done, totalBytes);
      },
    };
    const stream = new BackupCopyStream(sink);
    for (;;) {
      const m = await conn.next();
      if (m.type === 'd') stream.copyData(m.body);
      else if (m.type === 'c') break;
      else throw new BaseBackupError(`unexpected message ${JSON.stringify(m.type)} inside the backup stream`);
    }
    stream.done();
    if (!writers.some((w) => w.directories[0] === options.dataDir)) throw new BaseBackupError('the backup held no archive of the data directory');

    const end = await readResultSet(conn);
    const endRow = end.set?.rows[0];
    if (!endRow) throw new BaseBackupError('no end position from the server');
    // The command's own CommandComplete follows the end position's, then ReadyForQuery.
    for (let m = await conn.next(); m.type !== 'Z'; m = await conn.next()) {
      if (m.type !== 'C') throw new BaseBackupError(`expected ReadyForQuery, got ${JSON.stringify(m.type)}`);
    }
    for (const w of writers) w.syncDirectories();
    return {
      startLsn: startRow[0] ?? '',
      endLsn: endRow[0] ?? '',
      timeline: Number(endRow[1] ?? 0),
      bytes,
      files: writers.reduce((n, w) => n + w.files, 0),
      serverVersion,
    };
  } catch (error) {
    for (const w of writers) w.abort();
    throw error;
  } finally {
    conn.close();
  }
}
