/**
 * settings.autoRestart: the leader rolls restart-requiring changes out by
 * itself. Whether a roll is due is decided purely (autoRollDue); the roll is
 * the same as `relevo restart --pending` (src/cluster/rolling-restart.ts),
 * driving the agents' restart over their API and relevo's own switchover. Once
 * the switchover moved the primary, this agent is no longer the leader but
 * finishes the roll it started (its own restart comes last, through its API).
 * A roll that stops waits FAILED_BACKOFF_MS before the next attempt.
 */
import type { Logger } from 'pino';
import type { ClusterKeys } from '../cluster/keys.js';
import { requestSwitchover } from '../cluster/operations.js';
import { autoRollDue, rollingRestart, type RollDriver } from '../cluster/rolling-restart.js';
import type { ClusterSettings } from '../cluster/settings.js';
import { readCluster } from '../cluster/view.js';
import type { Store } from '../store/store.js';
import { apiCall, peerRequest, type PeerAccess } from '../tls/client.js';

/** How often each agent checks whether an automatic roll is due (exported for the test that waits out a check). */
export const TICK_MS = 10_000;
const FAILED_BACKOFF_MS = 10 * 60_000;
const SWITCHOVER_TIMEOUT_MS = 60_000;

export interface AutoRollOptions {
  name: string;
  store: Store;
  keys: ClusterKeys;
  log: Logger;
  settings(): ClusterSettings;
  access(): PeerAccess;
}

export function startAutoRoll(options: AutoRollOptions): () => void {
  const { store, keys, log } = options;
  let stopped = false;
  let busy = false;
  let lastFailure = -Infinity;
  let lastReason = '';
  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
  const driver: RollDriver = {
    read: () => readCluster(store, keys),
    restart: async (member) => {
      const { view } = await readCluster(store, keys);
      const target = view.reachable ? view.members.find((m) => m.name === member) : undefined;
      if (!target) throw new Error(`member ${member} is not in the store`);
      const response = await apiCall(`${target.apiUrl}/restart`, { method: 'POST', timeoutMs: 5_000, ...peerRequest(options.access()) });
      if (response.status !== 202) throw new Error(`agent of ${member} refused the restart: HTTP ${response.status} ${response.body.slice(0, 200)}`);
    },
    switchover: async (to) => {
      await requestSwitchover(store, keys, { to });
      const deadline = Date.now() + SWITCHOVER_TIMEOUT_MS;
      while (Date.now() < deadline) {
        const { view } = await readCluster(store, keys);
        if (view.reachable && view.leader?.member === to && !view.failover) return;
        await sleep(200);
      }
      throw new Error(`switchover to ${to} not finished after ${SWITCHOVER_TIMEOUT_MS / 1000} s`);
    },
    report: (line) => log.info({ autoRestart: true }, line),
    sleep,
    now: Date.now,
  };
  const tick = async () => {
    if (busy || stopped || Date.now() - lastFailure < FAILED_BACKOFF_MS || !options.settings().autoRestart.pending) return;
    const { view, settings } = await readCluster(store, keys);
    const verdict = autoRollDue(view, settings, options.name, Date.now());
    if (!verdict.due) {
      // Said once per change, not every tick.
      if (verdict.reason !== lastReason && view.reachable && view.leader?.member === options.name) log.debug({ autoRestart: true }, verdict.reason);
      lastReason = verdict.reason;
      return;
    }
    busy = true;
    log.info({ autoRestart: true }, verdict.reason);
    try {
      const result = await rollingRestart(driver, { mode: 'pending' });
      log.info({ autoRestart: true, restarted: result.restarted }, `automatic rolling restart done: ${result.restarted.join(', ')} restarted`);
    } catch (error) {
      lastFailure = Date.now();
      log.error({ autoRestart: true, code: 'ROLL_STOPPED', err: (error as Error).message }, `automatic rolling restart stopped: ${(error as Error).message}; next attempt in ${FAILED_BACKOFF_MS / 60_000} min`);
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void tick().catch((error: Error) => log.warn({ err: error.message }, 'automatic rolling restart check failed')), TICK_MS);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
