/**
 * What must be equal on both sides at the switch: sequence positions (logical
 * replication does not carry them) and row counts per table. Also the
 * write fence on a cluster: read-only by default for new transactions.
 */
import type pg from 'pg';
import { quoteIdent } from '../postgres/sql.js';
import { display, qualified, type TableRef } from './replication.js';

export interface SequenceValue {
  schema: string;
  name: string;
  lastValue: string;
}

/** Every used sequence of the old database with the last value it handed out (or cached ahead). */
export async function sequenceValues(client: pg.Client): Promise<SequenceValue[]> {
  const r = await client.query<{ schema: string; name: string; last: string }>(
    `SELECT schemaname AS schema, sequencename AS name, last_value::text AS last FROM pg_sequences
      WHERE last_value IS NOT NULL AND schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`,
  );
  return r.rows.map((row) => ({ schema: row.schema, name: row.name, lastValue: row.last }));
}

/**
 * setval(…, last, true) on the new side: its next nextval() returns the value
 * after the old side's last one, so no value used on the old side comes again.
 */
export async function applySequences(client: pg.Client, values: SequenceValue[]): Promise<void> {
  for (const v of values) {
    await client.query(`SELECT setval($1::regclass, $2::bigint, true)`, [`${quoteIdent(v.schema)}.${quoteIdent(v.name)}`, v.lastValue]);
  }
}

export async function rowCounts(client: pg.Client, tables: TableRef[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of tables) {
    const r = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ONLY ${qualified(t)}`);
    out[display(t)] = Number(r.rows[0]!.n);
  }
  return out;
}

export function countDifferences(a: Record<string, number>, b: Record<string, number>): string[] {
  const names = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...names].sort().filter((n) => a[n] !== b[n]).map((n) => `${n}: ${a[n] ?? 'missing'} vs ${b[n] ?? 'missing'}`);
}

/**
 * Makes new transactions read-only on the server at once (ALTER SYSTEM +
 * reload reaches every session, until the next restart under relevo) and in
 * the database durably (ALTER DATABASE: survives restarts and failovers).
 */
export async function setReadOnly(client: pg.Client, database: string, readOnly: boolean): Promise<void> {
  await client.query('SET default_transaction_read_only = off');
  if (readOnly) {
    await client.query(`ALTER DATABASE ${quoteIdent(database)} SET default_transaction_read_only = on`);
    await client.query('ALTER SYSTEM SET default_transaction_read_only = on');
  } else {
    await client.query(`ALTER DATABASE ${quoteIdent(database)} RESET default_transaction_read_only`);
    await client.query('ALTER SYSTEM RESET default_transaction_read_only');
  }
  await client.query('SELECT pg_reload_conf()');
}

/** Client sessions of `database` inside a transaction (writes only, when `writesOnly`), other than relevo's own. */
export async function openTransactions(client: pg.Client, database: string, writesOnly: boolean): Promise<number[]> {
  const r = await client.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = $1
        AND application_name NOT IN ('relevo-agent', 'relevo-upgrade')
        AND xact_start IS NOT NULL ${writesOnly ? 'AND backend_xid IS NOT NULL' : ''}`,
    [database],
  );
  return r.rows.map((row) => row.pid);
}

export async function terminate(client: pg.Client, pids: number[]): Promise<void> {
  for (const pid of pids) await client.query('SELECT pg_terminate_backend($1)', [pid]);
}

export async function currentLsn(client: pg.Client): Promise<string> {
  return (await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
}

export async function majorVersion(client: pg.Client): Promise<number> {
  const r = await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
  return Math.floor(Number(r.rows[0]!.v) / 10_000);
}
