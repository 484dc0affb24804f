import type pg from 'pg';
import { z } from 'zod';
import type { MemberStatus } from '../cluster/types.js';
import type { MemberConfig } from '../config/member.js';
import { ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { splitHostPort } from '../postgres/conf.js';
import { agentSqlTarget, type LocalPostgres } from '../postgres/local.js';
import { quoteIdent, withConnection, type SqlTarget } from '../postgres/sql.js';
import { applyDelayOf } from './delayed.js';
import { ReplayError } from './replay.js';

/** A table name, optionally schema-qualified, unquoted: letters, digits, _ (and $ after the first). */
export const NEW_TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$/;

/** POST /recover-table/copy: checked before anything is done with it (unknown keys refused). */
export const RecoverCopyBody = z
  .object({
    /** The delayed replica held at the target, by member name: this agent looks up its address itself. */
    from: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'expected a member name'),
    /** Read with to_regclass() on the replica (a parameter, never spliced into SQL). */
    table: z.string().min(1).max(200),
    into: z.string().regex(NEW_TABLE_NAME, 'expected a new table name, optionally schema-qualified (letters, digits, _)'),
    database: z.string().min(1).max(63),
  })
  .strict();
export type RecoverCopyRequest = z.infer<typeof RecoverCopyBody>;

export interface RecoverCopyResult {
  rowsAtTarget: number;
  rowsCopied: number;
  /** Rows the original table holds on the primary now (null: it is gone). */
  primaryRowsNow: number | null;
  /** Who owns the new table: the original table's owner at the target, or relevo's agent role when that role is gone. */
  owner: string;
}

const BATCH_ROWS = 5_000;
const COPY_TIMEOUT_MS = 600_000;

interface Host {
  currentStatus(): MemberStatus | undefined;
  /** The last readable status of a member, from the store. */
  knownMember(name: string): MemberStatus | undefined;
}

/**
 * recover-table's write, done by the primary's agent (docs/undo.md): it
 * creates the new table and inserts as the superuser `relevo` through the
 * local socket, and pulls the rows from the delayed replica over the network
 * as `relevo_remote` (pg_read_all_data; TLS verify-full against the cluster
 * CA). No superuser ever logs in over TCP.
 */
export async function copyFromDelayedReplica(config: MemberConfig, local: LocalPostgres, credentials: Credentials | undefined, host: Host, request: RecoverCopyRequest): Promise<RecoverCopyResult> {
  if (!credentials) throw new ReplayError('REPLAY_FAILED', `member ${config.name}: no agent credentials`, false);
  const self = host.currentStatus();
  if (!self || self.role !== 'primary' || self.postmasterPid === null) {
    throw new ReplayError('PRIMARY_CHANGED', `member ${config.name} is ${self ? `${self.role} in state ${self.state}` : 'not observed yet'}: the recovered rows are written on the running primary`, false);
  }
  const source = host.knownMember(request.from);
  if (!source) throw new ReplayError('UNKNOWN_MEMBER', `member ${config.name} knows no member "${request.from}"`);
  if (applyDelayOf(source) === undefined) throw new ReplayError('NOT_DELAYED', `member ${request.from} is not a delayed replica`);
  const [address, port] = splitHostPort(source.connectAddress);
  const replica: SqlTarget = {
    host: address,
    port,
    user: ROLE_NAMES.network,
    password: credentials.agentPassword,
    database: request.database,
    ...(local.tls ? { tlsCaFile: local.tls.caCert } : {}),
  };
  const primary: SqlTarget = { ...agentSqlTarget(local, credentials), database: request.database };
  return withConnection(replica, (from) => copyRows(from, primary, request), COPY_TIMEOUT_MS).catch((error: Error & { code?: string }) => {
    if (error instanceof ReplayError) throw error;
    throw new ReplayError('REPLAY_FAILED', `copying ${request.table} from ${request.from} into ${request.into} on ${config.name}: ${error.message}`, false);
  });
}

/**
 * CREATE TABLE with the replica's columns (names, types, NOT NULL), then
 * batches of rows read in their text form from a cursor on the replica and
 * cast back into the new table's row type, in one transaction here.
 */
async function copyRows(source: pg.Client, primary: SqlTarget, request: RecoverCopyRequest): Promise<RecoverCopyResult> {
  const { table, into, from } = request;
  await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  // Only a replica held still at its target gives the rows as they were there.
  const held = (await source.query<{ r: boolean; state: string }>('SELECT pg_is_in_recovery() AS r, pg_get_wal_replay_pause_state() AS state')).rows[0]!;
  if (!held.r || held.state !== 'paused') throw new ReplayError('TARGET_NOT_REACHED', `${from} is not paused at a recovery target (${held.r ? `replay ${held.state}` : 'not in recovery'}): nothing copied`, false);
  // relevo_remote has no BYPASSRLS: with row security off, a policy that would hide rows is an error, never a silent subset.
  await source.query('SET LOCAL row_security = off');
  // A transaction in flight at the target may hold the table's AccessExclusiveLock there (a TRUNCATE
  // or DROP whose lock was replayed but not its commit): fail clearly instead of waiting for ever.
  await source.query(`SET LOCAL lock_timeout = '10s'`);
  const meta = (await source.query<{ name: string | null; owner: string | null }>('SELECT c.oid::regclass::text AS name, pg_get_userbyid(c.relowner) AS owner FROM pg_class c WHERE c.oid = to_regclass($1)', [table])).rows[0];
  const columns = await source.query<{ name: string; type: string; notnull: boolean }>(
    `SELECT attname AS name, format_type(atttypid, atttypmod) AS type, attnotnull AS notnull
       FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [table],
  );
  if (!meta?.name || columns.rows.length === 0) throw new ReplayError('TABLE_MISSING', `table ${table} does not exist in database ${request.database} on ${from} at the target`);
  const sourceName = meta.name;
  const rowsAtTarget = await source
    .query<{ n: string }>(`SELECT count(*) AS n FROM ${sourceName}`)
    .then((r) => Number(r.rows[0]!.n))
    .catch((error: Error & { code?: string }) => {
      if (error.code === '55P03') throw new ReplayError('TABLE_LOCKED_AT_TARGET', `${table} is locked on ${from} at the target by a transaction in flight there (e.g. a TRUNCATE before its commit): use --find or --xid, which stop before that transaction starts`, false);
      if (error.code === '42501' && /row-level security/.test(error.message)) throw new ReplayError('TABLE_ROW_SECURITY', `${table} has row-level security on ${from}: ${ROLE_NAMES.network} (no BYPASSRLS) would not see every row; nothing copied`, false);
      throw error;
    });
  await source.query(`DECLARE rows NO SCROLL CURSOR FOR SELECT t::text AS r FROM ${sourceName} t`);
  const definition = columns.rows.map((c) => `${quoteIdent(c.name)} ${c.type}${c.notnull ? ' NOT NULL' : ''}`).join(', ');
  return withConnection(
    primary,
    async (target) => {
      await target.query('BEGIN');
      await target.query(`CREATE TABLE ${into} (${definition})`).catch((error: Error & { code?: string }) => {
        if (error.code === '42P07') throw new ReplayError('TARGET_TABLE_EXISTS', `${into} already exists in database ${request.database} on the primary: choose another name`);
        throw error;
      });
      const intoName = (await target.query<{ n: string }>('SELECT to_regclass($1)::text AS n', [into])).rows[0]!.n;
      for (;;) {
        const batch = await source.query<{ r: string }>(`FETCH ${BATCH_ROWS} FROM rows`);
        if (batch.rows.length === 0) break;
        await target.query(`INSERT INTO ${intoName} SELECT (r::${intoName}).* FROM unnest($1::text[]) AS r`, [batch.rows.map((row) => row.r)]);
      }
      const rowsCopied = Number((await target.query<{ n: string }>(`SELECT count(*) AS n FROM ${intoName}`)).rows[0]!.n);
      // The application that owned the table owns the copy (else it could not read it); relevo's superuser keeps it only if that role is gone.
      const ownerExists = meta.owner !== null && (await target.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [meta.owner])).rowCount === 1;
      if (ownerExists) await target.query(`ALTER TABLE ${intoName} OWNER TO ${quoteIdent(meta.owner!)}`);
      await target.query('COMMIT');
      const primaryRowsNow = await target
        .query<{ n: string }>(`SELECT count(*) AS n FROM ${sourceName}`)
        .then((r) => Number(r.rows[0]!.n))
        .catch(() => null);
      return { rowsAtTarget, rowsCopied, primaryRowsNow, owner: ownerExists ? meta.owner! : ROLE_NAMES.agent };
    },
    COPY_TIMEOUT_MS,
  );
}
