/**
 * The upgrade's progress, kept under the old cluster's `upgrade` key and
 * advanced by compare-and-swap only: a re-run reads it and continues from
 * the last completed step; two runs at once cannot both advance it.
 */
import { z } from 'zod';
import type { ClusterKeys } from '../cluster/keys.js';
import type { Store } from '../store/store.js';
import { writeIfUnchanged } from '../store/store.js';

/** Completed steps, in order. `rolled-back` is terminal. */
export const UPGRADE_STEPS = [
  'checked', // preflight passed, nothing written on either cluster yet
  'schema', // database, roles and schema exist on the new cluster
  'subscribed', // publication on the old, subscription on the new cluster
  'caught-up', // every table copied ('r'), lag small
  'held', // every router holds new writes
  'drained', // no write transaction left on the old cluster; it is read-only; last LSN taken
  'synced', // the subscriber confirmed the last LSN
  'sequences', // every sequence set ahead of the old one
  'counted', // row counts equal per table
  'switched', // routers follow the new cluster; subscription disabled
  'rolled-back', // routers follow the old cluster again; it takes writes
] as const;
export type UpgradeStep = (typeof UPGRADE_STEPS)[number];

export const UpgradeStateSchema = z.object({
  source: z.string(),
  target: z.string(),
  database: z.string(),
  step: z.enum(UPGRADE_STEPS),
  /** Names of the publication (old) and subscription/slot (new). */
  publication: z.string(),
  subscription: z.string(),
  /** The database on the new cluster was created by this upgrade (so a failed schema copy may drop it). */
  createdDatabase: z.boolean().default(false),
  replicaIdentityFull: z.array(z.string()).default([]),
  /** The old cluster's WAL position once writes stopped. */
  lastLsn: z.string().nullable().default(null),
  /** Row counts per table at the switch (a rollback compares the new cluster against them). */
  counts: z.record(z.string(), z.number()).default({}),
  holdStartedAt: z.string().nullable().default(null),
  switchedAt: z.string().nullable().default(null),
  /** Milliseconds between holding writes and releasing them on the new cluster. */
  pauseMs: z.number().nullable().default(null),
  history: z.array(z.object({ step: z.string(), at: z.string(), detail: z.string() })).default([]),
  updatedAt: z.string(),
});
export type UpgradeState = z.infer<typeof UpgradeStateSchema>;

export interface StoredState {
  state: UpgradeState;
  revision: number;
}

export async function readState(store: Store, keys: ClusterKeys): Promise<StoredState | undefined> {
  const kv = await store.get(keys.upgrade);
  if (!kv) return undefined;
  return { state: UpgradeStateSchema.parse(JSON.parse(kv.value)), revision: kv.revision };
}

/** Index of a step, for "at least this far" comparisons. */
export function stepIndex(step: UpgradeStep): number {
  return UPGRADE_STEPS.indexOf(step);
}

/**
 * Records a step by compare-and-swap on the revision last read; another run
 * that advanced the record meanwhile makes this one stop.
 */
export async function advance(store: Store, keys: ClusterKeys, current: StoredState | undefined, next: Omit<UpgradeState, 'updatedAt' | 'history'> & { history?: UpgradeState['history'] }, detail: string): Promise<StoredState> {
  const at = new Date().toISOString();
  const history = [...(current?.state.history ?? []), { step: next.step, at, detail }].slice(-50);
  const state: UpgradeState = { ...next, history, updatedAt: at };
  const revision = await writeIfUnchanged(store, keys.upgrade, JSON.stringify(state), current?.revision);
  if (revision === undefined) throw new Error(`the upgrade record ${keys.upgrade} changed meanwhile (another 'relevo upgrade' running?); re-run to continue from what it says`);
  return { state, revision };
}
