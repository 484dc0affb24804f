import type { Logger } from 'pino';
import { appendEvents, type ClusterEvent } from '../cluster/events.js';
import type { Store } from '../store/store.js';
import { ranActions, type CycleObserver, type CycleReport } from './cycle-report.js';

/** Actions an agent repeats every round while nothing changes: not news on their own. */
const ROUTINE = new Set(['configure', 'writeOptime', 'fenceFormerPrimary']);
/** Events kept while the store cannot be written; the oldest are dropped first. */
const QUEUE_LIMIT = 200;

/**
 * Publishes a round to the event log when it changed the state, ran an action
 * that is not routine, or had an action fail. Writes happen in the background,
 * one at a time, and never hold up the HA loop; unwritten events wait for the
 * next round (the store may be back).
 */
export class EventPublisher implements CycleObserver {
  private queue: ClusterEvent[] = [];
  private writing = false;
  private seq = 0;
  private lastFenceTarget: string | undefined;

  constructor(
    private readonly store: Store,
    private readonly key: string,
    private readonly member: string,
    private readonly log: Logger,
  ) {}

  onCycle(report: CycleReport): void {
    const event = this.eventOf(report);
    if (event) {
      this.queue.push(event);
      if (this.queue.length > QUEUE_LIMIT) this.queue.splice(0, this.queue.length - QUEUE_LIMIT);
    }
    void this.flush();
  }

  eventOf(report: CycleReport): ClusterEvent | undefined {
    const { decision, outcomes, from } = report;
    const ran = ranActions(report);
    const failed = outcomes.find((o) => o.result !== 'ok');
    const fence = ran.find((r) => r.outcome.result === 'ok' && r.action.type === 'fenceFormerPrimary')?.action;
    const newFence = fence?.type === 'fenceFormerPrimary' && fence.member !== this.lastFenceTarget;
    if (fence?.type === 'fenceFormerPrimary') this.lastFenceTarget = fence.member;
    const notable = outcomes.some((o) => o.result === 'ok' && !ROUTINE.has(o.type));
    if (decision.state === from && !failed && !notable && !newFence) return undefined;
    const at = new Date(report.observation.now).toISOString();
    return {
      id: `${at}/${this.member}/${++this.seq}`,
      at,
      member: this.member,
      from,
      to: decision.state,
      actions: outcomes.map((o) => o.type),
      reason: decision.reason,
      outcome: failed ? `${failed.result === 'lost_cas' ? 'lost compare-and-swap' : 'failed'}: ${failed.type}: ${failed.error}` : 'ok',
    };
  }

  /** Writes what is queued; resolves when done or failed (then the events stay queued). */
  async flush(): Promise<void> {
    if (this.writing || this.queue.length === 0) return;
    this.writing = true;
    const batch = this.queue.slice();
    try {
      await appendEvents(this.store, this.key, batch);
      const written = new Set(batch.map((e) => e.id));
      this.queue = this.queue.filter((e) => !written.has(e.id));
    } catch (error) {
      this.log.warn({ err: (error as Error).message, pending: this.queue.length }, 'could not write the event log; keeping the events for the next round');
    } finally {
      this.writing = false;
    }
  }
}
