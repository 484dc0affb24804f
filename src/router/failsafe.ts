/**
 * Router failsafe, pure rules. While the router cannot read the store, it
 * keeps sending writes to the primary it last read only while that primary's
 * agent confirms (GET /failsafe) that it runs as primary under an active
 * store failsafe (src/agent/failsafe.ts): every other member has vouched for
 * it and promised not to promote before its confirmation + ttlMs, and the
 * primary stops PostgreSQL when its hold lapses. A grant counts from the
 * moment the router sent its question, for at most the hold the agent had
 * left and never more than ttlMs, so it ends no later than the agent's hold.
 * An answer saying "not active" ends it at once; no answer lets it run out.
 *
 * Once the store answers again, the router stops asking (the agent, which
 * reaches the store too, rightly says its failsafe is over) and keeps the
 * grant until a read begun after that answer succeeds; then the store
 * decides. One exception, until the grant runs out: a store that names no
 * leader at all. etcd, woken from a freeze longer than the lease, revokes
 * the leases that expired meanwhile, and the leader and member keys with
 * them, until the primary takes its key again a loop later. That is still
 * safe: every member promised not to take over before its confirmation +
 * ttlMs, later than any grant.
 */

/** Routing writes to `member` is allowed until `until` (router monotonic ms). */
export interface FailsafeGrant {
  member: string;
  until: number;
  /** Its connectAddress when asked: its member key may be gone from the store meanwhile (a revoked lease). */
  address: string;
}

/** The agent's answer to GET /failsafe (src/api/server.ts). */
export interface FailsafeAnswer {
  member: string;
  active: boolean;
  /** Milliseconds the agent's hold had left when it answered. */
  remainingMs: number;
  reason: string;
}

/** What one question to the primary's agent gave. */
export type ProbeOutcome =
  | { kind: 'answer'; member: string; address: string; answer: FailsafeAnswer; sentAt: number }
  | { kind: 'no-answer'; member: string; error: string };

/** The grant after one probe: replaced by an active answer, ended by any other answer, kept (to run out) without one. */
export function nextGrant(previous: FailsafeGrant | undefined, outcome: ProbeOutcome, ttlMs: number): { grant: FailsafeGrant | undefined; reason: string } {
  if (outcome.kind === 'no-answer') {
    const kept = previous?.member === outcome.member ? previous : undefined;
    return { grant: kept, reason: `no answer from ${outcome.member}'s agent (${outcome.error})${kept ? ': the grant runs out' : ''}` };
  }
  const { answer, member, sentAt } = outcome;
  if (answer.member !== member) return { grant: undefined, reason: `asked ${member}, but member ${answer.member} answered` };
  if (!answer.active) return { grant: undefined, reason: `${member} is not primary under failsafe: ${answer.reason}` };
  if (!(Number.isFinite(answer.remainingMs) && answer.remainingMs > 0)) return { grant: undefined, reason: `${member} answered a hold of ${answer.remainingMs} ms` };
  return { grant: { member, until: sentAt + Math.min(answer.remainingMs, ttlMs), address: outcome.address }, reason: `${member} holds failsafe for ${Math.round(answer.remainingMs)} ms` };
}

/** Whether the grant lets writes go to its member now. */
export function grantValid(grant: FailsafeGrant | undefined, now: number): grant is FailsafeGrant {
  return grant !== undefined && now < grant.until;
}

/** The router's failsafe state between store reads and probes. */
export interface RouterFailsafe {
  grant: FailsafeGrant | undefined;
  /** A store read failed, or the view went stale, and no read begun after the store answered again has succeeded yet. */
  outage: boolean;
  /** During an outage: when a store read first succeeded again (monotonic ms); the next read begun after it ends the outage. */
  answeredAt: number | undefined;
}

export const NO_OUTAGE: RouterFailsafe = { grant: undefined, outage: false, answeredAt: undefined };

export type ReadResult = { ok: false } | { ok: true; startedAt: number; at: number; stale: boolean; leader: string | undefined };

/** After the outage a grant lasts (to run out) only while the store names no other leader. */
function keptAfter(grant: FailsafeGrant | undefined, leader: string | undefined): FailsafeGrant | undefined {
  return grant && (leader === undefined || leader === grant.member) ? grant : undefined;
}

/**
 * After a store read. The first read that succeeds during an outage may have
 * begun long before (and shows a view the store may already have moved on
 * from, e.g. a lease it revoked on waking): the grant stays, and only a read
 * begun after that answer, fresh, ends the outage and lets the store decide.
 */
export function afterRead(state: RouterFailsafe, read: ReadResult): RouterFailsafe {
  if (!read.ok) return { ...state, outage: true, answeredAt: undefined };
  if (!state.outage) return read.stale ? { ...state, outage: true, answeredAt: read.at } : { ...NO_OUTAGE, grant: keptAfter(state.grant, read.leader) };
  if (state.answeredAt === undefined) return { ...state, answeredAt: read.at };
  return read.startedAt >= state.answeredAt && !read.stale ? { ...NO_OUTAGE, grant: keptAfter(state.grant, read.leader) } : state;
}

/** The view went stale without a failed read (a read that hangs): that is an outage too. */
export function afterStaleness(state: RouterFailsafe, stale: boolean): RouterFailsafe {
  return stale && !state.outage ? { ...state, outage: true } : state;
}

/**
 * Whether to ask the last known primary now: during an outage until the
 * store answers again, and already once the store has not been read for
 * `afterMs` (before the view goes stale, so a grant is in hand when it does).
 */
export function probeDue(state: RouterFailsafe, input: { now: number; lastReadAt: number | undefined; afterMs: number }): boolean {
  if (state.answeredAt !== undefined) return false;
  return state.outage || input.lastReadAt === undefined || input.now - input.lastReadAt > input.afterMs;
}

/**
 * After a probe. Once the store answered again the agent may rightly say its
 * failsafe is over (it renewed its lease): the grant then runs until the
 * router has read the store again, and late answers change nothing.
 */
export function afterProbe(state: RouterFailsafe, outcome: ProbeOutcome, ttlMs: number): { state: RouterFailsafe; reason: string } {
  if (state.answeredAt !== undefined) return { state, reason: 'the store answers again: waiting for a fresh read' };
  const next = nextGrant(state.grant, outcome, ttlMs);
  return { state: { ...state, grant: next.grant }, reason: next.reason };
}

/** The grant the routing decision may use: during an outage, and after it while the store names no leader. */
export function grantInForce(state: RouterFailsafe, storeLeader: string | undefined): FailsafeGrant | undefined {
  return state.outage || storeLeader === undefined ? state.grant : undefined;
}
