import { faultIndices, makeSchedule, minimise, runSchedule, type Schedule, type ScheduleVariant, type Violation } from './sim.js';

export interface Exploration {
  schedules: number;
  steps: number;
  acknowledged: number;
  failovers: number;
  agentDownWindows: number;
  unacknowledgedFormerWrites: number;
  failsafeRounds: number;
  edges: Set<string>;
  failure?: { schedule: Schedule; violation: Violation; report: string };
}

/** Runs seeds first..first+count-1; stops at the first violation and reports it shrunk, with the command that replays it. */
export function explore(first: number, count: number, faultSteps: number, variant: ScheduleVariant = 'default'): Exploration {
  const result: Exploration = { schedules: 0, steps: 0, acknowledged: 0, failovers: 0, agentDownWindows: 0, unacknowledgedFormerWrites: 0, failsafeRounds: 0, edges: new Set() };
  for (let seed = first; seed < first + count; seed++) {
    const schedule = makeSchedule(seed, faultSteps, variant);
    const run = runSchedule(schedule);
    result.schedules++;
    result.steps += run.steps;
    result.acknowledged += run.acknowledged;
    result.failovers += run.failovers;
    result.agentDownWindows += run.agentDownWindows;
    result.unacknowledgedFormerWrites += run.unacknowledgedFormerWrites;
    result.failsafeRounds += run.failsafeRounds;
    for (const e of run.edges) result.edges.add(e);
    if (run.violation) {
      const shrunk = minimise(schedule, run.violation.kind);
      const replay = runSchedule(shrunk);
      const violation = replay.violation ?? run.violation;
      const report = [
        `VIOLATION (${violation.kind}) at step ${violation.step}, seed ${seed}: ${violation.message}`,
        `settings: synchronousMode=${schedule.settings.synchronousMode} count=${schedule.settings.synchronousCount} failsafe=${schedule.settings.failsafe} strict=${schedule.settings.synchronousStrict} ttlMs=${schedule.settings.ttlMs} members=${schedule.members.join(',')}`,
        `faults kept (of ${schedule.faults.length}): ${shrunk.faults.map((f) => `${f.kind}(${f.member}${f.to !== undefined ? `->${f.to ?? 'any'}` : ''}, step ${f.at}, ${f.ms} ms)`).join('; ') || 'none'}`,
        'trace (last 60 lines):',
        ...replay.trace.slice(-60).map((l) => `  ${l}`),
        `replay: npm run sim -- --seed ${seed} --steps ${faultSteps}${variant === 'default' ? '' : ` --variant ${variant}`} --faults ${faultIndices(schedule, shrunk).join(',') || 'none'} --trace`,
      ].join('\n');
      result.failure = { schedule: shrunk, violation, report };
      return result;
    }
  }
  return result;
}

/** The bounded run of the default suite (test/unit/sim.test.ts) and of docs/state-edges.txt. */
export const BOUNDED = { first: 1, schedules: 2000, faultSteps: 300 } as const;

export function renderEdges(edges: Set<string>): string {
  return [
    '# Edges of the agent state machine taken by the bounded seeded simulation (test/unit/sim.test.ts):',
    '# `from -> to [actions]`, one line per distinct edge and action set. Regenerate with `npm run docs`.',
    ...[...edges].sort(),
    '',
  ].join('\n');
}
