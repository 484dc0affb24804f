/**
 * Store backend for members on one host: a SQLite file shared by the agents
 * and the CLI of that host, with no extra service to run.
 *
 * - better-sqlite3 is synchronous: a statement blocks the event loop while it
 *   runs. Every operation is one tiny IMMEDIATE transaction (a few indexed
 *   statements, one fsync), so that is well under a millisecond of CPU plus
 *   the fsync. Waiting for another process's lock is done asynchronously
 *   (short busy_timeout, then sleep and retry until timeoutMs), so a stuck
 *   peer never freezes this process's event loop for the whole timeout.
 * - WAL journal + synchronous=FULL: a committed write survives power loss; a
 *   process killed mid-transaction leaves nothing behind (SQLite rolls back).
 * - Leases expire by the wall clock (Date.now()), which all processes on the
 *   host share. Every operation first deletes expired leases and their keys in
 *   its own transaction, so nobody ever reads a key whose lease has expired;
 *   watchers also run that sweep when they poll, so expired keys disappear
 *   (and their delete events appear) even when nobody writes.
 * - Revisions: each key change gets its own store revision (etcd gives all
 *   changes of one transaction one revision; nothing in the contract depends
 *   on that).
 */
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { StoreError, StoreUnavailableError } from './errors.js';
import type { StoreConfig } from './config.js';
import type { KeyValue, LeaseId, Store, Watch, WatchEvent, WriteOptions } from './store.js';

type EmbeddedConfig = Extract<StoreConfig, { backend: 'embedded' }>;

export interface EmbeddedStoreOptions {
  /** How often watchers look for new events (and sweep expired leases). */
  pollIntervalMs?: number;
  /** Events older than this are trimmed; a watcher that falls further behind gets onError. */
  eventRetentionMs?: number;
  /** At most this many events are kept. */
  maxEvents?: number;
}

const SCHEMA_VERSION = 1;

/** Blocking wait inside SQLite before we fall back to an async retry. */
const BUSY_TIMEOUT_MS = 10;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  revision INTEGER NOT NULL,
  -- events with revision <= compacted have been trimmed
  compacted INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, revision, compacted) VALUES (1, 0, 0);
CREATE TABLE IF NOT EXISTS leases (
  id TEXT PRIMARY KEY,
  ttl_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at_ms);
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  create_revision INTEGER NOT NULL,
  mod_revision INTEGER NOT NULL,
  lease TEXT
);
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
  revision INTEGER PRIMARY KEY,
  type TEXT NOT NULL CHECK (type IN ('put', 'delete')),
  key TEXT NOT NULL,
  value TEXT,
  at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_age ON events (at_ms);
`;

interface KvRow {
  key: string;
  value: string;
  mod_revision: number;
  lease: string | null;
}

interface EventRow {
  revision: number;
  type: 'put' | 'delete';
  key: string;
  value: string | null;
}

function toKeyValue(row: KvRow): KeyValue {
  const result: KeyValue = { key: row.key, value: row.value, revision: row.mod_revision };
  if (row.lease !== null) result.lease = row.lease;
  return result;
}

function sqliteCode(error: unknown): string | undefined {
  return error instanceof Database.SqliteError ? error.code : undefined;
}

/** Another connection holds the lock: wait and retry. */
function isBusy(error: unknown): boolean {
  const code = sqliteCode(error);
  return code !== undefined && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

/** The file cannot be used at all right now: disk, permissions, not a database. */
function isIoFailure(error: unknown): boolean {
  const code = sqliteCode(error);
  if (code === undefined) return false;
  return ['SQLITE_IOERR', 'SQLITE_CANTOPEN', 'SQLITE_FULL', 'SQLITE_READONLY', 'SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_PROTOCOL', 'SQLITE_PERM', 'SQLITE_AUTH'].some(
    (prefix) => code.startsWith(prefix),
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class EmbeddedStore implements Store {
  readonly backend = 'embedded';
  private closed = false;
  private readonly watches = new Set<EmbeddedWatch>();
  private readonly sleepers = new Set<{ timer: NodeJS.Timeout; wake: () => void }>();
  private readonly runImmediate: (body: () => unknown) => unknown;
  private readonly runDeferred: (body: () => unknown) => unknown;
  private readonly sql: ReturnType<EmbeddedStore['prepare']>;
  private readonly pollIntervalMs: number;
  private readonly eventRetentionMs: number;
  private readonly maxEvents: number;

  private constructor(
    private readonly db: Database.Database,
    readonly path: string,
    private readonly timeoutMs: number,
    options: EmbeddedStoreOptions,
  ) {
    this.pollIntervalMs = options.pollIntervalMs ?? 50;
    this.eventRetentionMs = options.eventRetentionMs ?? 5 * 60_000;
    this.maxEvents = options.maxEvents ?? 10_000;
    const transaction = db.transaction((body: () => unknown) => body());
    this.runImmediate = (body) => transaction.immediate(body);
    this.runDeferred = (body) => transaction.deferred(body);
    this.sql = this.prepare();
  }

  /**
   * Opens (creating if needed) the store file. The directory is created 0700
   * and the file 0600; existing ones keep their modes. Rejects with
   * StoreUnavailableError naming the path when the file cannot be opened or
   * stays locked past timeoutMs.
   */
  static async open(config: Pick<EmbeddedConfig, 'path' | 'timeoutMs'>, options: EmbeddedStoreOptions = {}): Promise<EmbeddedStore> {
    const path = resolve(config.path);
    const unavailable = (detail: string, cause: unknown): StoreUnavailableError =>
      new StoreUnavailableError('embedded', `cannot open ${path}: ${detail}`, { cause });
    let db: Database.Database;
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      if (!existsSync(path)) {
        try {
          closeSync(openSync(path, 'wx', 0o600));
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        }
      }
      db = new Database(path, { fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
    } catch (error) {
      throw unavailable(messageOf(error), error);
    }
    try {
      const deadline = Date.now() + config.timeoutMs;
      // Switching to WAL needs a moment of exclusive access; it persists in the file.
      const mode = await retryBusy(deadline, () => db.pragma('journal_mode = WAL', { simple: true }));
      if (mode !== 'wal') throw new StoreError(`${path}: SQLite refused WAL mode (got ${String(mode)}); use a local filesystem`);
      db.pragma('synchronous = FULL');
      const version = await retryBusy(deadline, () =>
        db.transaction(() => {
          const current = db.pragma('user_version', { simple: true }) as number;
          if (current === 0) {
            db.exec(SCHEMA);
            db.pragma(`user_version = ${SCHEMA_VERSION}`);
            return SCHEMA_VERSION;
          }
          return current;
        }).immediate(),
      );
      if (version !== SCHEMA_VERSION) {
        throw new StoreError(`${path}: store schema version ${version}, this relevo understands ${SCHEMA_VERSION}`);
      }
      return new EmbeddedStore(db, path, config.timeoutMs, options);
    } catch (error) {
      db.close();
      if (error instanceof StoreError) throw error;
      if (isBusy(error)) throw unavailable(`locked by another process for more than ${config.timeoutMs} ms`, error);
      throw unavailable(messageOf(error), error);
    }
  }

  private prepare() {
    const db = this.db;
    return {
      revision: db.prepare<[], { revision: number; compacted: number }>('SELECT revision, compacted FROM meta WHERE id = 1'),
      bump: db.prepare<[], { revision: number }>('UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision'),
      expired: db.prepare<[number], { id: string }>('SELECT id FROM leases WHERE expires_at_ms <= ?'),
      anyExpired: db.prepare<[number], { one: number }>('SELECT 1 AS one FROM leases WHERE expires_at_ms <= ? LIMIT 1'),
      leaseKeys: db.prepare<[string], { key: string }>('SELECT key FROM kv WHERE lease = ? ORDER BY key'),
      leaseExists: db.prepare<[string], { one: number }>('SELECT 1 AS one FROM leases WHERE id = ?'),
      insertLease: db.prepare<[string, number, number]>('INSERT INTO leases (id, ttl_ms, expires_at_ms) VALUES (?, ?, ?)'),
      refreshLease: db.prepare<[number, string]>('UPDATE leases SET expires_at_ms = ? + ttl_ms WHERE id = ?'),
      deleteLease: db.prepare<[string]>('DELETE FROM leases WHERE id = ?'),
      get: db.prepare<[string], KvRow>('SELECT key, value, mod_revision, lease FROM kv WHERE key = ?'),
      list: db.prepare<[string, string, string], KvRow>(
        'SELECT key, value, mod_revision, lease FROM kv WHERE key >= ? AND substr(key, 1, length(?)) = ? ORDER BY key',
      ),
      upsert: db.prepare<[string, string, number, number, string | null]>(
        `INSERT INTO kv (key, value, create_revision, mod_revision, lease) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision, lease = excluded.lease`,
      ),
      deleteKey: db.prepare<[string]>('DELETE FROM kv WHERE key = ?'),
      event: db.prepare<[number, string, string, string | null, number]>(
        'INSERT INTO events (revision, type, key, value, at_ms) VALUES (?, ?, ?, ?, ?)',
      ),
      newestOlderThan: db.prepare<[number], { cutoff: number | null }>(
        'SELECT max(revision) AS cutoff FROM events WHERE at_ms < ?',
      ),
      trim: db.prepare<[number]>('DELETE FROM events WHERE revision <= ?'),
      setCompacted: db.prepare<[number]>('UPDATE meta SET compacted = max(compacted, ?) WHERE id = 1'),
      eventsAfter: db.prepare<[number, string, string], EventRow>(
        'SELECT revision, type, key, value FROM events WHERE revision > ? AND substr(key, 1, length(?)) = ? ORDER BY revision',
      ),
    };
  }

  async get(key: string): Promise<KeyValue | undefined> {
    return this.write('get', () => {
      const row = this.sql.get.get(key);
      return row === undefined ? undefined : toKeyValue(row);
    });
  }

  async list(prefix: string): Promise<KeyValue[]> {
    return this.write('list', () => this.sql.list.all(prefix, prefix, prefix).map(toKeyValue));
  }

  async create(key: string, value: string, options?: WriteOptions): Promise<number | undefined> {
    return this.write('create', (now) => {
      if (this.sql.get.get(key) !== undefined) return undefined;
      return this.putInTx(key, value, options?.lease, now);
    });
  }

  async compareAndSwap(
    key: string,
    value: string,
    expectedRevision: number,
    options?: WriteOptions,
  ): Promise<number | undefined> {
    return this.write('compareAndSwap', (now) => {
      const row = this.sql.get.get(key);
      if (row === undefined || row.mod_revision !== expectedRevision) return undefined;
      return this.putInTx(key, value, options?.lease, now);
    });
  }

  async put(key: string, value: string, options?: WriteOptions): Promise<number> {
    return this.write('put', (now) => this.putInTx(key, value, options?.lease, now));
  }

  async delete(key: string, expectedRevision?: number): Promise<boolean> {
    return this.write('delete', (now) => {
      const row = this.sql.get.get(key);
      if (row === undefined) return false;
      if (expectedRevision !== undefined && row.mod_revision !== expectedRevision) return false;
      this.deleteInTx(key, now);
      return true;
    });
  }

  async grantLease(ttlMs: number): Promise<LeaseId> {
    if (!(ttlMs > 0) || !Number.isFinite(ttlMs)) throw new StoreError(`lease TTL must be a positive number of ms, got ${ttlMs}`);
    const ttl = Math.ceil(ttlMs);
    // Random, not a counter: an id must never name another process's lease,
    // even after the store file was deleted and recreated.
    const id = randomBytes(8).toString('hex');
    return this.write('grantLease', (now) => {
      this.sql.insertLease.run(id, ttl, now + ttl);
      return id;
    });
  }

  async keepAlive(lease: LeaseId): Promise<boolean> {
    // The sweep at the start of the transaction has already removed the lease if it expired.
    return this.write('keepAlive', (now) => this.sql.refreshLease.run(now, lease).changes > 0);
  }

  async revokeLease(lease: LeaseId): Promise<void> {
    await this.write('revokeLease', (now) => this.revokeInTx(lease, now));
  }

  async watch(
    prefix: string,
    onEvent: (event: WatchEvent) => void,
    onError?: (error: Error) => void,
  ): Promise<Watch> {
    const { revision } = await this.read('watch', () => this.sql.revision.get()!);
    const watch = new EmbeddedWatch(this, prefix, revision, onEvent, onError, this.pollIntervalMs);
    this.watches.add(watch);
    return watch;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const watch of this.watches) await watch.close();
    for (const sleeper of this.sleepers) {
      clearTimeout(sleeper.timer);
      sleeper.wake();
    }
    this.sleepers.clear();
    this.db.close();
  }

  /**
   * One watcher poll: sweep expired leases if there are any (so their deletes
   * appear without any writer), then read new events from one snapshot.
   * Returns undefined when the store was busy (try again next tick).
   * Internal: used by EmbeddedWatch.
   */
  async pollEvents(
    prefix: string,
    after: number,
  ): Promise<{ events: EventRow[]; revision: number } | 'compacted' | undefined> {
    if (this.closed) return undefined;
    try {
      if (this.sql.anyExpired.get(Date.now()) !== undefined) await this.write('watch', () => undefined);
      return this.runDeferred(() => {
        const meta = this.sql.revision.get()!;
        if (meta.compacted > after) return 'compacted' as const;
        return { events: this.sql.eventsAfter.all(after, prefix, prefix), revision: meta.revision };
      }) as { events: EventRow[]; revision: number } | 'compacted';
    } catch (error) {
      // A lock held past the timeout is an outage, not a broken watch: the
      // events stay in the table, and the next poll picks them up.
      if (error instanceof StoreUnavailableError || isBusy(error)) return undefined;
      throw error;
    }
  }

  /** Internal: called by a watch when it stops. */
  forgetWatch(watch: EmbeddedWatch): void {
    this.watches.delete(watch);
  }

  /** Writes key inside the current transaction; returns the new revision. */
  private putInTx(key: string, value: string, lease: LeaseId | undefined, now: number): number {
    if (lease !== undefined && this.sql.leaseExists.get(lease) === undefined) {
      throw new StoreError(`${this.path}: lease ${lease} does not exist (expired or revoked)`);
    }
    const revision = this.sql.bump.get()!.revision;
    this.sql.upsert.run(key, value, revision, revision, lease ?? null);
    this.sql.event.run(revision, 'put', key, value, now);
    return revision;
  }

  private deleteInTx(key: string, now: number): void {
    const revision = this.sql.bump.get()!.revision;
    this.sql.deleteKey.run(key);
    this.sql.event.run(revision, 'delete', key, null, now);
  }

  private revokeInTx(lease: LeaseId, now: number): void {
    for (const { key } of this.sql.leaseKeys.all(lease)) this.deleteInTx(key, now);
    this.sql.deleteLease.run(lease);
  }

  /** Bounds the events table by count and age; watchers behind the cut get onError. */
  private trimEvents(now: number): void {
    const { revision, compacted } = this.sql.revision.get()!;
    const byAge = this.sql.newestOlderThan.get(now - this.eventRetentionMs)!.cutoff ?? 0;
    const cutoff = Math.max(revision - this.maxEvents, byAge);
    if (cutoff <= compacted) return;
    this.sql.trim.run(cutoff);
    this.sql.setCompacted.run(cutoff);
  }

  /**
   * Runs `body` in one IMMEDIATE transaction, after deleting expired leases
   * and their keys. Waits (asynchronously) for other processes' locks up to
   * timeoutMs, then fails with StoreUnavailableError naming the path.
   */
  private write<T>(op: string, body: (now: number) => T): Promise<T> {
    return this.transact(op, this.runImmediate, () => {
      const now = Date.now();
      let changed = false;
      for (const { id } of this.sql.expired.all(now)) {
        this.revokeInTx(id, now);
        changed = true;
      }
      const before = this.sql.revision.get()!.revision;
      const result = body(now);
      if (changed || this.sql.revision.get()!.revision !== before) this.trimEvents(now);
      return result;
    });
  }

  /** A read-only snapshot (no sweep): used only where expiry cannot matter. */
  private read<T>(op: string, body: () => T): Promise<T> {
    return this.transact(op, this.runDeferred, body);
  }

  private async transact<T>(op: string, run: (body: () => unknown) => unknown, body: () => T): Promise<T> {
    const deadline = Date.now() + this.timeoutMs;
    let delay = 1;
    for (;;) {
      if (this.closed) throw new StoreError(`embedded store ${this.path} is closed (${op})`);
      try {
        return run(body) as T;
      } catch (error) {
        if (isIoFailure(error)) {
          throw new StoreUnavailableError('embedded', `${op} on ${this.path} failed: ${messageOf(error)}`, { cause: error });
        }
        if (!isBusy(error)) throw error;
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          throw new StoreUnavailableError(
            'embedded',
            `${this.path} stayed locked by another process for more than ${this.timeoutMs} ms (${op})`,
            { cause: error },
          );
        }
        await this.sleep(Math.min(delay, remaining));
        delay = Math.min(delay * 2, 20);
      }
    }
  }

  /** A sleep that close() cuts short, so no timer outlives the store. */
  private sleep(ms: number): Promise<void> {
    return new Promise((wake) => {
      const sleeper = {
        timer: setTimeout(() => {
          this.sleepers.delete(sleeper);
          wake();
        }, ms),
        wake,
      };
      this.sleepers.add(sleeper);
    });
  }
}

/** Retries a synchronous SQLite call while another connection holds the lock. */
async function retryBusy<T>(deadline: number, fn: () => T): Promise<T> {
  let delay = 1;
  for (;;) {
    try {
      return fn();
    } catch (error) {
      if (!isBusy(error) || Date.now() >= deadline) throw error;
      await new Promise((wake) => setTimeout(wake, delay));
      delay = Math.min(delay * 2, 20);
    }
  }
}

/** Polls the events table on a timer and delivers new events under its prefix. */
class EmbeddedWatch implements Watch {
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: EmbeddedStore,
    private readonly prefix: string,
    /** Highest revision already accounted for. */
    private after: number,
    private readonly onEvent: (event: WatchEvent) => void,
    private readonly onError: ((error: Error) => void) | undefined,
    private readonly intervalMs: number,
  ) {
    this.schedule();
  }

  async close(): Promise<void> {
    this.stop();
  }

  private schedule(): void {
    if (this.stopped) return;
    // A chain of timeouts, not an interval: a slow poll never overlaps the next.
    this.timer = setTimeout(() => void this.poll(), this.intervalMs);
  }

  private async poll(): Promise<void> {
    this.timer = undefined;
    if (this.stopped) return;
    let result: Awaited<ReturnType<EmbeddedStore['pollEvents']>>;
    try {
      result = await this.store.pollEvents(this.prefix, this.after);
    } catch (error) {
      this.fail(
        new StoreUnavailableError('embedded', `watch on ${this.store.path} failed: ${messageOf(error)}`, { cause: error }),
      );
      return;
    }
    if (this.stopped) return;
    if (result === 'compacted') {
      this.fail(new StoreError(`watch on ${this.store.path} fell behind: events after revision ${this.after} were trimmed`));
      return;
    }
    if (result !== undefined) {
      for (const row of result.events) {
        const event: WatchEvent =
          row.type === 'delete'
            ? { type: 'delete', key: row.key, revision: row.revision }
            : { type: 'put', key: row.key, value: row.value ?? '', revision: row.revision };
        this.after = row.revision;
        try {
          this.onEvent(event);
        } catch (error) {
          this.fail(error instanceof Error ? error : new Error(String(error)));
          return;
        }
        if (this.stopped) return;
      }
      this.after = Math.max(this.after, result.revision);
    }
    this.schedule();
  }

  private fail(error: Error): void {
    if (this.stopped) return;
    this.stop();
    this.onError?.(error);
  }

  private stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.store.forgetWatch(this);
  }
}
