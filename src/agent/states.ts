/**
 * The agent's named states and the transitions allowed between them.
 * decide() may only move along an edge listed here; any other move is a
 * defect, reported as such and never silently taken. docs/states.md is
 * generated from this table (`npm run docs`), and a unit test checks it is current.
 */
export const AGENT_STATES = [
  'starting',
  'store_unreachable',
  'initializing',
  'bootstrapping',
  'waiting_for_primary',
  'waiting_for_credentials',
  'cloning',
  'starting_postgres',
  'replica',
  'promoting',
  'primary',
  'demoting',
  'fenced',
  'rewinding',
  'needs_operator',
  'foreign_data',
] as const;

export type AgentState = (typeof AGENT_STATES)[number];

export interface Transition {
  from: AgentState | '*';
  to: AgentState;
  comment: string;
}

export const TRANSITIONS: readonly Transition[] = [
  { from: '*', to: 'store_unreachable', comment: 'the store cannot be read: act on nothing we cannot verify' },
  { from: '*', to: 'foreign_data', comment: 'the data directory belongs to another cluster: refuse to touch it' },
  { from: '*', to: 'initializing', comment: 'the store holds no cluster: create it, or register this data directory' },
  { from: '*', to: 'starting_postgres', comment: 'PostgreSQL is being started, restarted, or does not answer yet' },
  { from: '*', to: 'waiting_for_primary', comment: 'nothing to follow or clone from yet (or reinitialising)' },
  { from: '*', to: 'fenced', comment: 'this primary lost the lease or another member leads: stop before two primaries can exist' },
  { from: 'store_unreachable', to: 'primary', comment: 'store back and our lease is still ours' },
  { from: 'store_unreachable', to: 'replica', comment: 'store back' },
  { from: 'store_unreachable', to: 'cloning', comment: 'store back; primary has our slot' },
  { from: 'store_unreachable', to: 'rewinding', comment: 'store back; our data diverged from the leader' },
  { from: 'store_unreachable', to: 'promoting', comment: 'store back, no leader, and we are the best candidate' },
  { from: 'store_unreachable', to: 'demoting', comment: 'store back with a switchover request for us' },
  { from: 'initializing', to: 'bootstrapping', comment: 'won the initialise key: run initdb' },
  { from: 'starting', to: 'bootstrapping', comment: 'agent restarted while it owned an unfinished initialisation' },
  { from: 'bootstrapping', to: 'primary', comment: 'initdb done; we hold the leader lease' },
  { from: 'starting', to: 'waiting_for_credentials', comment: 'cannot clone without the replication password' },
  { from: 'waiting_for_primary', to: 'waiting_for_credentials', comment: 'primary ready but no replication password here' },
  { from: 'starting', to: 'cloning', comment: 'primary has our slot: clone it' },
  { from: 'waiting_for_primary', to: 'cloning', comment: 'primary has our slot: clone it' },
  { from: 'waiting_for_credentials', to: 'cloning', comment: 'credentials found and the primary has our slot' },
  { from: 'cloning', to: 'replica', comment: 'clone finished and PostgreSQL started as a standby' },
  { from: 'starting', to: 'primary', comment: 'adopted a running primary and hold the lease' },
  { from: 'starting', to: 'replica', comment: 'adopted a running standby' },
  { from: 'starting_postgres', to: 'primary', comment: 'PostgreSQL answers as primary and we hold the lease' },
  { from: 'starting_postgres', to: 'replica', comment: 'PostgreSQL answers as a standby' },
  { from: 'starting_postgres', to: 'rewinding', comment: 'our data diverged from the leader' },
  { from: 'starting_postgres', to: 'promoting', comment: 'started standby is the best candidate while nobody leads' },
  { from: 'starting_postgres', to: 'needs_operator', comment: 'pg_rewind failed and the policy forbids recloning' },
  { from: 'waiting_for_primary', to: 'rewinding', comment: 'a leader appeared to rewind from' },
  { from: 'waiting_for_primary', to: 'replica', comment: 'adopted a running standby' },
  { from: 'waiting_for_primary', to: 'primary', comment: 'paused cluster: reporting a running primary as is' },
  { from: 'starting', to: 'rewinding', comment: 'restarted agent finds a diverged data directory' },
  { from: 'starting', to: 'promoting', comment: 'restarted agent finds no leader and is the best candidate' },
  { from: 'replica', to: 'promoting', comment: 'leader lease gone (or switchover to us) and we are the best eligible candidate' },
  { from: 'replica', to: 'rewinding', comment: 'replayed past the fork of the new timeline: stop and rewind' },
  { from: 'replica', to: 'primary', comment: 'paused cluster: reporting a promoted standby as is' },
  { from: 'promoting', to: 'primary', comment: 'promotion done: we hold the lease and accept writes' },
  { from: 'promoting', to: 'replica', comment: 'promotion failed or another member won the lease' },
  { from: 'primary', to: 'demoting', comment: 'switchover: clean shutdown, then hand over the lease' },
  { from: 'primary', to: 'replica', comment: 'paused cluster: reporting a demoted server as is' },
  { from: 'demoting', to: 'primary', comment: 'the shutdown failed: still primary' },
  { from: 'demoting', to: 'rewinding', comment: 'after handing over: reconcile with the new leader' },
  { from: 'fenced', to: 'rewinding', comment: 'reconcile with the new leader before streaming from it' },
  { from: 'fenced', to: 'replica', comment: 'already a standby of the leader' },
  { from: 'rewinding', to: 'replica', comment: 'rewound and streaming from the leader' },
  { from: 'rewinding', to: 'needs_operator', comment: 'pg_rewind failed and the policy forbids recloning' },
  { from: 'rewinding', to: 'cloning', comment: 'pg_rewind failed: data moved aside, cloning afresh' },
  { from: 'needs_operator', to: 'cloning', comment: 'operator reinitialised the member' },
  { from: 'foreign_data', to: 'cloning', comment: 'operator emptied the data directory' },
];

export function isAllowedTransition(from: AgentState, to: AgentState): boolean {
  if (from === to) return true;
  return TRANSITIONS.some((t) => t.to === to && (t.from === from || t.from === '*'));
}
