import type { MemberStatus } from '../cluster/types.js';
import { unknownMembers, unreadableOf } from '../cluster/view.js';
import { compareLsn } from '../postgres/lsn.js';
import type { ServerInspection } from '../postgres/inspect.js';
import type { Action } from './actions.js';
import type { AgentMemory, Observation } from './observation.js';

type Reachable = Extract<Observation['store'], { reachable: true }>;

export interface SyncPlan {
  /** synchronous_standby_names the primary should run with after this cycle. */
  synchronousStandbyNames: string;
  actions: Action[];
  remember: Partial<AgentMemory>;
  note: string | undefined;
  /** Commits wait until a standby is verified (e.g. right after a promotion): worth looking again soon. */
  awaitingStandby?: boolean;
}

export function renderStandbyNames(members: string[]): string {
  if (members.length === 0) return '';
  return `FIRST ${members.length} (${members.map((m) => `"${m}"`).join(', ')})`;
}

/**
 * A name no member can have (member names have no "."): commits wait for a
 * standby that does not exist, until the planner names a verified one.
 */
export const NO_STANDBY = 'relevo.none';

/** For how long a primary without a verified standby keeps looking again at short intervals. */
export const AWAITING_STANDBY_POLL_MS = 10_000;

/**
 * Commits wait for any one of `members` (or for nobody that exists, when the
 * list is empty). Never '*': PostgreSQL keeps the highest flush position any
 * synchronous standby ever reported and releases every commit below it at
 * once, so a standby that diverged from us (a former primary, or a replica
 * that received more than we did before we were promoted) reporting its own,
 * further position would get later commits acknowledged that no standby holds.
 */
export function renderAnyStandby(members: string[]): string {
  const names = members.length > 0 ? members : [NO_STANDBY];
  return `FIRST 1 (${names.map((m) => `"${m}"`).join(', ')})`;
}

/** Members other than `me` known to the cluster: present now, or kept in the slot registry (recently gone). */
export function hasOtherMembers(me: string, store: Reachable): boolean {
  const names = [...store.members.map((m) => m.name), ...unknownMembers(store), ...Object.keys(store.slotRegistry)];
  return names.some((name) => name !== me);
}

/**
 * Standbys that may be named: streaming from us on our own timeline (one
 * that diverged keeps asking for an older timeline and never gets here), as
 * their published status says and as our own pg_stat_replication confirms
 * right now. A standby whose walsender is gone is dropped at once: its
 * published status would say "streaming" until its key expires, a whole
 * ttlMs during which every commit would wait for it.
 */
export function candidatesFor(o: Observation, store: Reachable, record: string[], inspection: ServerInspection): MemberStatus[] {
  const timeline = inspection.timeline;
  const streamingHere = new Set(inspection.replication.filter((r) => r.state === 'streaming').map((r) => r.member));
  return store.members
    .filter(
      (m) =>
        m.name !== o.member.name &&
        streamingHere.has(m.name) &&
        m.role === 'replica' &&
        m.state === 'replica' &&
        m.streaming &&
        m.upstream === o.member.name &&
        timeline !== null &&
        m.receivedTimeline === timeline &&
        m.tags.nofailover !== true &&
        m.tags.nosync !== true,
    )
    .sort((a, b) => {
      const inA = record.includes(a.name) ? 0 : 1;
      const inB = record.includes(b.name) ? 0 : 1;
      if (inA !== inB) return inA - inB;
      if ((a.lagBytes ?? Infinity) !== (b.lagBytes ?? Infinity)) return (a.lagBytes ?? Infinity) - (b.lagBytes ?? Infinity);
      return a.name.localeCompare(b.name);
    });
}

/**
 * Synchronous replication, keeping one rule: every member in the `sync`
 * record holds every commit the primary has acknowledged. So the record
 * shrinks before synchronous_standby_names does, and grows only after a new
 * standby is synchronous and has flushed past the point where it became so.
 */
export function planSync(o: Observation, store: Reachable, inspection: ServerInspection): SyncPlan {
  const settings = o.settings;
  const bad = unreadableOf(store, 'sync');
  // Compare-and-swap on what we observed; a damaged record is replaced at its own revision.
  const write = (members: string[], previous: string[] = []): Action => ({
    type: 'writeSyncRecord',
    members,
    ...(previous.length > 0 ? { previous } : {}),
    revision: store.revisions.sync ?? bad?.revision,
  });
  const lost = o.outcomes.some((r) => r.result === 'lost_cas' && r.type === 'writeSyncRecord');
  if (bad && settings.synchronousMode === 'on') return repairSync(o, inspection, bad.problem, write);
  const plan = planSyncFromRecord(o, store, inspection, write);
  // The record changed between our read and our write: this cycle's plan is made on the fresh read.
  return lost ? { ...plan, note: `${plan.note ? `${plan.note}; ` : ''}the sync record changed under our last write (lost compare-and-swap): re-read, retrying`, awaitingStandby: true } : plan;
}

/**
 * The sync record is unreadable: nothing in it can be trusted, so
 * synchronous_standby_names stays as it is (no commit gets a weaker
 * guarantee) and the record is rewritten only with what is verified now:
 * the standbys every commit waits for that have flushed past the point
 * recorded when we started looking (or [] when commits wait for nobody).
 */
function repairSync(o: Observation, inspection: ServerInspection, problem: string, write: Write): SyncPlan {
  const inEffect = inspection.synchronousStandbyNames;
  const note = `sync record unreadable (${problem}): keeping synchronous_standby_names '${inEffect}' until its standbys are verified`;
  const named = allMustAcknowledge(inEffect);
  const switchLsn = o.memory.syncSwitchLsn ?? inspection.receivedLsn;
  if (named === undefined) {
    // Commits wait for nobody in particular ('' or any one of a list): no standby is known to hold them all.
    return { synchronousStandbyNames: inEffect, actions: [write([])], remember: {}, note };
  }
  const verified = named.filter((name) => {
    const row = inspection.replication.find((r) => r.member === name);
    return row !== undefined && (row.syncState === 'sync' || row.syncState === 'quorum') && row.flushLsn !== null && switchLsn !== null && compareLsn(row.flushLsn, switchLsn) >= 0;
  });
  return {
    synchronousStandbyNames: inEffect,
    actions: verified.length > 0 ? [write(verified)] : [],
    remember: { syncSwitchLsn: switchLsn ?? undefined },
    note,
    awaitingStandby: verified.length === 0,
  };
}

/** The members of `FIRST n (a, b, …)` when every one of them must acknowledge (n equals their number), else undefined. */
export function allMustAcknowledge(standbyNames: string): string[] | undefined {
  const match = /^FIRST (\d+) \((.*)\)$/.exec(standbyNames.trim());
  if (!match) return undefined;
  const names = match[2]!.split(',').map((n) => n.trim().replace(/^"(.*)"$/, '$1'));
  return Number(match[1]) === names.length && !names.includes(NO_STANDBY) ? names : undefined;
}

type Write = (members: string[], previous?: string[]) => Action;

/** `a` followed by the names of `b` it lacks. */
function union(a: string[], b: string[]): string[] {
  return [...a, ...b.filter((name) => !a.includes(name))];
}

function planSyncFromRecord(o: Observation, store: Reachable, inspection: ServerInspection, write: Write): SyncPlan {
  const me = o.member.name;
  const settings = o.settings;
  const inEffect = inspection.synchronousStandbyNames;
  const record = store.sync && store.sync.leader === me ? store.sync.members : [];
  const recordIsOurs = store.sync?.leader === me;
  // The set is changing (members empty): the members that may hold our acknowledged commits.
  const previous = recordIsOurs && record.length === 0 ? (store.sync?.previous ?? []) : [];
  if (settings.synchronousMode === 'off') {
    const actions: Action[] = record.length > 0 || previous.length > 0 || !recordIsOurs ? [write([])] : [];
    return { synchronousStandbyNames: actions.length > 0 ? inEffect : '', actions, remember: {}, note: undefined };
  }
  const wanted = candidatesFor(o, store, record, inspection)
    .slice(0, settings.synchronousCount)
    .map((m) => m.name);
  if (wanted.length === 0) {
    const since = o.memory.noSyncCandidateSince ?? o.monotonic;
    if (record.length === 0) {
      const alone = !hasOtherMembers(me, store);
      // With other members around (e.g. re-pointing after a failover), commits wait for one of the
      // standbys known not to have diverged from us until the fallback timeout; a primary with no
      // other member has nothing to wait for.
      const wait = settings.synchronousStrict || (!alone && o.monotonic - since < settings.synchronousFallbackMs);
      // While commits wait, the members that may hold the earlier ones stay recorded; falling back to
      // asynchronous replication gives that guarantee up (as it does for a verified set), record first.
      const actions: Action[] = !recordIsOurs || (!wait && previous.length > 0) ? [write([])] : [];
      return {
        synchronousStandbyNames: wait ? renderAnyStandby(o.memory.provisionalStandbys) : '',
        actions,
        remember: { noSyncCandidateSince: alone ? undefined : since },
        note: wait ? 'waiting for a synchronous standby: commits wait' : alone ? undefined : 'no synchronous standby: asynchronous replication',
        // Only the first moments are worth polling fast (replicas re-pointing); a lasting outage is not.
        awaitingStandby: wait && !alone && o.monotonic - since < AWAITING_STANDBY_POLL_MS,
      };
    }
    if (!settings.synchronousStrict && o.monotonic - since >= settings.synchronousFallbackMs) {
      return {
        synchronousStandbyNames: inEffect,
        actions: [write([])],
        remember: { noSyncCandidateSince: since },
        note: `no synchronous standby for ${settings.synchronousFallbackMs} ms: falling back to asynchronous replication`,
      };
    }
    return {
      synchronousStandbyNames: renderStandbyNames(record),
      actions: [],
      remember: { noSyncCandidateSince: since },
      note: `synchronous standby ${record.join(', ')} unavailable: commits wait`,
    };
  }
  // From the first verified standby on, the promotion's provisional list is not needed any more.
  const kept = record.filter((name) => wanted.includes(name));
  const desired = renderStandbyNames(wanted);
  if (kept.length !== record.length || !recordIsOurs) {
    // The record shrinks first; the replacement is named in the same cycle, after it: decide()
    // puts the record write before the reload, and a failed write stops the cycle there. When no
    // member is kept, the record never says "nobody holds our commits" while some do: it keeps the
    // former members and the replacement as `previous` until the replacement is verified (the
    // election then compares a candidate against all of them). With a member kept, that one holds
    // every acknowledged commit by itself.
    const switching = inEffect !== desired;
    return {
      synchronousStandbyNames: desired,
      actions: [write(kept, kept.length === 0 && recordIsOurs ? union(record, wanted) : [])],
      remember: { noSyncCandidateSince: undefined, provisionalStandbys: [], syncSwitchLsn: switching ? undefined : o.memory.syncSwitchLsn },
      note: switching ? `synchronous standby ${record.filter((n) => !kept.includes(n)).join(', ') || '(none)'} replaced by ${wanted.join(', ')}` : undefined,
    };
  }
  if (inEffect !== desired) {
    // While the set changes, a standby is named only once the record lists it among those that
    // may hold acknowledged commits (written before the reload, as above).
    const grown = union(previous, wanted);
    return {
      synchronousStandbyNames: desired,
      actions: previous.length > 0 && grown.length > previous.length ? [write([], grown)] : [],
      // The switch position is taken in the first cycle that sees the new setting in effect: a commit
      // acknowledged under the old one until the reload lies before it.
      remember: { noSyncCandidateSince: undefined, syncSwitchLsn: undefined, provisionalStandbys: [] },
      note: undefined,
    };
  }
  const switchLsn = o.memory.syncSwitchLsn ?? inspection.receivedLsn;
  const ready = wanted.filter((name) => {
    if (record.includes(name)) return false;
    const row = inspection.replication.find((r) => r.member === name);
    return row !== undefined && (row.syncState === 'sync' || row.syncState === 'quorum') && row.flushLsn !== null && switchLsn !== null && compareLsn(row.flushLsn, switchLsn) >= 0;
  });
  return {
    synchronousStandbyNames: desired,
    // A verified standby holds every acknowledged commit: `previous` is cleared in the same swap.
    actions: ready.length > 0 ? [write([...record, ...ready])] : [],
    remember: { noSyncCandidateSince: undefined, syncSwitchLsn: switchLsn ?? undefined, provisionalStandbys: [] },
    note: undefined,
  };
}
