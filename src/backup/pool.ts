/** At most `size` jobs at a time; the first failure is kept and rethrown by `drain`. */
export class JobPool {
  private running = new Set<Promise<void>>();
  private failure: unknown;

  constructor(private readonly size: number) {}

  /** Waits for a free slot, then starts `job` (without waiting for it). */
  async run(job: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.size) await Promise.race(this.running);
    if (this.failure) throw this.failure;
    const promise: Promise<void> = job()
      .catch((error: unknown) => {
        this.failure ??= error;
      })
      .finally(() => this.running.delete(promise));
    this.running.add(promise);
  }

  get failed(): unknown {
    return this.failure;
  }

  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.race(this.running);
    if (this.failure) throw this.failure;
  }
}
