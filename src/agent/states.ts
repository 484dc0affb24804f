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
  { from: '*', to: 'demoting', comment: 'we run the primary and hold the lease, and a switchover away from us is due: clean shutdown, then hand over' },
  { from: '*', to: 'rewinding', comment: "our data diverged from the leader's timeline: pg_rewind, or move aside and reclone" },
  // Decisions, taken only from the states listed.
  { from: 'initializing', to: 'bootstrapping', comment: 'won the initialise key: run initdb' },
  { from: 'starting', to: 'bootstrapping', comment: 'agent restarted while it owned an unfinished initialisation' },
  { from: '*', to: 'cloning', comment: 'the data directory is empty and the primary has our slot: clone it' },
  { from: '*', to: 'waiting_for_credentials', comment: 'empty data directory and no replication password here' },
  { from: 'store_unreachable', to: 'bootstrapping', comment: 'store back; our unfinished initialisation continues' },
  { from: '*', to: 'needs_operator', comment: 'pg_rewind failed and rewindFallback=none: waiting for `relevo reinit`' },
];

export function isAllowedTransition(from: AgentState, to: AgentState): boolean {
  if (from === to) return true;
  return TRANSITIONS.some((t) => t.to === to && (t.from === from || t.from === '*'));
}
