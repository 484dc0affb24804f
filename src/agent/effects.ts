import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { ClusterKeys } from '../cluster/keys.js';
import { parseRecord } from '../cluster/records.js';
import type { SiteDemotion } from '../cluster/site.js';
import type { ClusterSettings } from '../cluster/settings.js';
import { FailoverRequestSchema, HistorySchema, InitRecordSchema, LeaderRecordSchema, type HistoryEntry, type LeaderRecord } from '../cluster/types.js';
import { connectAddressOf, type MemberConfig } from '../config/member.js';
import { createCredentials, loadCredentials, ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { archiveParameters, sourceArchiveParameters } from '../backup/archive.js';
import { bootstrapCluster } from '../postgres/bootstrap.js';
import { bootstrapFromBackup } from '../backup/bootstrap.js';
import { cloneFromPrimary } from '../postgres/clone.js';
import { baseParameters, clearFenceSettings, splitHostPort, writeMemberConfiguration, type StandbySettings } from '../postgres/conf.js';
import { dataDirState, readControlData, timelineSwitchPoint } from '../postgres/datadir.js';
import { createPhysicalSlot, dropSlot } from '../postgres/inspect.js';
import { agentSqlTarget, type LocalPostgres } from '../postgres/local.js';
import { reloadPostgres, restartPostgres, startPostgres, startStandby, stopPostgres } from '../postgres/postmaster.js';
import { moveDataDirAside, RewindStartError, rewindFrom } from '../postgres/rewind.js';
import { withConnection } from '../postgres/sql.js';
import { writeMissingHistoryFiles } from '../postgres/timeline-files.js';
import { checkCloneSpace, CloneNoSpaceError, freeBytes, movedAsideCopies } from '../postgres/space.js';
import { writeIfUnchanged, type KeyValue, type LeaseId, type Store } from '../store/store.js';
import type { Action, Upstream } from './actions.js';
import { isDiskFull, LostCasError, outcomeOf, type ActionOutcome } from './outcome.js';
import { writeQuorumRecord } from './quorum-record.js';
import { nudgeStandbys } from './sync-nudge.js';
import { delayedStandby, delayParameters } from './delayed.js';

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
  /** Right after pg_promote() finished (we take writes): publish it, so routers move clients now. Best effort, never throws. */
  promoted?(): Promise<void>;
  /** With PostgreSQL stopped, right before it starts as a standby: install copied logical slots (src/logical/failover-slots.ts). */
  beforeReplicaStart?(): string | undefined;
}

/** A conditional store write that found the record changed since it was read: nothing was written. */
export interface CasLost {
  kind: 'cas_lost';
  key: string;
}

/** The one place where decisions turn into effects: SQL, pg_ctl, store writes. Never throws: the outcome is a value. */
export async function runAction(ctx: EffectContext, action: Action): Promise<ActionOutcome> {
  try {
    const detail = await perform(ctx, action);
    if (typeof detail === 'object') {
      return { type: action.type, result: 'lost_cas', key: detail.key, error: `lost the compare-and-swap on ${detail.key}: it changed since it was read; nothing written` };
    }
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
  return {
    upstream: upstream && { address: upstream.address, slot: upstream.slot },
    passfile: ctx.local.passfile,
    sslRootCert: ctx.local.tls?.caCert,
    ...delayedStandby(ctx.config, ctx.settings()),
    ...(upstream?.archiveOnly ? { archiveFed: true } : {}),
  };
}

/** Writes relevo.conf/pg_hba/standby.signal for the role; returns true when a file changed. */
function writeConfiguration(ctx: EffectContext, standby: StandbySettings | undefined, synchronousStandbyNames = ''): boolean {
  const settings = ctx.settings();
  const parameters = {
    ...baseParameters(ctx.config, settings),
    ...archiveParameters(settings.backup, ctx.config.cluster, ctx.local.dataDir),
    ...delayParameters(ctx.config),
    // A standby cluster may also restore the source's archived WAL (docs/sites.md).
    ...(settings.standbyCluster ? sourceArchiveParameters(settings.standbyCluster.sourceRepository, settings.standbyCluster.sourceCluster, ctx.local.dataDir) : {}),
    synchronous_standby_names: synchronousStandbyNames,
  };
  return writeMemberConfiguration(ctx.local.dataDir, ctx.local.user, parameters, settings, ctx.config.name, standby);
}

/** Atomic create of the leader key on our session lease; undefined when another member holds it. */
function createLeader(ctx: EffectContext): Promise<number | undefined> {
  const record: LeaderRecord = { member: ctx.config.name, ttlMs: ctx.settings().ttlMs, acquiredAt: new Date().toISOString() };
  return ctx.store.create(ctx.keys.leader, JSON.stringify(record), { lease: ctx.sessionLease() });
}

/** For steps that cannot go on without the lease (promotion, bootstrap): losing the race is a lost compare-and-swap of that step. */
async function acquireLeader(ctx: EffectContext): Promise<string> {
  const revision = await createLeader(ctx);
  if (revision === undefined) throw new LostCasError(ctx.keys.leader, 'another member took the leader lease first');
  return `leader lease acquired at revision ${revision}`;
}

/** Deletes the leader key only if it is still ours (by its content, or by our lease when the content is damaged), at the revision read. */
async function releaseLeader(ctx: EffectContext): Promise<boolean> {
  const current = await ctx.store.get(ctx.keys.leader);
  if (!current) return false;
  const parsed = parseRecord(LeaderRecordSchema, current.value);
  const ours = parsed.ok ? parsed.value.member === ctx.config.name : current.lease === ctx.sessionLease();
  if (!ours) return false;
  return ctx.store.delete(ctx.keys.leader, current.revision);
}

/** A stored record parsed against its schema, or an error naming its key and what is wrong. */
function readRecord<T>(schema: z.ZodType<T>, kv: KeyValue): T {
  const parsed = parseRecord(schema, kv.value);
  if (!parsed.ok) throw new Error(`record ${kv.key} cannot be read: ${parsed.problem}; see \`relevo store repair\``);
  return parsed.value;
}

/** A conditional write of a record others also write; a lost swap is returned, not thrown. */
async function writeShared(ctx: EffectContext, key: string, value: unknown, revision: number | undefined): Promise<CasLost | undefined> {
  const written = await writeIfUnchanged(ctx.store, key, JSON.stringify(value), revision);
  return written === undefined ? { kind: 'cas_lost', key } : undefined;
}

/** Rewrites the history by compare-and-swap (retrying on concurrent change); `change` returns undefined to leave it. */
async function updateHistory(ctx: EffectContext, change: (history: HistoryEntry[]) => HistoryEntry[] | undefined): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await ctx.store.get(ctx.keys.history);
    const history = current ? readRecord(HistorySchema, current) : [];
    const changed = change(history);
    if (!changed) return;
    if ((await writeIfUnchanged(ctx.store, ctx.keys.history, JSON.stringify(changed.slice(-100)), current?.revision)) !== undefined) return;
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

async function resetSyncRecord(ctx: EffectContext, previous: string[] = []): Promise<void> {
  const record = { leader: ctx.config.name, members: [], ...(previous.length > 0 ? { previous } : {}), updatedAt: new Date().toISOString() };
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await ctx.store.get(ctx.keys.sync);
    if ((await writeShared(ctx, ctx.keys.sync, record, current?.revision)) === undefined) return;
  }
  throw new Error(`could not reset the sync record ${ctx.keys.sync}: it kept changing`);
}

async function promote(ctx: EffectContext, action: Extract<Action, { type: 'promote' }>): Promise<string> {
  const { config, local } = ctx;
  if (action.acquire) await acquireLeader(ctx);
  // Only once the lease is ours: a decision that is already stale cannot fence a member that leads again.
  if (action.fence) ctx.log.info({ formerPrimary: action.fence.member }, await fenceFormerPrimary(ctx, action.fence.member, action.fence.address));
  const credentials = requireCredentials(ctx);
  // The store records and the local preparation run side by side (issue 13: each store round trip and
  // file write was on the write pause); pg_promote() waits for both. The records: no standby is verified
  // to hold our acknowledged commits yet, so the sync set starts empty, with who may hold them as
  // `previous` (`on` mode). We hold the lease, so we are its writer; a swap lost to a former primary still
  // writing is retried on a fresh read. Should they fail, the lease is released (the local preparation is
  // harmless on a standby: the next cycle configures it for whoever leads).
  const recorded = (async () => {
    try {
      await appendHistory(ctx, {
        timeline: action.timeline,
        from: action.from,
        to: config.name,
        reason: action.reason,
        lsn: action.forkLsn,
        at: new Date().toISOString(),
      });
      await resetSyncRecord(ctx, action.syncPrevious);
      if (action.quorum) await writeQuorumRecord(ctx.store, ctx.keys, config.name, { ...action.quorum, revision: (await ctx.store.get(ctx.keys.quorum))?.revision ?? null });
    } catch (error) {
      await releaseLeader(ctx).catch(() => false);
      throw error;
    }
  })();
  // In synchronous mode commits must wait for some standby from the very first one: the setting is
  // in place (ignored while in recovery) before the promotion, not reloaded after it.
  const standbyNames = action.synchronousStandbyNames;
  const configured = (async () => {
    if (writeConfiguration(ctx, standbySettings(ctx, undefined), standbyNames)) await reloadPostgres(local.postmaster);
  })();
  // PostgreSQL numbers the new timeline after the newest history file it has: write the ones this
  // standby never received (from the cluster's history), so no two promotions take one number.
  // Best effort: a promotion is not held up by it (PostgreSQL then numbers the timeline as it always did).
  // Our own entry is left out, so whether it reads the history before or after our append does not matter.
  const historyFiles = (async () => {
    try {
      const historyRecord = await ctx.store.get(ctx.keys.history);
      const history = historyRecord ? readRecord(HistorySchema, historyRecord) : [];
      const knownTimelines = history.filter((h) => !(h.timeline === action.timeline && h.to === config.name)).map((h) => h.timeline);
      const upTo = Math.max(action.timeline - 1, ...knownTimelines);
      const written = writeMissingHistoryFiles(local.dataDir, local.user, history, 1, upTo);
      if (written.length > 0) ctx.log.warn({ timelines: written }, `wrote the missing history files of timelines ${written.join(', ')} from the cluster history before promoting, so the promotion does not reuse their number`);
    } catch (error) {
      ctx.log.warn({ err: (error as Error).message }, `could not write the missing timeline history files before promoting: ${(error as Error).message}`);
    }
  })();
  const prepared = Promise.all([recorded, configured, historyFiles]);
  // Observed even if the connection below fails first: the outcome is the connection's error.
  prepared.catch(() => undefined);
  const settled = Promise.allSettled([recorded, configured, historyFiles]);
  const timeline = await withConnection(agentSqlTarget(local, credentials), async (client) => {
    // Connected meanwhile; nothing below happens before the records are written and the configuration loaded.
    await prepared;
    // The other standbys' slots exist before the promotion (physical slots can be made in recovery):
    // a standby that follows us already streams (cascading) when we promote, and moves to the new
    // timeline on the same connection, so our first commits find a synchronous standby at once
    // instead of after its reconnect. Best effort: they are made after the promotion otherwise.
    for (const slot of action.slots) {
      await createPhysicalSlot(client, slot).catch((error: Error) => ctx.log.warn({ slot, err: error.message }, `could not create slot ${slot} before promoting: ${error.message}`));
    }
    // The reload is asynchronous (SIGHUP): wait until a fresh look sees it.
    for (let attempt = 0; ; attempt++) {
      const ssn = await client.query<{ ssn: string }>(`SELECT current_setting('synchronous_standby_names') AS ssn`);
      if (ssn.rows[0]?.ssn === standbyNames) break;
      if (attempt >= 200) throw new Error(`synchronous_standby_names did not reload to '${standbyNames}' before promotion`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // The files stay even if this call fails: the promotion may still be under way and must find them.
    // pg_promote(true) looks only every 100 ms whether the promotion ended: we look every 5 ms.
    const result = await client.query<{ promoted: boolean }>('SELECT pg_promote(false) AS promoted');
    if (!result.rows[0]?.promoted) throw new Error('pg_promote() could not signal the promotion');
    const deadline = performance.now() + 60_000;
    for (;;) {
      const recovery = await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
      if (recovery.rows[0]?.r === false) break;
      if (performance.now() > deadline) throw new Error('pg_promote() did not finish within 60 s');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // We take writes: routers may send clients to us now, not after the checkpoint below.
    await ctx.promoted?.();
    for (const slot of action.slots) await createPhysicalSlot(client, slot);
    // pg_control records the new timeline only at the next checkpoint, and pg_rewind reads
    // the source's timeline from there: without it a former primary would be told "no rewind required".
    await client.query('CHECKPOINT');
    const control = await client.query<{ tli: number }>('SELECT timeline_id AS tli FROM pg_control_checkpoint()');
    return control.rows[0]?.tli;
  }, 70_000).catch(async (error: unknown) => {
    // A failed connection ends the action only once the store records settled: no write of this promotion runs on into the next cycle.
    await settled;
    throw error;
  });
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
      { host, port, user: ROLE_NAMES.network, password: credentials.agentPassword, tlsCaFile: ctx.local.tls?.caCert },
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

/**
 * A switchover's CHECKPOINT while writes still run: what it flushes, the shutdown
 * checkpoint (taken while no write is accepted) need not. Best effort: a failure
 * only makes the shutdown checkpoint larger. Bounded, so a stuck server is stopped anyway.
 */
async function checkpointBeforeShutdown(ctx: EffectContext): Promise<string> {
  const credentials = ctx.credentials();
  if (!credentials) return 'no checkpoint (no credentials)';
  try {
    await withConnection(agentSqlTarget(ctx.local, credentials), async (client) => {
      await client.query(`SET statement_timeout = '10s'`);
      await client.query('CHECKPOINT');
    }, 12_000);
    return 'a checkpoint';
  } catch (error) {
    ctx.log.warn({ err: (error as Error).message }, `checkpoint before the clean shutdown failed (${(error as Error).message}); shutting down anyway`);
    return 'a failed checkpoint';
  }
}

/** After the clean shutdown of a primary whose cluster became a standby cluster: its final position, for the site switchover. */
async function recordDemotion(ctx: EffectContext, generation: number): Promise<string> {
  const control = await readControlData(ctx.local.binDir, ctx.local.user, ctx.local.dataDir);
  if (control.clusterState !== 'shut down') throw new Error(`PostgreSQL is not cleanly shut down (${control.clusterState}): no final position to record`);
  const record: SiteDemotion = { member: ctx.config.name, shutdownLsn: control.checkpointLsn, timeline: control.timeline, generation, at: new Date().toISOString() };
  await ctx.store.put(ctx.keys.siteDemotion, JSON.stringify(record));
  return `demoted to a standby cluster: shut down cleanly at ${control.checkpointLsn} on timeline ${control.timeline}`;
}

async function perform(ctx: EffectContext, action: Action): Promise<string | undefined | CasLost> {
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
      const record = readRecord(InitRecordSchema, current);
      if (record.member !== config.name) throw new Error(`member ${record.member} owns the initialisation`);
      const ok = await store.compareAndSwap(keys.initialize, JSON.stringify({ ...record, systemIdentifier: action.systemIdentifier }), current.revision);
      if (ok === undefined) throw new LostCasError(keys.initialize, 'initialise key changed concurrently');
      return `cluster system identifier ${action.systemIdentifier} recorded`;
    }
    case 'bootstrap': {
      // Settings live in the store from the first moment so every member reads the same
      // (created only if absent: settings an operator wrote first are kept).
      if ((await store.create(keys.config, JSON.stringify(ctx.settings()))) === undefined) ctx.log.info(`cluster settings already in ${keys.config}: kept`);
      let result;
      try {
        const credentials = createCredentials(config);
        ctx.setCredentials(credentials);
        result = ctx.settings().backup.bootstrapFrom
          ? await bootstrapFromBackup(config, local, ctx.settings(), credentials, (line) => ctx.log.info(line))
          : await bootstrapCluster(config, local, ctx.settings(), credentials);
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
      const record = readRecord(InitRecordSchema, current);
      // A lost swap leaves the identifier unrecorded: completeInitialize records it in a later cycle.
      const recorded = await store.compareAndSwap(keys.initialize, JSON.stringify({ ...record, systemIdentifier: result.systemIdentifier }), current.revision);
      if (recorded === undefined) ctx.log.warn(`the initialise key ${keys.initialize} changed during bootstrap; the system identifier is recorded in a later cycle`);
      await acquireLeader(ctx);
      return `cluster initialised${'backup' in result ? ` from backup ${result.backup}` : ''}: system ${result.systemIdentifier}, postmaster pid ${result.postmasterPid}`;
    }
    case 'clone': {
      const credentials = requireCredentials(ctx);
      const started = Date.now();
      // Moved-aside copies stay on this disk (never deleted): a clone that cannot fit is refused, naming them.
      const copies = movedAsideCopies(local.dataDir);
      const refused = copies.length > 0 ? checkCloneSpace(local.dataDir, copies, freeBytes(dirname(local.dataDir))) : undefined;
      if (refused) throw refused;
      let method: string;
      try {
        method = await cloneFromPrimary(local, action.upstream.address, action.upstream.slot, credentials, process.stderr.isTTY === true);
      } catch (error) {
        const message = (error as Error).message;
        if (isDiskFull(message)) throw new CloneNoSpaceError(local.dataDir, freeBytes(dirname(local.dataDir)), undefined, copies, message);
        throw error;
      }
      writeConfiguration(ctx, standbySettings(ctx, action.upstream));
      return `cloned from ${action.upstream.member} in ${((Date.now() - started) / 1000).toFixed(1)} s (${method === 'relevo' ? "relevo's own base backup" : 'pg_basebackup'})`;
    }
    case 'startPostgres': {
      clearFenceSettings(local.dataDir, local.user);
      if (action.as === 'primary') writeConfiguration(ctx, undefined, action.synchronousStandbyNames);
      else writeConfiguration(ctx, standbySettings(ctx, action.upstream));
      const installed = action.as === 'replica' ? ctx.beforeReplicaStart?.() : undefined;
      const pid = action.as === 'replica' ? await startStandby(local.postmaster) : await startPostgres(local.postmaster);
      return `PostgreSQL started as ${action.as}, postmaster pid ${pid}${installed ? `; ${installed}` : ''}`;
    }
    case 'stopPostgres': {
      if (!action.checkpointFirst) {
        await stopPostgres(local.postmaster, action.mode);
        return `PostgreSQL stopped (${action.mode})`;
      }
      const started = performance.now();
      const checkpoint = await checkpointBeforeShutdown(ctx);
      const checkpointed = performance.now();
      await stopPostgres(local.postmaster, action.mode, 60, 10);
      return `PostgreSQL stopped (${action.mode}) after ${checkpoint} in ${Math.round(checkpointed - started)} ms; shutdown took ${Math.round(performance.now() - checkpointed)} ms`;
    }
    case 'restartPostgres': {
      if (!ctx.beforeReplicaStart) {
        const pid = await restartPostgres(local.postmaster);
        return `PostgreSQL restarted, postmaster pid ${pid}`;
      }
      await stopPostgres(local.postmaster, 'fast', 120);
      // Only a standby takes copied slots (install() checks standby.signal itself).
      const installed = ctx.beforeReplicaStart();
      const pid = await startPostgres(local.postmaster, 120);
      return `PostgreSQL restarted, postmaster pid ${pid}${installed ? `; ${installed}` : ''}`;
    }
    case 'acquireLeader': {
      // Losing the race is news for the next decision (it reads who won), not a failure.
      const revision = await createLeader(ctx);
      return revision === undefined ? { kind: 'cas_lost', key: keys.leader } : `leader lease acquired at revision ${revision}`;
    }
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
      if (action.as === 'primary' && action.synchronousStandbyNames !== '') {
        // Commits waiting for a lost standby are released by the new one's next reply: ask for it now.
        // Best effort: without it they are released within wal_receiver_status_interval anyway.
        await withConnection(agentSqlTarget(local, requireCredentials(ctx)), (client) => nudgeStandbys(client, action.synchronousStandbyNames)).catch((error: Error) =>
          ctx.log.warn({ err: error.message }, `member ${config.name}: could not nudge the standbys after changing synchronous_standby_names: ${error.message}`),
        );
      }
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
      if (action.registry) {
        const lost = await writeShared(ctx, keys.slots, action.registry, action.registryRevision);
        if (lost) return lost;
      }
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
    case 'writeSyncRecord': {
      const previous = action.previous ?? [];
      const record = { leader: config.name, members: action.members, ...(previous.length > 0 ? { previous } : {}), updatedAt: new Date().toISOString() };
      const changing = previous.length > 0 ? ` (changing: acknowledged commits are on the most advanced of ${previous.join(', ')})` : '';
      return (await writeShared(ctx, keys.sync, record, action.revision)) ?? `synchronous set is now [${action.members.join(', ')}]${changing}`;
    }
    case 'writeQuorumRecord':
      return writeQuorumRecord(store, keys, config.name, action);
    case 'writeOptime': {
      const record = { member: config.name, address: connectAddressOf(config), lsn: action.lsn, timeline: action.timeline, at: new Date().toISOString() };
      return writeShared(ctx, keys.optime, record, action.revision);
    }
    case 'fenceFormerPrimary':
      return fenceFormerPrimary(ctx, action.member, action.address);
    case 'rewind': {
      const credentials = requireCredentials(ctx);
      const started = performance.now();
      const outcome = await rewindFrom(local, action.upstream.address, credentials);
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      ctx.log.info({ action: 'rewind', seconds }, `pg_rewind from ${action.upstream.member}: ${outcome} in ${seconds} s; starting as its standby`);
      writeConfiguration(ctx, standbySettings(ctx, action.upstream));
      // pg_rewind succeeded: a failure to start says nothing about the data directory, so it must not
      // count as a failed rewind (whose fallback moves the data directory aside); the next cycle retries.
      const pid = await startStandby(local.postmaster).catch((error: Error) => {
        throw new RewindStartError(action.upstream.member, error.message);
      });
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
      const request = current && parseRecord(FailoverRequestSchema, current.value);
      // Without the shutdown position (request gone, changed or damaged) the candidates are elected by the usual rules.
      const recorded = current && request?.ok && (await store.compareAndSwap(keys.failover, JSON.stringify({ ...request.value, shutdownLsn: control.checkpointLsn }), current.revision)) !== undefined;
      // At the observed revision (the key is written once per leadership, so it is still ours if it is at it); else as usual.
      const deleted = action.leaderRevision !== undefined && (await store.delete(keys.leader, action.leaderRevision));
      if (!deleted) await releaseLeader(ctx);
      return `${action.reason}: shut down cleanly at ${control.checkpointLsn}, ${recorded ? 'recorded in the request' : `not recorded (the request at ${keys.failover} changed or is gone)`}, leader lease released`;
    }
    case 'clearFailoverRequest':
      return (await store.delete(keys.failover, action.revision)) ? action.reason : { kind: 'cas_lost', key: keys.failover };
    case 'finishOperatorRequest':
      ctx.finishOperatorRequest();
      return undefined;
    case 'recordDemotion':
      return recordDemotion(ctx, action.generation);
    default: {
      // A new action type without its case here does not compile.
      const unhandled: never = action;
      throw new Error(`no effect for action ${(unhandled as Action).type}`);
    }
  }
}
