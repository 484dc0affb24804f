import type { AgentState } from './states.js';

/**
 * How an operator should read each agent state at a glance. `relevo list`
 * (on a terminal) and the dashboard colour states from this one table.
 */
export type StateTone = 'healthy' | 'working' | 'waiting' | 'failed';

export const STATE_TONES: Record<AgentState, StateTone> = {
  primary: 'healthy',
  replica: 'healthy',
  starting: 'working',
  initializing: 'working',
  bootstrapping: 'working',
  restarting_postgres: 'working',
  reinitializing: 'working',
  cloning: 'working',
  restarting_primary: 'working',
  releasing_lease: 'working',
  starting_replica: 'working',
  rewinding: 'working',
  recloning: 'working',
  acquiring_lease: 'working',
  stopping_to_rewind: 'working',
  detaching_upstream: 'working',
  electing: 'working',
  promoting: 'working',
  resuming_promotion: 'working',
  draining: 'working',
  demoting: 'working',
  cloning_source: 'working',
  standby_leader: 'healthy',
  demoting_to_standby: 'working',
  store_unreachable: 'waiting',
  primary_store_unreachable: 'waiting',
  paused: 'waiting',
  waiting_for_initializer: 'waiting',
  operator_request_refused: 'waiting',
  waiting_to_clone: 'waiting',
  waiting_for_credentials: 'waiting',
  waiting_for_postgres: 'waiting',
  waiting_for_primary: 'waiting',
  fencing_store_lost: 'failed',
  foreign_data: 'failed',
  rewind_failed: 'failed',
  needs_operator: 'failed',
  fencing_split_brain: 'failed',
  fencing_old_timeline: 'failed',
};

/** Terminal (ANSI SGR) and web (CSS) colour of each tone. */
export const TONE_COLOURS: Record<StateTone, { ansi: number; css: string }> = {
  healthy: { ansi: 32, css: '#1f9d55' },
  working: { ansi: 36, css: '#1c7fb6' },
  waiting: { ansi: 33, css: '#c58a00' },
  failed: { ansi: 31, css: '#d0342c' },
};

export function toneOf(state: string): StateTone {
  return STATE_TONES[state as AgentState] ?? 'waiting';
}
