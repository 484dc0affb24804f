import type { OsUser } from '../util/os-user.js';
import { runningPostmasterPid } from './datadir.js';
import { runPostgresProgram } from './exec.js';

export interface PostmasterTarget {
  binDir: string;
  user: OsUser;
  dataDir: string;
  /** Server log written by pg_ctl -l (outside the data directory so base backups do not copy it). */
  logFile: string;
}

/**
 * Starts PostgreSQL with pg_ctl in its own session, so the server outlives the
 * agent: an agent restart adopts it instead of restarting it.
 */
export async function startPostgres(target: PostmasterTarget, timeoutSeconds = 60): Promise<number> {
  await runPostgresProgram(
    target.binDir,
    target.user,
    'pg_ctl',
    ['start', '-D', target.dataDir, '-l', target.logFile, '-w', '-t', String(timeoutSeconds)],
    { context: `starting PostgreSQL in ${target.dataDir}; see ${target.logFile}`, detached: true, timeoutMs: (timeoutSeconds + 10) * 1000 },
  );
  const pid = runningPostmasterPid(target.dataDir);
  if (pid === undefined) throw new Error(`PostgreSQL in ${target.dataDir} reported started but no postmaster runs; see ${target.logFile}`);
  return pid;
}

/**
 * Starts a standby, waiting at most `waitSeconds` for it to serve: pg_ctl -w
 * returns only once replay reaches a consistent state, which after a rewind or
 * behind a slow upstream can take longer than any fixed bound, and the agent's
 * loop would be blocked meanwhile (neither publishing its status nor reacting
 * to the cluster). A postmaster still starting when the wait ends is not a
 * failure: the next cycles see the server as not answering yet and name
 * PostgreSQL's own reason. A postmaster that died is (pg_ctl saw it exit).
 */
export async function startStandby(target: PostmasterTarget, waitSeconds = 5): Promise<number> {
  try {
    return await startPostgres(target, waitSeconds);
  } catch (error) {
    const pid = runningPostmasterPid(target.dataDir);
    if (pid === undefined) throw error;
    return pid;
  }
}

export type StopMode = 'smart' | 'fast' | 'immediate';

/**
 * Stops PostgreSQL and waits until the postmaster is gone. `pollMs`: send the
 * signal with pg_ctl -W and look for the postmaster's exit every pollMs
 * ourselves (pg_ctl -w looks only every 100 ms: a switchover's clean shutdown
 * is on the write pause's critical path). Gone means what pg_ctl -w means:
 * no postmaster.pid, or no live postmaster behind it.
 */
export async function stopPostgres(target: PostmasterTarget, mode: StopMode = 'fast', timeoutSeconds = 60, pollMs?: number): Promise<void> {
  if (runningPostmasterPid(target.dataDir) === undefined) return;
  if (pollMs !== undefined) {
    await runPostgresProgram(target.binDir, target.user, 'pg_ctl', ['stop', '-D', target.dataDir, '-m', mode, '-W'], {
      context: `stopping PostgreSQL in ${target.dataDir} (${mode})`,
      timeoutMs: 10_000,
    });
    const deadline = performance.now() + timeoutSeconds * 1000;
    while (runningPostmasterPid(target.dataDir) !== undefined) {
      if (performance.now() > deadline) throw new Error(`PostgreSQL in ${target.dataDir} did not stop (${mode}) within ${timeoutSeconds} s; see ${target.logFile}`);
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
    return;
  }
  await runPostgresProgram(
    target.binDir,
    target.user,
    'pg_ctl',
    ['stop', '-D', target.dataDir, '-m', mode, '-w', '-t', String(timeoutSeconds)],
    { context: `stopping PostgreSQL in ${target.dataDir} (${mode})`, timeoutMs: (timeoutSeconds + 10) * 1000 },
  );
}

export async function reloadPostgres(target: PostmasterTarget): Promise<void> {
  // What pg_ctl reload does (SIGHUP to the postmaster), without starting a program: a reload is on
  // the path of a promotion. pg_ctl when we may not signal it (another OS user, agent not root).
  const pid = runningPostmasterPid(target.dataDir);
  if (pid !== undefined) {
    try {
      process.kill(pid, 'SIGHUP');
      return;
    } catch {
      // fall through to pg_ctl
    }
  }
  await runPostgresProgram(target.binDir, target.user, 'pg_ctl', ['reload', '-D', target.dataDir], {
    context: `reloading PostgreSQL in ${target.dataDir}`,
    timeoutMs: 10_000,
  });
}

export async function restartPostgres(target: PostmasterTarget, timeoutSeconds = 120): Promise<number> {
  await stopPostgres(target, 'fast', timeoutSeconds);
  return startPostgres(target, timeoutSeconds);
}
