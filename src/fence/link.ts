/**
 * The agent's end of its fencer: feeds it the fence deadline, checks that it
 * runs (a fresh heartbeat from a live fencer process), and starts one when
 * none does. The fencer is started through `setsid -f`: it gets its own
 * session and process group and is re-parented away from the agent, so a
 * signal to the agent's process group, a freeze of the agent's process tree
 * or the agent's death leaves it running.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { MemberConfig } from '../config/member.js';
import { ensureOwnedDir } from '../postgres/owned-fs.js';
import { lookupOsUser } from '../util/os-user.js';
import { FEED_VERSION, heartbeatStale, monotonicMs, type Feed } from './deadline.js';
import { fenceFiles, readFencerStatus, replaceFile, type FenceFiles, type FencerStatus } from './files.js';
import { isFencerProcess } from './identity.js';

export const FENCER_MISSING = 'E_FENCER_MISSING';

/** A fencer that has not ticked for this long is missing (or frozen): it is replaced. */
export const FENCER_STALE_MS = 5_000;
const START_WAIT_MS = 10_000;

export type FencerCheck = { ok: true; pid: number; status: FencerStatus } | { ok: false; code: typeof FENCER_MISSING; reason: string; status?: FencerStatus };

const FENCER_MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

export interface FeedInput {
  armed: boolean;
  /** performance.now() ms of the deadline (undefined: none yet). */
  deadline: number | undefined;
  ttlMs: number;
  fenceMarginMs: number;
  reason: string;
}

export class FencerLink {
  readonly files: FenceFiles;
  private lastFeedError: string | undefined;
  /** The last unarmed feed written, without its times: while unarmed nothing else in it matters to the fencer. */
  private lastUnarmed: string | undefined;
  private starting: Promise<FencerCheck> | undefined;

  constructor(
    private readonly config: MemberConfig,
    private readonly dataDir: string,
    private readonly log: Logger,
  ) {
    this.files = fenceFiles(dataDir);
  }

  /** Writes the deadline for the fencer. performance.now() and CLOCK_MONOTONIC differ by a constant, taken here. */
  feed(input: FeedInput): void {
    const offset = monotonicMs() - performance.now();
    const now = performance.now() + offset;
    const feed: Feed = {
      version: FEED_VERSION,
      member: this.config.name,
      agentPid: process.pid,
      armed: input.armed && input.deadline !== undefined,
      deadlineMs: (input.deadline ?? performance.now()) + offset,
      writtenMs: now,
      ttlMs: input.ttlMs,
      fenceMarginMs: input.fenceMarginMs,
      reason: input.reason,
    };
    // An unarmed feed's deadline is never read (src/fence/deadline.ts: verdict), so a replica's agent rewrites it
    // only when it changes otherwise: each lease renewal used to write and rename a file. An armed one is written at every renewal.
    const unarmed = feed.armed ? undefined : JSON.stringify({ ...feed, deadlineMs: 0, writtenMs: 0 });
    if (unarmed !== undefined && unarmed === this.lastUnarmed) return;
    try {
      replaceFile(this.files.feed, JSON.stringify(feed));
      this.lastFeedError = undefined;
      this.lastUnarmed = unarmed;
    } catch (error) {
      this.lastUnarmed = undefined;
      const message = (error as Error).message;
      if (message !== this.lastFeedError) this.log.error({ code: FENCER_MISSING, err: message }, `cannot feed the fencer (${this.files.feed}): ${message}`);
      this.lastFeedError = message;
    }
  }

  /** Is a fencer for this data directory running and ticking? Reads one small file and one /proc entry. */
  check(): FencerCheck {
    const status = readFencerStatus(this.files.status);
    if (!status) return { ok: false, code: FENCER_MISSING, reason: `no fencer status at ${this.files.status}` };
    if (status.dataDir !== this.dataDir || !isFencerProcess(status.pid, this.dataDir)) {
      return { ok: false, code: FENCER_MISSING, reason: `fencer ${status.pid} is not running`, status };
    }
    if (heartbeatStale(status.tickMs, monotonicMs(), FENCER_STALE_MS)) {
      return { ok: false, code: FENCER_MISSING, reason: `fencer ${status.pid} has not ticked for ${Math.round(monotonicMs() - status.tickMs)} ms (frozen?)`, status };
    }
    if (status.watchdog.state === 'failed') return { ok: false, code: FENCER_MISSING, reason: `fence.watchdog is required: ${status.watchdog.detail}`, status };
    return { ok: true, pid: status.pid, status };
  }

  /**
   * check(), and when the fencer is missing and the agent may start one: replace it.
   * `wait`: until its first tick (at agent start); otherwise the start runs on
   * in the background and this returns the missing check at once, so an agent
   * cycle (and its lease renewal) never waits for a node process to start.
   */
  async ensure(wait: boolean): Promise<FencerCheck> {
    const found = this.check();
    if (found.ok || !this.config.fence.spawn || found.status?.watchdog.state === 'failed') return found;
    this.starting ??= this.start(found).finally(() => (this.starting = undefined));
    return wait ? this.starting : found;
  }

  private async start(found: Extract<FencerCheck, { ok: false }>): Promise<FencerCheck> {
    // A frozen fencer of ours is replaced: killed by PID, once it is known to be one.
    if (found.status && isFencerProcess(found.status.pid, this.dataDir)) {
      try {
        process.kill(found.status.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    const fence = this.config.fence;
    const args = [process.execPath, FENCER_MAIN, '--member', this.config.name, '--data-dir', this.dataDir, '--watchdog', fence.watchdog, '--watchdog-device', fence.watchdogDevice, '--exit-when-orphaned', '--log-level', this.config.log.level];
    // Its files live beside the data directory, whose parent a member without TLS files has not yet created (bootstrap makes it the same way).
    ensureOwnedDir(dirname(this.dataDir), lookupOsUser(this.config.postgres.osUser), 0o755);
    const log = openSync(this.files.log, 'a', 0o600);
    try {
      // setsid -f: forks, makes the child a session leader, execs; the parent exits at once (re-parenting the fencer).
      const child = spawn('setsid', ['-f', ...args], { stdio: ['ignore', log, log] });
      await new Promise<void>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`setsid exited with ${code}`))));
      });
    } catch (error) {
      return { ok: false, code: FENCER_MISSING, reason: `cannot start the fencer: ${(error as Error).message}` };
    } finally {
      closeSync(log);
    }
    const started = performance.now();
    while (performance.now() - started < START_WAIT_MS) {
      const check = this.check();
      if (check.ok && check.pid !== found.status?.pid) {
        this.log.info({ fencer: check.pid, watchdog: check.status.watchdog.state }, `started the fencer (pid ${check.pid}; watchdog ${check.status.watchdog.state}: ${check.status.watchdog.detail})${found.status ? ` replacing ${found.reason}` : ''}`);
        return check;
      }
      if (!check.ok && check.status?.watchdog.state === 'failed') return check;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return { ok: false, code: FENCER_MISSING, reason: `started a fencer but it did not report within ${START_WAIT_MS} ms; see ${this.files.log}` };
  }

  /** Graceful agent stop with PostgreSQL stopped: disarm and end the fencer. */
  stop(input: Omit<FeedInput, 'armed' | 'deadline'>): void {
    this.feed({ ...input, armed: false, deadline: undefined });
    const status = readFencerStatus(this.files.status);
    if (status && isFencerProcess(status.pid, this.dataDir)) {
      try {
        process.kill(status.pid, 'SIGTERM');
      } catch {
        // gone already
      }
    }
  }
}
