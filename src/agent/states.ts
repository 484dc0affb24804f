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
  // Facts adopted from whatever state: they describe what runs, and are safe to report.
  { from: '*', to: 'store_unreachable', comment: 'the store cannot be read: act on nothing we cannot verify' },
  { from: '*', to: 'foreign_data', comment: 'the data directory belongs to another cluster: refuse to touch it' },
  { from: '*', to: 'initializing', comment: 'the store holds no cluster: create it, or register this data directory' },
  { from: '*', to: 'starting_postgres', comment: 'PostgreSQL is being started, restarted, or does not answer yet' },
  { from: '*', to: 'waiting_for_primary', comment: 'nothing to follow or clone from yet (or reinitialising)' },
  { from: '*', to: 'replica', comment: 'PostgreSQL runs as a standby (of the leader, or while nobody leads)' },
  { from: '*', to: 'primary', comment: 'PostgreSQL runs as primary and we hold (or just took) the leader lease' },
  { from: '*', to: 'fenced', comment: 'this primary lost the lease or another member leads: stop before two primaries can exist' },
  { from: '*', to: 'promoting', comment: 'no leader and we are the best eligible standby, or we hold the lease while still in recovery' },
  { from: '*', to: 'rewinding', comment: "our data diverged from the leader's timeline: pg_rewind, or move aside and reclone" },
  // Decisions, taken only from the states listed.
  { from: 'initializing', to: 'bootstrapping', comment: 'won the initialise key: run initdb' },
  { from: 'starting', to: 'bootstrapping', comment: 'agent restarted while it owned an unfinished initialisation' },
  { from: 'starting', to: 'waiting_for_credentials', comment: 'cannot clone without the replication password' },
  { from: 'waiting_for_primary', to: 'waiting_for_credentials', comment: 'primary ready but no replication password here' },
  { from: 'starting', to: 'cloning', comment: 'primary has our slot: clone it' },
  { from: 'waiting_for_primary', to: 'cloning', comment: 'primary has our slot: clone it' },
  { from: 'waiting_for_credentials', to: 'cloning', comment: 'credentials found and the primary has our slot' },
  { from: 'store_unreachable', to: 'cloning', comment: 'store back; primary has our slot' },
  { from: 'rewinding', to: 'cloning', comment: 'pg_rewind failed: data moved aside, cloning afresh' },
  { from: 'needs_operator', to: 'cloning', comment: 'operator reinitialised the member' },
  { from: 'foreign_data', to: 'cloning', comment: 'operator emptied the data directory' },
  { from: 'primary', to: 'demoting', comment: 'switchover: clean shutdown, then hand over the lease' },
  { from: 'store_unreachable', to: 'demoting', comment: 'store back with a switchover request for us' },
  { from: 'rewinding', to: 'needs_operator', comment: 'pg_rewind failed and the policy forbids recloning' },
  { from: 'starting_postgres', to: 'needs_operator', comment: 'pg_rewind failed and the policy forbids recloning' },
  { from: 'starting', to: 'needs_operator', comment: 'restarted agent finds a failed rewind' },
];

export function isAllowedTransition(from: AgentState, to: AgentState): boolean {
  if (from === to) return true;
  return TRANSITIONS.some((t) => t.to === to && (t.from === from || t.from === '*'));
}
