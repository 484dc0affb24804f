import { KeptConnection, type SqlTarget } from '../postgres/sql.js';

/**
 * `relevo switchover` says how long writes paused. The agents cannot tell:
 * the pause a client sees runs from the old primary's last acknowledged
 * commit to the new primary's first, and in synchronous mode that one waits
 * for a standby too. So the CLI measures it as a client would: it commits a
 * transaction that only takes a transaction id (no table, yet a commit record
 * that waits for synchronous standbys like any write) every few milliseconds,
 * and reconnects at once to whichever member takes it.
 */

export interface ProbeAck {
  /** Monotonic ms. */
  at: number;
  member: string;
}

export type PauseMeasure = { measured: true; pauseMs: number; from: string; to: string } | { measured: false; reason: string };

/**
 * The longest wait between two consecutive acknowledged commits, provided
 * the probe saw commits on `from` before and on `to` after: otherwise the
 * window did not cover the hand-over and there is nothing honest to report.
 */
export function longestPause(acks: readonly ProbeAck[], from: string, to: string): PauseMeasure {
  const firstOnNew = acks.findIndex((a) => a.member === to);
  if (firstOnNew < 0) return { measured: false, reason: `no probe commit on ${to} was acknowledged` };
  if (!acks.slice(0, firstOnNew).some((a) => a.member === from)) return { measured: false, reason: `no probe commit on ${from} was acknowledged before the switchover` };
  let pauseMs = 0;
  for (let i = 1; i <= firstOnNew; i++) pauseMs = Math.max(pauseMs, acks[i]!.at - acks[i - 1]!.at);
  return { measured: true, pauseMs, from, to };
}

export interface ProbeTarget {
  member: string;
  target: SqlTarget;
}

export class WriteProbe {
  readonly acks: ProbeAck[] = [];
  private running = true;
  private readonly connections: { member: string; connection: KeptConnection }[];
  private readonly loop: Promise<void>;
  private waiters: (() => void)[] = [];

  constructor(targets: readonly ProbeTarget[], private readonly intervalMs = 20) {
    // No short statement timeout: a cancelled wait for a synchronous standby still reports the commit as done
    // (with a warning), which would count a commit no standby holds as acknowledged.
    this.connections = targets.map((t) => ({ member: t.member, connection: new KeptConnection(() => t.target, 10_000) }));
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    let index = 0;
    while (this.running && this.connections.length > 0) {
      const { member, connection } = this.connections[index]!;
      const ok = await connection.use((c) => c.query('SELECT pg_current_xact_id()')).then(
        () => true,
        () => false,
      );
      if (ok) {
        this.acks.push({ at: performance.now(), member });
        for (const wake of this.waiters.splice(0)) wake();
      } else {
        // A standby refuses to assign a transaction id; a stopped server refuses the connection: try the next member.
        index = (index + 1) % this.connections.length;
      }
      await new Promise((resolve) => setTimeout(resolve, ok ? this.intervalMs : 5));
    }
  }

  /** Resolves once `member` has acknowledged a probe commit, or after timeoutMs. */
  async ackedBy(member: string, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (!this.acks.some((a) => a.member === member)) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    for (const c of this.connections) c.connection.close();
  }
}
