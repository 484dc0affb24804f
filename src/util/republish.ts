/**
 * Rewrites an unchanged store record only once it is `refreshMs` old: every
 * write wakes every agent's and router's watch, the larger part of an idle
 * cluster's CPU. A write is counted once it succeeded, so a failed one is
 * retried at the next chance.
 */
export class RepublishGate {
  private last = { fingerprint: '', at: -Infinity };

  constructor(private readonly refreshMs: number) {}

  /** Whether a record with this content must be written now. */
  due(fingerprint: string): boolean {
    return fingerprint !== this.last.fingerprint || performance.now() - this.last.at >= this.refreshMs;
  }

  written(fingerprint: string): void {
    this.last = { fingerprint, at: performance.now() };
  }
}
