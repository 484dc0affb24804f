import { readdirSync, readFileSync } from 'node:fs';

/** One line of the process table, from /proc/<pid>/stat. */
export interface ProcEntry {
  pid: number;
  ppid: number;
  /** R, S, D, T (stopped), Z (zombie)... */
  state: string;
  /** Start time in clock ticks since boot: with the pid, it names one process even if the pid is reused. */
  startTime: number;
}

/**
 * Parses /proc/<pid>/stat. The command name (field 2) is in parentheses and may
 * itself hold spaces and parentheses, so the fields are counted from the last ')'.
 * Returns undefined for text that is not a stat line.
 */
export function parseStat(text: string): ProcEntry | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 1 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  // After ')': state(3) ppid(4) pgrp(5) session(6) tty(7) tpgid(8) flags(9) minflt(10) cminflt(11)
  // majflt(12) cmajflt(13) utime(14) stime(15) cutime(16) cstime(17) priority(18) nice(19)
  // num_threads(20) itrealvalue(21) starttime(22).
  const fields = text.slice(close + 2).trim().split(/\s+/);
  const state = fields[0];
  const ppid = Number(fields[1]);
  const startTime = Number(fields[19]);
  if (!Number.isInteger(pid) || pid <= 0 || !state || !Number.isInteger(ppid) || !Number.isFinite(startTime)) return undefined;
  return { pid, ppid, state, startTime };
}

/**
 * `root` and every descendant (by parent pid), root first, then breadth first.
 * Pure: the table is passed in. Empty when root is not in the table.
 */
export function descendants(root: number, table: readonly ProcEntry[]): ProcEntry[] {
  const rootEntry = table.find((p) => p.pid === root);
  if (!rootEntry) return [];
  const children = new Map<number, ProcEntry[]>();
  for (const p of table) {
    if (p.pid === root) continue;
    const list = children.get(p.ppid) ?? [];
    list.push(p);
    children.set(p.ppid, list);
  }
  const out = [rootEntry];
  const seen = new Set([root]);
  for (let i = 0; i < out.length; i++) {
    for (const child of children.get(out[i]!.pid) ?? []) {
      if (seen.has(child.pid)) continue;
      seen.add(child.pid);
      out.push(child);
    }
  }
  return out;
}

/** The live process table (processes that exit while it is read are skipped). */
export function readProcTable(procDir = '/proc'): ProcEntry[] {
  const out: ProcEntry[] = [];
  for (const name of readdirSync(procDir)) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const entry = parseStat(readFileSync(`${procDir}/${name}/stat`, 'utf8'));
      if (entry) out.push(entry);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** The command line of a process, arguments split (empty when it is gone). */
export function commandLine(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').split('\0');
  } catch {
    return [];
  }
}
