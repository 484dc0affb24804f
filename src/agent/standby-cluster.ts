import { feedOf, SITE_CODES } from '../cluster/site.js';
import { unreadableOf } from '../cluster/view.js';
import type { ServerInspection } from '../postgres/inspect.js';
import { compareLsn } from '../postgres/lsn.js';
import type { Action, Upstream } from './actions.js';
import { DIVERGENCE_GRACE_MS, type Target } from './decide.js';
import type { Observation } from './observation.js';
import { planSlots } from './slots.js';
import { sourceProblem } from './source.js';

type Reachable = Extract<Observation['store'], { reachable: true }>;

/**
 * A standby cluster (settings.standbyCluster, docs/sites.md): nothing in it
 * is ever promoted. Its leader, the standby leader, holds the leader lease
 * while in recovery and streams from the source cluster's current primary;
 * the other members cascade from it through the usual replica path. These
 * decisions are taken before the ordinary ones; undefined leaves a situation
 * to them (a member following the standby leader is an ordinary replica).
 */

/** Where the standby leader streams from: the source's primary, without a slot there (the source does not know us as a member). */
function sourceUpstream(o: Observation): { upstream: Upstream } | { problem: string } {
  const source = o.source;
  const problem = sourceProblem(source);
  if (problem || !source?.reachable || !source.primary) return { problem: problem ?? 'no source primary' };
  const store = o.store;
  const ours = store.reachable ? store.init?.systemIdentifier : undefined;
  if (ours && source.systemIdentifier && ours !== source.systemIdentifier) {
    return { problem: `${SITE_CODES.foreignSource}: source cluster ${source.cluster} is system ${source.systemIdentifier}, this cluster is ${ours}; point standbyCluster at the cluster this one was cloned from` };
  }
  const archiveOnly = o.settings.standbyCluster && feedOf(o.settings.standbyCluster) === 'archive';
  return { upstream: { member: `${source.cluster}/${source.primary.member}`, address: source.primary.address, slot: '', ...(archiveOnly ? { archiveOnly: true as const } : {}) } };
}

/**
 * How long the standby leader has not been streaming, for the switch to
 * pg_rewind after DIVERGENCE_GRACE_MS; undefined when it is fine. On `feed:
 * archive` it never streams, by design. On `feed: both` it does not count
 * while replay still advances (the archive feeds it) or nothing is missing
 * (the source's position is not ahead): the cut may be the network or the
 * source's pg_hba, and pg_rewind, which needs that connection, would not help.
 */
function streamingLostOf(o: Observation, inspection: ServerInspection, upstream: Upstream): Observation['memory']['streamingLost'] {
  if (inspection.streaming || upstream.archiveOnly) return undefined;
  const replayedLsn = inspection.replayedLsn;
  const fresh = { leader: upstream.member, revision: 0, since: o.monotonic, replayedLsn };
  const known = o.memory.streamingLost;
  if (!known || known.leader !== upstream.member) return fresh;
  if (o.settings.standbyCluster && feedOf(o.settings.standbyCluster) === 'both') {
    const sourceLsn = o.source?.reachable ? o.source.primary?.lsn : undefined;
    const behind = sourceLsn && replayedLsn ? compareLsn(sourceLsn, replayedLsn) > 0 : true;
    if (known.replayedLsn !== replayedLsn || !behind) return fresh;
  }
  return known;
}

/** The first member of a new standby cluster clones the source's primary instead of running initdb. */
export function standbyBootstrap(o: Observation, store: Reachable): Target | undefined {
  if (!o.settings.standbyCluster || o.dataDir !== 'empty') return undefined;
  const init = store.init;
  if (!init || init.systemIdentifier || init.member !== o.member.name) return undefined;
  const found = sourceUpstream(o);
  if ('problem' in found) return { state: 'cloning_source', actions: [], reason: `standby cluster: cannot clone the source yet: ${found.problem}` };
  if (!o.haveCredentials) return { state: 'cloning_source', actions: [], reason: "standby cluster: no replication password here: provide the source cluster's secrets file" };
  return {
    state: 'cloning_source',
    actions: [{ type: 'clone', upstream: found.upstream }, { type: 'startPostgres', as: 'replica', upstream: found.upstream }],
    reason: `standby cluster: cloning the source's primary ${found.upstream.member} at ${found.upstream.address}`,
  };
}

export function decideStandbyCluster(o: Observation, store: Reachable): Target | undefined {
  if (!o.settings.standbyCluster || o.dataDir === 'empty') return undefined;
  const server = o.server;
  if (server.kind === 'unreachable') return undefined;
  if (server.kind === 'stopped') return decideStopped(o, store);
  return server.inspection.inRecovery ? decideStandby(o, store, server.inspection) : decideRunningPrimary(o, store);
}

/**
 * A primary in a cluster that became a standby cluster (planned move between
 * sites): a clean shutdown, whose checkpoint position is recorded so the new
 * source can be promoted only once it has replayed past it. The lease is kept:
 * this member becomes the standby leader once the new source runs.
 */
function decideRunningPrimary(o: Observation, store: Reachable): Target | undefined {
  const leader = store.leader?.member;
  if (leader !== undefined && leader !== o.member.name) return undefined;
  return {
    state: 'demoting_to_standby',
    actions: [{ type: 'stopPostgres', mode: 'fast' }, { type: 'recordDemotion', generation: o.settings.generation }],
    reason: `this cluster is now a standby cluster of ${o.settings.standbyCluster!.sourceCluster}: shutting the primary down cleanly and recording its final position`,
  };
}

function decideStopped(o: Observation, store: Reachable): Target | undefined {
  const me = o.member.name;
  const leader = store.leader?.member;
  if (leader !== undefined && leader !== me) return undefined;
  if (leader === undefined) {
    if (o.standbyConfigured) return undefined;
    if (unreadableOf(store, 'leader')) return { state: 'waiting_for_primary', actions: [], reason: 'standby cluster: the leader key is unreadable' };
    // A primary's data directory in a standby cluster starts only as a standby: take the lease, then rewind from the source.
    return { state: 'standby_leader', actions: [{ type: 'acquireLeader' }], reason: 'standby cluster: former primary data and no leader: taking the lease to rejoin the source as its standby leader' };
  }
  const found = sourceUpstream(o);
  if ('problem' in found) {
    // Fed from the archive too, a configured standby leader need not wait for the source's store or primary:
    // it starts from the archive alone (keyed by our own system identifier, so never a foreign system's) and
    // gets primary_conninfo back, on `feed: both`, once the source's primary is known again.
    const link = o.settings.standbyCluster!;
    if (feedOf(link) !== 'stream' && o.standbyConfigured && !o.memory.rewindNeeded && !o.memory.rewindFailed) {
      return {
        state: 'starting_replica',
        actions: [{ type: 'startPostgres', as: 'replica', upstream: { member: `${link.sourceCluster}/archive`, address: '', slot: '', archiveOnly: true } }],
        reason: `standby leader, PostgreSQL stopped: ${found.problem}; starting from the source's WAL archive meanwhile`,
      };
    }
    return { state: 'waiting_for_primary', actions: [], reason: `standby leader, PostgreSQL stopped: ${found.problem}` };
  }
  if (o.memory.rewindFailed) return { state: 'needs_operator', actions: [], reason: `pg_rewind against the source's primary ${found.upstream.member} failed: run \`relevo reinit\` for this member` };
  if (!o.standbyConfigured || o.memory.rewindNeeded) {
    return {
      state: 'rewinding',
      actions: [{ type: 'rewind', upstream: found.upstream }],
      reason: `standby leader: reconciling with the source's primary ${found.upstream.member} (pg_rewind, a no-op when nothing diverged), then streaming from it`,
    };
  }
  return {
    state: 'starting_replica',
    actions: [{ type: 'startPostgres', as: 'replica', upstream: found.upstream }],
    reason: `standby leader: starting PostgreSQL as a standby of the source's primary ${found.upstream.member}`,
  };
}

function decideStandby(o: Observation, store: Reachable, inspection: ServerInspection): Target | undefined {
  const me = o.member.name;
  const leader = store.leader?.member;
  if (leader !== undefined && leader !== me) return undefined;
  if (leader === me) {
    const found = sourceUpstream(o);
    const slots = planSlots(o, store, inspection.slots.map((s) => ({ name: s.name, active: s.active })));
    const duties: Action[] = slots ? [slots] : [];
    if ('problem' in found) return { state: 'standby_leader', actions: duties, reason: `standby leader: ${found.problem}; keeping the current upstream`, remember: { streamingLost: undefined } };
    // Not streaming from a running source primary for a while (e.g. we received WAL its predecessor
    // never sent it before a failover there): stop and let pg_rewind reconcile, as a replica would.
    const lost = streamingLostOf(o, inspection, found.upstream);
    if (lost && o.monotonic - lost.since > DIVERGENCE_GRACE_MS) {
      return {
        state: 'stopping_to_rewind',
        actions: [{ type: 'stopPostgres', mode: 'fast' }],
        reason: `standby leader: cannot stream from the source's primary ${found.upstream.member} for ${DIVERGENCE_GRACE_MS} ms: stopping to reconcile with pg_rewind`,
        remember: { rewindNeeded: true, streamingLost: undefined },
      };
    }
    return {
      state: 'standby_leader',
      actions: [{ type: 'configure', as: 'replica', upstream: found.upstream }, ...duties],
      reason: found.upstream.archiveOnly
        ? `standby leader: following ${o.settings.standbyCluster!.sourceCluster} from its WAL archive (feed: archive; its primary is ${found.upstream.member})`
        : inspection.streaming
          ? `standby leader: streaming from the source's primary ${found.upstream.member}`
          : `standby leader: following the source's primary ${found.upstream.member}, not streaming yet`,
      remember: { streamingLost: lost },
    };
  }
  if (unreadableOf(store, 'leader')) return { state: 'replica', actions: [], reason: 'standby cluster: the leader key is unreadable; not taking it' };
  // No standby leader: the most advanced member takes the lease (ties: the lowest name). It promotes nothing,
  // so no acknowledged commit depends on this choice; it only picks who streams from the source.
  const mine = inspection.replayedLsn;
  const better = o.peers.find((p) => {
    const s = p.status;
    if (!s || s.role !== 'replica' || s.tags.nofailover === true || s.replayedLsn === null) return false;
    if (mine === null) return true;
    const c = compareLsn(s.replayedLsn, mine);
    return c > 0 || (c === 0 && p.name < me);
  });
  if (o.member.nofailover || better) {
    return { state: 'electing', actions: [], reason: `standby cluster without a standby leader: ${better ? `${better.name} is further ahead` : 'this member is tagged nofailover'}` };
  }
  return { state: 'standby_leader', actions: [{ type: 'acquireLeader' }], reason: 'standby cluster without a standby leader: taking the lease (nothing is promoted)' };
}

/** A standby cluster's empty member clones from its standby leader, as it would from a primary. */
export function standbyLeaderServes(o: Observation, leader: { state: string; role: string }): boolean {
  return o.settings.standbyCluster !== null && leader.state === 'standby_leader' && leader.role === 'replica';
}
