import type { MemberStatus } from '../cluster/types.js';
import type { MemberConfig } from '../config/member.js';
import { loadCredentials, type Credentials } from '../config/secrets.js';
import { agentSqlTarget, type LocalPostgres } from '../postgres/local.js';
import { withOwnedDir } from '../postgres/owned-fs.js';
import { withConnection } from '../postgres/sql.js';
import { proposeTarget, scanWal, WaldumpScanner, type DestructiveTransaction } from '../postgres/waldump.js';
import { copyFromDelayedReplica, RecoverCopyBody, type RecoverCopyResult } from './recover-copy.js';
import { checkRecoveryTarget, RECOVERY_TARGET_FILE, renderRecoveryTarget, type RecoveryTarget } from './delayed.js';
import type { OperatorRequest } from './observation.js';

/** A refused or failed replay request: a stable code the operator can act on. */
export class ReplayError extends Error {
  constructor(
    readonly code: ReplayErrorCode,
    message: string,
    /** A refusal changed nothing (HTTP 409); otherwise something failed (503). */
    readonly refusal = true,
  ) {
    super(`${code}: ${message}`);
    this.name = 'ReplayError';
  }
}

import type { ReplayErrorCode } from './replay-errors.js';
export { REPLAY_ERROR_CODES, type ReplayErrorCode } from './replay-errors.js';

/** What --find reports: the table's file, every destructive transaction seen, and the proposal. */
export interface FindResult {
  table: string;
  relfilenode: number;
  scannedFrom: string;
  records: number;
  found: DestructiveTransaction[];
  proposed: DestructiveTransaction | null;
  /** With body.xid: that transaction's first record in the pending WAL (null: not there). */
  xidFirstLsn: string | null;
}

interface Host {
  request(operatorRequest: OperatorRequest): void;
  currentStatus(): MemberStatus | undefined;
  /** The last readable status of a member, from the store. */
  knownMember(name: string): MemberStatus | undefined;
}

/**
 * Replay control on this member (the REST API's /replay/* endpoints):
 * pause and resume replay, hold a delayed replica at a recovery target for
 * recover-table, and scan its pending WAL for the destructive transaction.
 */
export class ReplayControl {
  private credentials: Credentials | undefined;

  constructor(
    private readonly config: MemberConfig,
    private readonly local: LocalPostgres,
    private readonly host: Host,
  ) {}

  /** The recovery target recover-table holds this member at, from the file in the data directory. */
  target(): RecoveryTarget | undefined {
    if (!this.config.delay) return undefined;
    try {
      const text = withOwnedDir(this.local.dataDir, this.local.user, (dir) => dir.read(RECOVERY_TARGET_FILE));
      if (text === undefined) return undefined;
      const xid = text.match(/^recovery_target_xid = '(\d+)'/m)?.[1];
      const time = text.match(/^recovery_target_time = '([^']+)'/m)?.[1];
      const lsn = text.match(/^recovery_target_lsn = '([^']+)'/m)?.[1];
      return lsn ? { lsn } : xid ? { xid } : time ? { time } : undefined;
    } catch {
      return undefined;
    }
  }

  private runningReplica(): MemberStatus {
    const status = this.host.currentStatus();
    if (!status || status.role !== 'replica' || status.postmasterPid === null) {
      throw new ReplayError('NOT_A_REPLICA', `member ${this.config.name} is ${status ? `${status.role} in state ${status.state}` : 'not observed yet'}: replay control needs a running replica`);
    }
    return status;
  }

  private sql<T>(work: Parameters<typeof withConnection<T>>[1], database?: string, timeoutMs = 10_000): Promise<T> {
    this.credentials ??= loadCredentials(this.config);
    if (!this.credentials) throw new ReplayError('REPLAY_FAILED', `member ${this.config.name}: no agent credentials`, false);
    return withConnection({ ...agentSqlTarget(this.local, this.credentials), ...(database ? { database } : {}) }, work, timeoutMs);
  }

  async pause(): Promise<{ member: string; paused: true }> {
    this.runningReplica();
    await this.sql((client) => client.query('SELECT pg_wal_replay_pause()'));
    return { member: this.config.name, paused: true };
  }

  /**
   * Resumes replay. A replica held at a recovery target is not resumed with
   * pg_wal_replay_resume(): past a reached target that ends recovery and
   * promotes it. Its target is removed instead and it restarts with its delay.
   */
  async resume(): Promise<{ member: string; paused: false; restarted: boolean }> {
    this.runningReplica();
    if (this.target()) {
      await this.clearTarget();
      return { member: this.config.name, paused: false, restarted: true };
    }
    await this.sql((client) => client.query('SELECT pg_wal_replay_resume()'));
    return { member: this.config.name, paused: false, restarted: false };
  }

  /** Holds this delayed replica at a target: the target file is written and PostgreSQL restarts to read it. */
  async setTarget(body: { lsn?: unknown; xid?: unknown; time?: unknown }): Promise<{ member: string; target: RecoveryTarget }> {
    if (!this.config.delay) throw new ReplayError('NOT_DELAYED', `member ${this.config.name} has no delay setting`);
    const target = checkRecoveryTarget(body);
    if (typeof target === 'string') throw new ReplayError('BAD_REQUEST', target);
    this.runningReplica();
    const current = this.target();
    if (current) throw new ReplayError('TARGET_ACTIVE', `member ${this.config.name} is already held at ${JSON.stringify(current)}: \`relevo replay resume ${this.config.name}\` ends that first`);
    withOwnedDir(this.local.dataDir, this.local.user, (dir) => dir.write(RECOVERY_TARGET_FILE, renderRecoveryTarget(target)));
    this.host.request({ kind: 'restart' });
    return { member: this.config.name, target };
  }

  /** Removes the target and restarts PostgreSQL: the delay applies again. */
  async clearTarget(): Promise<{ member: string; cleared: boolean }> {
    const removed = withOwnedDir(this.local.dataDir, this.local.user, (dir) => dir.remove(RECOVERY_TARGET_FILE));
    if (removed) this.host.request({ kind: 'restart' });
    return { member: this.config.name, cleared: removed };
  }

  /**
   * recover-table's write on the primary (POST /recover-table/copy): the rows
   * of a delayed replica held at its target, into a new table here.
   */
  async copy(raw: unknown): Promise<RecoverCopyResult> {
    const parsed = RecoverCopyBody.safeParse(raw ?? {});
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
      throw new ReplayError('BAD_REQUEST', `body: ${problems}; expected {"from": "<member>", "table": "<schema.name>", "into": "<new name>", "database": "<name>"}`);
    }
    this.credentials ??= loadCredentials(this.config);
    return copyFromDelayedReplica(this.config, this.local, this.credentials, this.host, parsed.data);
  }

  /**
   * Scans the WAL this delayed replica received but has not replayed yet
   * (the delay window) for the transaction that destroyed `table`'s rows.
   */
  async find(body: { database?: unknown; table?: unknown; massRows?: unknown; xid?: unknown }): Promise<FindResult> {
    if (!this.config.delay) throw new ReplayError('NOT_DELAYED', `member ${this.config.name} has no delay setting`);
    if (typeof body.table !== 'string' || body.table === '') throw new ReplayError('BAD_REQUEST', 'expected {"table": "<schema.name>", "database": "<name>"}');
    const database = typeof body.database === 'string' && body.database !== '' ? body.database : 'postgres';
    const status = this.runningReplica();
    if (status.delay?.feed === 'archive') throw new ReplayError('BAD_REQUEST', `member ${this.config.name} is fed from the WAL archive: its pending WAL is not in pg_wal; give --xid or --time`);
    const table = body.table;
    const info = await this.sql(async (client) => {
      const rows = await client.query<{ filenode: number | null; spc: number; db: number; tuples: number; replayed: string; tli: number }>(
        `SELECT pg_relation_filenode(c.oid)::int AS filenode,
                CASE WHEN c.reltablespace = 0 THEN d.dattablespace ELSE c.reltablespace END::int AS spc,
                d.oid::int AS db, greatest(c.reltuples, 0)::float8 AS tuples,
                pg_last_wal_replay_lsn()::text AS replayed,
                -- The pending WAL is on the timeline being received (after a failover, newer than the last checkpoint's).
                coalesce((SELECT received_tli FROM pg_stat_wal_receiver), (pg_control_checkpoint()).timeline_id) AS tli
           FROM pg_class c, pg_database d
          WHERE c.oid = to_regclass($1) AND d.datname = current_database()`,
        [table],
      );
      return rows.rows[0];
    }, database).catch((error: Error) => {
      throw error instanceof ReplayError ? error : new ReplayError('REPLAY_FAILED', `cannot read table ${table} in database ${database} on ${this.config.name}: ${error.message}`, false);
    });
    if (!info || info.filenode === null) throw new ReplayError('TABLE_MISSING', `table ${table} does not exist in database ${database} on ${this.config.name} at its replayed position`);
    const scanner = new WaldumpScanner({ tablespace: info.spc, database: info.db, relfilenode: info.filenode }, typeof body.xid === 'string' ? body.xid : undefined);
    const scan = await scanWal({ binDir: this.local.binDir, user: this.local.user, dataDir: this.local.dataDir, startLsn: info.replayed, timeline: info.tli, scanner, timeoutMs: 120_000 }).catch((error: Error) => {
      throw new ReplayError('REPLAY_FAILED', error.message, false);
    });
    const found = scanner.results();
    // "Mass": the number given, else half the rows the table is estimated to hold (at least one hundred).
    const massRows = typeof body.massRows === 'number' && body.massRows > 0 ? body.massRows : Math.max(100, Math.ceil(info.tuples / 2));
    return { table, relfilenode: info.filenode, scannedFrom: info.replayed, records: scan.records, found, proposed: proposeTarget(found, massRows) ?? null, xidFirstLsn: scanner.watchedStart() ?? null };
  }
}
