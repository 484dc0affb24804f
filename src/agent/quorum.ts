/**
 * Quorum commit (synchronousMode: quorum), pure rules. The primary runs with
 * `synchronous_standby_names = 'ANY k (…)'` over its healthy streaming
 * standbys and keeps one invariant in the `quorum` record (S, q):
 *
 *   every commit it has acknowledged is flushed on at least q members of S.
 *
 * WAL on one timeline is linear, so among any |S| - q + 1 members of S at
 * least one holds each acknowledged commit, and the most advanced of them
 * holds them all: that is what a failover checks (election.ts).
 *
 * The record and the setting change in an order that keeps the invariant
 * (docs/architecture.md has the proof sketch):
 *   - grow S and lower q first, then name new standbys / ask fewer (ANY k
 *     with every named standby in S and k ≥ q keeps every new commit on ≥ q of S);
 *   - shrink S or raise q only after the setting is in effect and k standbys
 *     it names have flushed past the primary's WAL position seen once it was.
 */
import type { QuorumRecord } from '../cluster/types.js';
import { compareLsn } from '../postgres/lsn.js';
import type { ServerInspection } from '../postgres/inspect.js';
import type { Action } from './actions.js';
import type { Observation } from './observation.js';
import { AWAITING_STANDBY_POLL_MS, candidatesFor, hasOtherMembers, renderAnyStandby, type SyncPlan } from './sync.js';

type Reachable = Extract<Observation['store'], { reachable: true }>;

export interface Quorum {
  members: string[];
  quorum: number;
}

/** `ANY k ("a", "b")`; names sorted so the same set always renders the same text. */
export function renderQuorumNames(quorum: number, members: string[]): string {
  if (members.length === 0 || quorum < 1) return '';
  return `ANY ${quorum} (${[...members].sort().map((m) => `"${m}"`).join(', ')})`;
}

const sameSet = (a: string[], b: string[]) => a.length === b.length && a.every((x) => b.includes(x));

/**
 * The record a new primary writes before pg_promote(): itself and its provisional standbys, q = 1.
 * It alone may hold commits acknowledged before its promotion (a provisional standby may lag), and
 * synchronous_standby_names is then ANY 1 (provisional): so each acknowledged commit is on one of
 * them, and the election compares candidates with all of them, refusing while one cannot be asked
 * (sim quorum-loss seed 160: with the provisional standbys alone, a lagging one was promoted
 * once the new primary died). The planner drops itself from the list once standbys caught up.
 */
export function promotionQuorum(o: Observation, provisional: string[]): Quorum | undefined {
  if (o.settings.synchronousMode !== 'quorum') return undefined;
  return { members: [...new Set([o.member.name, ...provisional])].sort(), quorum: 1 };
}

/** The record this primary works from: its own, else what the `on`-mode sync record proves, else nothing. */
function startingRecord(o: Observation, store: Reachable): Quorum {
  const me = o.member.name;
  if (store.quorum && store.quorum.leader === me) return { members: store.quorum.members, quorum: store.quorum.quorum };
  // Switching from `on`: each member of our sync record holds every acknowledged commit; while that set
  // was changing, each commit is on one of `previous` (so on ≥ 1 of them): the election keeps comparing with them.
  const sync = store.sync && store.sync.leader === me ? store.sync : undefined;
  if (sync && sync.members.length > 0) return { members: sync.members, quorum: sync.members.length };
  const previous = sync?.previous ?? [];
  return { members: previous, quorum: previous.length > 0 ? 1 : 0 };
}

/** synchronous_standby_names for a primary restarting in place: what the record covers. */
export function quorumNamesOnStart(o: Observation, store: Reachable): string {
  const record = startingRecord(o, store);
  // A new primary's record names itself (promotionQuorum); it is no standby of its own.
  const standbys = record.members.filter((m) => m !== o.member.name);
  if (record.quorum > 0 && standbys.length > 0) return renderQuorumNames(record.quorum, standbys);
  return o.settings.synchronousStrict || hasOtherMembers(o.member.name, store) ? renderAnyStandby(o.memory.provisionalStandbys) : '';
}

/**
 * One step of the quorum planner. Record writes come first in `actions`;
 * decide() appends the reload of synchronousStandbyNames after them, and
 * effects stop at the first failure, so the setting never runs ahead of the record.
 */
export function planQuorum(o: Observation, store: Reachable, inspection: ServerInspection): SyncPlan {
  const me = o.member.name;
  const settings = o.settings;
  const inEffect = inspection.synchronousStandbyNames;
  const own = store.quorum && store.quorum.leader === me;
  const record = startingRecord(o, store);
  // A damaged record is replaced at its own revision (its content is not trusted: we start from what we know).
  const revision = store.revisions.quorum ?? null;
  const write = (next: Quorum): Action[] => {
    const actions: Action[] = [{ type: 'writeQuorumRecord', members: [...next.members].sort(), quorum: next.quorum, revision }];
    // The `on`-mode record is emptied once the quorum record took over (after it, in order).
    if (!store.sync || store.sync.leader !== me || store.sync.members.length > 0) actions.push({ type: 'writeSyncRecord', members: [], revision: store.revisions.sync });
    return actions;
  };
  const standbys = candidatesFor(o, store, record.members, inspection).map((m) => m.name);
  if (standbys.length === 0) {
    const since = o.memory.noSyncCandidateSince ?? o.monotonic;
    const alone = !hasOtherMembers(me, store);
    const timedOut = !settings.synchronousStrict && o.monotonic - since >= settings.synchronousFallbackMs;
    if (record.quorum > 0 && record.members.length > 0) {
      // Lowering q to 0 first: a failover then falls back to the lag check, as the settings allow.
      if (timedOut) {
        return {
          synchronousStandbyNames: '',
          actions: write({ members: [], quorum: 0 }),
          remember: { noSyncCandidateSince: since },
          note: `no quorum standby for ${settings.synchronousFallbackMs} ms: falling back to asynchronous replication`,
        };
      }
      return { synchronousStandbyNames: inEffect, actions: own ? [] : write(record), remember: { noSyncCandidateSince: since }, note: `quorum standbys ${record.members.filter((m) => m !== me).join(', ')} unavailable: commits wait` };
    }
    const wait = settings.synchronousStrict || (!alone && o.monotonic - since < settings.synchronousFallbackMs);
    return {
      synchronousStandbyNames: wait ? renderAnyStandby(o.memory.provisionalStandbys) : '',
      actions: own ? [] : write({ members: [], quorum: 0 }),
      remember: { noSyncCandidateSince: alone ? undefined : since },
      note: wait ? 'waiting for a quorum standby: commits wait' : alone ? undefined : 'no quorum standby: asynchronous replication',
      awaitingStandby: wait && !alone && o.monotonic - since < AWAITING_STANDBY_POLL_MS,
    };
  }
  const count = Math.min(settings.synchronousCount, standbys.length);
  const desired = renderQuorumNames(count, standbys);
  const base = { noSyncCandidateSince: undefined, provisionalStandbys: [] as string[] };
  // 1. Grow the list and lower the quorum, then (same cycle, after the write) name the standbys.
  const grown = [...new Set([...record.members, ...standbys])];
  const lowered = Math.min(record.quorum, count);
  if (!own || grown.length !== record.members.length || lowered !== record.quorum) {
    return {
      synchronousStandbyNames: desired,
      actions: write({ members: grown, quorum: lowered }),
      // The position after which old commits count as covered is taken once the new setting is in effect.
      remember: { ...base, syncSwitchLsn: inEffect === desired ? o.memory.syncSwitchLsn : undefined },
      note: inEffect === desired ? undefined : `quorum standbys now ${desired}`,
    };
  }
  if (inEffect !== desired) {
    return { synchronousStandbyNames: desired, actions: [], remember: { ...base, syncSwitchLsn: undefined }, note: `quorum standbys now ${desired}` };
  }
  // 2. In effect: shrink the list to the named standbys and raise the quorum to `count` once
  //    `count` of them flushed past a position taken after the change (older commits are then on them too).
  const switchLsn = o.memory.syncSwitchLsn ?? inspection.receivedLsn ?? undefined;
  const remember = { ...base, syncSwitchLsn: switchLsn };
  if (sameSet(record.members, standbys) && record.quorum === count) return { synchronousStandbyNames: desired, actions: [], remember, note: undefined };
  const caughtUp = standbys.filter((name) => {
    const row = inspection.replication.find((r) => r.member === name);
    return row !== undefined && (row.syncState === 'quorum' || row.syncState === 'sync') && row.flushLsn !== null && switchLsn !== undefined && compareLsn(row.flushLsn, switchLsn) >= 0;
  });
  if (caughtUp.length < count) return { synchronousStandbyNames: desired, actions: [], remember, note: undefined };
  return { synchronousStandbyNames: desired, actions: write({ members: standbys, quorum: count }), remember, note: undefined };
}

/**
 * Failover rule: with the last leader's quorum record (S, q), a candidate
 * holds every acknowledged commit once at least |S| - q + 1 members of S have
 * stopped and reported their WAL position on its timeline, and it received at
 * least as much as the most advanced of them.
 */
export function quorumVerdict(
  record: QuorumRecord,
  candidate: { receivedLsn: string; timeline: number },
  witnesses: { name: string; receivedLsn: string; timeline: number }[],
): { eligible: boolean; reason: string } {
  const need = record.members.length - record.quorum + 1;
  const known = witnesses.filter((w) => record.members.includes(w.name) && w.timeline === candidate.timeline);
  const described = `quorum record [${record.members.join(', ')}], quorum ${record.quorum}`;
  if (known.length < need) {
    return {
      eligible: false,
      reason: `${described}: positions known from ${known.length} of the ${need} members needed (${known.map((w) => w.name).join(', ') || 'none'}); a missing one may hold acknowledged commits`,
    };
  }
  const furthest = known.reduce((a, b) => (compareLsn(b.receivedLsn, a.receivedLsn) > 0 ? b : a));
  if (compareLsn(candidate.receivedLsn, furthest.receivedLsn) >= 0) {
    return { eligible: true, reason: `${described}: received ${candidate.receivedLsn}, at least the most advanced of ${known.map((w) => w.name).join(', ')}: holds every acknowledged commit` };
  }
  return { eligible: false, reason: `${described}: ${furthest.name} received more (${furthest.receivedLsn} > ${candidate.receivedLsn})` };
}
