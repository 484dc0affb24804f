/**
 * Opt-in (RELEVO_CYCLE_CPU=1): CPU time of each phase of the agent's cycle,
 * summed over 30 cycles and logged, to find where an idle agent's CPU goes
 * (bench/agent-rest). process.cpuUsage() counts the whole process, so work that
 * runs beside a phase (API requests, timers) is counted in it too.
 */
const ENABLED = process.env.RELEVO_CYCLE_CPU === '1';
const REPORT_EVERY = 30;

export class CycleCpu {
  private readonly totals = new Map<string, number>();
  private last = ENABLED ? process.cpuUsage() : undefined;
  private lastAt = performance.now();
  private cycles = 0;
  private windowStart = ENABLED ? process.cpuUsage() : undefined;
  private windowAt = performance.now();

  constructor(private readonly report: (fields: Record<string, number>, line: string) => void) {}

  /** Starts timing a cycle: CPU since the last phase mark counts as 'between'. */
  begin(): void {
    this.mark('between');
  }

  mark(phase: string): void {
    if (!ENABLED) return;
    const now = process.cpuUsage();
    const us = now.user - this.last!.user + (now.system - this.last!.system);
    this.last = now;
    this.totals.set(phase, (this.totals.get(phase) ?? 0) + us);
  }

  end(): void {
    if (!ENABLED) return;
    this.mark('upkeep');
    if (++this.cycles < REPORT_EVERY) return;
    const now = process.cpuUsage();
    const wallMs = performance.now() - this.windowAt;
    const totalUs = now.user - this.windowStart!.user + (now.system - this.windowStart!.system);
    const fields: Record<string, number> = { cycles: this.cycles, wallMs: Math.round(wallMs), cpuMsPerCycle: +(totalUs / 1000 / this.cycles).toFixed(2), cpuPercent: +((totalUs / 1000 / wallMs) * 100).toFixed(3) };
    for (const [phase, us] of this.totals) fields[`ms_${phase}`] = +(us / 1000 / this.cycles).toFixed(3);
    this.report(fields, `cycle CPU over ${this.cycles} cycles`);
    this.totals.clear();
    this.cycles = 0;
    this.windowStart = now;
    this.windowAt = performance.now();
  }
}
