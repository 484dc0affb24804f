import type { Logger } from 'pino';
import type { ClusterKeys } from '../cluster/keys.js';
import type { ClusterSettings } from '../cluster/settings.js';
import { InitRecordSchema, type LeaderRecord } from '../cluster/types.js';
import type { MemberConfig } from '../config/member.js';
import { createCredentials, loadCredentials, type Credentials } from '../config/secrets.js';
import { bootstrapCluster } from '../postgres/bootstrap.js';
import { cloneFromPrimary } from '../postgres/clone.js';
import { baseParameters, writeMemberConfiguration, type StandbySettings } from '../postgres/conf.js';
import { createPhysicalSlot, dropSlot } from '../postgres/inspect.js';
import { agentSqlTarget, type LocalPostgres } from '../postgres/local.js';
import { reloadPostgres, startPostgres, stopPostgres } from '../postgres/postmaster.js';
import { withConnection } from '../postgres/sql.js';
import type { LeaseId, Store } from '../store/store.js';
import type { Action, Upstream } from './actions.js';

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
}

export type ActionOutcome = { action: Action; ok: true; detail?: string } | { action: Action; ok: false; error: string };

/** The one place where decisions turn into effects: SQL, pg_ctl, store writes. */
export async function runAction(ctx: EffectContext, action: Action): Promise<ActionOutcome> {
  try {
    const detail = await perform(ctx, action);
    return { action, ok: true, detail };
  } catch (error) {
    return { action, ok: false, error: (error as Error).message };
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

function writeConfiguration(ctx: EffectContext, standby: StandbySettings | undefined): boolean {
  const settings = ctx.settings();
  return writeMemberConfiguration(ctx.local.dataDir, ctx.local.user, baseParameters(ctx.config, settings), settings, ctx.config.name, standby);
}

async function acquireLeader(ctx: EffectContext, timeline?: number): Promise<string> {
  const record: LeaderRecord = { member: ctx.config.name, ttlMs: ctx.settings().ttlMs, acquiredAt: new Date().toISOString(), timeline };
  const revision = await ctx.store.create(ctx.keys.leader, JSON.stringify(record), { lease: ctx.sessionLease() });
  if (revision === undefined) throw new Error('another member took the leader lease first');
  return `leader lease acquired at revision ${revision}`;
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
      if (ok === undefined) throw new Error('initialise key changed concurrently');
      return `cluster system identifier ${action.systemIdentifier} recorded`;
    }
    case 'bootstrap': {
      // Settings live in the store from the first moment so every member reads the same.
      await store.create(keys.config, JSON.stringify(ctx.settings()));
      try {
        const credentials = createCredentials(config);
        ctx.setCredentials(credentials);
        const result = await bootstrapCluster(config, local, ctx.settings(), credentials);
        const current = await store.get(keys.initialize);
        if (!current) throw new Error('the initialise key vanished during bootstrap');
        const record = InitRecordSchema.parse(JSON.parse(current.value));
        await store.compareAndSwap(keys.initialize, JSON.stringify({ ...record, systemIdentifier: result.systemIdentifier }), current.revision);
        await acquireLeader(ctx, 1);
        return `cluster initialised: system ${result.systemIdentifier}, postmaster pid ${result.postmasterPid}`;
      } catch (error) {
        // Release the claim so another member (or our next cycle) can try again.
        const current = await store.get(keys.initialize).catch(() => undefined);
        if (current) await store.delete(keys.initialize, current.revision).catch(() => false);
        throw error;
      }
    }
    case 'clone': {
      const credentials = requireCredentials(ctx);
      const started = Date.now();
      await cloneFromPrimary(local, action.upstream.address, action.upstream.slot, credentials, process.stderr.isTTY === true);
      writeConfiguration(ctx, standbySettings(ctx, action.upstream));
      return `cloned from ${action.upstream.member} in ${((Date.now() - started) / 1000).toFixed(1)} s`;
    }
    case 'startPostgres': {
      writeConfiguration(ctx, action.as === 'primary' ? undefined : standbySettings(ctx, action.upstream));
      const pid = await startPostgres(local.postmaster);
      return `PostgreSQL started as ${action.as}, postmaster pid ${pid}`;
    }
    case 'stopPostgres':
      await stopPostgres(local.postmaster, action.mode);
      return `PostgreSQL stopped (${action.mode})`;
    case 'acquireLeader':
      return acquireLeader(ctx);
    case 'configure': {
      const standby = action.as === 'replica' ? standbySettings(ctx, action.upstream) : undefined;
      if (!writeConfiguration(ctx, standby)) return undefined;
      await reloadPostgres(local.postmaster);
      return action.as === 'replica'
        ? `configuration rewritten and reloaded; following ${action.upstream.member} at ${action.upstream.address}`
        : 'configuration rewritten and reloaded';
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
  }
}
