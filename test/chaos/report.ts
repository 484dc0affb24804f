/**
 * The verdict of a chaos run as Markdown tables and JSON: faults by kind,
 * acknowledged and lost writes per mode and writer, overlapping primaries,
 * unavailability and convergence per fault kind, violations.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FAULT_TEXT, type FaultKind } from './faults.js';
import type { RunResult } from './run.js';

const WRITERS = ['multi-host', 'router'] as const;

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** synchronousMode the run's sync mode used (runs before the option existed used `on`). */
export function synchronousOf(run: Pick<RunResult, 'options'>): 'on' | 'quorum' {
  return run.options.synchronous ?? 'on';
}

/** `sync` is named for what it ran as: `sync (on)` or `sync (quorum)`. */
export function modeLabel(run: Pick<RunResult, 'options'>, mode: 'sync' | 'async'): string {
  return mode === 'sync' ? `sync (${synchronousOf(run)})` : mode;
}

const seconds = (ms: number | null) => (ms === null ? '–' : (ms / 1000).toFixed(1));

export function verdictMarkdown(run: RunResult, note: string): string {
  const { check } = run;
  const lines: string[] = [];
  const durationMin = ((run.endedAt - run.startedAt) / 60_000).toFixed(1);
  lines.push(`# Chaos run, seed ${run.options.seed}, mode ${run.options.mode}${run.options.mode === 'both' && (run.options.modeEvery ?? 1) > 1 ? ` (switching every ${run.options.modeEvery} faults)` : ''}, synchronousMode ${synchronousOf(run)}, failsafe ${run.options.failsafe ? 'on' : 'off'}`);
  lines.push('');
  lines.push(
    `${run.faults.length} faults in ${durationMin} min, ${run.options.hosts ?? 3} hosts, started ${new Date(run.startedAt).toISOString()}. Sync mode runs as synchronousMode ${synchronousOf(run)}${synchronousOf(run) === 'quorum' ? ' (ANY 1 of the streaming standbys)' : ' (FIRST 1)'}, synchronousCount 1; store failsafe ${run.options.failsafe ? 'on' : 'off'}. ${note}`,
  );
  if (run.aborted) lines.push(`\n**Run ended early:** ${run.aborted}`);
  if (run.readBack && !run.readBack.converged) lines.push(`\n**Lost commits read back without convergence:** ${run.readBack.how}. A commit missing there is counted as lost.`);
  else if (!run.readBack) lines.push('\n**Lost commits not verified:** no member answered for the read-back (see the violations).');
  lines.push('');
  lines.push('## Writes');
  lines.push('');
  lines.push('| mode | writer | acknowledged | lost |');
  lines.push('|---|---|---:|---:|');
  for (const mode of ['sync', 'async'] as const) {
    for (const w of WRITERS) {
      const t = check.totals[mode][w];
      if (t) lines.push(`| ${modeLabel(run, mode)} | ${w === 'router' ? 'through the router' : 'multi-host, no router'} | ${t.acked} | ${t.lost} |`);
    }
  }
  lines.push('');
  lines.push(`Overlapping primaries (commits acknowledged by a member after another member had acknowledged on the same or a later timeline): **${check.overlapping}**. Reads through the read-only listener: ${check.reads} (${run.readFailures} failed to connect or were cut), stale past the lag limit: **${check.staleReads}**.`);
  lines.push('');
  lines.push('## Per fault kind');
  lines.push('');
  lines.push('| fault | n (sync/async) | lost sync (mh/router) | lost async (mh/router) | overlapping acks | unavailable median / worst, s (mh) | same (router) | convergence median / worst, s |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|');
  const kinds = [...new Set(check.perFault.map((f) => f.kind))].sort();
  for (const kind of kinds) {
    const list = check.perFault.filter((f) => f.kind === kind);
    const n = (mode: string) => list.filter((f) => f.mode === mode).length;
    const lost = (mode: string, w: string) => list.filter((f) => f.mode === mode).reduce((sum, f) => sum + (f.writers[w]?.lost ?? 0), 0);
    const overlapping = list.reduce((sum, f) => sum + WRITERS.reduce((s, w) => s + (f.writers[w]?.overlapping ?? 0), 0), 0);
    const unavailable = (w: string) => list.map((f) => f.writers[w]?.unavailableMs).filter((x): x is number => typeof x === 'number');
    const converge = list.map((f) => f.convergeMs).filter((x): x is number => x !== null);
    const failed = list.length - converge.length;
    const u = (w: string) => `${seconds(median(unavailable(w)))} / ${seconds(unavailable(w).length ? Math.max(...unavailable(w)) : null)}`;
    lines.push(
      `| ${kind} | ${n('sync')}/${n('async')} | ${lost('sync', 'multi-host')}/${lost('sync', 'router')} | ${lost('async', 'multi-host')}/${lost('async', 'router')} | ${overlapping} | ${u('multi-host')} | ${u('router')} | ${seconds(median(converge))} / ${seconds(converge.length ? Math.max(...converge) : null)}${failed ? ` (${failed} never)` : ''} |`,
    );
  }
  lines.push('');
  lines.push('Unavailability: the longest stretch without an acknowledged commit for that writer from the fault to convergence. Convergence: from the heal to one primary, every other member streaming, etcd healthy and the router routing to that primary.');
  lines.push('');
  lines.push('## Violations');
  lines.push('');
  if (check.violations.length === 0) lines.push('None.');
  for (const v of check.violations) lines.push(`- **${v.rule}**${v.fault !== null ? ` (fault ${v.fault}: ${run.faults[v.fault]?.kind}, ${run.faults[v.fault]?.mode})` : ''}: ${v.detail}`);
  if (check.knownIssues.length > 0) {
    lines.push('');
    lines.push('## Known issues (reported, not counted: async mode before the fence)');
    lines.push('');
    for (const v of check.knownIssues) lines.push(`- **${v.rule}**${v.fault !== null ? ` (fault ${v.fault}: ${run.faults[v.fault]?.kind})` : ''}: ${v.detail}`);
  }
  lines.push('');
  lines.push('## Faults');
  lines.push('');
  lines.push('| # | fault | mode | target | detail | primary before → after | converged after heal, s | lost mh / router (time they span) |');
  lines.push('|---:|---|---|---|---|---|---:|---:|');
  for (const f of run.faults) {
    const v = check.perFault[f.index]!;
    lines.push(
      `| ${f.index} | ${f.kind} | ${modeLabel(run, f.mode)} | ${f.target} | ${f.detail.replace(/\|/g, '/')}${f.error ? ` — ${f.error.replace(/\|/g, '/').slice(0, 160)}` : ''} | ${f.primaryBefore} → ${f.primaryAfter ?? '?'} | ${seconds(v.convergeMs)} | ${WRITERS.map((w) => `${v.writers[w]?.lost ?? 0}${v.writers[w]?.lostSpanMs !== undefined ? ` (${seconds(v.writers[w]!.lostSpanMs!)} s)` : ''}`).join(' / ')} |`,
    );
  }
  lines.push('');
  lines.push('Fault kinds:');
  for (const kind of kinds) lines.push(`- ${kind}: ${FAULT_TEXT[kind as FaultKind] ?? kind}`);
  return `${lines.join('\n')}\n`;
}

/** Writes bench/results/chaos-<time>.md and .json; returns the Markdown path. */
export function writeVerdict(run: RunResult, note: string, dir = 'bench/results'): string {
  mkdirSync(dir, { recursive: true });
  const stamp = new Date(run.startedAt).toISOString().replace(/:/g, '-').replace(/\..*/, '');
  const base = join(dir, `chaos-${stamp}`);
  writeFileSync(`${base}.md`, verdictMarkdown(run, note));
  const json = { ...run, check: run.check, note };
  writeFileSync(`${base}.json`, `${JSON.stringify(json, null, 2)}\n`);
  return `${base}.md`;
}
