import type { SlotRegistry } from '../cluster/types.js';

/** Where a standby streams from. */
export interface Upstream {
  member: string;
  address: string;
  slot: string;
  /** A standby leader on `feed: archive` (docs/sites.md): restore_command only, no primary_conninfo. */
  archiveOnly?: true;
}

/** Effects decide() asks for; src/agent/effects.ts carries them out, in order, stopping at the first failure. */
export type Action =
  | { type: 'claimInitialize'; systemIdentifier?: string }
  | { type: 'completeInitialize'; systemIdentifier: string }
  | { type: 'bootstrap' }
  | { type: 'clone'; upstream: Upstream }
  | { type: 'startPostgres'; as: 'primary'; synchronousStandbyNames: string }
  | { type: 'startPostgres'; as: 'replica'; upstream: Upstream | undefined }
  /**
   * `checkpointFirst` (a switchover's clean shutdown): a CHECKPOINT while writes still run, so that the
   * shutdown checkpoint, taken while no write is accepted, has little left to flush. Best effort.
   */
  | { type: 'stopPostgres'; mode: 'fast' | 'immediate'; checkpointFirst?: true }
  | { type: 'restartPostgres' }
  | { type: 'acquireLeader' }
  | { type: 'releaseLeader'; reason: string }
  /** Rewrite relevo.conf/pg_hba/standby.signal if they differ from what this role needs, and reload. */
  | { type: 'configure'; as: 'primary'; synchronousStandbyNames: string }
  | { type: 'configure'; as: 'replica'; upstream: Upstream }
  /** Stop streaming (primary_conninfo cleared, reload): a standby that acknowledges nothing cannot help a lost primary acknowledge commits. */
  | { type: 'detachUpstream' }
  /** `registryRevision`: the slot registry's revision as observed (compare-and-swap), undefined when absent (atomic create). */
  | { type: 'syncSlots'; create: string[]; drop: { slot: string; reason: string }[]; registry: SlotRegistry | undefined; registryRevision: number | undefined }
  /**
   * Take the leader lease (unless held), fence `fence` (the former primary) over SQL once the lease is ours,
   * record the new timeline in history, load synchronousStandbyNames, pg_promote(), then record the exact fork position.
   */
  | {
      type: 'promote';
      acquire: boolean;
      from: string | null;
      reason: string;
      timeline: number;
      forkLsn: string | null;
      slots: string[];
      synchronousStandbyNames: string;
      fence?: { member: string; address: string };
      /** Quorum mode: the quorum record written (compare-and-swap) before pg_promote(). */
      quorum?: { members: string[]; quorum: number };
      /** `on` mode: the sync record is reset with no member and these as `previous` (who may hold acknowledged commits). */
      syncPrevious?: string[];
    }
  /** Replace the predicted timeline of our promotion's history entry with PostgreSQL's own, and its fork position from the timeline history file. */
  | { type: 'recordSwitchPoint'; predictedTimeline: number; timeline: number }
  /** Compare-and-swap on the observed revision (undefined: the record is absent, atomic create); a lost swap is seen next cycle. */
  /** `previous`: while `members` is empty, the members that may hold acknowledged commits (src/cluster/types.ts SyncRecordSchema). */
  | { type: 'writeSyncRecord'; members: string[]; previous?: string[]; revision: number | undefined }
  | { type: 'writeOptime'; lsn: string; timeline: number; revision: number | undefined }
  /** Quorum record change by compare-and-swap against `revision` (null: create it); fails if it changed meanwhile. */
  | { type: 'writeQuorumRecord'; members: string[]; quorum: number; revision: number | null }
  /** Make a former primary that still runs unable to acknowledge commits (over SQL). */
  | { type: 'fenceFormerPrimary'; member: string; address: string }
  /** Reconcile this data directory with the leader's timeline (crash recovery if needed, pg_rewind), then start as its standby. */
  | { type: 'rewind'; upstream: Upstream }
  /** Move the data directory aside (kept, never deleted) so the member can be cloned afresh. */
  | { type: 'moveDataAside'; reason: string }
  /** Switchover: record the clean shutdown position in the request and release the leader lease. */
  /** `leaderRevision`: the leader key as observed (ours): deleted at that revision, one store round trip less on the write pause. */
  | { type: 'handOver'; reason: string; leaderRevision?: number }
  /** Deletes the request only at the observed revision: a newer request is never removed unseen. */
  | { type: 'clearFailoverRequest'; reason: string; revision: number }
  | { type: 'finishOperatorRequest' }
  /** Standby cluster: record where this (former) primary shut down, for the site switchover (docs/sites.md). */
  | { type: 'recordDemotion'; generation: number };

export type ActionType = Action['type'];
