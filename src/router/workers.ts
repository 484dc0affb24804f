/**
 * Several router processes sharing the same listening sockets (node:cluster,
 * each worker accepting on its own: SCHED_NONE). Why: one Node process is one
 * thread; on a busy machine the scheduler gives it one thread's share, and
 * every session it relays waits while it is preempted (docs/router.md,
 * Performance). Each worker is a complete router following the store on its
 * own, as several routers already may; the supervisor only forks, restarts
 * and stops them.
 */
import cluster, { type Worker } from 'node:cluster';
import type { RouterLogger } from './options.js';

const ENV = 'RELEVO_ROUTER_WORKER';

/** 0 in a process that is not a router worker, else the worker's number (1..n). */
export function workerIndex(): number {
  return cluster.isWorker ? Number(process.env[ENV] ?? 1) : 0;
}

/** Settings for worker `index`: its own status key, and only worker 1 serves metrics (a port is not shared twice). */
export function workerSettings<T extends { name: string; metrics?: string | null }>(settings: T, index: number): T {
  if (index === 0) return settings;
  return { ...settings, name: `${settings.name}-${index}`, metrics: index === 1 ? settings.metrics : null };
}

/** Tells the supervisor this worker listens. */
export function reportReady(addresses: unknown): void {
  process.send?.({ relevoRouterReady: true, addresses });
}

export interface Supervisor {
  /** Addresses worker 1 reported. */
  addresses: unknown;
  stop(): Promise<void>;
}

/** Forks `count` workers running this same program, restarts any that dies, resolves once all listen. */
export async function superviseWorkers(count: number, log: RouterLogger): Promise<Supervisor> {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  let stopping = false;
  const workers = new Map<number, Worker>();
  let addresses: unknown;
  const fork = (index: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const w = cluster.fork({ [ENV]: String(index) });
      workers.set(index, w);
      w.on('message', (m: { relevoRouterReady?: boolean; addresses?: unknown }) => {
        if (!m?.relevoRouterReady) return;
        if (index === 1) addresses = m.addresses;
        resolve();
      });
      w.once('exit', (code, signal) => {
        if (stopping) return;
        reject(new Error(`router worker ${index} exited (${signal ?? code}) before listening`));
        log.error({ worker: index, code, signal }, 'router worker exited; starting another');
        setTimeout(() => void fork(index).catch((e: Error) => log.error({ worker: index, err: e.message }, 'router worker failed')), 1_000).unref();
      });
    });
  await Promise.all(Array.from({ length: count }, (_, i) => fork(i + 1)));
  return {
    addresses,
    async stop() {
      stopping = true;
      await Promise.all(
        [...workers.values()].map(
          (w) =>
            new Promise<void>((resolve) => {
              if (w.isDead()) return resolve();
              w.once('exit', () => resolve());
              w.process.kill('SIGTERM');
              setTimeout(() => w.process.kill('SIGKILL'), 10_000).unref();
            }),
        ),
      );
    },
  };
}
