/**
 * The publication/subscription SQL the upgrade needs, in one place (to be
 * merged with src/logical/ later). Every function is idempotent: a re-run
 * finds what an interrupted run created and goes on.
 */
import type pg from 'pg';
import { quoteIdent, quoteLiteral } from '../postgres/sql.js';

export interface TableRef {
  schema: string;
  name: string;
}

export const qualified = (t: TableRef): string => `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;
export const display = (t: TableRef): string => `${t.schema}.${t.name}`;

const USER_TABLES = `
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')`;

/** Ordinary tables of the database (extension-owned ones excluded), sorted. */
export async function userTables(client: pg.Client): Promise<TableRef[]> {
  const r = await client.query<{ schema: string; name: string }>(`SELECT n.nspname AS schema, c.relname AS name ${USER_TABLES} ORDER BY 1, 2`);
  return r.rows;
}

/**
 * Tables whose UPDATE and DELETE cannot be published: replica identity
 * 'default' without a primary key, 'nothing', or 'index' on a dropped index.
 * Publishing them would make those commands fail on the old cluster.
 */
export async function tablesWithoutReplicaIdentity(client: pg.Client): Promise<TableRef[]> {
  const r = await client.query<{ schema: string; name: string }>(`
    SELECT n.nspname AS schema, c.relname AS name ${USER_TABLES}
      AND (c.relreplident = 'n'
        OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
        OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
    ORDER BY 1, 2`);
  return r.rows;
}

export async function setReplicaIdentityFull(client: pg.Client, tables: TableRef[]): Promise<void> {
  for (const t of tables) await client.query(`ALTER TABLE ${qualified(t)} REPLICA IDENTITY FULL`);
}

/** FOR ALL TABLES: tables created later are published too (DDL is not: see docs/upgrade.md). */
export async function ensurePublication(client: pg.Client, name: string): Promise<boolean> {
  const exists = await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [name]);
  if (exists.rowCount) return false;
  await client.query(`CREATE PUBLICATION ${quoteIdent(name)} FOR ALL TABLES`);
  return true;
}

export async function dropPublication(client: pg.Client, name: string): Promise<void> {
  await client.query(`DROP PUBLICATION IF EXISTS ${quoteIdent(name)}`);
}

/** Creates the subscription (and with it the slot on the publisher) unless it exists; copies existing rows first. */
export async function ensureSubscription(client: pg.Client, name: string, conninfo: string, publication: string): Promise<boolean> {
  const exists = await client.query('SELECT 1 FROM pg_subscription WHERE subname = $1', [name]);
  if (exists.rowCount) return false;
  await client.query(`CREATE SUBSCRIPTION ${quoteIdent(name)} CONNECTION ${quoteLiteral(conninfo)} PUBLICATION ${quoteIdent(publication)} WITH (copy_data = true, slot_name = ${quoteLiteral(name)})`);
  return true;
}

export async function setSubscriptionEnabled(client: pg.Client, name: string, enabled: boolean): Promise<void> {
  const exists = await client.query('SELECT subenabled FROM pg_subscription WHERE subname = $1', [name]);
  if (!exists.rowCount || exists.rows[0].subenabled === enabled) return;
  await client.query(`ALTER SUBSCRIPTION ${quoteIdent(name)} ${enabled ? 'ENABLE' : 'DISABLE'}`);
}

/** Drops the subscription; with the publisher gone or read-only, the slot there is left to dropSlot. */
export async function dropSubscription(client: pg.Client, name: string, keepSlot: boolean): Promise<void> {
  const exists = await client.query('SELECT 1 FROM pg_subscription WHERE subname = $1', [name]);
  if (!exists.rowCount) return;
  if (keepSlot) {
    await client.query(`ALTER SUBSCRIPTION ${quoteIdent(name)} DISABLE`);
    await client.query(`ALTER SUBSCRIPTION ${quoteIdent(name)} SET (slot_name = NONE)`);
  }
  await client.query(`DROP SUBSCRIPTION ${quoteIdent(name)}`);
}

export async function dropSlot(client: pg.Client, name: string): Promise<void> {
  await client.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]);
}

export interface CopyProgress {
  /** Subscription exists and its apply worker runs. */
  running: boolean;
  enabled: boolean;
  tables: number;
  /** Tables not yet in state 'r' (ready), with their state letter. */
  pending: { table: string; state: string }[];
}

/** On the subscriber: how far the initial copy is. */
export async function copyProgress(client: pg.Client, name: string): Promise<CopyProgress> {
  const sub = await client.query<{ enabled: boolean; pid: number | null }>(
    `SELECT s.subenabled AS enabled, (SELECT max(pid) FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.relid IS NULL) AS pid
       FROM pg_subscription s WHERE s.subname = $1`,
    [name],
  );
  const rels = await client.query<{ table: string; state: string }>(
    `SELECT format('%s.%s', n.nspname, c.relname) AS table, r.srsubstate AS state
       FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid JOIN pg_class c ON c.oid = r.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE s.subname = $1 ORDER BY 1`,
    [name],
  );
  const row = sub.rows[0];
  return {
    running: row !== undefined && row.pid !== null,
    enabled: row?.enabled ?? false,
    tables: rels.rowCount ?? 0,
    pending: rels.rows.filter((r) => r.state !== 'r'),
  };
}

/** On the publisher: the slot's confirmed position and how many bytes of WAL it is behind. */
export async function slotLag(client: pg.Client, slot: string): Promise<{ confirmed: string | null; lagBytes: number | null; active: boolean } | undefined> {
  const r = await client.query<{ confirmed: string | null; lag: string | null; active: boolean }>(
    `SELECT confirmed_flush_lsn::text AS confirmed, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS lag, active
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  const row = r.rows[0];
  if (!row) return undefined;
  return { confirmed: row.confirmed, lagBytes: row.lag === null ? null : Number(row.lag), active: row.active };
}

/** True when the slot has confirmed `lsn` (the subscriber applied and flushed everything up to it). */
export async function slotConfirmed(client: pg.Client, slot: string, lsn: string): Promise<boolean> {
  const r = await client.query<{ ok: boolean }>('SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1', [slot, lsn]);
  return r.rows[0]?.ok === true;
}
