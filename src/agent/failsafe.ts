/**
 * Store failsafe (`failsafe: true`), pure rules. While the store cannot be
 * reached, a primary keeps running only while every member of its last known
 * membership confirms over the API that it follows this primary and has not
 * promoted. A confirmation requested at monotonic time t counts until
 * t + ttlMs - fenceMarginMs; the member that gave it does not take over before
 * (its own clock) confirmation + ttlMs, and then only through the store, once
 * it is back and the primary's lease is gone. So the primary has stopped
 * before any member that confirmed could promote, and a member that did not
 * confirm ended failsafe.
 */
import type { ClusterSettings } from '../cluster/settings.js';
import type { Observation } from './observation.js';

/** What the agent knows about failsafe, handed to decide() in the observation. */
export interface FailsafeView {
  /** Primary: monotonic ms until which every member's confirmation holds (undefined: failsafe not holding). */
  heldUntil: number | undefined;
  /** Primary: members that confirmed in the current hold, for the reason shown to operators. */
  members: string[];
  /** Replica: the primary it last confirmed, and when (monotonic ms). */
  confirmed: { leader: string; at: number } | undefined;
}

/** Monotonic deadline of the hold: the oldest of the latest confirmations, plus ttlMs - fenceMarginMs. */
export function holdDeadline(settings: ClusterSettings, membership: string[], confirmedAt: ReadonlyMap<string, number>): number | undefined {
  let oldest = Infinity;
  for (const name of membership) {
    const at = confirmedAt.get(name);
    if (at === undefined) return undefined;
    oldest = Math.min(oldest, at);
  }
  // No other member known: nobody to vouch for us, no failsafe (stop as without it).
  return oldest === Infinity ? undefined : oldest + settings.ttlMs - settings.fenceMarginMs;
}

/**
 * Primary without the store: the decision while every member's confirmation
 * holds. The state stays primary_store_unreachable (the reason says failsafe
 * holds): from there anything may follow once the store answers, e.g. the
 * watchdog having stopped PostgreSQL when failsafe ended. (As `primary` that
 * was an illegal edge: found by the simulation, failsafe variant, seed 246.)
 */
export function failsafePrimary(o: Observation, storeError: string): { state: 'primary_store_unreachable'; reason: string } | undefined {
  const view = o.failsafe;
  if (!o.settings.failsafe || view?.heldUntil === undefined || o.monotonic >= view.heldUntil) return undefined;
  return {
    state: 'primary_store_unreachable',
    reason: `failsafe active: store unreachable (${storeError}), every member (${view.members.join(', ') || 'none'}) confirmed it follows this primary and has not promoted`,
  };
}

/** Replica with no leader in the store: the reason it must not take over yet, if it confirmed a primary recently. */
export function failsafeReplicaHold(o: Observation): string | undefined {
  const confirmed = o.failsafe?.confirmed;
  if (!confirmed) return undefined;
  const left = confirmed.at + o.settings.ttlMs - o.monotonic;
  if (left <= 0) return undefined;
  return `confirmed failsafe to primary ${confirmed.leader} ${Math.round(o.monotonic - confirmed.at)} ms ago: not taking over for another ${Math.round(left)} ms (it may still run)`;
}

/**
 * A confirmation this replica gave, after a store read that shows `leader`:
 * kept while the store still names the primary we confirmed (or nobody), so
 * that primary's lease lapsing in the store does not free us to take over
 * before `ttlMs` after our confirmation; dropped once another member leads.
 * (Dropping it whenever the store named a leader let a replica that reaches
 * the store promote while the primary it had just confirmed, cut off from the
 * store only, still held failsafe: found by the simulation, failsafe variant, seed 81.)
 */
export function givenAfterRead<T extends { leader: string }>(given: T | undefined, leader: string | undefined): T | undefined {
  return given && leader !== undefined && leader !== given.leader ? undefined : given;
}

/**
 * Whether this member may confirm `leader` (answer to POST /failsafe): the
 * store last named it, or named no leader while this member's promise to it
 * (`promised`, given less than ttlMs ago) still binds. The latter is the store
 * back from a freeze longer than the lease: it revoked every lease, the leader
 * key with them, and a primary still asking for a loop must not lose its hold
 * for it (it stopped PostgreSQL there, a write pause of a second or more).
 */
export function mayConfirm(
  settings: ClusterSettings,
  self: { name: string; role: string | undefined; state: string | undefined },
  lastLeader: string | undefined,
  leader: string,
  promised?: string,
): { ok: true } | { ok: false; reason: string } {
  if (!settings.failsafe) return { ok: false, reason: `member ${self.name}: failsafe is off in the cluster settings` };
  if (leader === self.name) return { ok: false, reason: `member ${self.name} cannot confirm itself` };
  if (self.role === 'primary' || self.state === 'promoting') return { ok: false, reason: `member ${self.name} runs as primary (${self.state}): it does not follow ${leader}` };
  if (lastLeader !== leader && !(lastLeader === undefined && promised === leader)) return { ok: false, reason: `member ${self.name} last saw ${lastLeader ?? 'no leader'} as primary, not ${leader}` };
  return { ok: true };
}

/**
 * The membership a primary asks, after a store read: the members read, but
 * while it holds failsafe one that vanished from the store stays (its key may
 * have gone with a revoked lease; it still has to confirm). Growing only asks
 * more members, never fewer, so it cannot make the hold weaker.
 */
export function membershipAfterRead<T extends { name: string }>(previous: readonly T[], read: readonly T[], holding: boolean): T[] {
  if (!holding) return [...read];
  const names = new Set(read.map((m) => m.name));
  return [...read, ...previous.filter((m) => !names.has(m.name))];
}

/** GET /failsafe: whether this member runs as primary under an active failsafe hold, and how long the hold has left (the router rides a store outage on it). */
export interface FailsafeGrantAnswer {
  member: string;
  active: boolean;
  /** Milliseconds until the hold lapses (0 when not active): PostgreSQL stops then unless the hold is renewed. */
  remainingMs: number;
  reason: string;
}

export function grantAnswer(member: string, primary: { runsAsPrimary: boolean; active: boolean; heldUntil: number | undefined; ended: string | undefined }, now: number): FailsafeGrantAnswer {
  const inactive = (reason: string): FailsafeGrantAnswer => ({ member, active: false, remainingMs: 0, reason });
  if (!primary.runsAsPrimary) return inactive(`member ${member} does not run as primary`);
  if (primary.ended) return inactive(`failsafe ended: ${primary.ended}`);
  if (!primary.active || primary.heldUntil === undefined) return inactive('failsafe is not active (the store answers, or not every member confirmed yet)');
  const remainingMs = Math.floor(primary.heldUntil - now);
  if (remainingMs <= 0) return inactive('the failsafe hold has lapsed');
  return { member, active: true, remainingMs, reason: `every member confirmed this primary; the hold lasts ${remainingMs} ms more` };
}
