import type { MemberStatus } from '../cluster/types.js';
import type { KeyValue } from '../store/store.js';
import type { Action } from './actions.js';
import type { Decision } from './decide.js';
import type { ActionOutcome } from './outcome.js';
import type { Observation } from './observation.js';
import type { AgentState } from './states.js';

/**
 * What one observe-decide-act round did, handed to observers (metrics, the
 * event log, the dashboard's lag history) after the agent published. Observers
 * must return at once and never throw: the HA loop does not wait for them.
 */
export interface CycleReport {
  /** The latest observation (taken again after state-changing actions). */
  observation: Observation;
  decision: Decision;
  /** The state before this decision. */
  from: AgentState;
  /** Outcomes of the actions run, in order (stops at the first failure). */
  outcomes: ActionOutcome[];
  status: MemberStatus | undefined;
  /** Wall time of the round, ms. */
  durationMs: number;
  /** The cluster subtree's keys that are no cluster record (routers, certificate rotation…), from the same read as the observation's. */
  others?: ReadonlyMap<string, KeyValue>;
}

export interface CycleObserver {
  onCycle(report: CycleReport): void;
}

/** Each outcome beside the action it reports on: outcomes follow the decision's actions in order, and stop at the first failure. */
export function ranActions(report: CycleReport): { outcome: ActionOutcome; action: Action }[] {
  // An outcome without its action (none should remain: the agent keeps out-of-cycle outcomes apart) is left out, not a crash.
  return report.outcomes.flatMap((outcome, i) => {
    const action = report.decision.actions[i];
    return action !== undefined && action.type === outcome.type ? [{ outcome, action }] : [];
  });
}
