import { RECORD_UNREADABLE, type RecordKind } from '../cluster/records.js';
import type { MemberStatus } from '../cluster/types.js';
import { unknownMembers, unreadableOf } from '../cluster/view.js';
import { slotNameFor, type ServerInspection } from '../postgres/inspect.js';
import { compareLsn } from '../postgres/lsn.js';
import type { Action, Upstream } from './actions.js';
import { electionVerdict, lastLeader, latestTimeline, selfCandidate } from './election.js';
import type { AgentMemory, Observation } from './observation.js';
import { planSlots } from './slots.js';
import { isAllowedTransition, type AgentState } from './states.js';
import { hasOtherMembers, planSync, renderAnyStandby, renderStandbyNames } from './sync.js';
import { planQuorum, promotionQuorum, quorumNamesOnStart } from './quorum.js';
import { failsafePrimary, failsafeReplicaHold } from './failsafe.js';

export interface Decision {
  state: AgentState;
  actions: Action[];
  /** One sentence an operator can read: why this state, why these actions. */
  reason: string;
  /** Updates to the agent's memory, applied after the actions ran. */
  remember?: Partial<AgentMemory>;
  /** A hand-over in progress: look again after this many ms rather than a whole loopWaitMs. */
  retryInMs?: number;
}

/** How soon an agent looks again while a hand-over is under way (detaching, draining, waiting for a standby). */
export const RETRY_SOON_MS = 100;

type Reachable = Extract<Observation['store'], { reachable: true }>;

/** A switchover or failover request older than this (from its start time) is ignored and cleared. */
export const FAILOVER_REQUEST_TIMEOUT_MS = 30_000;

/** The pending failover request, unless it timed out. */
function activeRequest(o: Observation, store: Reachable) {
  const request = store.failover;
  if (!request) return undefined;
  const start = Math.max(Date.parse(request.requestedAt), request.at ? Date.parse(request.at) : 0);
  return o.now - start > FAILOVER_REQUEST_TIMEOUT_MS ? undefined : request;
}

/** A replica that has not streamed for this long while behind the leader's timeline is treated as diverged. */
export const DIVERGENCE_GRACE_MS = 10_000;

/**
 * The HA decision: a pure function of one observed snapshot. No I/O, no clock
 * (time comes in the observation). Effects are described, not performed.
 */
export function decide(observation: Observation): Decision {
  const target = chooseTarget(observation);
  const from = observation.previous.state;
  if (!isAllowedTransition(from, target.state)) {
    return {
      state: from,
      actions: [],
      reason: `internal error: no transition ${from} -> ${target.state} in the table (wanted because: ${target.reason}); staying put — please report this`,
    };
  }
  return target;
}

function chooseTarget(o: Observation): Decision {
  const store = o.store;
  if (!store.reachable) return decideWithoutStore(o, store.error);
  // An unreadable initialise record is neither "no cluster" nor a system identifier to check against:
  // nothing is initialised or registered meanwhile; members go on with what does not depend on it.
  if (!unreadableOf(store, 'initialize')) {
    const initStep = decideInitialization(o, store);
    if (initStep) return initStep;
  }
  if (o.settings.paused) return decidePaused(o, store);
  if (o.memory.operatorRequest) return decideOperatorRequest(o, store);
  if (o.dataDir === 'empty') return decideEmptyMember(o, store);
  const server = o.server;
  if (server.kind === 'unreachable') {
    return { state: 'starting_postgres', actions: [], reason: `PostgreSQL (pid ${server.postmasterPid}) does not answer yet: ${server.error}` };
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

function decideInitialization(o: Observation, store: Reachable): Decision | undefined {
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
      return { state: 'waiting_for_primary', actions: [], reason: `member ${init.member} is initialising the cluster` };
    }
    if (o.dataDir === 'empty') return { state: 'bootstrapping', actions: [{ type: 'bootstrap' }], reason: 'we won the initialisation: running initdb' };
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

/** Without the store we cannot renew the lease: a primary stops before the lease could expire. */
function decideWithoutStore(o: Observation, error: string): Decision {
  const server = o.server;
  const runsAsPrimary = server.kind === 'running' && !server.inspection.inRecovery;
  if (runsAsPrimary && o.memory.wasLeader && !o.settings.paused) {
    const held = failsafePrimary(o, error);
    if (held) return { ...held, actions: [] };
    const age = o.memory.leaseRenewedAt === undefined ? Infinity : o.monotonic - o.memory.leaseRenewedAt;
    const limit = o.settings.ttlMs - o.settings.fenceMarginMs;
    if (age >= limit) {
      return {
        state: 'fenced',
        actions: [{ type: 'stopPostgres', mode: 'fast' }],
        reason: `leader lease not renewed for ${Math.round(age)} ms (store unreachable: ${error}); stopping PostgreSQL before the lease can expire`,
        remember: { wasLeader: false },
      };
    }
  }
  return { state: 'store_unreachable', actions: [], reason: `cannot read the coordination store (${error})` };
}

function decidePaused(o: Observation, store: Reachable): Decision {
  const server = o.server;
  const reason = 'cluster paused for maintenance: no automatic action';
  if (server.kind === 'running' && !server.inspection.inRecovery && store.leader?.member === o.member.name) return { state: 'primary', actions: [], reason };
  if (server.kind === 'running' && server.inspection.inRecovery) return { state: 'replica', actions: [], reason };
  return { state: o.previous.state, actions: [], reason };
}

function decideOperatorRequest(o: Observation, store: Reachable): Decision {
  const request = o.memory.operatorRequest!;
  const isLeader = store.leader?.member === o.member.name;
  if (request.kind === 'restart') {
    return {
      state: 'starting_postgres',
      actions: [{ type: 'restartPostgres' }, { type: 'finishOperatorRequest' }],
      reason: 'operator asked to restart PostgreSQL',
    };
  }
  if (isLeader) {
    return { state: o.previous.state, actions: [{ type: 'finishOperatorRequest' }], reason: 'refusing to reinitialise the primary' };
  }
  const actions: Action[] = [];
  if (o.server.kind !== 'stopped') actions.push({ type: 'stopPostgres', mode: 'fast' });
  if (o.dataDir === 'initialized') actions.push({ type: 'moveDataAside', reason: 'operator asked to reinitialise this member (relevo reinit)' });
  actions.push({ type: 'finishOperatorRequest' });
  return { state: 'waiting_for_primary', actions, reason: 'operator asked to reinitialise this member: cloning afresh', remember: { rewindFailed: false } };
}

function leaderStatus(store: Reachable): MemberStatus | undefined {
  return store.leader ? store.members.find((m) => m.name === store.leader!.member) : undefined;
}

function upstreamFor(o: Observation, store: Reachable): Upstream | undefined {
  const leader = leaderStatus(store);
  if (!leader || leader.name === o.member.name) return undefined;
  return { member: leader.name, address: leader.connectAddress, slot: slotNameFor(o.member.name) };
}

function decideEmptyMember(o: Observation, store: Reachable): Decision {
  const leader = leaderStatus(store);
  if (!store.leader || !leader || leader.role !== 'primary') {
    return { state: 'waiting_for_primary', actions: [], reason: 'no running primary to clone from' };
  }
  if (!o.haveCredentials) {
    return { state: 'waiting_for_credentials', actions: [], reason: 'no replication password: provide the secrets file or environment variables' };
  }
  const slot = slotNameFor(o.member.name);
  if (!leader.slots.some((s) => s.name === slot)) {
    return { state: 'waiting_for_primary', actions: [], reason: `waiting for primary ${leader.name} to create slot ${slot}` };
  }
  const upstream = upstreamFor(o, store)!;
  return {
    state: 'cloning',
    actions: [{ type: 'clone', upstream }, { type: 'startPostgres', as: 'replica', upstream }],
    reason: `cloning from primary ${leader.name} through slot ${slot}`,
    remember: { rewindFailed: false },
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
  const fork = store.history.find((h) => h.timeline === timeline + 1)?.lsn;
  return fork && compareLsn(lsn, fork) > 0 ? fork : undefined;
}

function decideStopped(o: Observation, store: Reachable): Decision {
  const me = o.member.name;
  const leaderName = store.leader?.member;
  if (leaderName === me) {
    const downSince = o.memory.primaryDownSince ?? o.monotonic;
    if (o.monotonic - downSince > o.settings.primaryRestartTimeoutMs) {
      return {
        state: 'fenced',
        actions: [{ type: 'releaseLeader', reason: `PostgreSQL did not come back within primaryRestartTimeoutMs=${o.settings.primaryRestartTimeoutMs}` }],
        reason: `PostgreSQL did not restart within ${o.settings.primaryRestartTimeoutMs} ms: releasing the leader lease so a replica takes over`,
        remember: { primaryDownSince: undefined, wasLeader: false },
      };
    }
    return {
      state: 'starting_postgres',
      actions: [{ type: 'startPostgres', as: 'primary', synchronousStandbyNames: standbyNamesOnStart(o, store) }],
      reason: 'we hold the leader lease and PostgreSQL is down: restarting it in place (crash recovery)',
      remember: { primaryDownSince: downSince },
    };
  }
  const upstream = upstreamFor(o, store);
  if (leaderName !== undefined) {
    if (!upstream) return { state: 'waiting_for_primary', actions: [], reason: `leader ${leaderName} has not published its address yet` };
    if (o.memory.rewindFailed) {
      const leader = leaderStatus(store);
      if (leader?.state !== 'primary') return { state: 'waiting_for_primary', actions: [], reason: `pg_rewind failed; waiting for leader ${leaderName} to run as primary before acting` };
      if (o.settings.rewindFallback === 'reclone') {
        return {
          state: 'rewinding',
          actions: [{ type: 'moveDataAside', reason: 'pg_rewind could not reconcile this data directory with the leader (rewindFallback=reclone)' }],
          reason: 'pg_rewind failed: moving the data directory aside and cloning afresh',
          remember: { rewindFailed: false },
        };
      }
      return { state: 'needs_operator', actions: [], reason: 'pg_rewind failed and rewindFallback=none: run `relevo reinit` for this member' };
    }
    if (needsRewind(o, store)) {
      return {
        state: 'rewinding',
        actions: [{ type: 'rewind', upstream }],
        reason: `reconciling with the timeline of leader ${leaderName} (pg_rewind)`,
        remember: { rewindNeeded: false },
      };
    }
    return {
      state: 'starting_postgres',
      actions: [{ type: 'startPostgres', as: 'replica', upstream }],
      reason: `starting PostgreSQL as a standby of ${upstream.member}`,
    };
  }
  if (o.standbyConfigured) {
    return { state: 'starting_postgres', actions: [{ type: 'startPostgres', as: 'replica', upstream: undefined }], reason: 'starting PostgreSQL as a standby; no primary holds the lease' };
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
    state: 'starting_postgres',
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

/** synchronous_standby_names loaded before pg_promote(): from the very first commit, some standby must hold it. */
function standbyNamesOnPromotion(o: Observation, provisional: string[]): string {
  return o.settings.synchronousMode !== 'off' ? renderAnyStandby(provisional) : '';
}

function decideReplica(o: Observation, store: Reachable, inspection: ServerInspection): Decision {
  const me = o.member.name;
  const leaderName = store.leader?.member;
  if (leaderName === me) {
    return {
      state: 'promoting',
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
        },
      ],
      reason: 'we hold the leader lease while still in recovery: finishing the promotion',
    };
  }
  const upstream = upstreamFor(o, store);
  if (leaderName !== undefined && upstream) {
    const leader = leaderStatus(store)!;
    const diverged = divergence(store, inspection);
    if (diverged) {
      return {
        state: 'rewinding',
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
    const lost = inspection.streaming
      ? undefined
      : known && known.leader === leadership.leader && known.revision === leadership.revision && leader.state === 'primary'
        ? known
        : { ...leadership, since: o.monotonic };
    if (lost && leader.state === 'primary' && o.monotonic - lost.since > DIVERGENCE_GRACE_MS) {
      return {
        state: 'rewinding',
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
    };
  }
  if (leaderName !== undefined) return { state: 'replica', actions: [], reason: `leader ${leaderName} has not published its address yet` };
  // Somebody may hold the lease: keep following whoever we follow, elect nobody.
  const leaderBlocked = blockedBy(o, store, ['leader']);
  if (leaderBlocked) return { state: 'replica', actions: [], reason: `not electing a new primary: ${leaderBlocked}` };
  const failsafeHold = failsafeReplicaHold(o);
  if (failsafeHold) return { state: 'replica', actions: [], reason: `no primary holds the lease; ${failsafeHold}` };
  if ((o.upstreamConfigured || inspection.upstreamConninfo !== null) && !o.settings.paused) {
    // The former primary may still run: once we stop streaming it can no longer get synchronous
    // acknowledgements from us, so the WAL positions compared in the election stop moving.
    return {
      state: 'replica',
      actions: [{ type: 'detachUpstream' }],
      reason: `leader lease of ${lastLeader(store) ?? 'nobody'} is gone: stopped streaming from it before electing a new primary`,
      retryInMs: RETRY_SOON_MS,
    };
  }
  // Which member may hold every acknowledged commit, the cluster's timeline and the last primary position decide eligibility.
  const electionBlocked = blockedBy(o, store, o.settings.synchronousMode === 'quorum' ? ['sync', 'quorum', 'history', 'optime'] : ['sync', 'history', 'optime']);
  if (electionBlocked) return { state: 'replica', actions: [], reason: `no primary holds the lease; not taking over: ${electionBlocked}` };
  const request = activeRequest(o, store);
  const verdict = electionVerdict(o, { ...store, failover: request }, selfCandidate(o, inspection.receivedLsn, inspection.timeline));
  if (!verdict.eligible) {
    return { state: 'replica', actions: [], reason: `no primary holds the lease; not taking over: ${verdict.reason}`, retryInMs: verdict.transient ? RETRY_SOON_MS : undefined };
  }
  const former = lastLeader(store);
  const fenceTarget = former && former !== me && store.optime?.member === former ? { member: former, address: store.optime.address } : undefined;
  const why = request ? `${request.kind}${request.force ? ' (forced)' : ''} requested at ${request.requestedAt}` : `leader lease of ${lastLeader(store) ?? 'nobody'} expired`;
  const provisional = prefixPeers(o, inspection);
  return {
    state: 'promoting',
    actions: [
      {
        type: 'promote',
        acquire: true,
        from: former ?? null,
        reason: why,
        timeline: latestTimeline(store.history) + 1,
        forkLsn: inspection.replayedLsn,
        slots: peerSlots(o, store),
        synchronousStandbyNames: standbyNamesOnPromotion(o, provisional),
        quorum: promotionQuorum(o, provisional),
      },
    ],
    reason: `taking over: ${why}; ${verdict.reason}`,
    remember: { fenceTarget, wasLeader: true, provisionalStandbys: provisional },
  };
}

/** Slots a new primary creates as it promotes, so the others can stream from it at once. */
function peerSlots(o: Observation, store: Reachable): string[] {
  return [...store.members.map((m) => m.name), ...unknownMembers(store)].filter((name) => name !== o.member.name).map(slotNameFor);
}

function decidePrimary(o: Observation, store: Reachable, inspection: ServerInspection): Decision {
  const me = o.member.name;
  const leaderName = store.leader?.member;
  if (leaderName !== undefined && leaderName !== me) {
    return {
      state: 'fenced',
      actions: [{ type: 'stopPostgres', mode: 'fast' }],
      reason: `member ${leaderName} holds the leader lease: stopping this primary to avoid two primaries`,
      remember: { wasLeader: false },
    };
  }
  const badLeader = store.leader === undefined ? unreadableOf(store, 'leader') : undefined;
  // A damaged leader key on another member's lease, or one we did not hold a moment ago: somebody else may lead.
  if (badLeader && (badLeader.lease === 'other' || !o.memory.wasLeader)) {
    const whose = badLeader.lease === 'other' ? "hangs on another member's lease" : 'and we did not hold the lease';
    return {
      state: 'fenced',
      actions: [{ type: 'stopPostgres', mode: 'fast' }],
      reason: `${RECORD_UNREADABLE}: the leader key ${badLeader.key} cannot be read (${badLeader.problem}) ${whose}: stopping this primary to avoid two primaries; repair it with \`relevo store repair\``,
      remember: { wasLeader: false },
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
        state: 'fenced',
        actions: [{ type: 'stopPostgres', mode: 'fast' }],
        reason: `the cluster moved on to timeline ${latestTimeline(store.history)} while this primary is on ${inspection.timeline}: stopping it`,
        remember: { wasLeader: false },
      };
    }
    return { state: 'primary', actions: [{ type: 'acquireLeader' }], reason: 'running primary on the current timeline and no leader: taking the leader lease' };
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
    const started = Math.max(Date.parse(request.requestedAt), request.at ? Date.parse(request.at) : 0);
    if (inspection.openTransactions > 0 && o.now - started < o.settings.switchoverDrainMs) {
      return {
        state: 'demoting',
        actions: [],
        reason: `switchover to ${request.to ?? 'the best replica'}: waiting up to switchoverDrainMs=${o.settings.switchoverDrainMs} for ${inspection.openTransactions} open transaction(s) to finish`,
        retryInMs: RETRY_SOON_MS,
      };
    }
    return {
      state: 'demoting',
      actions: [{ type: 'stopPostgres', mode: 'fast' }, { type: 'handOver', reason: `switchover to ${request.to ?? 'the best replica'}` }],
      reason: `switchover to ${request.to ?? 'the best replica'}: shutting down cleanly so the candidate receives every WAL record, then handing over the lease`,
      remember: { wasLeader: false },
    };
  }
  const sync = o.settings.synchronousMode === 'quorum' ? planQuorum(o, store, inspection) : planSync(o, store, inspection);
  const actions: Action[] = [...sync.actions, { type: 'configure', as: 'primary', synchronousStandbyNames: sync.synchronousStandbyNames }];
  const slots = planSlots(o, store, inspection.slots.map((s) => ({ name: s.name, active: s.active })));
  if (slots) actions.push(slots);
  if (inspection.receivedLsn && inspection.timeline !== null) actions.push({ type: 'writeOptime', lsn: inspection.receivedLsn, timeline: inspection.timeline, revision: store.revisions.optime });
  const fence = o.memory.fenceTarget;
  if (fence) {
    const former = store.members.find((m) => m.name === fence.member);
    if (former && former.role === 'replica') {
      return { state: 'primary', actions, reason: 'holding the leader lease', remember: { ...sync.remember, fenceTarget: undefined, primaryDownSince: undefined, wasLeader: true } };
    }
    actions.push({ type: 'fenceFormerPrimary', member: fence.member, address: fence.address });
  }
  // We lead and the request was not ours to carry out (we are its result), or it timed out: clear it.
  if (store.failover && (!request || request.from !== me)) {
    actions.push({ type: 'clearFailoverRequest', reason: request ? `${request.kind} done: ${me} is the primary` : `${store.failover.kind} request timed out`, revision: store.revisions.failover! });
  }
  const badRequest = unreadableOf(store, 'failover');
  if (badRequest) actions.push({ type: 'clearFailoverRequest', reason: `removed the unreadable request ${badRequest.key} (${badRequest.problem}); request it again`, revision: badRequest.revision });
  const notes = [leaderNote, sync.note].filter((n) => n !== undefined);
  return {
    state: 'primary',
    actions,
    reason: notes.length > 0 ? `holding the leader lease; ${notes.join('; ')}` : 'holding the leader lease',
    remember: { ...sync.remember, primaryDownSince: undefined, wasLeader: true },
    retryInMs: sync.awaitingStandby ? RETRY_SOON_MS : undefined,
  };
}
