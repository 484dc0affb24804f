/**
 * SQL primitives for logical replication: statements built from declarations
 * and catalog reads, each small and independent of how it is used (the
 * leader's reconcile, `relevo logical`, and later `relevo upgrade`).
 * Names reaching SQL are validated identifiers (src/cluster/logical-settings.ts)
 * and are quoted anyway.
 */
import type pg from 'pg';
import { qualified, type PublicationDeclaration, type PublishOperation } from '../cluster/logical-settings.js';
import { quoteIdent, quoteLiteral } from '../postgres/sql.js';
import { conninfoValue } from '../postgres/libpq.js';

/** Marks objects relevo created: an undeclared object with it was declared once and is dropped; one without is the operator's. */
export const MANAGED_COMMENT = 'managed by relevo (cluster settings logical.*)';

const qualifiedIdent = (table: string) =>
  qualified(table)
    .split('.')
    .map(quoteIdent)
    .join('.');

/** FOR ALL TABLES | FOR TABLE a, b | FOR TABLES IN SCHEMA s */
function publicationTarget(p: Pick<PublicationDeclaration, 'tables' | 'schemas' | 'allTables'>): string {
  if (p.allTables) return 'FOR ALL TABLES';
  if (p.schemas) return `FOR TABLES IN SCHEMA ${p.schemas.map(quoteIdent).join(', ')}`;
  return `FOR TABLE ${(p.tables ?? []).map(qualifiedIdent).join(', ')}`;
}

export function createPublicationSql(p: PublicationDeclaration): string[] {
  return [
    `CREATE PUBLICATION ${quoteIdent(p.name)} ${publicationTarget(p)} WITH (publish = ${quoteLiteral(p.publish.join(', '))})`,
    `COMMENT ON PUBLICATION ${quoteIdent(p.name)} IS ${quoteLiteral(MANAGED_COMMENT)}`,
  ];
}

/** Statements that bring an existing publication to its declaration (a change to or from FOR ALL TABLES needs a new publication). */
export function alterPublicationSql(p: PublicationDeclaration, actual: PublicationState): string[] {
  if (Boolean(p.allTables) !== actual.allTables) return [dropPublicationSql(p.name), ...createPublicationSql(p)];
  const statements: string[] = [];
  if (!p.allTables && !sameSet(targetList(p), targetList(actual))) {
    statements.push(`ALTER PUBLICATION ${quoteIdent(p.name)} SET ${publicationTarget(p).replace(/^FOR /, '')}`);
  }
  if (!sameSet(p.publish, actual.publish)) statements.push(`ALTER PUBLICATION ${quoteIdent(p.name)} SET (publish = ${quoteLiteral(p.publish.join(', '))})`);
  statements.push(`COMMENT ON PUBLICATION ${quoteIdent(p.name)} IS ${quoteLiteral(MANAGED_COMMENT)}`);
  return statements;
}

export function dropPublicationSql(name: string): string {
  return `DROP PUBLICATION IF EXISTS ${quoteIdent(name)}`;
}

export interface SubscriptionSpec {
  name: string;
  publications: string[];
  conninfo: string;
  copyData: boolean;
  enabled: boolean;
}

/**
 * `slotCreated`: the slot already exists on the publishing side (made beforehand with createSlotSql); needed
 * when both sides are the same server, where CREATE SUBSCRIPTION would wait for itself while creating it.
 */
export function createSubscriptionSql(s: SubscriptionSpec, slotCreated = false): string[] {
  const slot = slotCreated ? `, create_slot = false, slot_name = ${quoteLiteral(s.name)}` : '';
  return [
    `CREATE SUBSCRIPTION ${quoteIdent(s.name)} CONNECTION ${quoteLiteral(s.conninfo)} PUBLICATION ${s.publications.map(quoteIdent).join(', ')} WITH (copy_data = ${s.copyData}, enabled = ${s.enabled}${slot})`,
    `COMMENT ON SUBSCRIPTION ${quoteIdent(s.name)} IS ${quoteLiteral(MANAGED_COMMENT)}`,
  ];
}

/** A logical slot for a subscription (pgoutput), made in the publishing database before the subscription; idempotent. */
export function createSlotSql(name: string): string {
  return `SELECT pg_create_logical_replication_slot(${quoteLiteral(name)}, 'pgoutput') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = ${quoteLiteral(name)})`;
}

export function alterSubscriptionConnectionSql(name: string, conninfo: string): string {
  return `ALTER SUBSCRIPTION ${quoteIdent(name)} CONNECTION ${quoteLiteral(conninfo)}`;
}

export function alterSubscriptionPublicationsSql(name: string, publications: string[], refresh: boolean): string {
  return `ALTER SUBSCRIPTION ${quoteIdent(name)} SET PUBLICATION ${publications.map(quoteIdent).join(', ')} WITH (refresh = ${refresh})`;
}

export function enableSubscriptionSql(name: string, enabled: boolean): string {
  return `ALTER SUBSCRIPTION ${quoteIdent(name)} ${enabled ? 'ENABLE' : 'DISABLE'}`;
}

/** Drops the subscription and, through its connection, its slot on the publishing side. */
export function dropSubscriptionSql(name: string): string {
  return `DROP SUBSCRIPTION IF EXISTS ${quoteIdent(name)}`;
}

export interface ConninfoParts {
  hosts: string[];
  dbname: string;
  user: string;
  passfile: string;
  sslmode: string;
  sslrootcert?: string;
  applicationName: string;
}

/**
 * A subscription's connection: every host of the other side, the primary chosen by libpq
 * (target_session_attrs=primary), the password read from a passfile (never in the catalog).
 */
export function renderConninfo(c: ConninfoParts): string {
  const split = c.hosts.map((h) => {
    const index = h.lastIndexOf(':');
    return [h.slice(0, index).replace(/^\[|\]$/g, ''), h.slice(index + 1)] as const;
  });
  const parts = [
    `host=${conninfoValue(split.map(([host]) => host).join(','))}`,
    `port=${conninfoValue(split.map(([, port]) => port).join(','))}`,
    `dbname=${conninfoValue(c.dbname)}`,
    `user=${conninfoValue(c.user)}`,
    `passfile=${conninfoValue(c.passfile)}`,
    `sslmode=${c.sslmode}`,
    ...(c.sslrootcert ? [`sslrootcert=${conninfoValue(c.sslrootcert)}`] : []),
    'target_session_attrs=primary',
    'connect_timeout=5',
    `application_name=${conninfoValue(c.applicationName)}`,
  ];
  return parts.join(' ');
}

export interface PublicationState {
  name: string;
  allTables: boolean;
  publish: PublishOperation[];
  /** schema.table, sorted. */
  tables: string[];
  schemas: string[];
  managed: boolean;
}

function targetList(p: { tables?: string[]; schemas?: string[] }): string[] {
  if (p.schemas && p.schemas.length > 0) return p.schemas.map((s) => `schema:${s}`);
  return (p.tables ?? []).map((t) => `table:${qualified(t)}`);
}

export function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const left = [...new Set(a)].sort();
  const right = [...new Set(b)].sort();
  return left.length === right.length && left.every((v, i) => v === right[i]);
}

/** Publications of the connected database. */
export async function readPublications(client: pg.Client): Promise<PublicationState[]> {
  const result = await client.query<{ pubname: string; puballtables: boolean; ops: string[]; tables: string[]; schemas: string[]; note: string | null }>(
    `SELECT p.pubname, p.puballtables,
            array_remove(ARRAY[CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
                               CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END], NULL) AS ops,
            coalesce((SELECT array_agg(n.nspname || '.' || c.relname ORDER BY n.nspname, c.relname)
                        FROM pg_publication_rel r JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE r.prpubid = p.oid), '{}') AS tables,
            coalesce((SELECT array_agg(n.nspname::text ORDER BY n.nspname)
                        FROM pg_publication_namespace pn JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE pn.pnpubid = p.oid), '{}') AS schemas,
            obj_description(p.oid, 'pg_publication') AS note
       FROM pg_publication p ORDER BY p.pubname`,
  );
  return result.rows.map((r) => ({
    name: r.pubname,
    allTables: r.puballtables,
    publish: r.ops as PublishOperation[],
    tables: r.tables,
    schemas: r.schemas,
    managed: r.note === MANAGED_COMMENT,
  }));
}

export interface SubscriptionState {
  name: string;
  enabled: boolean;
  conninfo: string;
  publications: string[];
  slotName: string | null;
  managed: boolean;
}

/** Subscriptions of the connected database (pg_subscription is shared, but their comments are in this database's pg_description; conninfo needs a superuser). */
export async function readSubscriptions(client: pg.Client): Promise<SubscriptionState[]> {
  const result = await client.query<{ subname: string; subenabled: boolean; subconninfo: string; subpublications: string[]; subslotname: string | null; note: string | null }>(
    `SELECT s.subname, s.subenabled, s.subconninfo, s.subpublications::text[] AS subpublications, s.subslotname::text AS subslotname,
            obj_description(s.oid, 'pg_subscription') AS note
       FROM pg_subscription s WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY s.subname`,
  );
  return result.rows.map((r) => ({
    name: r.subname,
    enabled: r.subenabled,
    conninfo: r.subconninfo,
    publications: r.subpublications,
    slotName: r.subslotname,
    managed: r.note === MANAGED_COMMENT,
  }));
}

export interface SubscriptionProgress {
  name: string;
  enabled: boolean;
  /** An apply worker runs. */
  workerRunning: boolean;
  receivedLsn: string | null;
  /** Remote position of the last commit applied (replication origin). */
  appliedLsn: string | null;
  /** Tables whose initial copy is not finished: name and pg_subscription_rel.srsubstate (i init, d copying, f finished copy, s synchronised). */
  copying: { table: string; state: string }[];
  applyErrors: number;
  syncErrors: number;
}

/** Each subscription's worker, applied position and tables still being copied, in the connected database. */
export async function readSubscriptionProgress(client: pg.Client): Promise<SubscriptionProgress[]> {
  const result = await client.query<{
    subname: string;
    subenabled: boolean;
    pid: number | null;
    received: string | null;
    applied: string | null;
    copying: string[][] | null;
    apply_errors: string | null;
    sync_errors: string | null;
  }>(
    `SELECT s.subname, s.subenabled, st.pid, st.received_lsn::text AS received,
            (SELECT o.remote_lsn::text FROM pg_replication_origin_status o WHERE o.external_id = 'pg_' || s.oid) AS applied,
            (SELECT array_agg(ARRAY[r.srrelid::regclass::text, r.srsubstate::text] ORDER BY r.srrelid::regclass::text)
               FROM pg_subscription_rel r WHERE r.srsubid = s.oid AND r.srsubstate <> 'r') AS copying,
            ss.apply_error_count::text AS apply_errors, ss.sync_error_count::text AS sync_errors
       FROM pg_subscription s
       LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
       LEFT JOIN pg_stat_subscription_stats ss ON ss.subid = s.oid
      WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY s.subname`,
  );
  return result.rows.map((r) => ({
    name: r.subname,
    enabled: r.subenabled,
    workerRunning: r.pid !== null,
    receivedLsn: r.received,
    appliedLsn: r.applied,
    copying: (r.copying ?? []).map(([table, state]) => ({ table: table!, state: state! })),
    applyErrors: Number(r.apply_errors ?? 0),
    syncErrors: Number(r.sync_errors ?? 0),
  }));
}

/** On the publishing side, as the subscription's role: how far its slot is behind, in bytes and seconds. */
export async function readPublisherLag(client: pg.Client, slot: string): Promise<{ lagBytes: number | null; lagSeconds: number | null; slotExists: boolean }> {
  const result = await client.query<{ bytes: string | null; seconds: number | null; slot: boolean }>(
    `SELECT (SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint::text FROM pg_replication_slots WHERE slot_name = $1) AS bytes,
            (SELECT extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication WHERE application_name = $1 LIMIT 1) AS seconds,
            EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1) AS slot`,
    [slot],
  );
  const row = result.rows[0]!;
  const lagBytes = row.bytes === null ? null : Math.max(0, Number(row.bytes));
  return { lagBytes, lagSeconds: row.seconds ?? (lagBytes === 0 ? 0 : null), slotExists: row.slot };
}

/** Tables of a declaration as they exist now (schema.table), and the ones named that do not exist. */
export async function resolvePublicationTables(
  client: pg.Client,
  p: Pick<PublicationDeclaration, 'tables' | 'schemas' | 'allTables'>,
): Promise<{ tables: { name: string; replicaIdentity: boolean }[]; unknownTables: string[]; unknownSchemas: string[] }> {
  // Replica identity: a primary key or index (default/index) or FULL; 'nothing' or default without a key cannot replicate UPDATE/DELETE.
  const all = await client.query<{ name: string; schema: string; ok: boolean }>(
    `SELECT n.nspname || '.' || c.relname AS name, n.nspname AS schema,
            (c.relreplident = 'f' OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))
             OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) AS ok
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'`,
  );
  const schemas = await client.query<{ nspname: string }>(`SELECT nspname FROM pg_namespace`);
  const bySchema = new Set(schemas.rows.map((r) => r.nspname));
  const byName = new Map(all.rows.map((r) => [r.name, r]));
  if (p.allTables) return { tables: all.rows.map((r) => ({ name: r.name, replicaIdentity: r.ok })), unknownTables: [], unknownSchemas: [] };
  if (p.schemas) {
    return {
      tables: all.rows.filter((r) => p.schemas!.includes(r.schema)).map((r) => ({ name: r.name, replicaIdentity: r.ok })),
      unknownTables: [],
      unknownSchemas: p.schemas.filter((s) => !bySchema.has(s)),
    };
  }
  const named = (p.tables ?? []).map(qualified);
  return {
    tables: named.flatMap((t) => (byName.has(t) ? [{ name: t, replicaIdentity: byName.get(t)!.ok }] : [])),
    unknownTables: named.filter((t) => !byName.has(t)),
    unknownSchemas: [],
  };
}

/** Databases that accept connections, templates aside. */
export async function connectableDatabases(client: pg.Client): Promise<string[]> {
  return (await client.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1`)).rows.map((r) => r.datname);
}

export async function databaseExists(client: pg.Client, database: string): Promise<boolean> {
  return (await client.query(`SELECT 1 FROM pg_database WHERE datname = $1 AND datallowconn`, [database])).rowCount === 1;
}

/** Tables a set of publications sends (on the publishing side), as schema.table. */
export async function publishedTables(client: pg.Client, publications: string[]): Promise<{ found: string[]; tables: string[]; clusterName: string }> {
  const found = await client.query<{ pubname: string; cluster: string }>(
    `SELECT p.pubname, current_setting('cluster_name') AS cluster FROM pg_publication p WHERE p.pubname = ANY($1::text[])`,
    [publications],
  );
  const tables = await client.query<{ name: string }>(
    `SELECT DISTINCT schemaname || '.' || tablename AS name FROM pg_publication_tables WHERE pubname = ANY($1::text[]) ORDER BY 1`,
    [publications],
  );
  const clusterName = found.rows[0]?.cluster ?? (await client.query<{ c: string }>(`SELECT current_setting('cluster_name') AS c`)).rows[0]!.c;
  return { found: found.rows.map((r) => r.pubname), tables: tables.rows.map((r) => r.name), clusterName };
}

/** Which of these schema.table names exist in the connected database. */
export async function existingTables(client: pg.Client, tables: string[]): Promise<Set<string>> {
  const result = await client.query<{ name: string }>(
    `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY($1::text[])`,
    [tables],
  );
  return new Set(result.rows.map((r) => r.name));
}

export interface LogicalSlotState {
  name: string;
  plugin: string;
  database: string;
  confirmedFlushLsn: string | null;
  restartLsn: string | null;
  catalogXmin: string | null;
  active: boolean;
}

/** Persistent logical slots of this server (primary or standby). */
export async function readLogicalSlots(client: pg.Client): Promise<LogicalSlotState[]> {
  const result = await client.query<{ slot_name: string; plugin: string; database: string; confirmed: string | null; restart: string | null; catalog_xmin: string | null; active: boolean }>(
    `SELECT slot_name, plugin, database, confirmed_flush_lsn::text AS confirmed, restart_lsn::text AS restart, catalog_xmin::text, active
       FROM pg_replication_slots WHERE slot_type = 'logical' AND NOT temporary ORDER BY slot_name`,
  );
  return result.rows.map((r) => ({
    name: r.slot_name,
    plugin: r.plugin,
    database: r.database,
    confirmedFlushLsn: r.confirmed,
    restartLsn: r.restart,
    catalogXmin: r.catalog_xmin,
    active: r.active,
  }));
}

/** catalog_xmin of each physical slot (a standby's, kept by hot_standby_feedback). */
export async function readPhysicalCatalogXmins(client: pg.Client): Promise<Record<string, string | null>> {
  const result = await client.query<{ slot_name: string; catalog_xmin: string | null }>(`SELECT slot_name, catalog_xmin::text FROM pg_replication_slots WHERE slot_type = 'physical'`);
  return Object.fromEntries(result.rows.map((r) => [r.slot_name, r.catalog_xmin]));
}

/** The on-disk state of a slot, read on the primary (a superuser, or a role granted pg_read_binary_file): what a standby needs to own a copy. */
export async function readSlotStateFile(client: pg.Client, slot: string): Promise<Buffer> {
  const result = await client.query<{ state: Buffer }>(`SELECT pg_read_binary_file('pg_replslot/' || $1 || '/state') AS state`, [slot]);
  return result.rows[0]!.state;
}

/** Moves a slot forward (on a standby: not past what it has replayed). Returns the position reached. */
export async function advanceSlot(client: pg.Client, slot: string, lsn: string): Promise<string> {
  const result = await client.query<{ end_lsn: string }>(`SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::pg_lsn)`, [slot, lsn]);
  return result.rows[0]!.end_lsn;
}

export async function dropLogicalSlot(client: pg.Client, slot: string): Promise<void> {
  await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical' AND NOT active`, [slot]);
}
