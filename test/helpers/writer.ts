/**
 * A client write load that behaves like a libpq application with a
 * multi-host connection string and target_session_attrs=read-write
 * (node-postgres supports neither): it tries each member's host:port in
 * order, keeps the first server that is not in recovery and not read-only,
 * and reconnects the same way after any error.
 *
 * It inserts sequential ids in autocommit, one at a time, and records every
 * id whose COMMIT was acknowledged, with the server that acknowledged it and
 * when, plus every failure. Afterwards `verify()` checks that each
 * acknowledged id exists on the current primary, and `unavailability()`
 * measures the gap from a fault to the first acknowledged write on the new
 * primary.
 *
 * Like a real application, it keeps using a connection while it works; it
 * only moves on after an error or after a statement got no answer within
 * queryTimeoutMs (a hung server). That is what exposes a resumed old primary
 * that still acknowledges writes: the writer would commit there again.
 */
import { Socket } from 'node:net';
import pg from 'pg';
import { loadCredentials } from '../../src/config/secrets.js';
import { pgTlsOptions } from '../../src/tls/client.js';
import { clusterCaFile } from '../../src/tls/member.js';
import { TEST_APP_ROLE, type TestCluster } from './cluster.js';

export interface WriterTarget {
  /** Member name, recorded as the server that acknowledged a commit. */
  name: string;
  host: string;
  port: number;
}

export interface WriterOptions {
  targets: WriterTarget[];
  user: string;
  password: string;
  database?: string;
  /** Cluster CA file: TCP sessions use TLS verified against it (absent: no TLS). */
  tlsCaFile?: string;
  /** Application table this writer owns (created if missing). */
  table: string;
  /** Pause between two inserts; 0 writes back to back. */
  intervalMs?: number;
  /** Per host, like libpq's connect_timeout (whose minimum is 2 s; we use less for finer measurements). */
  connectTimeoutMs?: number;
  /** A statement without an answer for this long means a hung server: drop the connection. */
  queryTimeoutMs?: number;
  /** Pause after a round in which no host accepted a read-write session. */
  retryMs?: number;
  /**
   * Ask the server who acknowledged each commit (inet_server_addr(), mapped to
   * a member name through this table) and on which timeline, instead of
   * trusting the target's name: a router or a proxy between us and the server.
   */
  serverNames?: Record<string, string>;
}

export interface Ack {
  id: number;
  server: string;
  /** When the INSERT was sent: the commit happened after this instant. */
  sentAt: number;
  /** When the acknowledgement arrived: the commit happened before this instant. */
  ackedAt: number;
  /** WAL insert position during the INSERT (its commit record follows): to place a lost commit in the WAL afterwards. */
  lsn: string | null;
  /** Timeline the commit was written on (from the WAL file name at the insert position). */
  timeline?: number;
}

export interface Failure {
  at: number;
  phase: 'connect' | 'write';
  /** The server tried (connect) or the session's server (write). */
  server: string | undefined;
  /** For write failures: the id whose outcome is unknown. */
  id?: number;
  message: string;
}

export interface VerifyResult {
  primary: string;
  acknowledged: number;
  /** Acknowledged ids missing on the primary: must be empty. */
  lost: number[];
  /** Ids whose write failed (outcome unknown) but that exist on the primary: allowed. */
  inDoubtPresent: number;
}

interface Session {
  target: WriterTarget;
  client: pg.Client;
  socket: Socket;
}

/** Rejects after ms; the caller destroys the socket, which also fails the pending query. */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/**
 * Opens a session on one server and accepts it only when it is read-write,
 * checked like libpq's target_session_attrs=read-write. The socket is ours so
 * a hung server can be dropped at once (client.end() would wait for it).
 */
export async function connectReadWrite(
  target: WriterTarget,
  credentials: { user: string; password: string; database?: string; tlsCaFile?: string },
  connectTimeoutMs: number,
): Promise<Session> {
  const socket = new Socket();
  const client = new pg.Client({
    host: target.host,
    port: target.port,
    user: credentials.user,
    password: credentials.password,
    database: credentials.database ?? 'postgres',
    stream: () => socket,
    application_name: 'relevo-test-writer',
    // TLS (verify-full against the cluster CA) on network addresses; a Unix socket has none.
    ...(target.host.startsWith('/') ? {} : pgTlsOptions(credentials.tlsCaFile)),
  });
  // A dropped session reports errors here too; without a listener they would crash the process.
  client.on('error', () => undefined);
  try {
    await withTimeout(client.connect(), connectTimeoutMs, `connect to ${target.name}`);
    const result = await withTimeout(
      client.query<{ ro: string; rec: boolean }>(`SELECT current_setting('transaction_read_only') AS ro, pg_is_in_recovery() AS rec`),
      connectTimeoutMs,
      `session check on ${target.name}`,
    );
    const row = result.rows[0];
    if (!row || row.ro !== 'off' || row.rec) throw new Error(`${target.name} is not read-write (transaction_read_only=${row?.ro}, in recovery=${row?.rec})`);
    return { target, client, socket };
  } catch (error) {
    socket.destroy();
    throw error;
  }
}

export class Writer {
  readonly acks: Ack[] = [];
  readonly failures: Failure[] = [];
  /** Ids in flight when stop() abandoned them: outcome unknown, like a failed write's. */
  readonly abandoned: number[] = [];
  private readonly ackedIds = new Set<number>();
  private nextId = 0;
  private running = false;
  private loop: Promise<void> | undefined;
  private session: Session | undefined;
  private wake: (() => void) | undefined;
  private readonly intervalMs: number;
  private readonly connectTimeoutMs: number;
  private readonly queryTimeoutMs: number;
  private readonly retryMs: number;

  constructor(readonly options: WriterOptions) {
    if (!/^[a-z_][a-z0-9_]*$/.test(options.table)) throw new Error(`writer table name ${options.table} is not a plain identifier`);
    this.intervalMs = options.intervalMs ?? 10;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 1_000;
    this.queryTimeoutMs = options.queryTimeoutMs ?? 2_000;
    this.retryMs = options.retryMs ?? 50;
  }

  /** A writer over every member of the cluster, in member order, as the test application role over TCP. */
  static forCluster(cluster: TestCluster, table: string, options: Partial<WriterOptions> = {}): Writer {
    const members = [...cluster.members.values()];
    const first = members[0];
    if (!first) throw new Error('the cluster has no members');
    const credentials = loadCredentials(first.config);
    if (!credentials) throw new Error('no credentials yet: bootstrap the cluster first');
    return new Writer({
      targets: members.map((m) => ({ name: m.name, host: m.config.postgres.listen, port: m.config.postgres.port })),
      user: TEST_APP_ROLE.user,
      password: TEST_APP_ROLE.password,
      tlsCaFile: clusterCaFile(first.config),
      table,
      ...options,
    });
  }

  get acknowledged(): number {
    return this.acks.length;
  }

  /** Creates the table on the read-write server, then starts writing. */
  async start(): Promise<void> {
    if (this.running) return;
    const session = await this.connect();
    if (!session) throw new Error(`writer: no read-write server among ${this.options.targets.map((t) => t.name).join(', ')}: ${this.lastFailures()}`);
    await withTimeout(
      session.client.query(`CREATE TABLE IF NOT EXISTS ${this.options.table} (id bigint PRIMARY KEY, server text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`),
      this.queryTimeoutMs * 5,
      'create the writer table',
    );
    this.session = session;
    this.running = true;
    this.loop = this.run();
  }

  /**
   * Stops writing: a statement in flight is abandoned (its outcome stays
   * unknown, it is not counted), so a writer stuck on a hung server stops at once.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    this.drop();
    await this.loop;
    this.loop = undefined;
    this.drop();
  }

  /** Resolves once `count` more commits have been acknowledged (or rejects after timeoutMs). */
  async waitForAcks(count: number, timeoutMs = 30_000, server?: string): Promise<Ack> {
    const start = this.acks.length;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const fresh = this.acks.slice(start).filter((a) => server === undefined || a.server === server);
      const last = fresh[count - 1];
      if (last) return last;
      if (!this.running) throw new Error('writer is not running');
      if (Date.now() > deadline) {
        throw new Error(`writer: ${fresh.length} of ${count} acknowledged writes${server ? ` on ${server}` : ''} within ${timeoutMs} ms; recent failures: ${this.lastFailures()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** First acknowledged write sent at or after `since`, optionally only from `server`. */
  firstAckAfter(since: number, server?: string): Ack | undefined {
    return this.acks.find((a) => a.sentAt >= since && (server === undefined || a.server === server));
  }

  /**
   * Write unavailability: from the fault to the first write acknowledged after
   * it by the new primary (any server when newPrimary is not given).
   */
  unavailability(faultAt: number, newPrimary?: string): number | undefined {
    const ack = this.acks.find((a) => a.ackedAt >= faultAt && a.sentAt >= faultAt && (newPrimary === undefined || a.server === newPrimary));
    return ack === undefined ? undefined : ack.ackedAt - faultAt;
  }

  /** Longest stretch without an acknowledgement between `from` and the last acknowledgement before `to`. */
  longestGap(from: number, to: number): number {
    let previous = from;
    let longest = 0;
    for (const a of this.acks) {
      if (a.ackedAt < from) continue;
      if (a.ackedAt > to) break;
      longest = Math.max(longest, a.ackedAt - previous);
      previous = a.ackedAt;
    }
    return longest;
  }

  /**
   * Acknowledgements that contradict "one primary at a time" from the
   * client's view: a write acknowledged by `oldPrimary` although it was sent
   * after `newPrimary` had already acknowledged one.
   */
  splitBrainAcks(oldPrimary: string, newPrimary: string): Ack[] {
    const first = this.acks.find((a) => a.server === newPrimary);
    if (!first) return [];
    return this.acks.filter((a) => a.server === oldPrimary && a.sentAt >= first.ackedAt);
  }

  /** Acknowledged writes whose statement was sent inside [from, to). */
  acksSentBetween(from: number, to: number): Ack[] {
    return this.acks.filter((a) => a.sentAt >= from && a.sentAt < to);
  }

  /** Which servers acknowledged commits, in order, with counts: e.g. node1×523 → node2×310. */
  serverSequence(): string {
    const runs: { server: string; count: number }[] = [];
    for (const a of this.acks) {
      const last = runs[runs.length - 1];
      if (last && last.server === a.server) last.count++;
      else runs.push({ server: a.server, count: 1 });
    }
    return runs.map((r) => `${r.server}×${r.count}`).join(' → ') || '(none)';
  }

  lastFailures(count = 5): string {
    return (
      this.failures
        .slice(-count)
        .map((f) => `${new Date(f.at).toISOString()} ${f.phase} ${f.server ?? '-'}: ${f.message}`)
        .join('; ') || '(none)'
    );
  }

  /**
   * Checks every acknowledged id on the current primary (the one member whose
   * status says 'primary'), connecting to it directly and requiring it to be
   * read-write.
   */
  /** `via` changes how the read-back connects (e.g. the cluster CA for a writer whose own path was a TLS-terminating router). */
  async verify(cluster: TestCluster, via: { tlsCaFile?: string } = {}): Promise<VerifyResult> {
    const primaries = (await cluster.memberStatuses()).filter((m) => m.state === 'primary');
    if (primaries.length !== 1) throw new Error(`verify: expected one primary, found ${primaries.map((p) => p.name).join(', ') || 'none'}`);
    const name = primaries[0]!.name;
    // The primary may be outside this writer's targets (a writer pinned to the old primary).
    const config = cluster.member(name).config;
    // A writer on a member's own host (Unix socket, as a role pg_hba admits only locally) reads back the same way.
    const local = this.options.targets.every((t) => t.host.startsWith('/')) && config.postgres.socketDir;
    const target = { name, host: local ? config.postgres.socketDir! : config.postgres.listen, port: config.postgres.port };
    const session = await connectReadWrite(target, { ...this.options, ...via }, 5_000);
    try {
      const rows = await withTimeout(session.client.query<{ id: string }>(`SELECT id FROM ${this.options.table}`), 30_000, 'read the writer table');
      const present = new Set(rows.rows.map((r) => Number(r.id)));
      const lost = this.acks.filter((a) => !present.has(a.id)).map((a) => a.id);
      let inDoubtPresent = 0;
      for (const f of this.failures) if (f.id !== undefined && !this.ackedIds.has(f.id) && present.has(f.id)) inDoubtPresent++;
      for (const id of this.abandoned) if (present.has(id)) inDoubtPresent++;
      return { primary: name, acknowledged: this.acks.length, lost, inDoubtPresent };
    } finally {
      session.socket.destroy();
    }
  }

  private async run(): Promise<void> {
    while (this.running) {
      if (!this.session) {
        this.session = await this.connect();
        if (!this.session) {
          await this.pause(this.retryMs);
          continue;
        }
      }
      const session = this.session;
      const id = ++this.nextId;
      const sentAt = Date.now();
      try {
        const names = this.options.serverNames;
        const result = await withTimeout(
          session.client.query<{ lsn: string; addr?: string | null; wal?: string }>(
            names
              ? `INSERT INTO ${this.options.table} (id, server) VALUES ($1, host(inet_server_addr())) RETURNING pg_current_wal_insert_lsn()::text AS lsn, host(inet_server_addr()) AS addr, pg_walfile_name(pg_current_wal_insert_lsn()) AS wal`
              : `INSERT INTO ${this.options.table} (id, server) VALUES ($1, $2) RETURNING pg_current_wal_insert_lsn()::text AS lsn`,
            names ? [id] : [id, session.target.name],
          ),
          this.queryTimeoutMs,
          `insert ${id} on ${session.target.name}`,
        );
        const row = result.rows[0];
        const server = names ? (names[row?.addr ?? ''] ?? `${session.target.name}:${row?.addr ?? '?'}`) : session.target.name;
        const timeline = row?.wal ? parseInt(row.wal.slice(0, 8), 16) : undefined;
        this.acks.push({ id, server, sentAt, ackedAt: Date.now(), lsn: row?.lsn ?? null, ...(timeline === undefined ? {} : { timeline }) });
        this.ackedIds.add(id);
      } catch (error) {
        // Outcome unknown: the id is never reused, and never counted as acknowledged.
        // stop() destroys the session under a statement in flight: that is the test ending, not a failure the server caused.
        if (!this.running) {
          this.abandoned.push(id);
          break;
        }
        this.failures.push({ at: Date.now(), phase: 'write', server: session.target.name, id, message: messageOf(error) });
        this.drop();
        continue;
      }
      if (this.intervalMs > 0) await this.pause(this.intervalMs);
    }
  }

  /** One libpq-style round: each host in order, the first read-write session wins. */
  private async connect(): Promise<Session | undefined> {
    for (const target of this.options.targets) {
      if (!this.running && this.loop !== undefined) return undefined;
      try {
        return await connectReadWrite(target, this.options, this.connectTimeoutMs);
      } catch (error) {
        this.failures.push({ at: Date.now(), phase: 'connect', server: target.name, message: messageOf(error) });
      }
    }
    return undefined;
  }

  private drop(): void {
    this.session?.socket.destroy();
    this.session = undefined;
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }
}

/** Creates the probe table on the primary so that it exists on every member before a fault. */
export async function createProbeTable(cluster: TestCluster, primary: string, table: string): Promise<void> {
  await cluster.sql(primary, `CREATE TABLE IF NOT EXISTS ${table} (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())`);
}

/**
 * One write straight to one member's port, outside the writer: resolves
 * 'acknowledged' only if the INSERT committed within timeoutMs. Used to show
 * that a former primary does not accept writes. The table must exist
 * (createProbeTable before the fault): creating it here would be a write too.
 */
export async function tryDirectWrite(
  cluster: TestCluster,
  name: string,
  table: string,
  timeoutMs: number,
): Promise<{ outcome: 'acknowledged' | 'refused' | 'no answer'; message: string }> {
  const member = cluster.member(name);
  const credentials = loadCredentials(member.config);
  if (!credentials) throw new Error('no credentials');
  const socket = new Socket();
  const client = new pg.Client({
    host: member.config.postgres.listen,
    port: member.config.postgres.port,
    user: TEST_APP_ROLE.user,
    password: TEST_APP_ROLE.password,
    database: 'postgres',
    stream: () => socket,
    application_name: 'relevo-test-probe',
    ...pgTlsOptions(clusterCaFile(member.config)),
  });
  client.on('error', () => undefined);
  const deadline = Date.now() + timeoutMs;
  try {
    await withTimeout(client.connect(), timeoutMs, `connect to ${name}`);
    await withTimeout(client.query(`INSERT INTO ${table} DEFAULT VALUES`), Math.max(1, deadline - Date.now()), `insert on ${name}`);
    return { outcome: 'acknowledged', message: `${name} committed an INSERT` };
  } catch (error) {
    const message = messageOf(error);
    return { outcome: /no answer within/.test(message) ? 'no answer' : 'refused', message };
  } finally {
    socket.destroy();
  }
}
