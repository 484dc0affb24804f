import { RECORD_UNREADABLE, type RecordKind } from '../cluster/records.js';
import type { MemberStatus } from '../cluster/types.js';
import { unknownMembers, unreadableOf } from '../cluster/view.js';
import { slotNameFor, type ServerInspection } from '../postgres/inspect.js';
import { compareLsn } from '../postgres/lsn.js';
import type { Action, Upstream } from './actions.js';
import { electionVerdict, lastLeader, latestTimeline, selfCandidate, withoutVoidPromotion } from './election.js';
import type { AgentMemory, Observation, OperatorRequest } from './observation.js';
import { planSlots } from './slots.js';
import { checkTransition, type AgentState, type Defect } from './states.js';
import { hasOtherMembers, planSync, renderAnyStandby, renderStandbyNames } from './sync.js';
import { planQuorum, promotionQuorum, quorumNamesOnStart } from './quorum.js';
import { failsafePrimary, failsafeReplicaHold } from './failsafe.js';
import { decideStandbyCluster, standbyBootstrap, standbyLeaderServes } from './standby-cluster.js';

export interface Decision {
  state: AgentState;
  actions: Action[];
  /** One sentence an operator can read: why this state, why these actions. */
  reason: string;
  /** The agent's memory for the next cycle: decide() is its only writer. */
  memory: AgentMemory;
  /** A hand-over in progress: look again after this many ms rather than a whole loopWaitMs. */
  retryInMs?: number;
  /** The wanted move is not in the transition table: nothing is done, and the agent reports this defect loudly. */
  defect?: Defect;
}

/** What the situation handlers below return; decide() checks it against the table and computes the next memory. */
export interface Target {
  state: AgentState;
  actions: Action[];
  reason: string;
  /** Changes to the memory (on top of what the previous cycle's outcomes taught). */
  remember?: Partial<AgentMemory>;
  retryInMs?: number;
}

/** How soon an agent looks again while a hand-over is under way (detaching, draining, waiting for a standby). */
export const RETRY_SOON_MS = 100;

/**
 * A step of a hand-over whose next step can follow at once (a promotion done: name a synchronous
 * standby; detached: compare positions): the next cycle starts without waiting (issue 13).
 */
export const RETRY_NOW_MS = 0;

/**
 * A standby just (re)started: it looks again at once until it streams and publishes state `replica`,
 * the moment the primary may name it synchronous (during a switchover, writes wait for that).
 */
const JUST_STARTED: readonly AgentState[] = ['rewinding', 'starting_replica', 'cloning', 'restarting_postgres'];

/** States in which we held (or were taking) the leader lease at the end of the last cycle. */
const LEADING: readonly AgentState[] = ['primary', 'draining', 'acquiring_lease', 'restarting_primary', 'promoting', 'resuming_promotion', 'bootstrapping'];

type Reachable = Extract<Observation['store'], { reachable: true }>;

/** A switchover or failover request older than this (from its start time) is ignored and cleared. */
export const FAILOVER_REQUEST_TIMEOUT_MS = 30_000;

/**
 * How long ago the request started, on our monotonic clock, counted from when
 * we first saw it (plus the delay to its scheduled time, as the requester
 * wrote both). Wall clocks are not compared across machines: members whose
 * clocks differed by a minute disagreed on whether a switchover was still on,
 * and deferred to one another for ever (found by the simulation, seed 30431).
 */
function requestAge(o: Observation, request: NonNullable<Reachable['failover']>): number {
  const seen = o.memory.requestSeen;
  const since = seen && seen.requestedAt === request.requestedAt ? seen.since : o.monotonic;
  const delay = request.at ? Math.max(0, Date.parse(request.at) - Date.parse(request.requestedAt)) : 0;
  return o.monotonic - since - delay;
}

/** The pending failover request, unless it timed out. */
function activeRequest(o: Observation, store: Reachable) {
  const request = store.failover;
  if (!request) return undefined;
  return requestAge(o, request) > FAILOVER_REQUEST_TIMEOUT_MS ? undefined : request;
}

/** A replica that has not streamed for this long while behind the leader's timeline is treated as diverged. */
export const DIVERGENCE_GRACE_MS = 10_000;

/**
 * The HA decision: a pure function of one observed snapshot. No I/O, no clock
 * (time comes in the observation). Effects are described, not performed.
 */
export function decide(observation: Observation): Decision {
  const memory = learnFromOutcomes(observation);
  const target = chooseTarget({ ...observation, memory });
  const from = observation.previous.state;
  const defect = checkTransition(from, target.state, target.actions.map((a) => a.type));
  if (defect) {
    return {
      state: from,
      actions: [],
      reason: `${defect.code}: ${defect.message} (wanted because: ${target.reason}); doing nothing — please report this`,
      memory,
      defect,
    };
  }
  const { remember, ...rest } = target;
  const next = { ...memory, ...remember };
  // The restart count of a crashed primary belongs to one leadership (found by the simulation, seed 328:
  // a count left from an earlier leadership released a freshly taken lease at once).
  if (observation.store.reachable && observation.store.leader?.member !== observation.member.name) next.primaryDownSince = undefined;
  // When we first saw the pending request: its age is counted on our own monotonic clock.
  if (observation.store.reachable) {
    const request = observation.store.failover;
    next.requestSeen = request ? (memory.requestSeen?.requestedAt === request.requestedAt ? memory.requestSeen : { requestedAt: request.requestedAt, since: observation.monotonic }) : undefined;
  }
  return { ...rest, memory: next };
}

/**
 * The memory as the previous cycle's outcomes leave it: what an action
 * achieved is remembered only once it is known to have succeeded.
 */
function learnFromOutcomes(o: Observation): AgentMemory {
  const memory = { ...o.memory };
  for (const outcome of o.outcomes) {
    const ok = outcome.result === 'ok';
    switch (outcome.type) {
      case 'rewind':
        if (ok) Object.assign(memory, { rewindNeeded: false, rewindFailed: false, rewindDiskFull: undefined });
        else if (outcome.result === 'failed' && outcome.code === 'DISK_FULL') memory.rewindDiskFull = { count: (memory.rewindDiskFull?.count ?? 0) + 1, lastAt: o.monotonic };
        else if (outcome.result === 'failed' && !outcome.retryable) memory.rewindFailed = true;
        break;
      case 'moveDataAside':
        if (ok) memory.rewindFailed = false;
        break;
      case 'clone':
        if (ok) Object.assign(memory, { rewindFailed: false, cloneFailures: undefined });
        else if (outcome.result === 'failed') memory.cloneFailures = { count: (memory.cloneFailures?.count ?? 0) + 1, lastAt: o.monotonic };
        break;
      case 'bootstrap':
        if (ok) memory.bootstrapFailures = undefined;
        else if (outcome.result === 'failed') memory.bootstrapFailures = { count: (memory.bootstrapFailures?.count ?? 0) + 1, lastAt: o.monotonic };
        break;
      case 'releaseLeader':
        if (ok) memory.primaryDownSince = undefined;
        break;
      case 'promote':
        // A promotion that did not happen leaves no former primary to fence and no provisional standbys.
        if (!ok) Object.assign(memory, { fenceTarget: undefined, provisionalStandbys: [] });
        break;
      default:
        break;
    }
  }
  return memory;
}

function chooseTarget(o: Observation): Target {
  const store = o.store;
  if (!store.reachable) return decideWithoutStore(o, store.error);
  // An unreadable initialise record is neither "no cluster" nor a system identifier to check against:
  // nothing is initialised or registered meanwhile; members go on with what does not depend on it.
  if (!unreadableOf(store, 'initialize')) {
    const initStep = standbyBootstrap(o, store) ?? decideInitialization(o, store);
    if (initStep) return initStep;
  }
  if (o.settings.paused) return decidePaused(o, store);
  if (o.operatorRequest) return decideOperatorRequest(o, store, o.operatorRequest);
  const standbyCluster = decideStandbyCluster(o, store);
  if (standbyCluster) return standbyCluster;
  if (o.dataDir === 'empty') return decideEmptyMember(o, store);
  const server = o.server;
  if (server.kind === 'unreachable') {
    // A primary's data directory, another member leads, and our PostgreSQL does not answer (hung, or
    // starting): signal it to stop now, so that when it resumes it does not take writes as a second
    // primary (found by the simulation, seed 2438: a hung primary resumed after the failover and acknowledged).
    const otherLeader = store.leader && store.leader.member !== o.member.name ? store.leader.member : undefined;
    if (otherLeader && !o.standbyConfigured) {
      return {
        state: 'fencing_split_brain',
        actions: [{ type: 'stopPostgres', mode: 'immediate' }],
        reason: `member ${otherLeader} holds the leader lease and our primary PostgreSQL (pid ${server.postmasterPid}) does not answer (${server.error}): stopping it before it can resume as a second primary`,
      };
    }
    return { state: 'waiting_for_postgres', actions: [], reason: `PostgreSQL (pid ${server.postmasterPid}) does not answer yet: ${server.error}` };
  }
  if (server.kind === 'stopped') return decideStopped(o, store);
  return server.inspection.inRecovery ? decideReplica(o, store, server.inspection) : decidePrimary(o, store, server.inspection);
}

/**
 * The first unreadable record among `kinds` that a step depends on, as a
 * reason naming it: that step is blocked, never taken as if the record were absent.
 */
function blockedBy(o: Observation, store: Reachable, kinds: RecordKind[]): string | undefined {
  const bad = store.unreadable.find(
    (r) => kinds.includes(r.kind) && !(r.kind === 'leader' && store.leader !== undefined) && !(r.kind === 'sync' && o.settings.synchronousMode === 'off'),
  );
  return bad && `${RECORD_UNREADABLE}: ${bad.key} cannot be read (${bad.problem}); repair it with \`relevo store repair\``;
}

function decideInitialization(o: Observation, store: Reachable): Target | undefined {
  const { init } = store;
  if (o.dataDir === 'initialized' && init?.systemIdentifier && o.systemIdentifier && init.systemIdentifier !== o.systemIdentifier) {
    return {
      state: 'foreign_data',
      actions: [],
      reason:
        `data directory holds system ${o.systemIdentifier} but the cluster's is ${init.systemIdentifier}: ` +
        'it belongs to another cluster; point postgres.dataDir elsewhere or empty it',
    };
  }
  if (!init) {
    return o.dataDir === 'empty'
      ? { state: 'initializing', actions: [{ type: 'claimInitialize' }], reason: 'no cluster in the store: trying to initialise it' }
      : {
          state: 'initializing',
          actions: [{ type: 'claimInitialize', systemIdentifier: o.systemIdentifier }],
          reason: `no cluster in the store: registering the existing data directory (system ${o.systemIdentifier})`,
        };
  }
  if (!init.systemIdentifier) {
    if (init.member !== o.member.name) {
      return { state: 'waiting_for_initializer', actions: [], reason: `member ${init.member} is initialising the cluster` };
    }
    if (o.dataDir === 'empty') {
      const from = o.settings.backup.bootstrapFrom;
      const wait = backoffLeft(o.memory.bootstrapFailures, o.monotonic, BOOTSTRAP_BACKOFF_MAX_MS);
      if (wait > 0) {
        return {
          state: 'bootstrapping',
          actions: [],
          reason: `${from ? `restoring the backup of ${from.cluster}` : 'initdb'} failed ${o.memory.bootstrapFailures!.count} time(s) in a row (see the errors above): retrying in ${(wait / 1000).toFixed(1)} s`,
          retryInMs: wait,
        };
      }
      return { state: 'bootstrapping', actions: [{ type: 'bootstrap' }], reason: from ? `we won the initialisation: restoring ${from.backup ? `backup ${from.backup}` : 'the newest backup'} of ${from.cluster} instead of initdb` : 'we won the initialisation: running initdb' };
    }
    if (o.systemIdentifier) {
      return {
        state: 'bootstrapping',
        actions: [{ type: 'completeInitialize', systemIdentifier: o.systemIdentifier }],
        reason: `recording system ${o.systemIdentifier} as the cluster's`,
      };
    }
  }
  return undefined;
}

/**
 * Without the store we cannot renew the lease: a primary stops before the
 * lease could expire. Any running primary counts, whether or not it thinks it
 * leads: without the store nobody can tell it that it still may.
 */
function decideWithoutStore(o: Observation, error: string): Target {
  const server = o.server;
  // A primary's data directory whose server does not answer (hung) counts too: the stop signal waits for it
  // to resume, so it cannot take writes past the lease (found by the simulation, seed 15084).
  const runsAsPrimary = server.kind === 'running' ? !server.inspection.inRecovery : server.kind === 'unreachable' && !o.standbyConfigured;
  if (runsAsPrimary && !o.settings.paused) {
    // Failsafe: every member confirmed it may go on (only a primary that led the moment before asks).
    const held = LEADING.includes(o.previous.state) || o.previous.state === 'primary_store_unreachable' ? failsafePrimary(o, error) : undefined;
    if (held) return { ...held, actions: [] };
    const age = o.leaseRenewedAt === undefined ? Infinity : o.monotonic - o.leaseRenewedAt;
    const limit = o.settings.ttlMs - o.settings.fenceMarginMs;
    if (age >= limit) {
      return {
        state: 'fencing_store_lost',
        actions: [{ type: 'stopPostgres', mode: server.kind === 'running' ? 'fast' : 'immediate' }],
        reason: `leader lease not renewed for ${Math.round(age)} ms (store unreachable: ${error}); stopping PostgreSQL before the lease can expire`,
      };
    }
    return {
      state: 'primary_store_unreachable',
      actions: [],
      reason: `cannot read the coordination store (${error}); this primary stops ${Math.round(limit - age)} ms from now unless the lease is renewed${server.kind === 'unreachable' ? ` (it does not answer either: ${server.error})` : ''}`,
    };
  }
  return { state: 'store_unreachable', actions: [], reason: `cannot read the coordination store (${error})` };
}

function decidePaused(o: Observation, store: Reachable): Target {
  const server = o.server;
  const reason = 'cluster paused for maintenance: no automatic action';
  // What runs keeps its name (health checks and the router read it); anything else is just paused.
  if (server.kind === 'running' && !server.inspection.inRecovery && store.leader?.member === o.member.name) return { state: 'primary', actions: [], reason };
  if (server.kind === 'running' && server.inspection.inRecovery) return { state: 'replica', actions: [], reason };
  return { state: 'paused', actions: [], reason };
}

function decideOperatorRequest(o: Observation, store: Reachable, request: OperatorRequest): Target {
  const isLeader = store.leader?.member === o.member.name;
  if (request.kind === 'restart') {
    // The request is consumed first: a restart that fails is reported, not retried for ever (found by the
    // simulation, seed 443: a restart asked for an empty data directory failed every cycle and blocked the clone).
    // Only a server that runs in the role it may have is restarted: a stopped one is started by the normal
    // path (which rewinds a former primary first), and a primary without the lease is fenced, not restarted
    // (found by the simulation, seed 987: a restart started a stopped former primary, which acknowledged writes).
    const server = o.server;
    const refusal =
      o.dataDir === 'empty'
        ? 'this member has no data directory yet'
        : server.kind !== 'running'
          ? 'PostgreSQL is not running; relevo starts it itself in the role it may have'
          : !server.inspection.inRecovery && !isLeader
            ? 'PostgreSQL runs as primary without the leader lease'
            : undefined;
    if (refusal) return { state: 'operator_request_refused', actions: [{ type: 'finishOperatorRequest' }], reason: `refusing to restart PostgreSQL: ${refusal}` };
    return {
      state: 'restarting_postgres',
      actions: [{ type: 'finishOperatorRequest' }, { type: 'restartPostgres' }],
      reason: 'operator asked to restart PostgreSQL',
    };
  }
  if (isLeader) {
    return { state: 'operator_request_refused', actions: [{ type: 'finishOperatorRequest' }], reason: 'refusing to reinitialise the primary: switch over first' };
  }
  // Without a running primary there is nothing to clone from, and this data may be the only copy of
  // acknowledged commits (found by the simulation, seed 298: a reinitialised former primary left a
  // strict synchronous cluster with nobody eligible, for ever).
  if (!store.leader || leaderStatus(store)?.role !== 'primary') {
    return {
      state: 'operator_request_refused',
      actions: [{ type: 'finishOperatorRequest' }],
      reason: 'refusing to reinitialise this member while no primary runs to clone from: its data may be the only copy of acknowledged commits; ask again once a primary runs',
    };
  }
  const actions: Action[] = [];
  if (o.server.kind !== 'stopped') actions.push({ type: 'stopPostgres', mode: 'fast' });
  if (o.dataDir === 'initialized') actions.push({ type: 'moveDataAside', reason: 'operator asked to reinitialise this member (relevo reinit)' });
  actions.push({ type: 'finishOperatorRequest' });
  return { state: 'reinitializing', actions, reason: 'operator asked to reinitialise this member: cloning afresh', remember: { rewindFailed: false, rewindNeeded: false } };
}

function leaderStatus(store: Reachable): MemberStatus | undefined {
  return store.leader ? store.members.find((m) => m.name === store.leader!.member) : undefined;
}

function upstreamFor(o: Observation, store: Reachable): Upstream | undefined {
  const leader = leaderStatus(store);
  if (!leader || leader.name === o.member.name) return undefined;
  return { member: leader.name, address: leader.connectAddress, slot: slotNameFor(o.member.name) };
}

/** After failed clones, the next waits 0.5 s, 1 s, 2 s … up to 30 s: a clone that cannot succeed (a full disk) must not hammer the primary. */
export const CLONE_BACKOFF_MAX_MS = 30_000;
export function cloneBackoffLeft(o: Pick<Observation, 'memory' | 'monotonic'>): number {
  return backoffLeft(o.memory.cloneFailures, o.monotonic, CLONE_BACKOFF_MAX_MS);
}

/** A restore that keeps failing (a damaged backup, an unreachable repository) is retried after 0.5 s, 1 s … up to 5 min: each attempt reads the whole backup. */
export const BOOTSTRAP_BACKOFF_MAX_MS = 300_000;

/** Time left (ms) before the next attempt after `failures` in a row: 0.5 s doubling, capped at maxMs. */
function backoffLeft(failures: { count: number; lastAt: number } | undefined, monotonic: number, maxMs: number): number {
  if (!failures) return 0;
  const backoff = Math.min(500 * 2 ** (failures.count - 1), maxMs);
  return Math.max(0, failures.lastAt + backoff - monotonic);
}

/** After pg_rewind failed for a full disk, the next try waits 0.5 s, 1 s, 2 s … up to 30 s (like a failed clone). */
export function rewindDiskFullBackoffLeft(o: Pick<Observation, 'memory' | 'monotonic'>): number {
  const failures = o.memory.rewindDiskFull;
  if (!failures) return 0;
  const backoff = Math.min(500 * 2 ** (failures.count - 1), CLONE_BACKOFF_MAX_MS);
  return Math.max(0, failures.lastAt + backoff - o.monotonic);
}

function decideEmptyMember(o: Observation, store: Reachable): Target {
  const leader = leaderStatus(store);
  if (!store.leader || !leader || (leader.role !== 'primary' && !standbyLeaderServes(o, leader))) {
    return { state: 'waiting_to_clone', actions: [], reason: 'no running primary to clone from' };
  }
  if (!o.haveCredentials) {
    return { state: 'waiting_for_credentials', actions: [], reason: 'no replication password: provide the secrets file or environment variables' };
  }
  const slot = slotNameFor(o.member.name);
  if (!leader.slots.some((s) => s.name === slot)) {
    return { state: 'waiting_to_clone', actions: [], reason: `waiting for primary ${leader.name} to create slot ${slot}` };
  }
  const wait = cloneBackoffLeft(o);
  if (wait > 0) {
    return { state: 'waiting_to_clone', actions: [], reason: `cloning from ${leader.name} failed ${o.memory.cloneFailures!.count} time(s) in a row (see the clone errors above): retrying in ${(wait / 1000).toFixed(1)} s`, retryInMs: wait };
  }
  const upstream = upstreamFor(o, store)!;
  return {
    state: 'cloning',
    actions: [{ type: 'clone', upstream }, { type: 'startPostgres', as: 'replica', upstream }],
    reason: `cloning from primary ${leader.name} through slot ${slot}`,
    retryInMs: RETRY_SOON_MS,
  };
}

/**
 * Why this standby can no longer follow the cluster's timeline, if it cannot:
 * its walreceiver still asks for an older timeline and replay went past the
 * point where the next one forked (PostgreSQL then refuses the switch, for ever).
 */
function divergence(store: Reachable, inspection: ServerInspection): string | undefined {
  // Without a walreceiver, its own timeline tells (it has not fetched the newer history file yet).
  const timeline = inspection.receivedTimeline ?? inspection.timeline;
  const replayed = inspection.replayedLsn;
  if (timeline === null || replayed === null) return undefined;
  const fork = passedFork(store, timeline, replayed);
  return fork && `replayed timeline ${timeline} to ${replayed}, past the fork of timeline ${timeline + 1} at ${fork}`;
}

/**
 * The fork of the timeline after `timeline` (from history) when `lsn`, a
 * position on `timeline`, lies past it: a server there cannot follow the cluster.
 */
function passedFork(store: Reachable, timeline: number, lsn: string): string | undefined {
  if (timeline >= latestTimeline(store.history)) return undefined;
  // The newest entry of that timeline: a void promotion may have left an older one with the same number.
  const fork = [...store.history].reverse().find((h) => h.timeline === timeline + 1)?.lsn;
  return fork && compareLsn(lsn, fork) > 0 ? fork : undefined;
}

function decideStopped(o: Observation, store: Reachable): Target {
  const me = o.member.name;
  const leaderName = store.leader?.member;
  if (leaderName === me) {
    const downSince = o.memory.primaryDownSince ?? o.monotonic;
    if (o.monotonic - downSince > o.settings.primaryRestartTimeoutMs) {
      return {
        state: 'releasing_lease',
        actions: [{ type: 'releaseLeader', reason: `PostgreSQL did not come back within primaryRestartTimeoutMs=${o.settings.primaryRestartTimeoutMs}` }],
        reason: `PostgreSQL did not restart within ${o.settings.primaryRestartTimeoutMs} ms: releasing the leader lease so a replica takes over`,
        remember: { primaryDownSince: downSince },
      };
    }
    // Our switchover hand-over did not complete (we still hold the lease): the shutdown position it
    // recorded goes stale once we write again, and the election trusts it over every other rule. The
    // request goes first (a failed removal stops the cycle before the start). Found by the simulation,
    // sync-loss seed 1846.
    const stale = store.failover?.kind === 'switchover' && store.failover.from === me && store.failover.shutdownLsn !== null;
    return {
      state: 'restarting_primary',
      actions: [
        ...(stale ? [{ type: 'clearFailoverRequest' as const, reason: 'switchover hand-over did not complete: we still lead, restarting in place', revision: store.revisions.failover! }] : []),
        { type: 'startPostgres', as: 'primary', synchronousStandbyNames: standbyNamesOnStart(o, store) },
      ],
      reason: 'we hold the leader lease and PostgreSQL is down: restarting it in place (crash recovery)',
      remember: { primaryDownSince: downSince },
    };
  }
  const upstream = upstreamFor(o, store);
  if (leaderName !== undefined) {
    if (!upstream) return { state: 'waiting_for_primary', actions: [], reason: `leader ${leaderName} has not published its address yet` };
    if (o.memory.rewindFailed) {
      const leader = leaderStatus(store);
      if (leader?.state !== 'primary') return { state: 'rewind_failed', actions: [], reason: `pg_rewind failed; waiting for leader ${leaderName} to run as primary before acting` };
      if (o.settings.rewindFallback === 'reclone') {
        return {
          state: 'recloning',
          actions: [{ type: 'moveDataAside', reason: 'pg_rewind could not reconcile this data directory with the leader (rewindFallback=reclone)' }],
          reason: 'pg_rewind failed: moving the data directory aside and cloning afresh',
        };
      }
      return { state: 'needs_operator', actions: [], reason: 'pg_rewind failed and rewindFallback=none: run `relevo reinit` for this member' };
    }
    if (needsRewind(o, store)) {
      // The backoff holds only while we go on rewinding: after anything else in between, try at once.
      const wait = o.previous.state === 'rewinding' || o.previous.state === 'rewind_failed' ? rewindDiskFullBackoffLeft(o) : 0;
      if (wait > 0) {
        return {
          state: 'rewind_failed',
          actions: [],
          reason: `DISK_FULL: pg_rewind failed ${o.memory.rewindDiskFull!.count} time(s) in a row because the disk of the data directory is full; the data stays in place (moving it aside would free nothing); retrying in ${(wait / 1000).toFixed(1)} s`,
          retryInMs: wait,
        };
      }
      return {
        state: 'rewinding',
        actions: [{ type: 'rewind', upstream }],
        reason: `reconciling with the timeline of leader ${leaderName} (pg_rewind)`,
        retryInMs: RETRY_SOON_MS,
      };
    }
    return {
      state: 'starting_replica',
      actions: [{ type: 'startPostgres', as: 'replica', upstream }],
      reason: `starting PostgreSQL as a standby of ${upstream.member}`,
      retryInMs: RETRY_SOON_MS,
    };
  }
  if (o.standbyConfigured) {
    return { state: 'starting_replica', actions: [{ type: 'startPostgres', as: 'replica', upstream: undefined }], reason: 'starting PostgreSQL as a standby; no primary holds the lease' };
  }
  const blocked = blockedBy(o, store, ['leader', 'history']);
  if (blocked) return { state: 'waiting_for_primary', actions: [], reason: `not taking the leader lease: ${blocked}` };
  const request = activeRequest(o, store);
  if (request && request.to !== me) {
    return { state: 'waiting_for_primary', actions: [], reason: `${request.kind} to ${request.to ?? 'the best replica'} in progress: not taking the lease` };
  }
  // A stopped former primary may lead again only if nobody promoted since it stopped.
  const timeline = o.control?.timeline ?? 0;
  if (latestTimeline(store.history) > timeline) {
    return { state: 'waiting_for_primary', actions: [], reason: `this former primary is on timeline ${timeline}, the cluster moved on to ${latestTimeline(store.history)}: waiting for a leader to rewind from` };
  }
  return {
    state: 'acquiring_lease',
    actions: [{ type: 'acquireLeader' }],
    reason: 'primary data directory on the current timeline and no leader: taking the leader lease before starting PostgreSQL',
  };
}

/**
 * A former primary always goes through pg_rewind (a no-op when nothing
 * diverged); a standby when it could not stream, or when pg_control shows it
 * past the fork of the timeline after its own.
 */
function needsRewind(o: Observation, store: Reachable): boolean {
  if (!o.standbyConfigured || o.memory.rewindNeeded) return true;
  const control = o.control;
  return control !== undefined && passedFork(store, control.timeline, control.minRecoveryLsn ?? control.checkpointLsn) !== undefined;
}

function standbyNamesOnStart(o: Observation, store: Reachable): string {
  if (o.settings.synchronousMode === 'off') return '';
  if (o.settings.synchronousMode === 'quorum') return quorumNamesOnStart(o, store);
  const me = o.member.name;
  const record = store.sync && store.sync.leader === me ? store.sync.members : [];
  if (record.length > 0) return renderStandbyNames(record);
  // Until the planner verifies a standby, commits wait (it falls back to asynchronous per the settings).
  return o.settings.synchronousStrict || hasOtherMembers(me, store) ? renderAnyStandby(o.memory.provisionalStandbys) : '';
}

/**
 * Peers asked during the election whose WAL is a prefix of ours: same
 * timeline and no further than what we received. Any of them may acknowledge
 * our first commits; a peer that received more than we did has diverged from
 * the timeline we are about to create, and must never be named.
 */
function prefixPeers(o: Observation, inspection: ServerInspection): string[] {
  const mine = inspection.receivedLsn;
  if (mine === null) return [];
  return o.peers
    .filter((p) => {
      const s = p.status;
      // nofailover: a commit held only by a member that may not be promoted could be lost.
      if (!s || p.name === o.member.name || s.role !== 'replica' || s.timeline !== inspection.timeline || s.tags.nofailover === true) return false;
      const furthest = [s.receivedLsn, s.replayedLsn].filter((l): l is string => l !== null);
      return furthest.length > 0 && furthest.every((l) => compareLsn(l, mine) <= 0);
    })
    .map((p) => p.name)
    .sort();
}

/**
 * `on` mode: who may hold acknowledged commits once we are promoted and
 * before a standby is verified: we do (every commit of the former primary's
 * guarantee, since we were eligible), and so may the provisional standbys our
 * first commits wait for. Recorded as the sync record's `previous`, so that if
 * we die in that window the election compares against all of us and promotes
 * nobody while one of us cannot be asked (as for a lost synchronous standby).
 */
function syncPreviousOnPromotion(o: Observation, provisional: string[]): { syncPrevious?: string[] } {
  return o.settings.synchronousMode === 'on' ? { syncPrevious: [o.member.name, ...provisional.filter((m) => m !== o.member.name)] } : {};
}

/** synchronous_standby_names loaded before pg_promote(): from the very first commit, some standby must hold it. */
function standbyNamesOnPromotion(o: Observation, provisional: string[]): string {
  return o.settings.synchronousMode !== 'off' ? renderAnyStandby(provisional) : '';
}

function decideReplica(o: Observation, store: Reachable, inspection: ServerInspection): Target {
  const me = o.member.name;
  const leaderName = store.leader?.member;
  if (leaderName === me) {
    return {
      state: 'resuming_promotion',
      actions: [
        {
          type: 'promote',
          acquire: false,
          from: lastLeader(store) ?? null,
          reason: 'resuming an interrupted promotion',
          timeline: (inspection.timeline ?? 0) + 1,
          forkLsn: inspection.replayedLsn,
          slots: peerSlots(o, store),
          synchronousStandbyNames: standbyNamesOnPromotion(o, o.memory.provisionalStandbys),
          quorum: promotionQuorum(o, o.memory.provisionalStandbys),
          ...syncPreviousOnPromotion(o, o.memory.provisionalStandbys),
        },
      ],
      reason: 'we hold the leader lease while still in recovery: finishing the promotion',
    retryInMs: RETRY_SOON_MS,
    };
  }
  const upstream = upstreamFor(o, store);
  if (leaderName !== undefined && upstream) {
    const leader = leaderStatus(store)!;
    // Streaming the leader's own timeline is following it, whatever history predicted (found by the
    // simulation, seed 15170: a history entry left with a predicted timeline sent a streaming standby
    // into a stop-rewind loop).
    const following = inspection.streaming && inspection.receivedTimeline !== null && inspection.receivedTimeline === leader.timeline;
    const diverged = following ? undefined : divergence(store, inspection);
    if (diverged) {
      return {
        state: 'stopping_to_rewind',
        actions: [{ type: 'stopPostgres', mode: 'fast' }],
        reason: `${diverged}: it cannot follow primary ${leader.name}; stopping to reconcile with pg_rewind`,
        remember: { rewindNeeded: true, streamingLost: undefined },
      };
    }
    // Not streaming from a live primary for a while, for a reason not seen above: stop and let
    // pg_rewind decide (a no-op when nothing diverged), rather than lag behind for ever.
    // Counted per leadership (the leader key's revision): a member that leads again starts afresh.
    const leadership = { leader: leader.name, revision: store.leader!.revision };
    const known = o.memory.streamingLost;
    const lost = inspection.streaming || o.member.streamingOptional === true
      ? undefined
      : known && known.leader === leadership.leader && known.revision === leadership.revision && leader.state === 'primary'
        ? known
        : { ...leadership, since: o.monotonic };
    if (lost && leader.state === 'primary' && o.monotonic - lost.since > DIVERGENCE_GRACE_MS) {
      return {
        state: 'stopping_to_rewind',
        actions: [{ type: 'stopPostgres', mode: 'fast' }],
        reason: `cannot stream from primary ${leader.name} for ${DIVERGENCE_GRACE_MS} ms: stopping to reconcile with pg_rewind`,
        remember: { rewindNeeded: true, streamingLost: undefined },
      };
    }
    return {
      state: 'replica',
      actions: [{ type: 'configure', as: 'replica', upstream }],
      reason: inspection.streaming ? `streaming from ${upstream.member}` : `following ${upstream.member}, not streaming yet`,
      remember: { streamingLost: lost },
      retryInMs: !inspection.streaming && JUST_STARTED.includes(o.previous.state) ? RETRY_SOON_MS : undefined,
    };
  }
  if (leaderName !== undefined) return { state: 'replica', actions: [], reason: `leader ${leaderName} has not published its address yet` };
  // Somebody may hold the lease: keep following whoever we follow, elect nobody.
  const leaderBlocked = blockedBy(o, store, ['leader']);
  if (leaderBlocked) return { state: 'replica', actions: [], reason: `not electing a new primary: ${leaderBlocked}` };
  const failsafeHold = failsafeReplicaHold(o);
  if (failsafeHold) return { state: 'replica', actions: [], reason: `no primary holds the lease; ${failsafeHold}` };
  if ((o.upstreamConfigured || inspection.upstreamConninfo !== null) && !o.settings.paused && !cleanHandOverTo(o, store, inspection)) {
    // The former primary may still run: once we stop streaming it can no longer get synchronous
    // acknowledgements from us, so the WAL positions compared in the election stop moving.
    return {
      state: 'detaching_upstream',
      actions: [{ type: 'detachUpstream' }],
      reason: `leader lease of ${lastLeader(store) ?? 'nobody'} is gone: stopped streaming from it before electing a new primary`,
      retryInMs: RETRY_NOW_MS,
    };
  }
  // Which member may hold every acknowledged commit, the cluster's timeline and the last primary position decide eligibility.
  const electionBlocked = blockedBy(o, store, o.settings.synchronousMode === 'quorum' ? ['sync', 'quorum', 'history', 'optime'] : ['sync', 'history', 'optime']);
  if (electionBlocked) return { state: 'electing', actions: [], reason: `no primary holds the lease; not taking over: ${electionBlocked}` };
  const request = activeRequest(o, store);
  const election = { ...store, history: withoutVoidPromotion(o, store, inspection), failover: request };
  const verdict = electionVerdict(o, election, selfCandidate(o, inspection.receivedLsn, inspection.timeline));
  if (!verdict.eligible) {
    return { state: 'electing', actions: [], reason: `no primary holds the lease; not taking over: ${verdict.reason}`, retryInMs: verdict.transient ? RETRY_SOON_MS : undefined };
  }
  const former = lastLeader(election);
  const fenceTarget = former && former !== me && store.optime?.member === former ? { member: former, address: store.optime.address } : undefined;
  const why = request ? `${request.kind}${request.force ? ' (forced)' : ''} requested at ${request.requestedAt}` : `leader lease of ${former ?? 'nobody'} expired`;
  const provisional = prefixPeers(o, inspection);
  // Asynchronously, a former primary whose agent died (so nothing stops it) acknowledges every commit it
  // gets: the promotion fences it over SQL, once the lease is ours, before we acknowledge any (found by the
  // simulation, seeds 183 and 14911). Synchronously its commits wait for standbys that have all detached,
  // and the failover is not slowed by a connect timeout.
  const fence = o.settings.synchronousMode === 'off' ? fenceTarget : undefined;
  return {
    state: 'promoting',
    actions: [
      {
        type: 'promote',
        acquire: true,
        from: former ?? null,
        reason: why,
        timeline: latestTimeline(election.history) + 1,
        forkLsn: inspection.replayedLsn,
        slots: peerSlots(o, store),
        synchronousStandbyNames: standbyNamesOnPromotion(o, provisional),
        ...(fence ? { fence } : {}),
        quorum: promotionQuorum(o, provisional),
        ...syncPreviousOnPromotion(o, provisional),
      },
    ],
    reason: `taking over: ${why}; ${verdict.reason}`,
    // The leader key we create wakes the others through their watch, not us (we are busy promoting):
    // look again at once, so the planner names a synchronous standby as soon as one streams.
    retryInMs: RETRY_NOW_MS,
    remember: { fenceTarget, provisionalStandbys: provisional },
  };
}

/**
 * A switchover's clean hand-over to this standby: the former primary shut down cleanly at the
 * recorded position, released the lease, and we received past it. It can acknowledge nothing
 * more, so there is nothing to detach from before the election: the promotion clears our
 * upstream itself, one whole cycle sooner (issue 13: the detach cycle was on the write pause).
 */
function cleanHandOverTo(o: Observation, store: Reachable, inspection: ServerInspection): boolean {
  const request = activeRequest(o, store);
  if (request?.kind !== 'switchover' || request.shutdownLsn === null || request.to !== o.member.name) return false;
  return inspection.receivedLsn !== null && compareLsn(inspection.receivedLsn, request.shutdownLsn) > 0;
}

/** Slots a new primary creates as it promotes, so the others can stream from it at once. */
function peerSlots(o: Observation, store: Reachable): string[] {
  return [...store.members.map((m) => m.name), ...unknownMembers(store)].filter((name) => name !== o.member.name).map(slotNameFor);
}

function decidePrimary(o: Observation, store: Reachable, inspection: ServerInspection): Target {
  const me = o.member.name;
  const leaderName = store.leader?.member;
  if (leaderName !== undefined && leaderName !== me) {
    return {
      state: 'fencing_split_brain',
      actions: [{ type: 'stopPostgres', mode: 'fast' }],
      reason: `member ${leaderName} holds the leader lease: stopping this primary to avoid two primaries`,
    };
  }
  const badLeader = store.leader === undefined ? unreadableOf(store, 'leader') : undefined;
  // A damaged leader key on another member's lease, or one we did not hold a moment ago: somebody else may lead.
  if (badLeader && (badLeader.lease === 'other' || !LEADING.includes(o.previous.state))) {
    const whose = badLeader.lease === 'other' ? "hangs on another member's lease" : 'and we did not hold the lease';
    return {
      state: 'fencing_split_brain',
      actions: [{ type: 'stopPostgres', mode: 'fast' }],
      reason: `${RECORD_UNREADABLE}: the leader key ${badLeader.key} cannot be read (${badLeader.problem}) ${whose}: stopping this primary to avoid two primaries; repair it with \`relevo store repair\``,
    };
  }
  // A damaged leader key on no lease, and we led until now: nobody can take the lease while it
  // exists, so this primary goes on (and says so), while replicas refuse to promote.
  const leaderNote = badLeader && `${RECORD_UNREADABLE}: ${badLeader.key} cannot be read (${badLeader.problem}); replicas will not promote until it is repaired with \`relevo store repair\``;
  if (leaderName === undefined && !badLeader) {
    const historyBlocked = blockedBy(o, store, ['history']);
    if (historyBlocked) return { state: 'primary', actions: [], reason: `not taking the leader lease: ${historyBlocked}` };
    if (latestTimeline(store.history) > (inspection.timeline ?? 0)) {
      return {
        state: 'fencing_old_timeline',
        actions: [{ type: 'stopPostgres', mode: 'fast' }],
        reason: `the cluster moved on to timeline ${latestTimeline(store.history)} while this primary is on ${inspection.timeline}: stopping it`,
      };
    }
    return { state: 'acquiring_lease', actions: [{ type: 'acquireLeader' }], reason: 'running primary on the current timeline and no leader: taking the leader lease' };
  }
  const request = activeRequest(o, store);
  // Under a damaged leader key nobody could take over from us: no hand-over (the request times out).
  if (!badLeader && request?.kind === 'switchover' && request.from === me && request.shutdownLsn === null && (request.at === null || Date.parse(request.at) <= o.now)) {
    const candidates = store.members.filter(
      (m) => m.name !== me && m.state === 'replica' && m.streaming && m.tags.nofailover !== true && (request.to === null || m.name === request.to),
    );
    if (candidates.length === 0) {
      return {
        state: 'primary',
        actions: [{ type: 'clearFailoverRequest', reason: `switchover cancelled: ${request.to ?? 'no replica'} is not a streaming replica that can be promoted`, revision: store.revisions.failover! }],
        reason: 'switchover impossible: no eligible streaming replica',
      };
    }
    if (inspection.openTransactions > 0 && requestAge(o, request) < o.settings.switchoverDrainMs) {
      return {
        state: 'draining',
        actions: [],
        reason: `switchover to ${request.to ?? 'the best replica'}: waiting up to switchoverDrainMs=${o.settings.switchoverDrainMs} for ${inspection.openTransactions} open transaction(s) to finish`,
        retryInMs: RETRY_SOON_MS,
      };
    }
    return {
      state: 'demoting',
      // The checkpoint first, while writes still run: the shutdown checkpoint (no writes accepted) is then small.
      actions: [{ type: 'stopPostgres', mode: 'fast', checkpointFirst: true }, { type: 'handOver', reason: `switchover to ${request.to ?? 'the best replica'}`, ...(store.leader ? { leaderRevision: store.leader.revision } : {}) }],
      reason: `switchover to ${request.to ?? 'the best replica'}: checkpointing, then shutting down cleanly so the candidate receives every WAL record, then handing over the lease`,
    };
  }
  const sync = o.settings.synchronousMode === 'quorum' ? planQuorum(o, store, inspection) : planSync(o, store, inspection);
  const actions: Action[] = [...sync.actions, { type: 'configure', as: 'primary', synchronousStandbyNames: sync.synchronousStandbyNames }];
  // Our promotion's entry still names the timeline we predicted, not the one PostgreSQL chose (the
  // store write after pg_promote() failed): correct it, or every later election would wait for ever.
  const ours = store.history.at(-1);
  if (ours?.to === me && inspection.timeline !== null && ours.timeline !== inspection.timeline) {
    actions.push({ type: 'recordSwitchPoint', predictedTimeline: ours.timeline, timeline: inspection.timeline });
  }
  const slots = planSlots(o, store, inspection.slots.map((s) => ({ name: s.name, active: s.active })));
  if (slots) actions.push(slots);
  // Written only when it moves: readers use its position (an election's lag check), never its time, and an idle
  // primary rewriting it each loop woke every agent's and router's watch each loop. A damaged record reads as absent: rewritten.
  const optime = store.optime;
  const optimeMoved = optime?.member !== me || optime.lsn !== inspection.receivedLsn || optime.timeline !== inspection.timeline || optime.address !== o.member.connectAddress;
  if (inspection.receivedLsn && inspection.timeline !== null && optimeMoved) actions.push({ type: 'writeOptime', lsn: inspection.receivedLsn, timeline: inspection.timeline, revision: store.revisions.optime });
  // The former primary is fenced until it runs as a standby. (This used to return early, dropping the
  // planner's look-again-soon: a switchover paused writes for a whole loop more; found by test/sim/switchover.ts.)
  const fence = o.memory.fenceTarget;
  const formerIsStandby = fence !== undefined && store.members.find((m) => m.name === fence.member)?.role === 'replica';
  if (fence && !formerIsStandby) actions.push({ type: 'fenceFormerPrimary', member: fence.member, address: fence.address });
  // We lead and the request was not ours to carry out (we are its result), or it timed out: clear it.
  if (store.failover && (!request || request.from !== me || request.shutdownLsn !== null)) {
    actions.push({ type: 'clearFailoverRequest', reason: request ? `${request.kind} done: ${me} is the primary` : `${store.failover.kind} request timed out`, revision: store.revisions.failover! });
  }
  const badRequest = unreadableOf(store, 'failover');
  if (badRequest) actions.push({ type: 'clearFailoverRequest', reason: `removed the unreadable request ${badRequest.key} (${badRequest.problem}); request it again`, revision: badRequest.revision });
  const notes = [leaderNote, sync.note].filter((n) => n !== undefined);
  return {
    state: 'primary',
    actions,
    reason: notes.length > 0 ? `holding the leader lease; ${notes.join('; ')}` : 'holding the leader lease',
    remember: { ...sync.remember, primaryDownSince: undefined, ...(formerIsStandby ? { fenceTarget: undefined } : {}) },
    retryInMs: sync.awaitingStandby ? RETRY_SOON_MS : undefined,
  };
}
