/**
 * npm run chaos -- [--seed N] [--duration 5m] [--faults N] [--mode sync|async|both] [--mode-every N] [--sync on|quorum] [--failsafe on|off]
 *                   [--hosts 3] [--kinds a,b | --sequence a,b] [--hold 5s-12s] [--note text]
 *   --mode-every: with --mode both, switch modes every N faults (default 1).
 *   --sync: what sync mode runs as: synchronousMode on (FIRST 1) or quorum (ANY 1); default on.
 *   --failsafe: the store failsafe setting for the whole run; default off.
 *   --sequence: exactly these faults in this order (the seed still draws targets and holds).
 * npm run chaos:long   (35 minutes, faults held 1-4 s, both modes switching every 4 faults, every fault kind)
 *
 * Prints the verdict table and writes bench/results/chaos-<time>.md and .json.
 * Exits 1 when the checker found a violation, 2 when the lab cannot run here.
 */
import { FAULT_KINDS, type FaultKind } from './faults.js';
import { labUnavailable, type Synchronous } from './lab.js';
import { verdictMarkdown, writeVerdict } from './report.js';
import { runChaos } from './run.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function duration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!match) throw new Error(`--duration ${text}: expected e.g. 90s, 5m, 1h`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[(match[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Number(match[1]) * unit;
}

const unavailable = labUnavailable();
if (unavailable) {
  console.error(`chaos: cannot run here: ${unavailable}`);
  process.exit(2);
}
const mode = (arg('mode') ?? 'both') as 'sync' | 'async' | 'both';
if (!['sync', 'async', 'both'].includes(mode)) throw new Error(`--mode ${mode}: expected sync, async or both`);
const synchronous = (arg('sync') ?? 'on') as Synchronous;
if (!['on', 'quorum'].includes(synchronous)) throw new Error(`--sync ${synchronous}: expected on or quorum`);
const failsafe = arg('failsafe') ?? 'off';
if (!['on', 'off'].includes(failsafe)) throw new Error(`--failsafe ${failsafe}: expected on or off`);
const kinds = arg('kinds')?.split(',') as FaultKind[] | undefined;
const sequence = arg('sequence')?.split(',') as FaultKind[] | undefined;
for (const k of [...(kinds ?? []), ...(sequence ?? [])]) if (!FAULT_KINDS.includes(k)) throw new Error(`--kinds/--sequence: unknown fault ${k}; known: ${FAULT_KINDS.join(', ')}`);
const seed = Number(arg('seed') ?? Date.now() % 1_000_000);
const maxFaults = arg('faults');
const run = await runChaos({
  seed,
  durationMs: duration(arg('duration') ?? '5m'),
  ...(maxFaults ? { maxFaults: Number(maxFaults) } : {}),
  mode,
  ...(arg('mode-every') ? { modeEvery: Number(arg('mode-every')) } : {}),
  synchronous,
  failsafe: failsafe === 'on',
  hosts: Number(arg('hosts') ?? 3),
  ...(kinds ? { kinds } : {}),
  ...(sequence ? { sequence } : {}),
  ...(arg('hold') ? { holdMs: arg('hold')!.split('-').map(duration) as [number, number] } : {}),
  tolerateAsyncOverlap: false,
});
const note = arg('note') ?? '';
const file = writeVerdict(run, note);
console.log(verdictMarkdown(run, note));
console.log(`verdict written to ${file} (and .json)`);
process.exit(run.check.violations.length > 0 || run.aborted ? 1 : 0);
