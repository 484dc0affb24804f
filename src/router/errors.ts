/**
 * Every message the router itself sends to a client, in one catalogue: a
 * stable code (metrics label, docs/router.md), the SQLSTATE clients and pools
 * branch on, and a message that says what happened and what to do.
 *
 * 57P03 (cannot_connect_now) and 57P01 (admin_shutdown) are the codes
 * PostgreSQL itself uses for "not now, retry" and "this session is over";
 * connection pools already treat them as retryable.
 */
import type { ErrorFields } from './protocol.js';

const PREFIX = 'relevo router: ';

function seconds(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? 'ever' : `${(ms / 1000).toFixed(1)} s`;
}

/** Why a new connection was not relayed. */
export const refusals = {
  'store-unreadable': (c: { ageMs: number | null; ttlMs: number }) => ({
    code: '57P03',
    message:
      c.ageMs === null
        ? `${PREFIX}the coordination store has not been read yet; refusing read-write connections because the primary is not known`
        : `${PREFIX}the coordination store has been unreadable for ${seconds(c.ageMs)}, longer than the leader lease (${seconds(c.ttlMs)}); refusing read-write connections because the primary is not known`,
    hint: 'Check that the coordination store is running and reachable from the router host; the router resumes by itself once it can read the store again.',
  }),
  'no-primary': () => ({
    code: '57P03',
    message: `${PREFIX}no primary holds the leader lease right now (failover in progress or cluster down)`,
    hint: 'Retry in a few seconds; run "relevo list" to see the members.',
  }),
  'bad-address': (c: { member: string; address: string }) => ({
    code: '08001',
    message: `${PREFIX}member ${c.member} publishes an unusable connect address "${c.address}"`,
    hint: 'Fix postgresql.connectAddress in that member\'s configuration (host:port).',
  }),
  'hold-timeout': (c: { heldMs: number; reason: string }) => ({
    code: '57P03',
    message: `${PREFIX}gave up waiting after ${seconds(c.heldMs)}: ${c.reason}`,
    hint: 'Retry; if this persists, check "relevo list" for a switchover that does not finish.',
  }),
  'no-replica': (c: { excluded: Array<{ member: string; reason: string }> }) => ({
    code: '57P03',
    message:
      `${PREFIX}no replica qualifies for read-only connections` +
      (c.excluded.length ? ` (${c.excluded.map((e) => `${e.member}: ${e.reason}`).join('; ')})` : ' (none known)') +
      ' and fallback to the primary is off or impossible',
    hint: 'Retry later, raise the lag limits, or enable fallback to the primary.',
  }),
  'backend-unreachable': (c: { member: string; address: string; error: string }) => ({
    code: '08006',
    message: `${PREFIX}could not connect to member ${c.member} at ${c.address}: ${c.error}`,
    hint: 'Retry; the router follows the store as soon as the member or the primary changes.',
  }),
  'bad-startup': (c: { error: string }) => ({
    code: '08P01',
    message: `${PREFIX}invalid startup packet: ${c.error}`,
  }),
  'startup-timeout': (c: { timeoutMs: number }) => ({
    code: '08P01',
    message: `${PREFIX}no startup packet received within ${seconds(c.timeoutMs)}`,
  }),
  'too-many-connections': (c: { limit: number }) => ({
    code: '53300',
    message: `${PREFIX}too many connections to this listener (limit ${c.limit})`,
    hint: 'Retry later, use a connection pool, or raise the router option limits.maxConnections.',
  }),
  'too-many-held': (c: { limit: number }) => ({
    code: '53300',
    message: `${PREFIX}too many connections already waiting for the switchover to finish (limit ${c.limit})`,
    hint: 'Retry in a few seconds, or raise the router option limits.maxHeld.',
  }),
  'router-stopping': () => ({
    code: '57P01',
    message: `${PREFIX}the router is shutting down`,
    hint: 'Reconnect through another router or retry shortly.',
  }),
} as const;

/** Why an already relayed connection was closed by the router. */
export const closures = {
  'primary-changed': (c: { member: string }) => ({
    code: '57P01',
    message: `${PREFIX}terminating connection because ${c.member} is no longer the primary (failover or lease lost)`,
    hint: 'Reconnect: new connections go to the current primary.',
  }),
  'store-unreadable': (c: { ageMs: number | null; ttlMs: number }) => ({
    code: '57P01',
    message: `${PREFIX}terminating connection because the coordination store has been unreadable for ${seconds(c.ageMs)}, longer than the leader lease (${seconds(c.ttlMs)})`,
    hint: 'Reconnect; new read-write connections are refused until the router can read the store again.',
  }),
  'switchover-idle': (c: { member: string }) => ({
    code: '57P01',
    message: `${PREFIX}closing idle connection to ${c.member} for a planned switchover`,
    hint: 'Reconnect: the router holds new connections until the new primary is ready.',
  }),
  'switchover-timeout': (c: { member: string; timeoutMs: number }) => ({
    code: '57P01',
    message: `${PREFIX}terminating connection to ${c.member}: still busy ${seconds(c.timeoutMs)} after a planned switchover began`,
    hint: 'Reconnect: the router holds new connections until the new primary is ready.',
  }),
  'cluster-switched': (c: { from: string; to: string }) => ({
    code: '57P01',
    message: `${PREFIX}terminating connection because clients moved from cluster ${c.from} to cluster ${c.to} (major-version upgrade or its rollback)`,
    hint: 'Reconnect: new connections go to the new cluster.',
  }),
  'not-replica': (c: { member: string }) => ({
    code: '57P01',
    message: `${PREFIX}terminating read-only connection because ${c.member} became the primary`,
    hint: 'Reconnect: new read-only connections go to replicas.',
  }),
  'router-stopping': () => ({
    code: '57P01',
    message: `${PREFIX}the router is shutting down`,
    hint: 'Reconnect through another router or retry shortly.',
  }),
  'session-transaction-lost': (c: { member: string }) => ({
    code: '57P01',
    message: `${PREFIX}the transaction was lost: ${c.member} stopped being the primary while it was open; it was rolled back`,
    hint: 'This session is still usable and now runs on the new primary: retry the transaction. If the lost statement was COMMIT, check whether its effect is there before retrying.',
  }),
  'session-open-transaction': (c: { member: string; timeoutMs: number }) => ({
    code: '57P01',
    message: `${PREFIX}terminating session: a transaction was still open ${seconds(c.timeoutMs)} after a planned switchover from ${c.member} began, and an open transaction cannot move to the new primary`,
    hint: 'Reconnect and retry the transaction; keep transactions shorter than the router\'s drainMs to have sessions carried over.',
  }),
  'session-cannot-move': (c: { member: string; what: string }) => ({
    code: '57P01',
    message: `${PREFIX}terminating session: it cannot move from ${c.member} to the new primary because ${c.what}`,
    hint: 'Reconnect; temporary tables, advisory locks, LISTEN and WITH HOLD cursors live in one server session and do not survive a switchover.',
  }),
  'session-restore-failed': (c: { member: string; error: string }) => ({
    code: '57P01',
    message: `${PREFIX}terminating session: could not restore its settings or prepared statements on ${c.member}: ${c.error}`,
    hint: 'Reconnect.',
  }),
} as const;

export type RefusalCode = keyof typeof refusals;
export type ClosureCode = keyof typeof closures;

export interface Refusal {
  code: RefusalCode;
  fields: ErrorFields;
}

export function refusal<K extends RefusalCode>(code: K, ...ctx: Parameters<(typeof refusals)[K]>): Refusal {
  const make = refusals[code] as (...a: unknown[]) => Omit<ErrorFields, 'severity'>;
  return { code, fields: { severity: 'FATAL', ...make(...ctx) } };
}

export function closure<K extends ClosureCode>(code: K, ...ctx: Parameters<(typeof closures)[K]>): ErrorFields {
  const make = closures[code] as (...a: unknown[]) => Omit<ErrorFields, 'severity'>;
  return { severity: 'FATAL', ...make(...ctx) };
}
