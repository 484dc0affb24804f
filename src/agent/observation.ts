import type { ClusterSettings } from '../cluster/settings.js';
import type { MemberStatus } from '../cluster/types.js';
import type { ClusterView } from '../cluster/view.js';
import type { ControlData, DataDirState } from '../postgres/datadir.js';
import type { ServerInspection } from '../postgres/inspect.js';
import type { ActionOutcome } from './outcome.js';
import type { FailsafeView } from './failsafe.js';
import type { AgentState } from './states.js';
import type { SourceView } from './source.js';

/** What PostgreSQL looks like from this agent right now. */
export type LocalServer =
  | { kind: 'stopped' }
  /** The postmaster runs but does not answer SQL yet (starting, crash recovery). */
  | { kind: 'unreachable'; postmasterPid: number; error: string }
  | { kind: 'running'; postmasterPid: number; inspection: ServerInspection };

/** The store as last read; `reachable: false` means we know nothing about the cluster. */
export type StoreView =
  | { reachable: false; error: string }
  | ({ reachable: true } & ClusterView);

/** A peer's answer to GET /status, asked directly during an election. */
export interface PeerView {
  name: string;
  status: MemberStatus | undefined;
  error?: string;
}

/** An operator command addressed to this member through its REST API. */
export type OperatorRequest = { kind: 'restart' } | { kind: 'reinit' };

/**
 * What the agent remembers between cycles: explicit, small, passed in, and
 * written only by decide() (it returns the next memory). Where the agent
 * stands is its state, not a flag here; these are facts learned earlier that
 * the next snapshot cannot show (timers, positions, results of past actions).
 */
export interface AgentMemory {
  /** pg_rewind failed on this data directory (the source was reachable): fall back per rewindFallback. Learned from a rewind outcome. */
  rewindFailed: boolean;
  /** This standby stopped because it could not follow the leader: run pg_rewind before starting it again. */
  rewindNeeded: boolean;
  /** Monotonic ms when the primary's PostgreSQL was first found down while we held the lease. */
  primaryDownSince: number | undefined;
  /** Since when (monotonic ms) this standby has not streamed from the leader named, in the leadership of that revision of its key. */
  /** replayedLsn: a standby leader on `feed: both` that still replays (from the archive) is not counted as lost. */
  streamingLost: { leader: string; revision: number; since: number; replayedLsn?: string | null } | undefined;
  /**
   * Set at our promotion: peers whose WAL was a prefix of ours (same timeline,
   * no further), so any of them may acknowledge commits before the planner
   * has verified a standby streaming our new timeline.
   */
  provisionalStandbys: string[];
  /** Monotonic ms since when no synchronous standby candidate exists. */
  noSyncCandidateSince: number | undefined;
  /** Primary WAL position when synchronous_standby_names last changed: new sync members must have flushed past it. */
  syncSwitchLsn: string | undefined;
  /** Former primary we still have to fence over SQL (after our promotion), by address. */
  fenceTarget: { member: string; address: string } | undefined;
  /** The pending switchover/failover request (by its requestedAt) and the monotonic ms when we first saw it. */
  requestSeen: { requestedAt: string; since: number } | undefined;
  /** Clones that failed in a row and the monotonic ms of the last one: the next attempt backs off (a full disk failed 1,487 clones in 3 minutes, chaos seed 4242). */
  cloneFailures: { count: number; lastAt: number } | undefined;
  /** Bootstraps (initdb, or a restore for backup.bootstrapFrom) that failed in a row: the next attempt backs off the same way, longer. */
  bootstrapFailures: { count: number; lastAt: number } | undefined;
  /** pg_rewind failed for a full disk (DISK_FULL), in a row, and the monotonic ms of the last one: retried with a backoff, the data kept in place. */
  rewindDiskFull: { count: number; lastAt: number } | undefined;
}

export function freshMemory(): AgentMemory {
  return {
    rewindFailed: false,
    rewindNeeded: false,
    primaryDownSince: undefined,
    streamingLost: undefined,
    provisionalStandbys: [],
    noSyncCandidateSince: undefined,
    syncSwitchLsn: undefined,
    fenceTarget: undefined,
    requestSeen: undefined,
    cloneFailures: undefined,
    bootstrapFailures: undefined,
    rewindDiskFull: undefined,
  };
}

/** One consistent snapshot of everything decide() may look at. */
export interface Observation {
  /** Milliseconds since the epoch (for records and scheduled switchovers). */
  now: number;
  /** Monotonic milliseconds (for lease arithmetic, immune to clock jumps). */
  monotonic: number;
  /**
   * streamingOptional: a replica that does not stream by design: a delayed replica fed from the WAL
   * archive, or one held at recover-table's recovery target (paused there, its walreceiver stops).
   * fencerMissing: why this member's fencer does not run (it is then no candidate).
   */
  member: { name: string; connectAddress: string; nofailover: boolean; priority: number; streamingOptional?: boolean; fencerMissing?: string };
  settings: ClusterSettings;
  dataDir: DataDirState;
  /** From pg_controldata when the data directory is initialized. */
  systemIdentifier: string | undefined;
  /** pg_control of a stopped server (timeline, state, checkpoint). */
  control: ControlData | undefined;
  standbyConfigured: boolean;
  /** relevo.conf sets primary_conninfo (the standby streams, or keeps reconnecting). */
  upstreamConfigured: boolean;
  server: LocalServer;
  store: StoreView;
  /** Peers asked directly (only while no leader holds the lease). */
  peers: PeerView[];
  /** Store failsafe: confirmations this primary holds, or the one this replica gave (src/agent/failsafe.ts). */
  failsafe?: FailsafeView;
  /** Standby cluster only: the source cluster as read from its store this cycle (src/agent/source.ts). */
  source?: SourceView;
  /** The credentials file or variables are available (needed to clone). */
  haveCredentials: boolean;
  /** Monotonic ms of the last successful renewal of our session lease (undefined: never). */
  leaseRenewedAt: number | undefined;
  /** An operator command waiting to be carried out (the REST API's mailbox, emptied by finishOperatorRequest). */
  operatorRequest: OperatorRequest | undefined;
  memory: AgentMemory;
  /** What became of the previous cycle's actions, in order (an action after a failure did not run and is absent). */
  outcomes: ActionOutcome[];
  /** Where the agent was after the previous cycle. */
  previous: { state: AgentState; since: number };
}
