/**
 * Fault injection on real processes: a member's PostgreSQL (the postmaster
 * and every process under it), its agent, and the coordination store.
 *
 * Every process this module stops or starts is remembered by the `Faults`
 * instance; `cleanup()` (register it with `after`, before cluster.destroy())
 * continues whatever it stopped and kills whatever it started, by PID, also
 * when a test failed half-way. A process left stopped would keep PostgreSQL's
 * shared memory and ports forever.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { TestCluster } from './cluster.js';
import type { EtcdProcess } from './etcd.js';
import { waitFor } from './wait.js';

export interface ProcInfo {
  pid: number;
  ppid: number;
  /** Single-letter state from /proc/<pid>/stat: R, S, D, T (stopped), Z... */
  state: string;
  /** Process title from /proc/<pid>/cmdline (PostgreSQL puts its role there). */
  title: string;
}

/** Reads /proc/<pid>/stat; the command name may hold spaces and parentheses, so fields start after the last ')'. */
export function procInfo(pid: number): ProcInfo | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0] ?? '?';
  const ppid = Number(fields[1]);
  let title = '';
  try {
    title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').replace(/\0/g, ' ');
  } catch {
    // exited meanwhile
  }
  return { pid, ppid, state, title };
}

function allProcesses(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const info = procInfo(Number(entry));
    if (info) out.push(info);
  }
  return out;
}

/** `root` and all its descendants (by ppid), root first. Empty when root is gone. */
export function processTree(root: number): ProcInfo[] {
  const all = allProcesses();
  const rootInfo = all.find((p) => p.pid === root);
  if (!rootInfo) return [];
  const children = new Map<number, ProcInfo[]>();
  for (const p of all) {
    const list = children.get(p.ppid) ?? [];
    list.push(p);
    children.set(p.ppid, list);
  }
  const out: ProcInfo[] = [rootInfo];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]!.pid) ?? []));
  return out;
}

export function isAlive(pid: number): boolean {
  const info = procInfo(pid);
  return info !== undefined && info.state !== 'Z' && info.state !== 'X';
}

function send(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

export type Target = 'postgres' | 'agent' | 'both';

export interface Injected {
  /** Date.now() right after the signal reached the last process. */
  at: number;
  pids: number[];
}

export class Faults {
  /** PIDs we sent SIGSTOP and not yet SIGCONT. */
  private readonly stopped = new Set<number>();
  /** Helper processes we started (SQLite lock holders). */
  private readonly children = new Set<ChildProcess>();
  private readonly suspendedEtcd = new Set<EtcdProcess>();

  constructor(private readonly cluster: TestCluster) {}

  /** The member's postmaster and all its children right now. */
  postgresTree(name: string): ProcInfo[] {
    const pid = this.cluster.postmasterPid(name);
    return pid === undefined ? [] : processTree(pid);
  }

  /** The agent process and anything it is running at the moment (pg_ctl, pg_rewind...). */
  agentTree(name: string): ProcInfo[] {
    const pid = this.cluster.member(name).agent?.pid;
    return pid === undefined ? [] : processTree(pid);
  }

  private targets(name: string, target: Target): () => ProcInfo[] {
    return () => {
      const out = new Map<number, ProcInfo>();
      const postgres = this.postgresTree(name);
      // Should PostgreSQL ever run under the agent, 'agent' must still leave it alone.
      const postgresPids = new Set(postgres.map((p) => p.pid));
      if (target !== 'postgres') for (const p of this.agentTree(name)) if (target === 'both' || !postgresPids.has(p.pid)) out.set(p.pid, p);
      if (target !== 'agent') for (const p of postgres) out.set(p.pid, p);
      return [...out.values()];
    };
  }

  /**
   * SIGSTOP every process of the target, re-reading the tree until no new
   * process appears: a backend forked while we were stopping the others must
   * not keep running (it could acknowledge a commit).
   */
  stop(name: string, target: Target): Injected {
    const collect = this.targets(name, target);
    const pids: number[] = [];
    for (let round = 0; round < 20; round++) {
      const fresh = collect().filter((p) => !this.stopped.has(p.pid));
      if (fresh.length === 0) break;
      for (const p of fresh) {
        if (send(p.pid, 'SIGSTOP')) {
          this.stopped.add(p.pid);
          pids.push(p.pid);
        }
      }
    }
    if (pids.length === 0) throw new Error(`no ${target} process of ${name} to stop`);
    return { at: Date.now(), pids };
  }

  /**
   * SIGSTOP the agent and the postmaster alone: the backends (and walsenders)
   * keep serving their open sessions, yet no new connection, reload or signal
   * from the agent can reach the server.
   */
  stopAgentAndPostmaster(name: string): Injected {
    const pids = this.stop(name, 'agent').pids;
    const postmaster = this.cluster.postmasterPid(name);
    if (postmaster !== undefined && !this.stopped.has(postmaster) && send(postmaster, 'SIGSTOP')) {
      this.stopped.add(postmaster);
      pids.push(postmaster);
    }
    return { at: Date.now(), pids };
  }

  /** SIGCONT what stop() stopped for this member (children first, so the postmaster wakes to a consistent tree). */
  resume(name: string, target: Target): Injected {
    const pids = this.targets(name, target)()
      .map((p) => p.pid)
      .filter((pid) => this.stopped.has(pid))
      .reverse();
    for (const pid of pids) {
      send(pid, 'SIGCONT');
      this.stopped.delete(pid);
    }
    if (pids.length === 0) throw new Error(`no stopped ${target} process of ${name} to resume`);
    return { at: Date.now(), pids };
  }

  /**
   * SIGKILL every process of the target at once, as when the machine dies:
   * first freeze the whole tree so no process survives the others (a backend
   * outliving its postmaster keeps serving its client), then kill them all.
   */
  async kill(name: string, target: Target): Promise<Injected> {
    const frozen = this.stop(name, target).pids;
    for (const pid of frozen) send(pid, 'SIGKILL');
    const at = Date.now();
    for (const pid of frozen) this.stopped.delete(pid);
    await waitFor(`killed processes of ${name} to disappear`, () => frozen.every((pid) => !isAlive(pid)), 10_000, 20);
    return { at, pids: frozen };
  }

  /** SIGSTOP one PostgreSQL auxiliary process of a member, found by its title (e.g. /walreceiver/). */
  stopByTitle(name: string, title: RegExp): Injected {
    const matching = this.postgresTree(name).filter((p) => title.test(p.title) && !this.stopped.has(p.pid));
    if (matching.length === 0) throw new Error(`no process of ${name} matching ${title}: ${this.postgresTree(name).map((p) => p.title).join(' | ')}`);
    for (const p of matching) {
      send(p.pid, 'SIGSTOP');
      this.stopped.add(p.pid);
    }
    return { at: Date.now(), pids: matching.map((p) => p.pid) };
  }

  /** SIGSTOP these processes (e.g. every etcd member); cleanup() continues them. */
  stopPids(pids: number[]): Injected {
    const stopped = pids.filter((pid) => !this.stopped.has(pid) && send(pid, 'SIGSTOP'));
    for (const pid of stopped) this.stopped.add(pid);
    return { at: Date.now(), pids: stopped };
  }

  resumePids(pids: number[]): void {
    for (const pid of pids) {
      send(pid, 'SIGCONT');
      this.stopped.delete(pid);
    }
  }

  /** etcd hangs: it keeps its sockets but answers nothing. */
  suspendEtcd(etcd: EtcdProcess): Injected {
    etcd.suspend();
    this.suspendedEtcd.add(etcd);
    return { at: Date.now(), pids: [etcd.pid] };
  }

  resumeEtcd(etcd: EtcdProcess): Injected {
    etcd.resume();
    this.suspendedEtcd.delete(etcd);
    return { at: Date.now(), pids: [etcd.pid] };
  }

  /**
   * Makes the embedded store unavailable: a separate process holds an
   * exclusive SQLite transaction on the store file, so every store operation
   * of every agent waits and times out. Resolves once the lock is held.
   * Call the returned release() to end the outage.
   */
  async lockEmbeddedStore(): Promise<{ at: number; pid: number; release: () => Promise<number> }> {
    const config = this.cluster.storeConfig;
    if (config.backend !== 'embedded') throw new Error('lockEmbeddedStore needs the embedded store');
    const sqlite = createRequire(import.meta.url).resolve('better-sqlite3');
    // CommonJS, so the absolute module path can be required from `node -e`.
    const script = `
      const Database = require(${JSON.stringify(sqlite)});
      const db = new Database(${JSON.stringify(config.path)}, { fileMustExist: true, timeout: 10000 });
      db.exec('BEGIN EXCLUSIVE');
      process.stdout.write('locked\\n');
      process.stdin.on('data', () => {});
      process.stdin.on('end', () => { db.exec('ROLLBACK'); db.close(); process.exit(0); });
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`SQLite lock holder did not get the lock within 15 s: ${stderr}`)), 15_000);
      child.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('locked\n')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`SQLite lock holder exited with ${code}: ${stderr}`));
      });
    });
    const at = Date.now();
    const pid = child.pid!;
    const release = async (): Promise<number> => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.stdin!.end();
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await exited;
        }
      }
      return Date.now();
    };
    return { at, pid, release };
  }

  /** Continues every process still stopped and kills every helper still running, by PID. */
  async cleanup(): Promise<void> {
    for (const pid of this.stopped) send(pid, 'SIGCONT');
    this.stopped.clear();
    for (const etcd of this.suspendedEtcd) {
      try {
        etcd.resume();
      } catch {
        // already gone
      }
    }
    this.suspendedEtcd.clear();
    const exits: Promise<void>[] = [];
    for (const child of this.children) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      exits.push(new Promise<void>((resolve) => child.once('exit', () => resolve())));
      if (child.pid !== undefined) send(child.pid, 'SIGKILL');
    }
    await Promise.all(exits);
    this.children.clear();
  }
}

/*
 * The faults as staged procedures, shared by the integration test
 * (which asserts around them) and bench/failover (which times them), so both
 * inject exactly the same thing.
 */

export type FaultKind = 'a' | 'b' | 'c' | 'd' | 'e' | 'f' | 'g' | 'h';

export const FAULT_KINDS: readonly FaultKind[] = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];

export const FAULT_DESCRIPTIONS: Record<FaultKind, string> = {
  a: "machine loss: SIGKILL the primary's agent and PostgreSQL together",
  b: "hang: SIGSTOP the primary's agent and every PostgreSQL process past the lease, then SIGCONT",
  c: "SIGKILL only the primary's PostgreSQL",
  d: "SIGKILL only the primary's agent",
  e: "SIGSTOP only the primary's agent past the lease, then SIGCONT",
  f: 'store unavailable past the lease, then back',
  g: 'switchover under write load',
  h: 'diverged old primary returns and rejoins',
};

export interface ScenarioContext {
  cluster: TestCluster;
  faults: Faults;
  /** Acknowledged writes on the new primary end the unavailability. */
  writer: { waitForAcks(count: number, timeoutMs?: number, server?: string): Promise<{ ackedAt: number }> };
  primary: string;
  replicas: string[];
  ttlMs: number;
  /** Required for 'f' on the etcd store. */
  etcd?: EtcdProcess;
  /** For 'c': hold the restarting postmaster stopped this long while it starts (a restart in place slower than the lease). */
  stallRestartMs?: number;
  /** How long each step may take before the scenario fails. */
  timeoutMs?: number;
}

/**
 * Catches the agent's restart in place of the old primary while PostgreSQL is
 * still starting (postmaster.pid says "starting"), stops the postmaster for
 * `ms`, then continues it: pg_ctl start -w keeps the agent's action waiting
 * that long, as crash recovery on a loaded host would.
 */
async function stallRestart(ctx: ScenarioContext, killed: number[], ms: number): Promise<void> {
  const dataDir = ctx.cluster.member(ctx.primary).config.postgres.dataDir;
  const pid = await waitFor(
    `a new postmaster of ${ctx.primary}`,
    () => {
      const p = ctx.cluster.postmasterPid(ctx.primary);
      return p !== undefined && !killed.includes(p) ? p : undefined;
    },
    30_000,
    5,
  );
  const stopped = ctx.faults.stopPids([pid]);
  const status = readFileSync(`${dataDir}/postmaster.pid`, 'utf8').split('\n')[7]?.trim();
  try {
    if (status === 'ready') throw new Error(`stallRestart: ${ctx.primary}'s postmaster ${pid} was ready before it could be stopped; nothing was stalled`);
    await new Promise((resolve) => setTimeout(resolve, ms));
  } finally {
    ctx.faults.resumePids(stopped.pids);
  }
}

export interface Staged {
  kind: FaultKind;
  oldPrimary: string;
  /** When the fault took effect (after the last signal). */
  faultAt: number;
  /** Whether the scenario must end with another member as primary. */
  expectsNewPrimary: boolean;
  /**
   * Waits for the cluster to take writes again: a primary (another member if
   * expectsNewPrimary) that has acknowledged writes. For 'f' this first lets
   * the outage last past the lease, then ends it.
   */
  awaitPrimary(): Promise<{ name: string; firstAckAt: number }>;
  /**
   * Gives the old primary back (SIGCONT, agent restart; nothing for c, f, g):
   * resolves with the time it was given back, or undefined when there was
   * nothing to give back.
   */
  recover(): Promise<number | undefined>;
  /** Time the store came back ('f' only). */
  storeBackAt?: number;
}

async function otherPrimary(ctx: ScenarioContext, not: string | undefined, timeoutMs: number): Promise<string> {
  const status = await waitFor(
    not === undefined ? 'a primary' : `a primary other than ${not}`,
    async () => {
      const members = await ctx.cluster.memberStatuses();
      return members.find((m) => m.state === 'primary' && m.role === 'primary' && m.name !== not);
    },
    timeoutMs,
    50,
  );
  return status.name;
}

/** Table whose newest rows exist only on the old primary in scenario 'h'. */
export const DIVERGED_TABLE = 'diverged';
/** Rows the old primary holds in DIVERGED_TABLE: 10 transactions of 4,000 rows of ~1 kB. */
export const DIVERGED_ROWS = 40_000;

/**
 * A primary whose WAL the replicas do not have: their walreceivers are
 * stopped while a session that opted out of synchronous commit writes ~40 MB.
 * Those rows were never acknowledged under the synchronous guarantee. The
 * kernel keeps buffering a stopped walreceiver's socket (a few MB), which the
 * walreceiver reads once continued, so the write must exceed what loopback
 * sockets hold: the last transactions then exist only on the old primary,
 * which must be rewound when it returns.
 * Returns the stopped walreceivers, for the caller to continue.
 */
export async function divergeOldPrimary(ctx: ScenarioContext, table: string): Promise<number[]> {
  // Empty, so a cluster reused by the benchmark starts from the same state every time.
  await ctx.cluster.sql(ctx.primary, `CREATE TABLE IF NOT EXISTS ${table} (id int PRIMARY KEY, payload text)`);
  await ctx.cluster.sql(ctx.primary, `TRUNCATE ${table}`);
  // Both replicas must have the empty table before they stop receiving, or the inserts below would not be the only difference.
  for (const replica of ctx.replicas) {
    await waitFor(
      `empty ${table} on ${replica}`,
      async () => (await ctx.cluster.sql<{ n: string }>(replica, `SELECT count(*)::text AS n FROM ${table}`))[0]?.n === '0',
      20_000,
    );
  }
  const receivers: number[] = [];
  try {
    for (const replica of ctx.replicas) receivers.push(...ctx.faults.stopByTitle(replica, /walreceiver/).pids);
    const perTransaction = DIVERGED_ROWS / 10;
    for (let i = 0; i < 10; i++) {
      // Committed without waiting for a standby, so never acknowledged under the synchronous guarantee.
      await ctx.cluster.sql(
        ctx.primary,
        `SET synchronous_commit = local; INSERT INTO ${table} SELECT g, repeat(md5(g::text), 32) FROM generate_series(${i * perTransaction + 1}, ${(i + 1) * perTransaction}) g`,
      );
    }
    return receivers;
  } catch (error) {
    ctx.faults.resumePids(receivers);
    throw error;
  }
}

export async function inject(ctx: ScenarioContext, kind: FaultKind): Promise<Staged> {
  const { cluster, faults } = ctx;
  const old = ctx.primary;
  const timeout = ctx.timeoutMs ?? 60_000;
  const primaryElsewhere = async () => {
    const name = await otherPrimary(ctx, old, timeout);
    const ack = await ctx.writer.waitForAcks(1, timeout, name);
    return { name, firstAckAt: ack.ackedAt };
  };
  const samePrimary = async () => {
    const ack = await ctx.writer.waitForAcks(1, timeout);
    const name = await otherPrimary(ctx, undefined, timeout);
    return { name, firstAckAt: ack.ackedAt };
  };
  const staged = (faultAt: number, expectsNewPrimary: boolean, awaitPrimary: Staged['awaitPrimary'], recover: Staged['recover']): Staged => ({
    kind,
    oldPrimary: old,
    faultAt,
    expectsNewPrimary,
    awaitPrimary,
    recover,
  });

  switch (kind) {
    case 'a': {
      const { at } = await faults.kill(old, 'both');
      return staged(at, true, primaryElsewhere, async () => {
        cluster.startAgent(old);
        return Date.now();
      });
    }
    case 'b': {
      const { at } = faults.stop(old, 'both');
      return staged(at, true, primaryElsewhere, async () => faults.resume(old, 'both').at);
    }
    case 'c': {
      const { at, pids } = await faults.kill(old, 'postgres');
      if (ctx.stallRestartMs) await stallRestart(ctx, pids, ctx.stallRestartMs);
      return staged(at, false, samePrimary, async () => undefined);
    }
    case 'd': {
      const { at } = await faults.kill(old, 'agent');
      return staged(at, true, primaryElsewhere, async () => {
        cluster.startAgent(old);
        return Date.now();
      });
    }
    case 'e': {
      const { at } = faults.stop(old, 'agent');
      return staged(at, true, primaryElsewhere, async () => faults.resume(old, 'agent').at);
    }
    case 'f': {
      // Past the lease by a margin: every lease taken before the outage has expired when it ends.
      const outageMs = ctx.ttlMs + 2_000;
      let end: () => Promise<number>;
      let at: number;
      if (cluster.storeConfig.backend === 'etcd') {
        if (!ctx.etcd) throw new Error("fault 'f' on etcd needs the etcd process");
        const etcd = ctx.etcd;
        at = faults.suspendEtcd(etcd).at;
        end = async () => faults.resumeEtcd(etcd).at;
      } else {
        const lock = await faults.lockEmbeddedStore();
        at = lock.at;
        end = lock.release;
      }
      const result = staged(
        at,
        false,
        async () => {
          // The outage is the fault itself: it lasts a fixed time, there is no condition to wait for.
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, at + outageMs - Date.now())));
          result.storeBackAt = await end();
          const ack = await ctx.writer.waitForAcks(1, timeout);
          const name = await otherPrimary(ctx, undefined, timeout);
          return { name, firstAckAt: ack.ackedAt };
        },
        async () => undefined,
      );
      return result;
    }
    case 'g': {
      const target = ctx.replicas[0]!;
      const at = Date.now();
      const switchover = cluster.cli(['switchover', '--to', target]);
      return staged(
        at,
        true,
        async () => {
          const result = await switchover;
          if (result.code !== 0) throw new Error(`switchover --to ${target} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
          // The command measures the write pause with its own probe and says so (issue 13).
          if (!/longest write pause \d+\.\d\d s/.test(result.stdout)) throw new Error(`switchover --to ${target} did not report the write pause: ${result.stdout.trim()}`);
          console.log(`# relevo switchover: ${result.stdout.trim()}`);
          const name = await otherPrimary(ctx, old, timeout);
          if (name !== target) throw new Error(`switchover --to ${target} made ${name} the primary`);
          const ack = await ctx.writer.waitForAcks(1, timeout, name);
          return { name, firstAckAt: ack.ackedAt };
        },
        async () => undefined,
      );
    }
    case 'h': {
      const receivers = await divergeOldPrimary(ctx, DIVERGED_TABLE);
      let at: number;
      try {
        at = (await faults.kill(old, 'both')).at;
      } finally {
        faults.resumePids(receivers);
      }
      return staged(at, true, primaryElsewhere, async () => {
        cluster.startAgent(old);
        return Date.now();
      });
    }
  }
}
