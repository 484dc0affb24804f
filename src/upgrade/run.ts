/**
 * `relevo upgrade`: a blue/green major-version upgrade through a logical
 * copy, with writes paused through relevo's routers for the switch.
 * Each step is recorded in the store (state.ts) before the next begins; a
 * re-run continues from the last recorded step. docs/upgrade.md.
 */
import { isDeepStrictEqual } from 'node:util';
import { clusterKeys } from '../cluster/keys.js';
import type { MemberConfig } from '../config/member.js';
import type { Store } from '../store/store.js';
import { countDifferences } from './data.js';
import { UpgradeError } from './errors.js';
import { display, type TableRef } from './replication.js';
import { awaitRouters, routers, writeRoute } from './route.js';
import { call, locate, type Side } from './side.js';
import { UPGRADE_ROLE, upgradePassword } from './role.js';
import { advance, readState, stepIndex, UPGRADE_STEPS, type StoredState, type UpgradeState } from './state.js';

export interface UpgradeOptions {
  store: Store;
  /**
   * A member file of the old cluster and one of the new cluster: any member's
   * (their store, API credentials and CA are what is used); every step that
   * needs a superuser runs in the current primary's agent.
   */
  oldConfig: MemberConfig;
  newConfig: MemberConfig;
  database: string;
  /** Cluster whose routers clients use (the route record lives there); default: the old cluster. */
  routeCluster?: string;
  /** Set REPLICA IDENTITY FULL on tables that have no primary key instead of refusing. */
  replicaIdentityFull?: boolean;
  /** The copy counts as caught up below this lag. */
  maxLagBytes?: number;
  catchUpTimeoutMs?: number;
  /** How long sessions may keep a transaction open after writes are held before they are terminated. */
  drainTimeoutMs?: number;
  routerTimeoutMs?: number;
  lsnTimeoutMs?: number;
  print?: (line: string) => void;
}

const NAME = 'relevo_upgrade';

interface Run {
  o: UpgradeOptions;
  route: string;
  print: (line: string) => void;
  stored: StoredState | undefined;
}

function runOf(o: UpgradeOptions, stored: StoredState | undefined): Run {
  return { o, route: o.routeCluster ?? o.oldConfig.cluster, print: o.print ?? (() => undefined), stored };
}

const oldKeys = (o: UpgradeOptions) => clusterKeys(o.oldConfig.cluster);

async function save(run: Run, step: UpgradeState['step'], detail: string, patch: Partial<UpgradeState> = {}): Promise<UpgradeState> {
  const base = run.stored!.state;
  const { history: _h, updatedAt: _u, ...rest } = { ...base, ...patch };
  run.stored = await advance(run.o.store, oldKeys(run.o), run.stored, { ...rest, step }, detail);
  run.print(`[${stepIndex(step) + 1}/${UPGRADE_STEPS.length - 1}] ${step}: ${detail}`);
  return run.stored.state;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const mb = (bytes: number | null) => (bytes === null ? '?' : `${(bytes / 1048576).toFixed(1)} MB`);

// ---- preflight ------------------------------------------------------------

export interface Preflight {
  source: Side;
  target: Side;
  sourceMajor: number;
  targetMajor: number;
  tables: TableRef[];
  withoutIdentity: TableRef[];
  routers: string[];
}

/** Every refusal, decided before anything is written on either cluster or in the store. */
export async function preflight(o: UpgradeOptions): Promise<Preflight> {
  if (o.oldConfig.cluster === o.newConfig.cluster) throw new UpgradeError('UPGRADE_SAME_CLUSTER', `both member files belong to cluster ${o.oldConfig.cluster}`);
  if (!isDeepStrictEqual(o.oldConfig.store, o.newConfig.store)) {
    throw new UpgradeError('UPGRADE_SAME_CLUSTER', `clusters ${o.oldConfig.cluster} and ${o.newConfig.cluster} use different stores: routers can only follow a cluster in their own store`);
  }
  const source = await locate(o.store, o.oldConfig, 'UPGRADE_SOURCE_UNREACHABLE');
  const inspected = await call(source, 'inspect-source', { database: o.database });
  if (inspected.walLevel !== 'logical') throw new UpgradeError('UPGRADE_WAL_LEVEL', `wal_level is ${inspected.walLevel} on ${source.member}`);
  const sourceMajor = inspected.major;
  const target = await locate(o.store, o.newConfig, 'UPGRADE_TARGET_UNREACHABLE');
  const t = await call(target, 'inspect-target', { database: o.database });
  if (t.major === sourceMajor) throw new UpgradeError('UPGRADE_SAME_MAJOR', `both clusters run PostgreSQL ${t.major}`);
  if (t.major < sourceMajor) throw new UpgradeError('UPGRADE_NOT_NEWER', `the new cluster runs PostgreSQL ${t.major}, the old one ${sourceMajor}`);
  if (t.exists) throw new UpgradeError('UPGRADE_TARGET_NOT_EMPTY', `database "${o.database}" already exists on cluster ${target.cluster}`);
  if (inspected.withoutIdentity.length > 0 && !o.replicaIdentityFull) {
    throw new UpgradeError('UPGRADE_NO_REPLICA_IDENTITY', `table(s) without a primary key or replica identity: ${inspected.withoutIdentity.map(display).join(', ')}`);
  }
  const listed = await routers(o.store, o.routeCluster ?? o.oldConfig.cluster);
  return { source, target, sourceMajor, targetMajor: t.major, tables: inspected.tables, withoutIdentity: inspected.withoutIdentity, routers: listed.map((r) => r.name) };
}

export async function plan(o: UpgradeOptions): Promise<string> {
  // A recorded upgrade: its database exists on the new cluster by now, so show where it stands instead.
  if (await readState(o.store, oldKeys(o))) return status(o);
  const p = await preflight(o);
  const lines = [
    `upgrade of database "${o.database}": cluster ${p.source.cluster} (PostgreSQL ${p.sourceMajor}, primary ${p.source.member}) -> cluster ${p.target.cluster} (PostgreSQL ${p.targetMajor}, primary ${p.target.member})`,
    `tables: ${p.tables.length}${p.withoutIdentity.length ? `; REPLICA IDENTITY FULL will be set on: ${p.withoutIdentity.map(display).join(', ')}` : ''}`,
    `routers following ${o.routeCluster ?? p.source.cluster}: ${p.routers.length ? p.routers.join(', ') : 'none (clients must be re-pointed by hand)'}`,
    'steps: copy roles and schema, publish + subscribe, wait for the copy, hold writes at the routers, drain, make the old cluster read-only, wait for the last LSN, copy sequences, compare row counts, switch the routers',
  ];
  return lines.join('\n');
}

// ---- the copy ---------------------------------------------------------------

async function buildCopy(run: Run, source: Side, target: Side): Promise<void> {
  const o = run.o;
  const db = o.database;
  let state = run.stored!.state;
  if (state.step === 'checked') {
    // A schema copy that failed half-way left a database this upgrade created: start it again.
    const { exists } = await call(target, 'prepare-database', { database: db, dropCreated: state.createdDatabase });
    if (exists) throw new UpgradeError('UPGRADE_TARGET_NOT_EMPTY', `database "${db}" already exists on cluster ${target.cluster}`);
    const roles = await call(source, 'dump-roles', {});
    const { created } = await call(target, 'restore-roles', { source: source.cluster, sql: roles.sql });
    const { owner } = await call(source, 'inspect-source', { database: db });
    state = await save(run, 'checked', `creating database ${db} on ${target.cluster}`, { createdDatabase: true });
    await call(target, 'create-database', { database: db, owner });
    run.print(`  ${created} role(s) copied; database ${db} created (owner ${owner})`);
    const schema = await call(source, 'dump-schema', { database: db });
    const { tables } = await call(target, 'restore-schema', { database: db, source: source.cluster, sql: schema.sql });
    state = await save(run, 'schema', `roles and schema copied with ${source.member}'s pg_dump (${tables} tables, ${(schema.sql.length / 1024).toFixed(0)} kB of DDL)`);
  }
  if (state.step === 'schema') {
    // The old primary's agent gets only the SCRAM verifier; the password goes to the new primary's passfile.
    const { password, verifier } = upgradePassword();
    const published = await call(source, 'publish', { database: db, publication: state.publication, replicaIdentityFull: o.replicaIdentityFull === true, verifier });
    await call(target, 'subscribe', {
      database: db,
      subscription: state.subscription,
      publication: state.publication,
      sourceCluster: source.cluster,
      host: source.host,
      port: source.port,
      password,
      ...(source.caPem ? { caPem: source.caPem } : {}),
    });
    state = await save(run, 'subscribed', `publication ${state.publication} on ${source.cluster}, subscription ${state.subscription} on ${target.cluster}`, { replicaIdentityFull: published.replicaIdentityFull });
  }
  if (state.step === 'subscribed') await awaitCatchUp(run, source, target);
}

async function awaitCatchUp(run: Run, source: Side, target: Side): Promise<void> {
  const o = run.o;
  const state = run.stored!.state;
  const maxLag = o.maxLagBytes ?? 1024 * 1024;
  const deadline = Date.now() + (o.catchUpTimeoutMs ?? 3_600_000);
  const started = Date.now();
  let lastPrint = 0;
  let notRunningSince: number | undefined;
  let analyzed = false;
  {
    for (;;) {
      const [progress, { lag }] = await Promise.all([
        call(target, 'copy-progress', { database: o.database, subscription: state.subscription }),
        call(source, 'slot-lag', { database: o.database, slot: state.subscription }),
      ]);
      if (!progress.running) notRunningSince ??= Date.now();
      else notRunningSince = undefined;
      if (notRunningSince !== undefined && Date.now() - notRunningSince > 30_000) {
        throw new UpgradeError('UPGRADE_COPY_BROKEN', `subscription ${state.subscription} on ${target.cluster} has had no apply worker for 30 s${progress.enabled ? '' : ' (it is disabled)'}`);
      }
      const done = progress.pending.length === 0 && lag !== null && lag.lagBytes !== null && lag.lagBytes <= maxLag;
      if (done || Date.now() - lastPrint > 2_000) {
        lastPrint = Date.now();
        const copying = progress.pending.slice(0, 5).map((p) => `${p.table} [${p.state}]`).join(', ');
        run.print(`  copy: ${progress.tables - progress.pending.length}/${progress.tables} tables ready${copying ? ` (waiting: ${copying}${progress.pending.length > 5 ? ', …' : ''})` : ''}; lag ${mb(lag?.lagBytes ?? null)}; ${((Date.now() - started) / 1000).toFixed(1)} s`);
      }
      if (progress.pending.length === 0 && !analyzed) {
        // Outside the hold: statistics and hint bits for the copy, then one more look at the lag.
        const { seconds } = await call(target, 'analyze', { database: o.database });
        run.print(`  VACUUM (ANALYZE) of ${o.database} on ${target.cluster}: ${seconds.toFixed(1)} s`);
        analyzed = true;
        continue;
      }
      if (done) break;
      if (Date.now() > deadline) throw new UpgradeError('UPGRADE_NOT_CAUGHT_UP', `${progress.pending.length} table(s) still copying, lag ${mb(lag?.lagBytes ?? null)}`);
      await sleep(250);
    }
  }
  await save(run, 'caught-up', `every table copied, lag under ${mb(maxLag)} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

// ---- the switch ---------------------------------------------------------------

/** Holds writes at every router following the route cluster; returns when all of them applied it. */
async function holdWrites(run: Run, following: string, reason: string): Promise<number> {
  const revision = await writeRoute(run.o.store, run.route, { cluster: following, hold: true, reason });
  return awaitRouters(run.o.store, run.route, revision, { following, hold: true }, run.o.routerTimeoutMs ?? 10_000);
}

async function pointRouters(run: Run, following: string, reason: string): Promise<number> {
  const revision = await writeRoute(run.o.store, run.route, { cluster: following, hold: false, reason });
  return awaitRouters(run.o.store, run.route, revision, { following, hold: false }, run.o.routerTimeoutMs ?? 10_000);
}

/** Waits for open transactions to end, makes the side read-only, then ends any write transaction left (in the side's primary agent); returns the last WAL position. */
async function fence(run: Run, side: Side): Promise<string> {
  const drainTimeoutMs = run.o.drainTimeoutMs ?? 6_000;
  const { terminated, lsn } = await call(side, 'fence', { database: run.o.database, drainTimeoutMs }, drainTimeoutMs + 1_000);
  if (terminated > 0) run.print(`  terminated ${terminated} session(s) on ${side.cluster} still writing after the fence`);
  return lsn;
}

/** Undoes a hold that could not finish: the old cluster takes writes again; nothing was switched. */
async function release(run: Run, source: Side, why: string): Promise<void> {
  run.print(`  releasing writes on ${source.cluster}: ${why}`);
  await call(source, 'set-read-only', { database: run.o.database, readOnly: false });
  await pointRouters(run, source.cluster, `upgrade to ${run.o.newConfig.cluster} abandoned: ${why}`);
  await save(run, 'caught-up', `writes released on ${source.cluster} (${why})`, { holdStartedAt: null, lastLsn: null });
}

async function switchClusters(run: Run, source: Side, target: Side): Promise<void> {
  const o = run.o;
  const db = o.database;
  let state = run.stored!.state;
  const holdStarted = state.holdStartedAt ? Date.parse(state.holdStartedAt) : Date.now();
  try {
    if (state.step === 'caught-up') {
      const n = await holdWrites(run, source.cluster, `upgrade of ${db} to ${target.cluster}`);
      state = await save(run, 'held', `${n} router(s) hold new writes`, { holdStartedAt: new Date(holdStarted).toISOString() });
    }
    {
      if (state.step === 'held') {
        const lsn = await fence(run, source);
        state = await save(run, 'drained', `no transaction open on ${source.cluster}; it is read-only; last LSN ${lsn}`, { lastLsn: lsn });
      }
      if (state.step === 'drained') {
        const timeoutMs = o.lsnTimeoutMs ?? 30_000;
        const { confirmed } = await call(source, 'await-slot', { database: db, slot: state.subscription, lsn: state.lastLsn!, timeoutMs }, timeoutMs);
        if (!confirmed) throw new UpgradeError('UPGRADE_LSN_TIMEOUT', `subscription ${state.subscription} did not confirm ${state.lastLsn} within ${timeoutMs / 1000} s`);
        state = await save(run, 'synced', `${target.cluster} confirmed ${state.lastLsn}`);
      }
      if (state.step === 'synced') {
        const { values } = await call(source, 'sequences', { database: db });
        await call(target, 'apply-sequences', { database: db, values });
        state = await save(run, 'sequences', `${values.length} sequence(s) set ahead of ${source.cluster}`);
      }
      if (state.step === 'sequences') {
        const [{ tables, counts: a }, { counts: b }] = await Promise.all([call(source, 'row-counts', { database: db }), call(target, 'row-counts', { database: db })]);
        const diff = countDifferences(a, b);
        if (diff.length) throw new UpgradeError('UPGRADE_ROW_COUNT_MISMATCH', `row counts differ (old vs new): ${diff.slice(0, 10).join('; ')}`);
        const total = Object.values(a).reduce((x, y) => x + y, 0);
        state = await save(run, 'counted', `${tables} table(s), ${total} row(s), equal on both clusters`, { counts: a });
      }
      if (state.step === 'counted') {
        const n = await pointRouters(run, target.cluster, `upgraded ${db} from ${source.cluster}`);
        const pauseMs = Date.now() - holdStarted;
        // The new cluster stands alone now; the slot on the old one stays until `relevo upgrade forget`.
        await call(target, 'set-subscription', { database: db, subscription: state.subscription, enabled: false });
        state = await save(run, 'switched', `${n} router(s) follow ${target.cluster}; writes were held ${(pauseMs / 1000).toFixed(2)} s; ${source.cluster} stays read-only for rollback`, { switchedAt: new Date().toISOString(), pauseMs });
      }
    }
  } catch (error) {
    if (stepIndex(run.stored!.state.step) >= stepIndex('held') && run.stored!.state.step !== 'switched') {
      await release(run, source, (error as Error).message).catch((e: unknown) => run.print(`  could not release writes: ${(e as Error).message} (run 'relevo upgrade rollback')`));
    }
    throw error;
  }
}

// ---- commands ---------------------------------------------------------------

/** Starts or continues the upgrade; stops after the copy caught up when `doSwitch` is false. */
export async function start(o: UpgradeOptions, doSwitch: boolean): Promise<UpgradeState> {
  const stored = await readState(o.store, oldKeys(o));
  const run = runOf(o, stored);
  if (!stored) {
    const p = await preflight(o);
    run.stored = await advance(o.store, oldKeys(o), undefined, {
      source: p.source.cluster,
      target: p.target.cluster,
      database: o.database,
      step: 'checked',
      publication: NAME,
      subscription: `${NAME}_${p.target.cluster.replace(/[^a-z0-9_]/g, '_')}`,
      createdDatabase: false,
      replicaIdentityFull: [],
      lastLsn: null,
      counts: {},
      holdStartedAt: null,
      switchedAt: null,
      pauseMs: null,
    }, `PostgreSQL ${p.sourceMajor} -> ${p.targetMajor}, ${p.tables.length} tables`);
    run.print(`[1/${UPGRADE_STEPS.length - 1}] checked: ${o.database} on ${p.source.cluster} (PostgreSQL ${p.sourceMajor}) -> ${p.target.cluster} (PostgreSQL ${p.targetMajor}); ${p.routers.length} router(s)`);
  } else {
    const st = stored.state;
    if (st.target !== o.newConfig.cluster || st.database !== o.database) {
      throw new UpgradeError('UPGRADE_IN_PROGRESS', `an upgrade of ${st.database} to ${st.target} is recorded at step ${st.step}`);
    }
    if (st.step === 'rolled-back') throw new UpgradeError('UPGRADE_WRONG_STEP', `the upgrade to ${st.target} was rolled back; 'relevo upgrade forget' clears it before a new attempt`);
    if (st.step === 'switched') return st;
    run.print(`continuing the upgrade of ${st.database} to ${st.target} from step ${st.step}`);
  }
  const source = await locate(o.store, o.oldConfig, 'UPGRADE_SOURCE_UNREACHABLE');
  const target = await locate(o.store, o.newConfig, 'UPGRADE_TARGET_UNREACHABLE');
  await buildCopy(run, source, target);
  if (doSwitch) await switchClusters(run, source, target);
  return run.stored!.state;
}

/** The hold-and-switch part alone (after `start --no-switch`). */
export async function switchNow(o: UpgradeOptions): Promise<UpgradeState> {
  const stored = await readState(o.store, oldKeys(o));
  if (!stored) throw new UpgradeError('UPGRADE_NOT_STARTED', `no upgrade of cluster ${o.oldConfig.cluster} is recorded`);
  if (stepIndex(stored.state.step) < stepIndex('caught-up') || stored.state.step === 'rolled-back') {
    throw new UpgradeError('UPGRADE_WRONG_STEP', `the upgrade is at step ${stored.state.step}; the switch needs 'caught-up'`);
  }
  return start(o, true);
}

/** Back to the old cluster: before the switch, releases a hold; after it, holds writes on the new cluster and points routers back. */
export async function rollback(o: UpgradeOptions, force: boolean): Promise<UpgradeState> {
  const stored = await readState(o.store, oldKeys(o));
  if (!stored) throw new UpgradeError('UPGRADE_NOT_STARTED', `no upgrade of cluster ${o.oldConfig.cluster} is recorded`);
  const run = runOf(o, stored);
  const st = stored.state;
  const source = await locate(o.store, o.oldConfig, 'UPGRADE_SOURCE_UNREACHABLE');
  if (st.step !== 'switched') {
    if (stepIndex(st.step) >= stepIndex('held') && st.step !== 'rolled-back') {
      await release(run, source, 'rollback requested');
      return run.stored!.state;
    }
    throw new UpgradeError('UPGRADE_WRONG_STEP', `the upgrade is at step ${st.step}: nothing was switched (clients still use ${st.source}); 'relevo upgrade forget' removes the copy`);
  }
  const target = await locate(o.store, o.newConfig, 'UPGRADE_TARGET_UNREACHABLE');
  const started = Date.now();
  const n = await holdWrites(run, target.cluster, `rollback of the upgrade to ${target.cluster}`);
  run.print(`  ${n} router(s) hold new writes on ${target.cluster}`);
  {
    await fence(run, target);
    const { counts } = await call(target, 'row-counts', { database: o.database });
    const diff = countDifferences(st.counts, counts);
    if (diff.length && !force) {
      await call(target, 'set-read-only', { database: o.database, readOnly: false });
      await pointRouters(run, target.cluster, 'rollback refused');
      throw new UpgradeError('UPGRADE_WRITES_SINCE_SWITCH', `row counts on ${target.cluster} changed since the switch: ${diff.slice(0, 10).join('; ')}`);
    }
    if (diff.length) run.print(`  --force: the writes made on ${target.cluster} since the switch stay there only (${diff.length} table(s) differ)`);
  }
  await call(source, 'set-read-only', { database: o.database, readOnly: false });
  const back = await pointRouters(run, source.cluster, `rolled back from ${target.cluster}`);
  const pauseMs = Date.now() - started;
  await save(run, 'rolled-back', `${back} router(s) follow ${source.cluster} again; it takes writes; writes were held ${(pauseMs / 1000).toFixed(2)} s; ${target.cluster} is read-only`, { pauseMs });
  return run.stored!.state;
}

/** Removes the replication objects and the record: after a switch (done) or before one (abandoned). */
export async function forget(o: UpgradeOptions): Promise<string> {
  const stored = await readState(o.store, oldKeys(o));
  if (!stored) throw new UpgradeError('UPGRADE_NOT_STARTED', `no upgrade of cluster ${o.oldConfig.cluster} is recorded`);
  const st = stored.state;
  if (stepIndex(st.step) >= stepIndex('held') && stepIndex(st.step) < stepIndex('switched')) {
    throw new UpgradeError('UPGRADE_WRONG_STEP', `writes are held (step ${st.step}): finish with 'relevo upgrade start' or release with 'relevo upgrade rollback' first`);
  }
  const notes: string[] = [];
  try {
    const target = await locate(o.store, o.newConfig, 'UPGRADE_TARGET_UNREACHABLE');
    // After a rollback the whole new server was read-only; its database stays so (ALTER DATABASE) until dropped.
    await call(target, 'unsubscribe', { database: st.database, subscription: st.subscription, sourceCluster: st.source, resetServerReadOnly: st.step === 'rolled-back' });
    notes.push(`subscription ${st.subscription} dropped on ${st.target}`);
  } catch (error) {
    if (!(error instanceof UpgradeError && error.code === 'UPGRADE_UNKNOWN_DATABASE')) throw error;
  }
  const source = await locate(o.store, o.oldConfig, 'UPGRADE_SOURCE_UNREACHABLE');
  await call(source, 'unpublish', { database: st.database, slot: st.subscription, publication: st.publication });
  notes.push(`slot, publication and role ${UPGRADE_ROLE} dropped on ${st.source}`);
  await o.store.delete(oldKeys(o).upgrade, stored.revision);
  notes.push('upgrade record removed');
  return notes.join('; ');
}

export async function status(o: UpgradeOptions): Promise<string> {
  const stored = await readState(o.store, oldKeys(o));
  if (!stored) return `no upgrade of cluster ${o.oldConfig.cluster} is recorded`;
  const st = stored.state;
  const lines = [`upgrade of ${st.database}: ${st.source} -> ${st.target}, step ${st.step} (${stepIndex(st.step) + 1}/${UPGRADE_STEPS.length - 1})`];
  if (st.pauseMs !== null) lines.push(`writes held for ${(st.pauseMs / 1000).toFixed(2)} s at the last switch`);
  try {
    const source = await locate(o.store, o.oldConfig, 'UPGRADE_SOURCE_UNREACHABLE');
    const target = await locate(o.store, o.newConfig, 'UPGRADE_TARGET_UNREACHABLE');
    if (stepIndex(st.step) >= stepIndex('subscribed')) {
      const progress = await call(target, 'copy-progress', { database: st.database, subscription: st.subscription });
      const { lag } = await call(source, 'slot-lag', { database: st.database, slot: st.subscription });
      lines.push(`copy: ${progress.tables - progress.pending.length}/${progress.tables} tables ready, subscription ${progress.enabled ? 'enabled' : 'disabled'}${progress.running ? ', running' : ''}; lag ${mb(lag?.lagBytes ?? null)}`);
    }
  } catch (error) {
    lines.push(`live figures unavailable: ${(error as Error).message}`);
  }
  for (const r of await routers(o.store, o.routeCluster ?? st.source)) lines.push(`router ${r.name}: follows ${r.following}${r.hold ? ', holding writes' : ''} (route revision ${r.revision})`);
  for (const h of st.history.slice(-12)) lines.push(`  ${h.at} ${h.step}: ${h.detail}`);
  return lines.join('\n');
}
