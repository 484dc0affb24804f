import type { Logger } from 'pino';
import type { ClusterKeys } from '../cluster/keys.js';
import type { ClusterSettings } from '../cluster/settings.js';
import { FailoverRequestSchema, HistorySchema, InitRecordSchema, LeaderRecordSchema, type HistoryEntry, type LeaderRecord } from '../cluster/types.js';
import { connectAddressOf, type MemberConfig } from '../config/member.js';
import { createCredentials, loadCredentials, ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { bootstrapCluster } from '../postgres/bootstrap.js';
import { cloneFromPrimary } from '../postgres/clone.js';
import { baseParameters, clearFenceSettings, splitHostPort, writeMemberConfiguration, type StandbySettings } from '../postgres/conf.js';
import { dataDirState, readControlData, timelineSwitchPoint } from '../postgres/datadir.js';
import { createPhysicalSlot, dropSlot } from '../postgres/inspect.js';
import { agentSqlTarget, type LocalPostgres } from '../postgres/local.js';
import { reloadPostgres, restartPostgres, startPostgres, stopPostgres } from '../postgres/postmaster.js';
import { moveDataDirAside, rewindFrom } from '../postgres/rewind.js';
import { withConnection } from '../postgres/sql.js';
import type { LeaseId, Store } from '../store/store.js';
import type { Action, Upstream } from './actions.js';
import { LostCasError, outcomeOf, type ActionOutcome } from './outcome.js';

export interface EffectContext {
  config: MemberConfig;
  local: LocalPostgres;
  store: Store;
  keys: ClusterKeys;
  log: Logger;
  /** Current cluster settings as last read from the store. */
  settings(): ClusterSettings;
  /** The agent's session lease: its member key and, on the primary, the leader key hang on it. */
  sessionLease(): LeaseId;
  credentials(): Credentials | undefined;
  setCredentials(credentials: Credentials): void;
  /** Forget the operator request once it has been carried out. */
  finishOperatorRequest(): void;
}

/** The one place where decisions turn into effects: SQL, pg_ctl, store writes. Never throws: the outcome is a value. */
export async function runAction(ctx: EffectContext, action: Action): Promise<ActionOutcome> {
  try {
    const detail = await perform(ctx, action);
    return { type: action.type, result: 'ok', detail };
  } catch (error) {
    return outcomeOf(action.type, error);
  }
}

function requireCredentials(ctx: EffectContext): Credentials {
  const loaded = ctx.credentials() ?? loadCredentials(ctx.config);
  if (!loaded) throw new Error(`member ${ctx.config.name}: no credentials in ${ctx.config.secrets.file} or the configured environment variables`);
  ctx.setCredentials(loaded);
  return loaded;
}

function standbySettings(ctx: EffectContext, upstream: Upstream | undefined): StandbySettings {
  return { upstream: upstream && { address: upstream.address, slot: upstream.slot }, passfile: ctx.local.passfile };
}

/** Writes relevo.conf/pg_hba/standby.signal for the role; returns true when a file changed. */
function writeConfiguration(ctx: EffectContext, standby: StandbySettings | undefined, synchronousStandbyNames = ''): boolean {
  const settings = ctx.settings();
  const parameters = { ...baseParameters(ctx.config, settings), synchronous_standby_names: synchronousStandbyNames };
  return writeMemberConfiguration(ctx.local.dataDir, ctx.local.user, parameters, settings, ctx.config.name, standby);
}

async function acquireLeader(ctx: EffectContext): Promise<string> {
  const record: LeaderRecord = { member: ctx.config.name, ttlMs: ctx.settings().ttlMs, acquiredAt: new Date().toISOString() };
  const revision = await ctx.store.create(ctx.keys.leader, JSON.stringify(record), { lease: ctx.sessionLease() });
  if (revision === undefined) throw new LostCasError(ctx.keys.leader, 'another member took the leader lease first');
  return `leader lease acquired at revision ${revision}`;
}

/** Deletes the leader key only if it is still ours. */
async function releaseLeader(ctx: EffectContext): Promise<boolean> {
  const current = await ctx.store.get(ctx.keys.leader);
  if (!current || LeaderRecordSchema.parse(JSON.parse(current.value)).member !== ctx.config.name) return false;
  return ctx.store.delete(ctx.keys.leader, current.revision);
}

/** Rewrites the history by compare-and-swap (retrying on concurrent change); `change` returns undefined to leave it. */
async function updateHistory(ctx: EffectContext, change: (history: HistoryEntry[]) => HistoryEntry[] | undefined): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await ctx.store.get(ctx.keys.history);
    const history = current ? HistorySchema.parse(JSON.parse(current.value)) : [];
    const changed = change(history);
    if (!changed) return;
    const value = JSON.stringify(changed.slice(-100));
    const written = current ? await ctx.store.compareAndSwap(ctx.keys.history, value, current.revision) : await ctx.store.create(ctx.keys.history, value);
    if (written !== undefined) return;
  }
  throw new Error('could not update the history: it kept changing');
}

/** Appends the entry of a promotion once: a resumed promotion finds it already there. */
function appendHistory(ctx: EffectContext, entry: HistoryEntry): Promise<void> {
  return updateHistory(ctx, (history) => (history.some((h) => h.timeline === entry.timeline && h.to === entry.to) ? undefined : [...history, entry]));
}

/**
 * Replaces the predicted timeline and fork position of our promotion's entry
 * with PostgreSQL's own (from the new timeline's history file): standbys
 * compare their replay position with this exact switch point.
 */
function recordSwitchPoint(ctx: EffectContext, predictedTimeline: number, timeline: number, lsn: string): Promise<void> {
  const me = ctx.config.name;
  return updateHistory(ctx, (history) => {
    const index = history.map((h) => h.timeline === predictedTimeline && h.to === me).lastIndexOf(true);
    const entry = history[index];
    if (!entry || (entry.timeline === timeline && entry.lsn === lsn)) return undefined;
    return history.map((h, i) => (i === index ? { ...h, timeline, lsn } : h));
  });
}

async function promote(ctx: EffectContext, action: Extract<Action, { type: 'promote' }>): Promise<string> {
  const { store, keys, config, local } = ctx;
  if (action.acquire) await acquireLeader(ctx);
  // Only once the lease is ours: a decision that is already stale cannot fence a member that leads again.
  if (action.fence) ctx.log.info({ formerPrimary: action.fence.member }, await fenceFormerPrimary(ctx, action.fence.member, action.fence.address));
  try {
    await appendHistory(ctx, {
      timeline: action.timeline,
      from: action.from,
      to: config.name,
      reason: action.reason,
      lsn: action.forkLsn,
      at: new Date().toISOString(),
    });
    // Nobody holds our acknowledged commits yet: the sync set starts empty.
    await store.put(keys.sync, JSON.stringify({ leader: config.name, members: [], updatedAt: new Date().toISOString() }));
  } catch (error) {
    await releaseLeader(ctx).catch(() => false);
    throw error;
  }
  const credentials = requireCredentials(ctx);
  // In synchronous mode commits must wait for some standby from the very first one: the setting is
  // in place (ignored while in recovery) before the promotion, not reloaded after it.
  const standbyNames = action.synchronousStandbyNames;
  if (writeConfiguration(ctx, standbySettings(ctx, undefined), standbyNames)) await reloadPostgres(local.postmaster);
  const timeline = await withConnection(agentSqlTarget(local, credentials), async (client) => {
    // The reload is asynchronous (SIGHUP): wait until a fresh look sees it.
    for (let attempt = 0; ; attempt++) {
      const ssn = await client.query<{ ssn: string }>(`SELECT current_setting('synchronous_standby_names') AS ssn`);
      if (ssn.rows[0]?.ssn === standbyNames) break;
      if (attempt >= 50) throw new Error(`synchronous_standby_names did not reload to '${standbyNames}' before promotion`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const result = await client.query<{ promoted: boolean }>('SELECT pg_promote(true, 60) AS promoted');
    if (!result.rows[0]?.promoted) throw new Error('pg_promote() did not finish within 60 s');
    for (const slot of action.slots) await createPhysicalSlot(client, slot);
    // pg_control records the new timeline only at the next checkpoint, and pg_rewind reads
    // the source's timeline from there: without it a former primary would be told "no rewind required".
    await client.query('CHECKPOINT');
    const control = await client.query<{ tli: number }>('SELECT timeline_id AS tli FROM pg_control_checkpoint()');
    return control.rows[0]?.tli;
  }, 70_000);
  const switchPoint = timeline === undefined ? undefined : timelineSwitchPoint(local.dataDir, timeline);
  if (timeline !== undefined && switchPoint) await recordSwitchPoint(ctx, action.timeline, timeline, switchPoint.lsn);
  else ctx.log.warn({ timeline }, `could not read the switch point of timeline ${timeline} from pg_wal: history keeps the predicted fork position ${action.forkLsn}`);
  // The planner replaces these names with verified synchronous standbys in the next loops.
  if (writeConfiguration(ctx, undefined, standbyNames)) await reloadPostgres(local.postmaster);
  return `promoted to primary on timeline ${timeline ?? action.timeline}${switchPoint ? ` (forked at ${switchPoint.lsn})` : ''} (${action.reason})`;
}

/**
 * Makes a former primary that still runs unable to acknowledge commits: every
 * commit then waits for a synchronous standby that does not exist, and its
 * client sessions are closed. Persisted with ALTER SYSTEM, so a restart keeps it.
 */
async function fenceFormerPrimary(ctx: EffectContext, member: string, address: string): Promise<string> {
  const credentials = requireCredentials(ctx);
  const [host, port] = splitHostPort(address);
  try {
    return await withConnection(
      { host, port, user: ROLE_NAMES.agent, password: credentials.agentPassword },
      async (client) => {
        const recovery = await client.query<{ r: boolean; ssn: string }>(`SELECT pg_is_in_recovery() AS r, current_setting('synchronous_standby_names') AS ssn`);
        if (recovery.rows[0]?.r) return `former primary ${member} is a standby now`;
        if (recovery.rows[0]?.ssn === 'relevo_fenced') return `former primary ${member} is fenced`;
        await client.query(`ALTER SYSTEM SET synchronous_standby_names = 'relevo_fenced'`);
        await client.query(`ALTER SYSTEM SET default_transaction_read_only = on`);
        await client.query('SELECT pg_reload_conf()');
        await client.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`);
        ctx.log.warn({ formerPrimary: member, address }, `fenced former primary ${member} over SQL: its commits can no longer be acknowledged`);
        return `fenced former primary ${member}`;
      },
      1_500,
    );
  } catch (error) {
    return `former primary ${member} not reachable at ${address} (${(error as Error).message})`;
  }
}

async function perform(ctx: EffectContext, action: Action): Promise<string | undefined> {
  const { store, keys, config, local } = ctx;
  switch (action.type) {
    case 'claimInitialize': {
      const record = { member: config.name, startedAt: new Date().toISOString(), systemIdentifier: action.systemIdentifier };
      const revision = await store.create(keys.initialize, JSON.stringify(record));
      return revision === undefined ? 'another member claimed the initialisation first' : 'claimed the initialisation';
    }
    case 'completeInitialize': {
      const current = await store.get(keys.initialize);
      if (!current) throw new Error('the initialise key vanished');
      const record = InitRecordSchema.parse(JSON.parse(current.value));
      if (record.member !== config.name) throw new Error(`member ${record.member} owns the initialisation`);
      const ok = await store.compareAndSwap(keys.initialize, JSON.stringify({ ...record, systemIdentifier: action.systemIdentifier }), current.revision);
      if (ok === undefined) throw new LostCasError(keys.initialize, 'initialise key changed concurrently');
      return `cluster system identifier ${action.systemIdentifier} recorded`;
    }
    case 'bootstrap': {
      // Settings live in the store from the first moment so every member reads the same.
      await store.create(keys.config, JSON.stringify(ctx.settings()));
      let result;
      try {
        const credentials = createCredentials(config);
        ctx.setCredentials(credentials);
        result = await bootstrapCluster(config, local, ctx.settings(), credentials);
      } catch (error) {
        // initdb failed and left nothing behind: release the claim so another member (or our next cycle) can try.
        if (dataDirState(local.dataDir) === 'empty') {
          const current = await store.get(keys.initialize).catch(() => undefined);
          if (current) await store.delete(keys.initialize, current.revision).catch(() => false);
        }
        throw error;
      }
      // From here the cluster exists: a failure below is finished by the next cycles (completeInitialize, acquireLeader).
      const current = await store.get(keys.initialize);
      if (!current) throw new Error('the initialise key vanished during bootstrap');
      const record = InitRecordSchema.parse(JSON.parse(current.value));
      await store.compareAndSwap(keys.initialize, JSON.stringify({ ...record, systemIdentifier: result.systemIdentifier }), current.revision);
      await acquireLeader(ctx);
      return `cluster initialised: system ${result.systemIdentifier}, postmaster pid ${result.postmasterPid}`;
    }
    case 'clone': {
      const credentials = requireCredentials(ctx);
      const started = Date.now();
      await cloneFromPrimary(local, action.upstream.address, action.upstream.slot, credentials, process.stderr.isTTY === true);
      writeConfiguration(ctx, standbySettings(ctx, action.upstream));
      return `cloned from ${action.upstream.member} in ${((Date.now() - started) / 1000).toFixed(1)} s`;
    }
    case 'startPostgres': {
      clearFenceSettings(local.dataDir);
      if (action.as === 'primary') writeConfiguration(ctx, undefined, action.synchronousStandbyNames);
      else writeConfiguration(ctx, standbySettings(ctx, action.upstream));
      const pid = await startPostgres(local.postmaster);
      return `PostgreSQL started as ${action.as}, postmaster pid ${pid}`;
    }
    case 'stopPostgres':
      await stopPostgres(local.postmaster, action.mode);
      return `PostgreSQL stopped (${action.mode})`;
    case 'restartPostgres': {
      const pid = await restartPostgres(local.postmaster);
      return `PostgreSQL restarted, postmaster pid ${pid}`;
    }
    case 'acquireLeader':
      return acquireLeader(ctx);
    case 'releaseLeader':
      return (await releaseLeader(ctx)) ? `leader lease released: ${action.reason}` : undefined;
    case 'detachUpstream': {
      if (!writeConfiguration(ctx, standbySettings(ctx, undefined))) return undefined;
      await reloadPostgres(local.postmaster);
      return 'stopped streaming from the former primary (primary_conninfo cleared)';
    }
    case 'configure': {
      const changed =
        action.as === 'replica'
          ? writeConfiguration(ctx, standbySettings(ctx, action.upstream))
          : writeConfiguration(ctx, undefined, action.synchronousStandbyNames);
      if (!changed) return undefined;
      await reloadPostgres(local.postmaster);
      return action.as === 'replica'
        ? `configuration rewritten and reloaded; following ${action.upstream.member} at ${action.upstream.address}`
        : `configuration rewritten and reloaded; synchronous_standby_names = '${action.synchronousStandbyNames}'`;
    }
    case 'syncSlots': {
      const credentials = requireCredentials(ctx);
      await withConnection(agentSqlTarget(local, credentials), async (client) => {
        for (const slot of action.create) await createPhysicalSlot(client, slot);
        for (const { slot, reason } of action.drop) {
          await dropSlot(client, slot);
          ctx.log.warn({ slot, reason }, `dropped replication slot ${slot}: ${reason}`);
        }
      });
      if (action.registry) await store.put(keys.slots, JSON.stringify(action.registry));
      return action.create.length > 0 ? `created slots ${action.create.join(', ')}` : undefined;
    }
    case 'promote':
      return promote(ctx, action);
    case 'recordSwitchPoint': {
      const switchPoint = timelineSwitchPoint(local.dataDir, action.timeline);
      if (!switchPoint) throw new Error(`cannot read the switch point of timeline ${action.timeline} from pg_wal`);
      await recordSwitchPoint(ctx, action.predictedTimeline, action.timeline, switchPoint.lsn);
      return `history corrected: our promotion started timeline ${action.timeline} (not ${action.predictedTimeline}) at ${switchPoint.lsn}`;
    }
    case 'writeSyncRecord':
      await store.put(keys.sync, JSON.stringify({ leader: config.name, members: action.members, updatedAt: new Date().toISOString() }));
      return `synchronous set is now [${action.members.join(', ')}]`;
    case 'writeOptime':
      await store.put(
        keys.optime,
        JSON.stringify({ member: config.name, address: connectAddressOf(config), lsn: action.lsn, timeline: action.timeline, at: new Date().toISOString() }),
      );
      return undefined;
    case 'fenceFormerPrimary':
      return fenceFormerPrimary(ctx, action.member, action.address);
    case 'rewind': {
      const credentials = requireCredentials(ctx);
      const outcome = await rewindFrom(local, action.upstream.address, credentials);
      writeConfiguration(ctx, standbySettings(ctx, action.upstream));
      const pid = await startPostgres(local.postmaster);
      return `${outcome} from ${action.upstream.member}; started as its standby, postmaster pid ${pid}`;
    }
    case 'moveDataAside': {
      const movedTo = moveDataDirAside(local, new Date());
      ctx.log.warn({ movedTo, reason: action.reason }, `data directory moved aside to ${movedTo} (kept, not deleted): ${action.reason}`);
      return `data directory moved to ${movedTo}`;
    }
    case 'handOver': {
      const control = await readControlData(local.binDir, local.user, local.dataDir);
      const current = await store.get(keys.failover);
      if (current) {
        const request = FailoverRequestSchema.parse(JSON.parse(current.value));
        await store.compareAndSwap(keys.failover, JSON.stringify({ ...request, shutdownLsn: control.checkpointLsn }), current.revision);
      }
      await releaseLeader(ctx);
      return `${action.reason}: shut down cleanly at ${control.checkpointLsn}, leader lease released`;
    }
    case 'clearFailoverRequest':
      await store.delete(keys.failover);
      return action.reason;
    case 'finishOperatorRequest':
      ctx.finishOperatorRequest();
      return undefined;
    default: {
      // A new action type without its case here does not compile.
      const unhandled: never = action;
      throw new Error(`no effect for action ${(unhandled as Action).type}`);
    }
  }
}
