import type pg from 'pg';
import type { MemberStatus } from '../cluster/types.js';
import { quoteIdent } from '../postgres/sql.js';
import { sqlOn, type BackupContext } from './context.js';

/** Permanent tables and materialised views (unlogged tables come back empty from any backup). */
const TABLES_SQL = `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'm') AND c.relpersistence = 'p'
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  ORDER BY 1, 2`;

/** Exact row counts of every table in every database a client can connect to, keyed "db/schema.table". */
export async function countAll(query: (database: string, work: (client: pg.Client) => Promise<void>) => Promise<void>, databases: string[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const database of databases) {
    await query(database, async (client) => {
      for (const row of (await client.query<{ nspname: string; relname: string }>(TABLES_SQL)).rows) {
        const result = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${quoteIdent(row.nspname)}.${quoteIdent(row.relname)}`);
        counts[`${database}/${row.nspname}.${row.relname}`] = Number(result.rows[0]!.n);
      }
    });
  }
  return counts;
}

export const DATABASES_SQL = `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1`;

/**
 * Row counts on a replica with replay paused: the snapshot then shows exactly
 * the commits replayed up to the returned LSN, so a restore that stops before
 * the record at that LSN must show the same counts. Replay resumes afterwards
 * (always: also on failure); the replica keeps receiving WAL meanwhile.
 */
export async function countRows(ctx: BackupContext, replica: MemberStatus): Promise<{ lsn: string; counts: Record<string, number> }> {
  return sqlOn(ctx, replica, async (control) => {
    await control.query('SELECT pg_wal_replay_pause()');
    try {
      for (let i = 0; i < 100; i++) {
        const state = (await control.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s;
        if (state === 'paused') break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const lsn = (await control.query<{ lsn: string }>('SELECT pg_last_wal_replay_lsn()::text AS lsn')).rows[0]!.lsn;
      const databases = (await control.query<{ datname: string }>(DATABASES_SQL)).rows.map((r) => r.datname);
      const counts = await countAll((database, work) => sqlOn(ctx, replica, work, database, 600_000), databases);
      return { lsn, counts };
    } finally {
      await control.query('SELECT pg_wal_replay_resume()');
    }
  });
}
