/**
 * npm run sim -- --seeds N --steps M [--from S]       explore N seeded schedules of M fault steps each
 * npm run sim -- --seed S --steps M [--faults i,j] [--trace]   replay one schedule (optionally a subset of its faults)
 * --variant quorum|failsafe|sync-loss: synchronousMode quorum (ANY k), store failsafe on, or (sync-loss) the synchronous
 *   standby lost in `on` mode and the primary's node killed right after the sync record changes (test/sim/sim.ts makeSchedule);
 *   quorum-loss: the same in quorum mode (half the seeds switch from `on` to quorum near the loss), killed after the quorum record changes
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { explore } from './explore.js';
import { makeSchedule, runSchedule, type ScheduleVariant } from './sim.js';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '1000' },
    steps: { type: 'string', default: '600' },
    from: { type: 'string', default: '1' },
    seed: { type: 'string' },
    faults: { type: 'string' },
    trace: { type: 'boolean', default: false },
    edges: { type: 'string' },
    variant: { type: 'string', default: 'default' },
  },
});
const steps = Number(values.steps);
const variant = values.variant as ScheduleVariant;
if (!['default', 'quorum', 'failsafe', 'sync-loss', 'quorum-loss'].includes(variant)) throw new Error('--variant: default, quorum, failsafe, sync-loss or quorum-loss');

if (values.seed !== undefined) {
  const full = makeSchedule(Number(values.seed), steps, variant);
  const keep = values.faults === undefined ? undefined : values.faults === 'none' ? [] : values.faults.split(',').map(Number);
  const schedule = keep ? { ...full, faults: full.faults.filter((_, i) => keep.includes(i)) } : full;
  const run = runSchedule(schedule, { traceAll: values.trace });
  if (values.trace) for (const line of run.trace) console.log(line);
  console.log(run.violation ? `VIOLATION (${run.violation.kind}) at step ${run.violation.step}: ${run.violation.message}` : `seed ${schedule.seed}: ${run.steps} steps, no violation`);
  process.exit(run.violation ? 1 : 0);
}

const started = Date.now();
const result = explore(Number(values.from), Number(values.seeds), steps, variant);
const seconds = (Date.now() - started) / 1000;
console.log(
  `schedules ${result.schedules}, steps ${result.steps} (${(result.steps / 10 / 3600).toFixed(1)} simulated hours), ` +
    `acknowledged commits ${result.acknowledged}, promotions ${result.failovers}, distinct edges ${result.edges.size}, ${seconds.toFixed(1)} s; ` +
    `known-limitation windows (asynchronous mode, former primary's agent down) ${result.agentDownWindows}, ` +
    `writes taken but never acknowledged by unreconciled former primaries ${result.unacknowledgedFormerWrites}` +
    (variant === 'failsafe' ? `, failsafe rounds holding a primary without the store ${result.failsafeRounds}` : ''),
);
if (values.edges) writeFileSync(values.edges, [...result.edges].sort().join('\n') + '\n');
if (result.failure) {
  console.log(result.failure.report);
  process.exit(1);
}
console.log('violations: 0');
