/**
 * The named operations `relevo upgrade` asks of a cluster's primary agent
 * (POST /upgrade/<name>, src/api/upgrade-route.ts). relevo's superuser logs
 * in only through the primary's local socket, so every step that needs it
 * runs in that primary's agent; the CLI only orchestrates. Each operation
 * takes parameters checked by its zod schema (unknown keys refused) and runs
 * fixed SQL or a fixed program with them: the API never takes SQL text or a
 * program path. The dumps the agent restores (`restore-roles`,
 * `restore-schema`) are pg_dump output fed to psql as the superuser, which
 * is exactly what the upgrade needs and why the endpoint is authenticated
 * like switchover and failover.
 */
import { spawn } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type pg from 'pg';
import { z } from 'zod';
import { quoteIdent } from '../postgres/sql.js';
import { conninfoValue, pgpassField } from '../postgres/libpq.js';
import { writeOwnedFile } from '../postgres/owned-fs.js';
import { runningAsRoot, spawnIdentity, type OsUser } from '../util/os-user.js';
import { applySequences, currentLsn, majorVersion, openTransactions, rowCounts, sequenceValues, setReadOnly, terminate } from './data.js';
import { UpgradeError } from './errors.js';
import {
  copyProgress,
  display,
  dropPublication,
  dropSlot,
  dropSubscription,
  ensurePublication,
  ensureSubscription,
  setReplicaIdentityFull,
  setSubscriptionEnabled,
  slotConfirmed,
  slotLag,
  tablesWithoutReplicaIdentity,
  userTables,
} from './replication.js';
import { dropUpgradeRole, ensureUpgradeRole, UPGRADE_ROLE } from './role.js';

/** What an operation may use on the agent's host: its own PostgreSQL, as relevo's superuser, through the local socket. */
export interface OpContext {
  cluster: string;
  member: string;
  /** Superuser connection through the local socket; a missing database is UPGRADE_UNKNOWN_DATABASE. */
  connect(database: string): Promise<pg.Client>;
  /** Runs a program of the member's binDir as the PostgreSQL OS user, connected to `database` through the local socket; resolves its stdout. */
  program(program: 'pg_dump' | 'pg_dumpall' | 'psql', args: string[], database: string, stdin?: string): Promise<string>;
  /** The member's data directory (the subscriber's passfile goes beside it) and OS user. */
  dataDir: string;
  user: OsUser;
}

// Identifiers as PostgreSQL and relevo name them; never SQL text.
const ident = z.string().min(1).max(63).regex(/^[^\0]+$/, 'expected a name');
const relevoName = z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'expected a relevo name');
const objectName = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'expected a lower-case object name');
const lsn = z.string().regex(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/i, 'expected an LSN like 0/16B3748');
const ms = (max: number) => z.number().int().min(0).max(max);
const db = { database: ident };
/** A dump is bounded by the route's body limit; it is pg_dump output, restored with psql ON_ERROR_STOP. */
const dump = z.string().max(64 * 1024 * 1024);

async function withDb<T>(ctx: OpContext, database: string, work: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = await ctx.connect(database);
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

const sleep = (n: number) => new Promise((resolve) => setTimeout(resolve, n));

/** Waits for open transactions to end, makes the database and server read-only, then ends any write transaction left; returns the last WAL position. */
async function fence(client: pg.Client, database: string, drainTimeoutMs: number): Promise<{ terminated: number; lsn: string }> {
  const deadline = Date.now() + drainTimeoutMs;
  let open = await openTransactions(client, database, false);
  while (open.length > 0 && Date.now() < deadline) {
    await sleep(20);
    open = await openTransactions(client, database, false);
  }
  await setReadOnly(client, database, true);
  // A transaction that began before the fence may still write: give it a moment, then end it (not acknowledged, so nothing is lost).
  const late = Date.now() + 1_000;
  let writers = await openTransactions(client, database, true);
  while (writers.length > 0 && Date.now() < late) {
    await sleep(20);
    writers = await openTransactions(client, database, true);
  }
  if (writers.length > 0) await terminate(client, writers);
  return { terminated: writers.length, lsn: await currentLsn(client) };
}

const ROLE_LINE = /^(?:CREATE|ALTER) ROLE ("(?:[^"]|"")+"|[^\s;]+)/;

/** Where the new cluster's PostgreSQL finds the upgrade role's password for the old cluster (beside its data directory). */
export function subscriberPassfile(dataDir: string, sourceCluster: string): string {
  return join(dirname(dataDir.replace(/\/+$/, '')), `upgrade-from-${sourceCluster}.pgpass`);
}
function subscriberCa(dataDir: string, sourceCluster: string): string {
  return join(dirname(dataDir.replace(/\/+$/, '')), `upgrade-from-${sourceCluster}-ca.crt`);
}

function op<S extends z.ZodRawShape, R>(shape: S, run: (ctx: OpContext, p: z.infer<z.ZodObject<S>>) => Promise<R>) {
  return { schema: z.object(shape).strict(), run: run as (ctx: OpContext, p: unknown) => Promise<R> };
}

/** The operations that run SQL text (pg_dump output, as the superuser): admitted only while the store records them as due. */
export const SQL_OPERATIONS: ReadonlySet<string> = new Set(['restore-roles', 'restore-schema']);

/**
 * Whether the store's upgrade record of the old cluster lets `cluster`'s primary restore a dump now: an upgrade
 * into this cluster at step 'checked' (the schema copy). API credentials alone then cannot run SQL as the
 * superuser; it also takes a write to the store, which the CLI makes by compare-and-swap. Returns the refusal.
 */
export function sqlOperationRefusal(state: { source: string; target: string; step: string } | undefined, source: string, cluster: string): string | undefined {
  if (!state) return `no upgrade from ${source} is recorded in the store`;
  if (state.source !== source || state.target !== cluster) return `the upgrade recorded for ${source} goes from ${state.source} to ${state.target}, not into ${cluster}`;
  if (state.step !== 'checked') return `the upgrade from ${source} to ${cluster} is at step ${state.step}; dumps are restored only at step checked`;
  return undefined;
}

export const UPGRADE_OPERATIONS = {
  // ---- on the old cluster's primary ----
  'inspect-source': op(db, (ctx, p) =>
    withDb(ctx, p.database, async (c) => ({
      walLevel: (await c.query<{ w: string }>("SELECT current_setting('wal_level') AS w")).rows[0]!.w,
      major: await majorVersion(c),
      tables: await userTables(c),
      withoutIdentity: await tablesWithoutReplicaIdentity(c),
      owner: (await c.query<{ o: string }>('SELECT pg_get_userbyid(datdba) AS o FROM pg_database WHERE datname = current_database()')).rows[0]!.o,
    })),
  ),
  'dump-roles': op({}, async (ctx) => ({ sql: await ctx.program('pg_dumpall', ['--roles-only', '--quote-all-identifiers'], 'postgres') })),
  'dump-schema': op(db, async (ctx, p) => ({ sql: await ctx.program('pg_dump', ['--schema-only', '--no-publications', '--no-subscriptions'], p.database) })),
  /** Publication FOR ALL TABLES, replica identity, and the copy's own role with the SCRAM verifier the CLI computed (the password never reaches this agent). */
  publish: op({ ...db, publication: objectName, replicaIdentityFull: z.boolean(), verifier: z.string().regex(/^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/, 'expected a SCRAM-SHA-256 verifier') }, (ctx, p) =>
    withDb(ctx, p.database, async (c) => {
      const full = await tablesWithoutReplicaIdentity(c);
      if (full.length && !p.replicaIdentityFull) throw new UpgradeError('UPGRADE_NO_REPLICA_IDENTITY', `table(s) without a primary key or replica identity: ${full.map(display).join(', ')}`);
      await setReplicaIdentityFull(c, full);
      await ensurePublication(c, p.publication);
      await ensureUpgradeRole(c, p.verifier);
      return { replicaIdentityFull: full.map(display) };
    }),
  ),
  'slot-lag': op({ ...db, slot: objectName }, (ctx, p) => withDb(ctx, p.database, async (c) => ({ lag: (await slotLag(c, p.slot)) ?? null }))),
  /** Waits here (no round trip per poll) until the slot confirmed `lsn`, or the timeout. */
  'await-slot': op({ ...db, slot: objectName, lsn, timeoutMs: ms(300_000) }, (ctx, p) =>
    withDb(ctx, p.database, async (c) => {
      const deadline = Date.now() + p.timeoutMs;
      for (;;) {
        if (await slotConfirmed(c, p.slot, p.lsn)) return { confirmed: true };
        if (Date.now() > deadline) return { confirmed: false };
        await sleep(10);
      }
    }),
  ),
  sequences: op(db, (ctx, p) => withDb(ctx, p.database, async (c) => ({ values: await sequenceValues(c) }))),
  unpublish: op({ ...db, slot: objectName, publication: objectName }, (ctx, p) =>
    withDb(ctx, p.database, async (c) => {
      await c.query('SET default_transaction_read_only = off');
      await dropSlot(c, p.slot);
      await dropPublication(c, p.publication);
      await dropUpgradeRole(c);
      return {};
    }),
  ),
  // ---- on either side ----
  fence: op({ ...db, drainTimeoutMs: ms(600_000) }, (ctx, p) => withDb(ctx, p.database, (c) => fence(c, p.database, p.drainTimeoutMs))),
  'set-read-only': op({ ...db, readOnly: z.boolean() }, (ctx, p) => withDb(ctx, p.database, async (c) => (await setReadOnly(c, p.database, p.readOnly), {}))),
  'row-counts': op(db, (ctx, p) =>
    withDb(ctx, p.database, async (c) => {
      const tables = await userTables(c);
      return { tables: tables.length, counts: await rowCounts(c, tables) };
    }),
  ),
  // ---- on the new cluster's primary ----
  'inspect-target': op(db, (ctx, p) =>
    withDb(ctx, 'postgres', async (c) => ({ major: await majorVersion(c), exists: ((await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [p.database])).rowCount ?? 0) > 0 })),
  ),
  /** Drops the database when this upgrade created it (a half-built copy); reports whether it exists. */
  'prepare-database': op({ ...db, dropCreated: z.boolean() }, (ctx, p) =>
    withDb(ctx, 'postgres', async (c) => {
      const exists = ((await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [p.database])).rowCount ?? 0) > 0;
      if (exists && p.dropCreated) await c.query(`DROP DATABASE ${quoteIdent(p.database)} WITH (FORCE)`);
      return { exists: exists && !p.dropCreated };
    }),
  ),
  /** The old cluster's roles this one lacks (pg_dumpall --roles-only output), with their verifiers and memberships. */
  'restore-roles': op({ source: relevoName, sql: dump }, async (ctx, p) => {
    const existing = await withDb(ctx, 'postgres', async (c) => new Set((await c.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map((r) => r.rolname)));
    let created = 0;
    const lines = p.sql.split('\n').filter((line) => {
      // The subscription's role on the old cluster stays there (dropped at forget).
      if (line.includes(`"${UPGRADE_ROLE}"`)) return false;
      const m = ROLE_LINE.exec(line);
      if (!m) return true;
      const name = m[1]!.startsWith('"') ? m[1]!.slice(1, -1).replace(/""/g, '"') : m[1]!;
      if (existing.has(name)) return false;
      if (line.startsWith('CREATE')) created += 1;
      return true;
    });
    await ctx.program('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1'], 'postgres', lines.join('\n'));
    return { created };
  }),
  'create-database': op({ ...db, owner: ident }, (ctx, p) =>
    withDb(ctx, 'postgres', async (c) => (await c.query(`CREATE DATABASE ${quoteIdent(p.database)} OWNER ${quoteIdent(p.owner)} TEMPLATE template0 ENCODING 'UTF8'`), {})),
  ),
  'restore-schema': op({ ...db, source: relevoName, sql: dump }, async (ctx, p) => {
    await ctx.program('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1'], p.database, p.sql);
    return { tables: (await withDb(ctx, p.database, (c) => userTables(c))).length };
  }),
  /**
   * Writes the passfile (and the old cluster's CA) the subscription reads,
   * beside the data directory, owned by the PostgreSQL OS user, then creates
   * the subscription. The password arrives over the authenticated API and is
   * kept only in that file.
   */
  subscribe: op(
    {
      ...db,
      subscription: objectName,
      publication: objectName,
      sourceCluster: relevoName,
      host: z.string().regex(/^[A-Za-z0-9.:_-]{1,255}$/, 'expected a host name or address'),
      port: z.number().int().min(1).max(65535),
      password: z.string().min(16).max(200),
      caPem: z.string().max(65536).regex(/^-----BEGIN CERTIFICATE-----/, 'expected a PEM certificate').optional(),
    },
    async (ctx, p) => {
      const passfile = subscriberPassfile(ctx.dataDir, p.sourceCluster);
      writeOwnedFile(passfile, `${pgpassField(p.host)}:${p.port}:*:${UPGRADE_ROLE}:${pgpassField(p.password)}\n`, ctx.user);
      const params: Record<string, string> = { host: p.host, port: String(p.port), dbname: p.database, user: UPGRADE_ROLE, passfile, application_name: p.subscription };
      if (p.caPem) {
        const ca = subscriberCa(ctx.dataDir, p.sourceCluster);
        writeOwnedFile(ca, p.caPem, ctx.user, 0o644);
        Object.assign(params, { sslmode: 'verify-full', sslrootcert: ca });
      }
      const info = Object.entries(params).map(([k, v]) => `${k}=${conninfoValue(v)}`).join(' ');
      await withDb(ctx, p.database, (c) => ensureSubscription(c, p.subscription, info, p.publication));
      return {};
    },
  ),
  /**
   * VACUUM (ANALYZE) of the copied database, once every table is copied and before writes are held: the new
   * cluster gets planner statistics (as vacuumdb --analyze after pg_upgrade) and hint bits on every copied
   * page, so the row counts taken while writes are held read settled pages instead of setting them
   * (measured on a 1 GB copy: 5.3 s on the fresh copy against 1.9 s on the old side).
   */
  analyze: op(db, (ctx, p) =>
    withDb(ctx, p.database, async (c) => {
      const started = Date.now();
      await c.query('VACUUM (ANALYZE)');
      return { seconds: (Date.now() - started) / 1000 };
    }),
  ),
  'copy-progress': op({ ...db, subscription: objectName }, (ctx, p) => withDb(ctx, p.database, (c) => copyProgress(c, p.subscription))),
  'apply-sequences': op({ ...db, values: z.array(z.object({ schema: ident, name: ident, lastValue: z.string().regex(/^-?\d{1,19}$/) }).strict()).max(100_000) }, (ctx, p) =>
    withDb(ctx, p.database, async (c) => (await applySequences(c, p.values), { applied: p.values.length })),
  ),
  'set-subscription': op({ ...db, subscription: objectName, enabled: z.boolean() }, (ctx, p) => withDb(ctx, p.database, async (c) => (await setSubscriptionEnabled(c, p.subscription, p.enabled), {}))),
  /** Drops the subscription (keeping the slot for the old side to drop), the passfile and CA copy; after a rollback, lets the server take writes again. */
  unsubscribe: op({ ...db, subscription: objectName, sourceCluster: relevoName, resetServerReadOnly: z.boolean() }, async (ctx, p) => {
    try {
      await withDb(ctx, p.database, async (c) => {
        await c.query('SET default_transaction_read_only = off');
        await dropSubscription(c, p.subscription, true);
        if (p.resetServerReadOnly) {
          await c.query('ALTER SYSTEM RESET default_transaction_read_only');
          await c.query('SELECT pg_reload_conf()');
        }
      });
    } finally {
      // Also when the database is gone (dropped by hand): the password must not outlive the upgrade.
      rmSync(subscriberPassfile(ctx.dataDir, p.sourceCluster), { force: true });
      rmSync(subscriberCa(ctx.dataDir, p.sourceCluster), { force: true });
    }
    return {};
  }),
} as const;

export type UpgradeOperation = keyof typeof UPGRADE_OPERATIONS;
export type OperationParams<N extends UpgradeOperation> = z.input<(typeof UPGRADE_OPERATIONS)[N]['schema']>;
export type OperationResult<N extends UpgradeOperation> = Awaited<ReturnType<(typeof UPGRADE_OPERATIONS)[N]['run']>>;

export function isUpgradeOperation(name: string): name is UpgradeOperation {
  return Object.prototype.hasOwnProperty.call(UPGRADE_OPERATIONS, name);
}

/** Checks the parameters of operation `name`: the value to run with, or the problems found. */
export function parseOperation(name: string, params: unknown): { ok: true; op: UpgradeOperation; params: unknown } | { ok: false; error: string } {
  if (!isUpgradeOperation(name)) return { ok: false, error: `unknown upgrade operation "${name}"; expected one of ${Object.keys(UPGRADE_OPERATIONS).join(', ')}` };
  const result = UPGRADE_OPERATIONS[name].schema.safeParse(params ?? {});
  if (!result.success) return { ok: false, error: result.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ') };
  return { ok: true, op: name, params: result.data };
}

export function runOperation(ctx: OpContext, name: UpgradeOperation, params: unknown): Promise<unknown> {
  return UPGRADE_OPERATIONS[name].run(ctx, params);
}

// ---- the agent's side: its own PostgreSQL --------------------------------------

export interface LocalAccess {
  cluster: string;
  member: string;
  binDir: string;
  dataDir: string;
  user: OsUser;
  socketDir: string;
  port: number;
  /** relevo's superuser password (read from the secrets file at each request: a rotation takes effect at once). */
  password(): string;
  /** Opens a client; the caller connects it. */
  client(database: string): pg.Client;
}

/** The context an agent runs operations in: its local socket, its binDir, its OS user. */
export function localContext(local: LocalAccess): OpContext {
  return {
    cluster: local.cluster,
    member: local.member,
    dataDir: local.dataDir,
    user: local.user,
    async connect(database) {
      const client = local.client(database);
      client.on('error', () => undefined);
      try {
        await client.connect();
      } catch (error) {
        const e = error as Error & { code?: string };
        if (e.code === '3D000') throw new UpgradeError('UPGRADE_UNKNOWN_DATABASE', `database "${database}" does not exist on cluster ${local.cluster}`);
        throw new UpgradeError('UPGRADE_OPERATION_FAILED', `cannot connect to ${local.member}'s PostgreSQL through ${local.socketDir}: ${e.message}`);
      }
      return client;
    },
    program(program, args, database, stdin) {
      return runWithPassfile(local, program, args, database, stdin);
    },
  };
}

/** Runs a client program through the local socket, the password in a private passfile owned by the OS user (never argv). */
async function runWithPassfile(local: LocalAccess, program: string, args: string[], database: string, stdin?: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-upgrade-'));
  try {
    const passfile = join(dir, 'pgpass');
    writeFileSync(passfile, `${pgpassField(local.socketDir)}:${local.port}:*:relevo:${pgpassField(local.password())}\n`, { mode: 0o600 });
    if (runningAsRoot()) {
      chownSync(dir, local.user.uid, local.user.gid);
      chownSync(passfile, local.user.uid, local.user.gid);
    }
    const conninfo = `host=${conninfoValue(local.socketDir)} port=${local.port} dbname=${conninfoValue(database)} user=relevo`;
    return await new Promise<string>((resolve, reject) => {
      const child = spawn(join(local.binDir, program), [...args, '-d', conninfo], {
        ...spawnIdentity(local.user),
        cwd: '/',
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: local.user.home, PGPASSFILE: passfile, PGCONNECT_TIMEOUT: '10', PGAPPNAME: 'relevo-upgrade' },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
      child.stdin.on('error', () => undefined);
      child.stdin.end(stdin ?? '');
      child.on('error', (error) => reject(new UpgradeError('UPGRADE_SCHEMA_COPY_FAILED', `${program} on ${local.member}: ${error.message}`)));
      child.on('close', (code) =>
        code === 0 ? resolve(Buffer.concat(out).toString()) : reject(new UpgradeError('UPGRADE_SCHEMA_COPY_FAILED', `${program} on ${local.member} exited with ${code}: ${stderr.trim()}`)),
      );
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
