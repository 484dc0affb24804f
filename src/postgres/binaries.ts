/**
 * The PostgreSQL version installed in binDir, as opposed to the one running:
 * after a package manager replaced the binaries (or binDir points at a new
 * build), the running server is older than what its next start runs. The
 * agent reports that as a pending restart ("binaries 15.18"), so `relevo list`
 * shows it and `relevo restart --pending` (or autoRestart) rolls it out.
 *
 * `postgres --version` runs only when the binary changed (its inode, size or
 * mtime, links followed): the agent asks every loop, and a program start per
 * loop would cost more than the rest of the loop.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { parseServerVersion } from '../cluster/versions.js';
import type { OsUser } from '../util/os-user.js';
import { runPostgresProgram } from './exec.js';

export class InstalledVersion {
  private stamp = '';
  private version: string | undefined;

  constructor(
    private readonly binDir: string,
    private readonly user: OsUser,
  ) {}

  /** major.minor of binDir/postgres, or undefined when it cannot be told (never a reason to restart). */
  async current(): Promise<string | undefined> {
    let stamp: string;
    try {
      const s = statSync(join(this.binDir, 'postgres'));
      stamp = `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return undefined;
    }
    if (stamp === this.stamp) return this.version;
    this.stamp = stamp;
    const output = await runPostgresProgram(this.binDir, this.user, 'postgres', ['--version'], { context: 'reading the installed version', timeoutMs: 10_000 }).catch(() => '');
    const v = parseServerVersion(/\(PostgreSQL\)\s+(\S+)/.exec(output)?.[1]);
    this.version = v ? `${v.major}.${v.minor}` : undefined;
    return this.version;
  }
}

/** The pending-restart entry for binaries newer or older than the running server, if they differ. */
export function binariesPending(running: string, installed: string | undefined): string | undefined {
  const r = parseServerVersion(running);
  if (!r || installed === undefined || `${r.major}.${r.minor}` === installed) return undefined;
  return `binaries ${installed}`;
}
