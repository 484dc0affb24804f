import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { spawnIdentity, type OsUser } from '../util/os-user.js';
import { compareLsn } from './lsn.js';

/** The table's storage as pg_waldump names it: tablespace/database/relfilenode. */
export interface RelFileLocator {
  tablespace: number;
  database: number;
  relfilenode: number;
}

/** A transaction that destroyed the table's rows, as found in the WAL. */
export interface DestructiveTransaction {
  xid: string;
  /** 'drop-storage': its commit removed the table's file (TRUNCATE, or DROP TABLE); 'delete': it deleted rows. */
  kind: 'drop-storage' | 'delete';
  /** Heap DELETE records on the table's file (rows deleted). */
  deletedRows: number;
  /**
   * The transaction's first WAL record (its lock on the table, or its first change): recovering
   * "just before" it must stop here, not at its commit, because a standby replays the
   * AccessExclusiveLock of a TRUNCATE or DROP at once and holds it until the commit, so a
   * replica paused between the two cannot read the table.
   */
  firstLsn: string;
  /** Commit record: its LSN and time as pg_waldump prints it (UTC), ISO. */
  commitLsn: string;
  commitTime: string;
}

interface Pending {
  deletes: number;
  firstLsn: string;
}

/**
 * Reads pg_waldump's text output line by line and keeps what can have
 * destroyed the table: commits that dropped its file (`rels:` of a commit
 * record lists the relation files removed at commit: a TRUNCATE's old file,
 * a dropped table's file) and committed transactions with Heap DELETEs on it.
 * Aborted transactions destroyed nothing and are forgotten.
 */
export class WaldumpScanner {
  private readonly pending = new Map<string, Pending>();
  private readonly found: DestructiveTransaction[] = [];
  /** First record of every transaction still open in the scanned WAL (forgotten at its end unless watched). */
  private readonly firstSeen = new Map<string, string>();
  private watchedFirstLsn: string | undefined;
  private readonly blockRef: string;
  private readonly path: string;

  constructor(
    readonly target: RelFileLocator,
    /** A transaction whose first record the caller wants (recover-table --xid). */
    readonly watchXid?: string,
  ) {
    this.blockRef = `rel ${target.tablespace}/${target.database}/${target.relfilenode} `;
    // relpathperm(): base/<db>/<node> in the default tablespace, pg_tblspc/<spc>/<version dir>/<db>/<node> elsewhere.
    this.path = target.tablespace === 1663 ? `base/${target.database}/${target.relfilenode}` : `/${target.database}/${target.relfilenode}`;
  }

  line(text: string): void {
    const head = text.match(/^rmgr: (\S+)\s+len \(rec\/tot\):\s*\d+\/\s*\d+, tx:\s*(\d+), lsn: ([0-9A-F]+\/[0-9A-F]+), prev [0-9A-F]+\/[0-9A-F]+, desc: (.*)$/);
    if (!head) return;
    const [, rmgr, xid, lsn, desc] = head as unknown as [string, string, string, string, string];
    // A Standby LOCK record names its transaction in the description (its header's may be 0).
    const owner = rmgr === 'Standby' ? (desc.match(/^LOCK xid (\d+)/)?.[1] ?? xid) : xid;
    if (owner !== '0' && !this.firstSeen.has(owner)) {
      this.firstSeen.set(owner, lsn);
      if (owner === this.watchXid) this.watchedFirstLsn = lsn;
    }
    if (rmgr === 'Heap' && /^DELETE\b/.test(desc) && `${desc} `.includes(this.blockRef)) {
      const entry = this.pending.get(xid) ?? { deletes: 0, firstLsn: this.firstSeen.get(xid) ?? lsn };
      entry.deletes += 1;
      this.pending.set(xid, entry);
      return;
    }
    if (rmgr !== 'Transaction') return;
    const commit = desc.match(/^COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC/);
    const abort = /^ABORT\b/.test(desc);
    if (!commit && !abort) return;
    // Deletes in subtransactions count for the top-level transaction that commits them.
    const subxacts = desc.match(/; subxacts:((?: \d+)+)/)?.[1]?.trim().split(' ') ?? [];
    const members = [xid, ...subxacts];
    const deletes = members.reduce((sum, x) => sum + (this.pending.get(x)?.deletes ?? 0), 0);
    const firstLsn = members.map((x) => this.firstSeen.get(x) ?? lsn).sort(compareLsn)[0]!;
    for (const x of members) {
      this.pending.delete(x);
      this.firstSeen.delete(x);
    }
    if (!commit) return;
    const rels = desc.match(/; rels:([^;]*)/)?.[1]?.trim().split(/\s+/) ?? [];
    const dropped = rels.some((r) => r === this.path || r.endsWith(this.path));
    if (!dropped && deletes === 0) return;
    this.found.push({
      xid,
      kind: dropped ? 'drop-storage' : 'delete',
      deletedRows: deletes,
      firstLsn,
      commitLsn: lsn,
      commitTime: `${commit[1]!.replace(' ', 'T')}Z`,
    });
  }

  /** The first record of watchXid, when the scanned WAL holds it. */
  watchedStart(): string | undefined {
    return this.watchedFirstLsn;
  }

  /** Committed transactions that destroyed rows, in commit order. */
  results(): DestructiveTransaction[] {
    return [...this.found];
  }
}

/**
 * The transaction to undo: the first that dropped the table's file, or the
 * first "mass" DELETE (at least `massRows` rows, or every row the table had);
 * undefined when none.
 */
export function proposeTarget(found: DestructiveTransaction[], massRows: number): DestructiveTransaction | undefined {
  return found.find((t) => t.kind === 'drop-storage' || t.deletedRows >= massRows);
}

/**
 * Runs pg_waldump on the member's pg_wal from `startLsn` to the end of the
 * WAL it holds, feeding each line to the scanner as it comes (the output can
 * be far larger than memory should hold). pg_waldump ends with an error at the
 * end of valid WAL ("could not find a valid record" / "invalid record
 * length"): that is where received WAL stops, not a failure.
 */
export function scanWal(options: { binDir: string; user: OsUser; dataDir: string; startLsn: string; timeline: number; scanner: WaldumpScanner; timeoutMs: number }): Promise<{ records: number; endNote: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      join(options.binDir, 'pg_waldump'),
      ['--path', join(options.dataDir, 'pg_wal'), '--timeline', String(options.timeline), '--start', options.startLsn, '--rmgr', 'Heap', '--rmgr', 'Transaction', '--rmgr', 'Standby'],
      { ...spawnIdentity(options.user), cwd: '/', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let records = 0;
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 8_000) stderr += chunk.toString();
    });
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      records += 1;
      options.scanner.line(line);
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`pg_waldump could not run: ${error.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const note = stderr.trim().split('\n').pop() ?? '';
      if (code === 0 || /could not find a valid record|invalid record length|contrecord is requested|invalid magic number/.test(note)) resolve({ records, endNote: note });
      else reject(new Error(`pg_waldump failed (exit ${code ?? 'signal'}): ${note}`));
    });
  });
}
