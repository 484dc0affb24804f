/**
 * The agent's named states and the transitions allowed between them.
 * decide() may only move along an edge listed here; any other move is a
 * defect and is reported as such (never silently taken). docs/states.md is
 * generated from this table (`npm run docs`) and checked by a unit test.
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
  'primary',
  'fenced',
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
  { from: '*', to: 'starting_postgres', comment: 'the postmaster runs but does not answer SQL yet' },
  { from: 'starting', to: 'initializing', comment: 'empty store: race to initialise the cluster' },
  { from: 'store_unreachable', to: 'initializing', comment: 'store back and empty' },
  { from: 'initializing', to: 'bootstrapping', comment: 'won the initialise key: run initdb' },
  { from: 'starting', to: 'bootstrapping', comment: 'agent restarted while it owned an unfinished initialisation' },
  { from: 'initializing', to: 'waiting_for_primary', comment: 'another member won the initialisation' },
  { from: 'starting', to: 'waiting_for_primary', comment: 'empty data directory, cluster exists: wait for a primary to clone from' },
  { from: 'store_unreachable', to: 'waiting_for_primary', comment: 'store back; nothing to clone from yet' },
  { from: 'starting', to: 'waiting_for_credentials', comment: 'cannot clone without the replication password' },
  { from: 'waiting_for_credentials', to: 'waiting_for_primary', comment: 'credentials found' },
  { from: 'waiting_for_primary', to: 'waiting_for_credentials', comment: 'primary ready but no replication password here' },
  { from: 'waiting_for_credentials', to: 'cloning', comment: 'credentials found and the primary has our slot' },
  { from: 'starting', to: 'cloning', comment: 'primary has our slot: clone it' },
  { from: 'waiting_for_primary', to: 'cloning', comment: 'primary has our slot: clone it' },
  { from: 'store_unreachable', to: 'cloning', comment: 'store back; primary has our slot' },
  { from: 'cloning', to: 'waiting_for_primary', comment: 'clone failed or primary went away: try again' },
  { from: 'cloning', to: 'replica', comment: 'clone finished and PostgreSQL started as a standby' },
  { from: 'bootstrapping', to: 'primary', comment: 'initdb done; we hold the leader lease' },
  { from: 'bootstrapping', to: 'initializing', comment: 'bootstrap failed and the claim was released' },
  { from: 'starting', to: 'primary', comment: 'adopted a running primary and hold the lease' },
  { from: 'starting', to: 'replica', comment: 'adopted or started a standby' },
  { from: 'starting_postgres', to: 'primary', comment: 'PostgreSQL answers as primary and we hold the lease' },
  { from: 'starting_postgres', to: 'replica', comment: 'PostgreSQL answers as a standby' },
  { from: 'starting_postgres', to: 'fenced', comment: 'PostgreSQL answers as primary but another member holds the lease' },
  { from: 'store_unreachable', to: 'primary', comment: 'store back and our lease is still ours' },
  { from: 'store_unreachable', to: 'replica', comment: 'store back' },
  { from: 'store_unreachable', to: 'fenced', comment: 'store back: another member holds the lease' },
  { from: 'replica', to: 'primary', comment: 'promoted' },
  { from: 'primary', to: 'fenced', comment: 'another member holds the lease: stop to avoid two primaries' },
  { from: 'replica', to: 'fenced', comment: 'this standby was promoted outside relevo while another member leads' },
  { from: 'starting', to: 'fenced', comment: 'found a primary while another member holds the lease' },
  { from: 'fenced', to: 'replica', comment: 'restarted as a standby of the leader' },
  { from: 'foreign_data', to: 'starting', comment: 'operator fixed the data directory; agent restarted' },
];

export function isAllowedTransition(from: AgentState, to: AgentState): boolean {
  if (from === to) return true;
  return TRANSITIONS.some((t) => t.to === to && (t.from === from || t.from === '*'));
}
