/**
 * A reader through the router's read-only listener: a new session per read
 * (the router picks an eligible replica per connection), asking the server
 * who it is, whether it is in recovery, how far it has replayed and on which
 * timeline. The checker compares each read with what the primary had
 * acknowledged some time before (see checker.ts: staleReads).
 */
import { Socket } from 'node:net';
import pg from 'pg';

export interface Read {
  /** When the session was requested. */
  at: number;
  server: string;
  inRecovery: boolean;
  /** pg_last_wal_replay_lsn() on a replica; pg_current_wal_lsn() on a primary. */
  lsn: string;
  timeline: number | null;
}

export interface ReaderOptions {
  host: string;
  port: number;
  user: string;
  password: string;
  serverNames: Record<string, string>;
  intervalMs?: number;
}

export class Reader {
  readonly reads: Read[] = [];
  /** Reads that failed (no eligible replica, a session cut): allowed, counted. */
  failures = 0;
  private running = false;
  private loop: Promise<void> | undefined;

  constructor(private readonly options: ReaderOptions) {}

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async run(): Promise<void> {
    while (this.running) {
      const at = Date.now();
      const socket = new Socket();
      const client = new pg.Client({
        host: this.options.host,
        port: this.options.port,
        user: this.options.user,
        password: this.options.password,
        database: 'postgres',
        stream: () => socket,
        application_name: 'relevo-chaos-reader',
      });
      client.on('error', () => undefined);
      const timer = setTimeout(() => socket.destroy(), 3_000);
      try {
        await client.connect();
        const { rows } = await client.query<{ rec: boolean; addr: string | null; lsn: string; tli: number | null }>(
          `SELECT pg_is_in_recovery() AS rec, host(inet_server_addr()) AS addr,
                  CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text AS lsn,
                  CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver)
                       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS tli`,
        );
        const row = rows[0];
        if (row && row.lsn) this.reads.push({ at, server: this.options.serverNames[row.addr ?? ''] ?? `?${row.addr}`, inRecovery: row.rec, lsn: row.lsn, timeline: row.tli });
      } catch {
        this.failures++;
      } finally {
        clearTimeout(timer);
        socket.destroy();
      }
      await new Promise((resolve) => setTimeout(resolve, this.options.intervalMs ?? 200));
    }
  }
}
