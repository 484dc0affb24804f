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
  cloning: 'working',
  starting_postgres: 'working',
  promoting: 'working',
  demoting: 'working',
  rewinding: 'working',
  waiting_for_primary: 'waiting',
  waiting_for_credentials: 'waiting',
  store_unreachable: 'waiting',
  fenced: 'failed',
  needs_operator: 'failed',
  foreign_data: 'failed',
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
