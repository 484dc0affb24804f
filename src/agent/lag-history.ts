import type { CycleObserver, CycleReport } from './cycle-report.js';

/** One point per round at most every `stepMs`: every member's published lag in bytes (null = unknown). */
export interface LagSample {
  at: number;
  lag: Record<string, number | null>;
}

/**
 * The last minutes of every member's lag as this agent read it from the store,
 * for the dashboard's charts (an agent that just started has a short history).
 */
export class LagHistory implements CycleObserver {
  private readonly samples: LagSample[] = [];

  constructor(
    private readonly keepMs = 10 * 60_000,
    private readonly stepMs = 1_000,
  ) {}

  onCycle({ observation }: CycleReport): void {
    if (!observation.store.reachable) return;
    const last = this.samples.at(-1);
    if (last && observation.now - last.at < this.stepMs) return;
    this.samples.push({ at: observation.now, lag: Object.fromEntries(observation.store.members.map((m) => [m.name, m.lagBytes])) });
    while (this.samples.length > 0 && observation.now - this.samples[0]!.at > this.keepMs) this.samples.shift();
  }

  recent(): LagSample[] {
    return this.samples.slice();
  }
}
