import type { ClusterRead } from '../cluster/view.js';
import type { CycleObserver, CycleReport } from './cycle-report.js';

/**
 * The cluster as this agent last read it, for pages that would otherwise read
 * the store again on every request (the dashboard polls every second): fresh
 * enough while younger than `maxAgeMs`, else the caller reads the store.
 */
export class LatestRead implements CycleObserver {
  private latest: { read: ClusterRead; at: number } | undefined;

  constructor(private readonly maxAgeMs = 2_000) {}

  onCycle({ observation, others }: CycleReport): void {
    if (!observation.store.reachable) return;
    this.latest = { read: { view: observation.store, settings: observation.settings, ...(others ? { others } : {}) }, at: performance.now() };
  }

  get(): ClusterRead | undefined {
    return this.latest && performance.now() - this.latest.at < this.maxAgeMs ? this.latest.read : undefined;
  }
}
