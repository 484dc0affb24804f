import { descendants, readProcTable, type ProcEntry } from './proc.js';

export interface KillResult {
  /** Every process of the tree that was stopped and then killed. */
  pids: number[];
  /** Signals that could not be sent (e.g. EPERM), with the cause. */
  errors: string[];
}

function signal(pid: number, sig: NodeJS.Signals, errors: string[]): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // ESRCH: it exited meanwhile, which is what we want anyway.
    if (code !== 'ESRCH') errors.push(`${sig} to ${pid}: ${code ?? String(error)}`);
    return false;
  }
}

/**
 * Stops a whole process tree (the postmaster and every process under it)
 * without a connection, so that none of them can acknowledge another commit:
 * 1. SIGSTOP the root first (it can fork no new backend after that), then every
 *    descendant, re-reading /proc until no new one appears;
 * 2. SIGKILL them all.
 * Killing only the backends would not do: a live postmaster treats a killed
 * child as a crash and reinitialises, then accepts connections again as
 * primary; killing only the postmaster would leave its backends serving their
 * open sessions. Stopped first, no process outlives the others running.
 * SIGKILL ends stopped processes too (a frozen postmaster included). What
 * remains is a crashed server: crash recovery (or the rewind) on restart.
 */
export function freezeAndKillTree(root: number, readTable: () => ProcEntry[] = readProcTable): KillResult {
  const errors: string[] = [];
  const stopped = new Map<number, ProcEntry>();
  for (let round = 0; round < 50; round++) {
    const fresh = descendants(root, readTable()).filter((p) => !stopped.has(p.pid));
    if (fresh.length === 0) break;
    for (const p of fresh) if (signal(p.pid, 'SIGSTOP', errors)) stopped.set(p.pid, p);
  }
  const pids: number[] = [];
  for (const p of stopped.values()) if (signal(p.pid, 'SIGKILL', errors)) pids.push(p.pid);
  return { pids, errors };
}
