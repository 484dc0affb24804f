import type { ActionType } from './actions.js';

/**
 * The agent's named states and the transitions allowed between them.
 * decide() may only move along a row listed here, with only the actions that
 * row allows; anything else is a defect with a code, reported loudly and
 * never taken. docs/states.md is generated from this table (`npm run docs`),
 * and docs/state-edges.txt lists the edges the simulation takes; unit tests
 * check both are current.
 */
export const AGENT_STATES = [
  // Before anything is known, and facts that hold whatever we were doing.
  'starting',
  'store_unreachable',
  'primary_store_unreachable',
  'fencing_store_lost',
  'foreign_data',
  'paused',
  // A new cluster.
  'initializing',
  'waiting_for_initializer',
  'bootstrapping',
  // Operator commands.
  'restarting_postgres',
  'reinitializing',
  'operator_request_refused',
  // An empty data directory joining.
  'waiting_to_clone',
  'waiting_for_credentials',
  'cloning',
  // A stopped server.
  'waiting_for_postgres',
  'restarting_primary',
  'releasing_lease',
  'waiting_for_primary',
  'starting_replica',
  'rewinding',
  'rewind_failed',
  'recloning',
  'needs_operator',
  'acquiring_lease',
  // A standby.
  'replica',
  'stopping_to_rewind',
  'detaching_upstream',
  'electing',
  'promoting',
  'resuming_promotion',
  // The primary.
  'primary',
  'draining',
  'demoting',
  'fencing_split_brain',
  'fencing_old_timeline',
  // A standby cluster (docs/sites.md).
  'cloning_source',
  'standby_leader',
  'demoting_to_standby',
] as const;

export type AgentState = (typeof AGENT_STATES)[number];

export interface Transition {
  /** `'*'` only for facts that hold whatever the agent was doing (the store is gone, another cluster's data, an operator command). */
  from: readonly AgentState[] | '*';
  to: AgentState;
  /** Action types decide() may ask for on this edge (a subset, possibly none, is asked each time). */
  actions: readonly ActionType[];
  comment: string;
}

/**
 * States after which anything may follow: the agent (re)started, the store or PostgreSQL could not be
 * observed, automation was paused, or an operator command was handled (from any state) instead of a decision.
 */
const AFTER_GAP = ['starting', 'store_unreachable', 'primary_store_unreachable', 'paused', 'waiting_for_postgres', 'restarting_postgres', 'operator_request_refused'] as const;
/** States in which PostgreSQL may run as primary with our lease. */
const LEADING = ['primary', 'promoting', 'resuming_promotion', 'acquiring_lease', 'restarting_primary', 'draining', 'bootstrapping'] as const;
/** States of a stopped (or stopping) server with data that must decide how to start. */
const STOPPED = [
  'waiting_for_primary',
  'starting_replica',
  'rewinding',
  'rewind_failed',
  'stopping_to_rewind',
  'releasing_lease',
  'fencing_split_brain',
  'fencing_old_timeline',
  'fencing_store_lost',
  'demoting',
  'needs_operator',
  'acquiring_lease',
  'restarting_primary',
] as const;
/**
 * Leading states the fence watchdog can leave with PostgreSQL stopped: it
 * stops the server outside the cycle (agent.ts armFence), so the next cycle
 * starts from the leading state with the server down and, by then, another
 * leader (chaos seed 1, freeze-agent-postmaster: without these rows the former
 * primary stayed in `primary`, never rejoining).
 */
const FENCED_BETWEEN_CYCLES = ['primary', 'draining', 'promoting', 'resuming_promotion'] as const;
/** States of a running standby. */
const STANDBY = ['replica', 'detaching_upstream', 'electing', 'starting_replica', 'rewinding', 'cloning', 'promoting', 'resuming_promotion', 'stopping_to_rewind'] as const;

const PRIMARY_DUTIES: ActionType[] = ['writeSyncRecord', 'configure', 'syncSlots', 'writeOptime', 'fenceFormerPrimary', 'clearFailoverRequest', 'recordSwitchPoint', 'writeQuorumRecord'];

/** States of a standby cluster's members beyond the ordinary ones (src/agent/standby-cluster.ts). */
const SITE = ['cloning_source', 'standby_leader', 'demoting_to_standby'] as const;

/** A standby cluster: its leader streams from another cluster's primary and nothing is promoted until `relevo site switchover|promote`. */
const STANDBY_CLUSTER_TRANSITIONS: readonly Transition[] = [
  {
    from: [...AFTER_GAP, 'initializing', 'waiting_for_initializer', 'cloning_source'],
    to: 'cloning_source',
    actions: ['clone', 'startPostgres'],
    comment: "standby cluster, we won the initialise key: clone the source cluster's primary instead of running initdb",
  },
  { from: ['cloning_source'], to: 'bootstrapping', actions: ['completeInitialize'], comment: "standby cluster: the source's clone runs; record its system identifier" },
  {
    from: [...AFTER_GAP, ...STANDBY, ...STOPPED, ...SITE, 'fencing_split_brain', 'bootstrapping'],
    to: 'standby_leader',
    actions: ['acquireLeader', 'configure', 'syncSlots'],
    comment: "standby cluster: take the lease without promoting, or hold it and stream from the source's current primary (following its failovers), keeping slots for the cascading members",
  },
  {
    from: [...AFTER_GAP, ...LEADING, 'demoting_to_standby'],
    to: 'demoting_to_standby',
    actions: ['stopPostgres', 'recordDemotion'],
    comment: 'this cluster became a standby cluster (site switchover): shut the primary down cleanly and record its final position; the lease is kept',
  },
  { from: SITE, to: 'waiting_for_primary', actions: [], comment: "standby leader stopped: the source's primary is not known yet" },
  { from: SITE, to: 'rewinding', actions: ['rewind'], comment: "standby leader stopped, a former primary or a standby that could not follow: pg_rewind against the source's primary, then stream from it" },
  { from: SITE, to: 'starting_replica', actions: ['startPostgres'], comment: "standby leader stopped: start it as a standby of the source's primary" },
  { from: SITE, to: 'needs_operator', actions: [], comment: "pg_rewind against the source's primary failed: waiting for `relevo reinit`" },
  { from: SITE, to: 'electing', actions: [], comment: 'standby cluster without a standby leader: a peer is further ahead' },
  { from: SITE, to: 'replica', actions: ['configure'], comment: 'another member took the standby leadership: follow it' },
  { from: SITE, to: 'stopping_to_rewind', actions: ['stopPostgres'], comment: 'a former standby leader that cannot follow the new one: stop, then pg_rewind' },
  { from: ['standby_leader'], to: 'resuming_promotion', actions: ['promote'], comment: 'the cluster is no longer a standby cluster (site switchover or promote): the standby leader holds the lease, so it promotes' },
  { from: SITE, to: 'acquiring_lease', actions: ['acquireLeader'], comment: 'the cluster is no longer a standby cluster and this primary data has no leader' },
];

export const TRANSITIONS: readonly Transition[] = [
  // Facts that hold whatever the agent was doing.
  { from: '*', to: 'store_unreachable', actions: [], comment: 'the store cannot be read: act on nothing we cannot verify' },
  {
    from: '*',
    to: 'primary_store_unreachable',
    actions: [],
    comment: 'the store cannot be read and PostgreSQL runs as primary: it may go on only until the lease it last renewed could expire',
  },
  { from: '*', to: 'fencing_store_lost', actions: ['stopPostgres'], comment: 'store unreachable and the lease could expire now: stop the primary first' },
  { from: '*', to: 'foreign_data', actions: [], comment: 'the data directory belongs to another cluster: refuse to touch it' },
  { from: '*', to: 'paused', actions: [], comment: 'the operator paused automation: nothing is done' },
  { from: '*', to: 'initializing', actions: ['claimInitialize'], comment: 'the store holds no cluster (new, or wiped): create it, or register this data directory' },
  { from: '*', to: 'fencing_split_brain', actions: ['stopPostgres'], comment: 'PostgreSQL runs as primary (or a primary data directory does not answer) while another member holds the leader lease: stop it before two can acknowledge' },
  { from: '*', to: 'restarting_postgres', actions: ['finishOperatorRequest', 'restartPostgres'], comment: 'operator asked to restart PostgreSQL (relevo restart): the request is consumed, then PostgreSQL restarted' },
  { from: '*', to: 'reinitializing', actions: ['stopPostgres', 'moveDataAside', 'finishOperatorRequest'], comment: 'operator asked to reinitialise this member: data moved aside (kept), then cloned afresh' },
  { from: '*', to: 'operator_request_refused', actions: ['finishOperatorRequest'], comment: 'operator request refused: reinitialise the primary (switch over first) or a member while no primary runs to clone from, restart without data' },
  { from: '*', to: 'waiting_for_postgres', actions: [], comment: 'the postmaster runs but does not answer yet (starting, crash recovery): wait for it' },
  // A new cluster.
  {
    // 'bootstrapping': our bootstrap failed and released the key, and another member claimed it before our next cycle
    // (chaos lab, first setup: E_STATE_ILLEGAL_EDGE bootstrapping -> waiting_for_initializer).
    from: [...AFTER_GAP, 'initializing', 'waiting_for_initializer', 'bootstrapping'],
    to: 'waiting_for_initializer',
    actions: [],
    comment: 'another member won the initialise key and runs initdb (also after our own bootstrap failed and released it)',
  },
  { from: [...AFTER_GAP, 'initializing', 'bootstrapping'], to: 'bootstrapping', actions: ['bootstrap', 'completeInitialize'], comment: 'we won the initialise key: run initdb, or record the system identifier of the data we registered' },
  // An empty data directory.
  {
    from: [...AFTER_GAP, 'initializing', 'waiting_for_initializer', 'bootstrapping', 'waiting_to_clone', 'waiting_for_credentials', 'reinitializing', 'recloning', 'cloning'],
    to: 'waiting_to_clone',
    actions: [],
    comment: 'empty data directory: no running primary yet, or it has not created our slot',
  },
  {
    from: [...AFTER_GAP, 'waiting_for_initializer', 'waiting_to_clone', 'waiting_for_credentials', 'reinitializing', 'recloning', 'cloning'],
    to: 'waiting_for_credentials',
    actions: [],
    comment: 'empty data directory and no replication password here',
  },
  {
    from: [...AFTER_GAP, 'waiting_for_initializer', 'waiting_to_clone', 'waiting_for_credentials', 'reinitializing', 'recloning', 'cloning'],
    to: 'cloning',
    actions: ['clone', 'startPostgres'],
    comment: 'empty data directory and the primary has our slot: clone it (a failed clone tries again)',
  },
  // A stopped server with data.
  {
    from: [...AFTER_GAP, ...LEADING, 'releasing_lease', 'fencing_store_lost', 'demoting'],
    to: 'restarting_primary',
    actions: ['startPostgres', 'clearFailoverRequest'],
    comment: 'we hold the leader lease and PostgreSQL is down: start it in place (crash recovery) for up to primaryRestartTimeoutMs; first remove our own switchover request whose hand-over did not complete (its shutdown position goes stale once we write again)',
  },
  { from: [...AFTER_GAP, 'restarting_primary', 'releasing_lease'], to: 'releasing_lease', actions: ['releaseLeader'], comment: 'PostgreSQL did not come back within primaryRestartTimeoutMs: release the lease so a replica takes over' },
  {
    from: [...AFTER_GAP, ...STOPPED, ...STANDBY, ...FENCED_BETWEEN_CYCLES, 'waiting_for_initializer', 'bootstrapping'],
    to: 'waiting_for_primary',
    actions: [],
    comment: 'stopped with data and nothing to follow yet: the leader has no address, a switchover goes elsewhere, or the cluster moved past our timeline',
  },
  {
    from: [...AFTER_GAP, ...STOPPED, ...STANDBY, ...FENCED_BETWEEN_CYCLES, 'cloning'],
    to: 'starting_replica',
    actions: ['startPostgres'],
    comment: 'stopped standby that can follow the leader (or nobody leads yet): start it as a standby',
  },
  {
    from: [...AFTER_GAP, ...STOPPED, ...STANDBY, ...FENCED_BETWEEN_CYCLES],
    to: 'rewinding',
    actions: ['rewind'],
    comment: 'stopped former primary (also one whose fence watchdog or fencer process stopped it between two cycles, even straight from primary while the agent was frozen), or a standby past the fork or unable to stream: pg_rewind against the leader, then start as its standby',
  },
  { from: [...AFTER_GAP, 'rewinding', 'rewind_failed', 'needs_operator', 'waiting_for_primary'], to: 'rewind_failed', actions: [], comment: 'pg_rewind failed; the fallback waits until the leader runs as primary' },
  { from: [...AFTER_GAP, 'rewinding', 'rewind_failed', 'needs_operator', 'waiting_for_primary'], to: 'recloning', actions: ['moveDataAside'], comment: 'pg_rewind failed and rewindFallback=reclone: move the data aside (kept) and clone afresh' },
  { from: [...AFTER_GAP, 'rewinding', 'rewind_failed', 'needs_operator', 'waiting_for_primary'], to: 'needs_operator', actions: [], comment: 'pg_rewind failed and rewindFallback=none: waiting for `relevo reinit`' },
  {
    // 'draining': a switchover waited for open transactions while the lease lapsed (its agent had restarted): found by the simulation, failsafe variant, seed 1140.
    from: [...AFTER_GAP, ...STOPPED, 'primary', 'draining', 'bootstrapping', 'electing', 'detaching_upstream'],
    to: 'acquiring_lease',
    actions: ['acquireLeader'],
    comment: 'primary data on the current timeline (running, or stopped and no standby) and no leader: take the lease before it acknowledges anything',
  },
  // A standby.
  {
    from: [...AFTER_GAP, ...STANDBY, ...STOPPED, 'fencing_split_brain'],
    to: 'replica',
    actions: ['configure'],
    comment: 'running standby: follow the leader (or report while the leader has no address, or while paused)',
  },
  {
    from: [...AFTER_GAP, ...STANDBY],
    to: 'stopping_to_rewind',
    actions: ['stopPostgres'],
    comment: 'standby past the fork of the leader timeline, or not streaming from a live primary for DIVERGENCE_GRACE_MS: stop, then pg_rewind',
  },
  {
    from: [...AFTER_GAP, 'replica', 'starting_replica', 'rewinding', 'cloning', 'detaching_upstream', 'electing', 'promoting', 'resuming_promotion', 'stopping_to_rewind'],
    to: 'detaching_upstream',
    actions: ['detachUpstream'],
    comment: 'the leader lease is gone: stop streaming from the former primary so it can acknowledge nothing more, before comparing positions',
  },
  {
    from: [...AFTER_GAP, 'replica', 'starting_replica', 'rewinding', 'cloning', 'detaching_upstream', 'electing', 'promoting', 'resuming_promotion', 'stopping_to_rewind'],
    to: 'electing',
    actions: [],
    comment: 'no leader and this standby may not (yet) take over: not eligible, a better peer, or a switchover elsewhere',
  },
  {
    from: [...AFTER_GAP, 'replica', 'detaching_upstream', 'electing', 'promoting', 'resuming_promotion', 'starting_replica', 'rewinding', 'cloning'],
    to: 'promoting',
    actions: ['promote'],
    comment: 'no leader and we are the best eligible standby: take the lease, (asynchronous mode: fence the former primary over SQL,) record the timeline, pg_promote()',
  },
  { from: [...AFTER_GAP, 'promoting', 'resuming_promotion', 'replica', 'electing', 'detaching_upstream', 'starting_replica'], to: 'resuming_promotion', actions: ['promote'], comment: 'we hold the leader lease while still in recovery: finish the promotion' },
  // The primary.
  {
    from: [...AFTER_GAP, ...LEADING, 'demoting', 'fencing_old_timeline', 'fencing_store_lost'],
    to: 'primary',
    actions: PRIMARY_DUTIES,
    comment: 'running primary holding the lease: keep the synchronous set, slots and optime, fence the former primary, clear a finished request, correct its history entry',
  },
  { from: [...AFTER_GAP, ...LEADING], to: 'draining', actions: [], comment: 'switchover away from us is due: wait up to switchoverDrainMs for open transactions' },
  { from: [...AFTER_GAP, ...LEADING, 'demoting'], to: 'demoting', actions: ['stopPostgres', 'handOver'], comment: 'switchover away from us: clean shutdown, record its position, release the lease' },
  {
    from: [...AFTER_GAP, ...LEADING, 'demoting', 'fencing_old_timeline', 'fencing_store_lost', 'fencing_split_brain'],
    to: 'fencing_old_timeline',
    actions: ['stopPostgres'],
    comment: 'running primary, no leader, and the cluster moved to a newer timeline: stop it (it must be rewound)',
  },
  ...STANDBY_CLUSTER_TRANSITIONS,
];

/** A move decide() wanted that the table does not allow: a bug in decide() or the table, never taken. */
export interface Defect {
  code: 'E_STATE_ILLEGAL_EDGE' | 'E_STATE_ACTION_NOT_ALLOWED';
  from: AgentState;
  to: AgentState;
  message: string;
}

/** Staying in a state (waiting, or trying a failed action again) is allowed with the actions of any of its rows. */
function rowsTo(from: AgentState, to: AgentState): Transition[] {
  return TRANSITIONS.filter((t) => t.to === to && (from === to || t.from === '*' || t.from.includes(from)));
}

/** Undefined when `from -> to` with these actions follows a row of the table; otherwise the defect. */
export function checkTransition(from: AgentState, to: AgentState, actions: readonly ActionType[]): Defect | undefined {
  const rows = rowsTo(from, to);
  if (rows.length === 0) return { code: 'E_STATE_ILLEGAL_EDGE', from, to, message: `no transition ${from} -> ${to} in the state table` };
  if (rows.some((t) => actions.every((a) => t.actions.includes(a)))) return undefined;
  const allowed = [...new Set(rows.flatMap((t) => t.actions))];
  const extra = actions.filter((a) => !allowed.includes(a));
  return { code: 'E_STATE_ACTION_NOT_ALLOWED', from, to, message: `actions ${extra.join(', ')} are not allowed on ${from} -> ${to} (allowed: ${allowed.join(', ') || 'none'})` };
}

export function isAllowedTransition(from: AgentState, to: AgentState): boolean {
  return rowsTo(from, to).length > 0;
}
