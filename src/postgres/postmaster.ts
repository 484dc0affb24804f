import type { OsUser } from '../util/os-user.js';
import { postmasterStatus, runningPostmasterPid } from './datadir.js';
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
 * Starts a standby and returns once its postmaster runs, without waiting for
 * a consistent recovery state: pg_ctl -w would block the agent's loop until
 * replay reaches it, which after a rewind or behind a slow upstream can take
 * longer than any fixed bound (the loop then neither publishes its status nor
 * reacts to the cluster). The next cycles see the server as not answering yet
 * and name PostgreSQL's own reason.
 */
export async function startStandby(target: PostmasterTarget, timeoutSeconds = 60): Promise<number> {
  await runPostgresProgram(target.binDir, target.user, 'pg_ctl', ['start', '-D', target.dataDir, '-l', target.logFile, '-W'], {
    context: `starting PostgreSQL (standby) in ${target.dataDir}; see ${target.logFile}`,
    detached: true,
    timeoutMs: 30_000,
  });
  const deadline = Date.now() + timeoutSeconds * 1000;
  let runningSince: number | undefined;
  for (;;) {
    const pid = runningPostmasterPid(target.dataDir);
    if (pid !== undefined) {
      runningSince ??= Date.now();
      // A configuration error stops a postmaster within moments: settle briefly unless it is already serving.
      if (['ready', 'standby'].includes(postmasterStatus(target.dataDir) ?? '') || Date.now() - runningSince >= STANDBY_SETTLE_MS) return pid;
    } else if (runningSince !== undefined || Date.now() > deadline) {
      throw new Error(`PostgreSQL in ${target.dataDir} did not stay up after pg_ctl start; see ${target.logFile}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const STANDBY_SETTLE_MS = 1_000;

export type StopMode = 'smart' | 'fast' | 'immediate';

export async function stopPostgres(target: PostmasterTarget, mode: StopMode = 'fast', timeoutSeconds = 60): Promise<void> {
  if (runningPostmasterPid(target.dataDir) === undefined) return;
  await runPostgresProgram(
    target.binDir,
    target.user,
    'pg_ctl',
    ['stop', '-D', target.dataDir, '-m', mode, '-w', '-t', String(timeoutSeconds)],
    { context: `stopping PostgreSQL in ${target.dataDir} (${mode})`, timeoutMs: (timeoutSeconds + 10) * 1000 },
  );
}

export async function reloadPostgres(target: PostmasterTarget): Promise<void> {
  await runPostgresProgram(target.binDir, target.user, 'pg_ctl', ['reload', '-D', target.dataDir], {
    context: `reloading PostgreSQL in ${target.dataDir}`,
    timeoutMs: 10_000,
  });
}

export async function restartPostgres(target: PostmasterTarget, timeoutSeconds = 120): Promise<number> {
  await stopPostgres(target, 'fast', timeoutSeconds);
  return startPostgres(target, timeoutSeconds);
}
