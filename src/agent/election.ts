import type { ClusterSettings } from '../cluster/settings.js';
import type { HistoryEntry, MemberStatus } from '../cluster/types.js';
import { compareLsn, lsnDistance } from '../postgres/lsn.js';
import type { Observation } from './observation.js';
import { quorumVerdict } from './quorum.js';
import { promotionVersionCheck } from '../cluster/versions.js';

type Reachable = Extract<Observation['store'], { reachable: true }>;

/** `transient`: the answer will change within moments (a peer still detaching, WAL still arriving): look again soon. */
export type Verdict = { eligible: true; reason: string } | { eligible: false; reason: string; transient?: boolean };

/** The last member known to have led: the newest history entry, else the initialiser. */
export function lastLeader(store: Reachable): string | undefined {
  return store.history.at(-1)?.to ?? store.init?.member;
}

export function latestTimeline(history: HistoryEntry[]): number {
  return history.at(-1)?.timeline ?? 1;
}

/**
 * The history without a promotion that never happened. A new primary records
 * its timeline before pg_promote(); if a store write after it fails, or its
 * agent dies, the entry stays and every standby, on the older timeline, would
 * be ineligible for ever (found by the simulation, seed 1874). The entry is
 * void only when its member itself says it is still a standby on an older
 * timeline: our own inspection, or its agent's direct answer (a live agent
 * reports what it did in its last cycle, and it cannot promote without the
 * lease, which nobody holds now). A member that does not answer keeps its entry.
 */
export function withoutVoidPromotion(o: Observation, store: Reachable, own: { timeline: number | null }): HistoryEntry[] {
  const latest = store.history.at(-1);
  if (!latest) return store.history;
  const view = latest.to === o.member.name ? { role: 'replica', timeline: own.timeline } : o.peers.find((p) => p.name === latest.to)?.status;
  const stillStandby = view?.role === 'replica' && view.timeline !== null && view.timeline < latest.timeline;
  return stillStandby ? store.history.slice(0, -1) : store.history;
}

export interface Candidate {
  name: string;
  receivedLsn: string | null;
  timeline: number | null;
  nofailover: boolean;
  priority: number;
  /** Why this member's fencer does not run: it may not lead (E_FENCER_MISSING). Known for this member only. */
  fencerMissing?: string;
}

export function candidateOf(status: MemberStatus): Candidate {
  return {
    name: status.name,
    receivedLsn: status.receivedLsn,
    timeline: status.timeline,
    nofailover: status.tags.nofailover === true,
    priority: typeof status.tags.priority === 'number' ? status.tags.priority : 100,
  };
}

/**
 * Whether a replica may take over from a primary whose lease is gone, judged
 * from the store alone (not yet comparing with peers).
 */
/** A member of the sync record whose WAL position is known (and frozen: it stopped streaming). */
export interface SyncWitness {
  name: string;
  receivedLsn: string;
  timeline: number;
}

/**
 * `witnesses`: sync record members whose positions are known. WAL on one
 * timeline is linear, so a candidate that received at least as much as one of
 * them holds every acknowledged commit too.
 */
export function eligibility(settings: ClusterSettings, store: Reachable, candidate: Candidate, witnesses: SyncWitness[] = []): Verdict {
  const request = store.failover;
  const forced = request?.force === true && request.to === candidate.name;
  // Before a forced failover too: a primary without its fencer may outlive its lease when its agent freezes.
  if (candidate.fencerMissing) return { eligible: false, reason: `E_FENCER_MISSING: its fencer does not run (${candidate.fencerMissing})` };
  if (forced) return { eligible: true, reason: 'operator forced a failover to this member' };
  if (candidate.nofailover) return { eligible: false, reason: 'tagged nofailover' };
  if (candidate.receivedLsn === null || candidate.timeline === null) return { eligible: false, reason: 'no WAL position known' };
  const timeline = latestTimeline(store.history);
  if (candidate.timeline < timeline) return { eligible: false, reason: `on timeline ${candidate.timeline}, cluster is on ${timeline}` };
  const quorumRecord = settings.synchronousMode === 'quorum' && store.quorum && store.quorum.leader === lastLeader(store) ? store.quorum : undefined;
  // Quorum mode without a quorum record of the last leader: it was switched from \`on\` and may have acknowledged
  // commits under its sync record (members, or \`previous\` while it changed) before writing one (sim quorum-loss seed 111).
  if (settings.synchronousMode === 'on' || (settings.synchronousMode === 'quorum' && !quorumRecord)) {
    const record = store.sync && store.sync.leader === lastLeader(store) ? store.sync : undefined;
    const sync = record?.members ?? [];
    const previous = sync.length === 0 ? (record?.previous ?? []) : [];
    if (previous.length > 0) return changingVerdict(previous, candidate, witnesses);
    if (sync.length > 0) {
      if (sync.includes(candidate.name)) return { eligible: true, reason: 'synchronous standby: holds every acknowledged commit' };
      const received = candidate.receivedLsn;
      const witness = witnesses.find((w) => sync.includes(w.name) && w.timeline === candidate.timeline && compareLsn(received, w.receivedLsn) >= 0);
      return witness
        ? { eligible: true, reason: `received at least as much as synchronous standby ${witness.name} (${received} >= ${witness.receivedLsn}): holds every acknowledged commit` }
        : { eligible: false, reason: `not in the synchronous set (${sync.join(', ')}) and not known to hold as much as one of them: may lack acknowledged commits` };
    }
    if (settings.synchronousMode === 'on' && settings.synchronousStrict) return { eligible: false, reason: 'strict synchronous mode and no synchronous standby recorded' };
  }
  if (settings.synchronousMode === 'quorum') {
    const record = quorumRecord;
    if (record && record.quorum > 0 && record.members.length > 0) {
      return quorumVerdict(record, { receivedLsn: candidate.receivedLsn, timeline: candidate.timeline }, witnesses);
    }
    if (settings.synchronousStrict) return { eligible: false, reason: 'strict quorum mode and no quorum recorded' };
  }
  const optime = store.optime;
  if (optime) {
    const lag = lsnDistance(optime.lsn, candidate.receivedLsn);
    if (lag !== null && lag > settings.maximumLagOnFailover) {
      return { eligible: false, reason: `${lag} bytes behind the last primary position, more than maximumLagOnFailover=${settings.maximumLagOnFailover}` };
    }
  }
  return { eligible: true, reason: 'within maximumLagOnFailover of the last primary position' };
}

/**
 * The sync set was changing when the leader was lost (src/cluster/types.ts
 * SyncRecordSchema `previous`): each acknowledged commit is on one of
 * `previous`, so on the most advanced of them. A candidate must have received
 * at least as much as every one of them, on the same timeline; while one of
 * them cannot be asked (down, cut off, still streaming) nobody is promoted
 * automatically, as with a synchronous standby that is gone.
 */
function changingVerdict(previous: string[], candidate: Candidate, witnesses: SyncWitness[]): Verdict {
  const received = candidate.receivedLsn!;
  for (const name of previous) {
    if (name === candidate.name) continue;
    const w = witnesses.find((x) => x.name === name);
    if (!w) return { eligible: false, reason: `synchronous set changing (${previous.join(', ')}): position of ${name} unknown, it may hold acknowledged commits this member lacks` };
    if (w.timeline !== candidate.timeline || compareLsn(received, w.receivedLsn) < 0) {
      return { eligible: false, reason: `synchronous set changing (${previous.join(', ')}): ${name} received more (${w.receivedLsn} on timeline ${w.timeline}), it may hold acknowledged commits this member lacks` };
    }
  }
  return { eligible: true, reason: `synchronous set changing (${previous.join(', ')}): received at least as much as each of them, holds every acknowledged commit` };
}

/**
 * Never promote across PostgreSQL major versions: a standby of another major
 * version cannot serve the cluster's WAL (a half-done major upgrade, a wrong
 * binDir). The reference is the last primary's status when the store still has
 * it, else every other member's (as published, or as its agent answered).
 * Not transient: it changes only when someone installs other binaries.
 */
export function majorVersionVerdict(o: Observation, store: Reachable): Verdict | undefined {
  if (o.server.kind !== 'running') return undefined;
  const mine = { name: o.member.name, postgresVersion: o.server.inspection.version };
  const others = new Map<string, MemberStatus>();
  for (const m of store.members) if (m.name !== o.member.name) others.set(m.name, m);
  for (const p of o.peers) if (p.status && p.name !== o.member.name) others.set(p.name, p.status);
  const leader = lastLeader(store);
  const reference = leader !== undefined && others.has(leader) ? [others.get(leader)!] : [...others.values()];
  const verdict = promotionVersionCheck(mine, reference);
  return verdict.refuse ? { eligible: false, reason: verdict.refuse } : undefined;
}

/** True when `other` should win over `me`: more WAL, then higher priority, then the smaller name. */
function beats(other: Candidate, me: Candidate): boolean {
  const order = compareLsn(other.receivedLsn!, me.receivedLsn!);
  if (order !== 0) return order > 0;
  if (other.priority !== me.priority) return other.priority > me.priority;
  return other.name < me.name;
}

/**
 * Full election verdict for this member: eligible, no switchover aimed
 * elsewhere, and no reachable eligible peer more advanced (peers are asked
 * directly, since the store's copy of their status may be a loop old).
 */
export function electionVerdict(o: Observation, store: Reachable, me: Candidate): Verdict {
  const version = majorVersionVerdict(o, store);
  if (version) return version;
  const request = store.failover;
  if (request && request.to !== null && request.to !== me.name) {
    return { eligible: false, reason: `${request.kind} to ${request.to} in progress` };
  }
  if (request?.kind === 'switchover' && request.shutdownLsn && me.receivedLsn && compareLsn(me.receivedLsn, request.shutdownLsn) <= 0) {
    return { eligible: false, reason: `waiting to receive the old primary's last WAL (${request.shutdownLsn})`, transient: true };
  }
  // After a clean switchover shutdown, whoever received past the shutdown checkpoint holds every commit.
  const switchoverComplete =
    request?.kind === 'switchover' && request.shutdownLsn !== null && me.receivedLsn !== null && compareLsn(me.receivedLsn, request.shutdownLsn) > 0;
  const witnesses = syncWitnesses(o, me);
  const own = switchoverComplete ? { eligible: true as const, reason: `received the old primary's last WAL (${request.shutdownLsn})` } : eligibility(o.settings, store, me, witnesses);
  if (!own.eligible || request?.to === me.name) return own;
  for (const peer of o.peers) {
    if (peer.name === me.name || !peer.status || peer.status.role !== 'replica') continue;
    if (peer.status.streaming && !switchoverComplete) {
      return { eligible: false, reason: `peer ${peer.name} still streams from the former primary; waiting for it to stop before comparing positions`, transient: true };
    }
    const candidate = candidateOf(peer.status);
    if (!eligibility(o.settings, store, candidate, witnesses).eligible || candidate.receivedLsn === null) continue;
    if (beats(candidate, me)) {
      return { eligible: false, reason: `peer ${peer.name} is a better candidate (received ${candidate.receivedLsn}, priority ${candidate.priority})` };
    }
  }
  return own;
}

/**
 * Positions of this member and of the peers that answered, once they stopped
 * streaming (a streaming peer's position still moves: the verdict waits for it).
 */
function syncWitnesses(o: Observation, me: Candidate): SyncWitness[] {
  const known = [me, ...o.peers.filter((p) => p.status && p.status.role === 'replica' && !p.status.streaming && p.name !== me.name).map((p) => candidateOf(p.status!))];
  return known.flatMap((c) => (c.receivedLsn !== null && c.timeline !== null ? [{ name: c.name, receivedLsn: c.receivedLsn, timeline: c.timeline }] : []));
}

export function selfCandidate(o: Observation, receivedLsn: string | null, timeline: number | null): Candidate {
  return { name: o.member.name, receivedLsn, timeline, nofailover: o.member.nofailover, priority: o.member.priority, ...(o.member.fencerMissing ? { fencerMissing: o.member.fencerMissing } : {}) };
}
