/**
 * The fencer: one small process per member, apart from the agent (its own
 * session and process group, re-parented away from the agent), so that
 * whatever freezes the agent — SIGSTOP of its process or process group, a
 * hung event loop — does not freeze it. It reads the deadline the agent
 * feeds after each lease renewal; once the deadline passes while armed, it
 * stops PostgreSQL's whole process tree by PID (found through
 * postmaster.pid and /proc), with no connection, no pg_ctl and no help from
 * the postmaster. It does nothing else.
 */
import { existsSync } from 'node:fs';
import { setPriority } from 'node:os';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { runningPostmasterPid } from '../postgres/datadir.js';
import { monotonicMs, tickMs, verdict, type Feed } from './deadline.js';
import { fenceFiles, readFeed, readFencerStatus, replaceFile, type FencerStatus, type WatchdogMode } from './files.js';
import { freezeAndKillTree } from './kill.js';
import { isFencerProcess } from './identity.js';
import { Watchdog } from './watchdog.js';

export const FENCE_FIRED = 'E_FENCE_FIRED';

export interface FencerOptions {
  member: string;
  dataDir: string;
  watchdog: WatchdogMode;
  watchdogDevice?: string;
  /** Started by an agent: exit once unarmed and that agent has been gone for a minute (an external unit keeps running). */
  exitWhenOrphaned: boolean;
  log: Logger;
}

const STATUS_EVERY_MS = 500;
const ORPHAN_EXIT_MS = 60_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function runFencer(options: FencerOptions): Promise<void> {
  const { log, dataDir } = options;
  const files = fenceFiles(dataDir);
  const other = readFencerStatus(files.status);
  if (other && other.pid !== process.pid && isFencerProcess(other.pid, dataDir) && monotonicMs() - other.tickMs < 5_000) {
    log.info({ pid: other.pid }, `a fencer for ${dataDir} already runs (pid ${other.pid}); exiting`);
    return;
  }
  try {
    // Starved of CPU, a fencer would fence late: ask for a better share (root only; harmless otherwise).
    setPriority(0, -10);
  } catch {
    log.debug('cannot raise the fencer priority (not root): it runs at the default');
  }
  const watchdog = new Watchdog(options.watchdog, options.watchdogDevice);
  let lastFeed: Feed | undefined;
  let status: FencerStatus = {
    version: 1,
    pid: process.pid,
    member: options.member,
    dataDir,
    tickMs: monotonicMs(),
    state: 'idle',
    detail: 'started',
    fences: 0,
    watchdog: watchdog.status,
  };
  let statusWrittenAt = -Infinity;
  let orphanSince: number | undefined;
  const writeStatus = (now: number, force: boolean) => {
    status = { ...status, tickMs: now, watchdog: watchdog.status };
    if (!force && now - statusWrittenAt < STATUS_EVERY_MS) return;
    statusWrittenAt = now;
    try {
      replaceFile(files.status, JSON.stringify(status));
    } catch (error) {
      log.error({ err: (error as Error).message }, `cannot write the fencer status ${files.status}`);
    }
  };
  log.info({ dataDir, watchdog: watchdog.status }, `fencer for member ${options.member} started (watchdog: ${watchdog.status.state}: ${watchdog.status.detail})`);
  if (watchdog.status.state !== 'off' && !watchdog.usable) log.warn({ code: watchdog.status.state === 'failed' ? 'E_WATCHDOG_REQUIRED' : 'E_WATCHDOG_UNAVAILABLE' }, watchdog.status.detail);
  writeStatus(monotonicMs(), true);

  let running = true;
  let wake: (() => void) | undefined;
  const stop = (signal: string) => {
    log.warn({ signal, armed: lastFeed?.armed === true }, `fencer stopping on ${signal}`);
    running = false;
    wake?.();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  while (running) {
    // The clock first, then the feed: a renewal between the two can only make the feed look newer.
    const now = monotonicMs();
    lastFeed = readFeed(files.feed) ?? lastFeed;
    const v = verdict(lastFeed, now);
    if (v.kind === 'fence') {
      const pid = runningPostmasterPid(dataDir);
      // One more look: fed meanwhile (the agent was merely slow), nothing to do.
      const again = verdict(readFeed(files.feed) ?? lastFeed, monotonicMs());
      if (pid !== undefined && again.kind === 'fence') {
        const result = freezeAndKillTree(pid);
        const at = new Date().toISOString();
        status = { ...status, state: 'fenced', fences: status.fences + 1, detail: v.reason, lastFence: { at, pids: result.pids, reason: v.reason } };
        log.error(
          { code: FENCE_FIRED, postmaster: pid, pids: result.pids, errors: result.errors, overdueMs: Math.round(v.overdueMs) },
          `fenced member ${options.member}: ${v.reason}; stopped and killed PostgreSQL's ${result.pids.length} processes (postmaster ${pid}) by PID${result.errors.length ? `; could not signal: ${result.errors.join(', ')}` : ''}`,
        );
        writeStatus(monotonicMs(), true);
      } else if (status.state !== 'fenced') {
        status = { ...status, state: 'fenced', detail: `${v.reason}; no PostgreSQL runs` };
      }
      watchdog.disarm();
    } else if (v.kind === 'armed') {
      if (status.state !== 'armed') status = { ...status, state: 'armed', detail: lastFeed!.reason };
      watchdog.keepAlive(now, lastFeed!.deadlineMs, lastFeed!.ttlMs, lastFeed!.fenceMarginMs);
    } else {
      if (status.state !== 'idle') status = { ...status, state: 'idle', detail: v.reason };
      watchdog.disarm();
    }
    writeStatus(now, false);
    if (!existsSync(dirname(dataDir))) {
      log.warn(`${dirname(dataDir)} is gone: fencer exiting`);
      break;
    }
    if (options.exitWhenOrphaned && v.kind !== 'armed') {
      const agentGone = lastFeed === undefined || !alive(lastFeed.agentPid);
      orphanSince = agentGone ? (orphanSince ?? now) : undefined;
      if (orphanSince !== undefined && now - orphanSince > ORPHAN_EXIT_MS) {
        log.info('not armed and no agent for a minute: fencer exiting (the next agent starts a new one)');
        break;
      }
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, tickMs(lastFeed));
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    wake = undefined;
  }
  watchdog.disarm();
}
