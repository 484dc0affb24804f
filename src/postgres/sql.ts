import pg from 'pg';
import { pgTlsOptions } from '../tls/client.js';

export interface SqlTarget {
  /** Unix socket directory or host name. */
  host: string;
  port: number;
  user: string;
  password: string;
  database?: string;
  /** Network connections: the cluster CA file; the server's certificate and name are verified (verify-full). */
  tlsCaFile?: string;
}

/**
 * One short-lived connection per call: the agent asks a few questions per loop,
 * and a fresh connection never carries state (or a stuck transaction) over.
 */
function newClient(target: SqlTarget, timeoutMs: number): pg.Client {
  return new pg.Client({
    host: target.host,
    port: target.port,
    user: target.user,
    password: target.password,
    database: target.database ?? 'postgres',
    connectionTimeoutMillis: timeoutMs,
    statement_timeout: timeoutMs,
    application_name: 'relevo-agent',
    ...pgTlsOptions(target.tlsCaFile),
  });
}

export async function withConnection<T>(target: SqlTarget, work: (client: pg.Client) => Promise<T>, timeoutMs = 5_000): Promise<T> {
  const client = newClient(target, timeoutMs);
  client.on('error', () => {
    // Errors after connect surface through the pending query; nothing else to do here.
  });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/**
 * One connection kept open across agent cycles: the agent inspects its server
 * every loop, and a fresh SCRAM handshake each time would cost more CPU than
 * the inspection itself. Any error drops the connection; the next call reconnects.
 */
export class KeptConnection {
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;

  constructor(private readonly target: () => SqlTarget, private readonly timeoutMs = 3_000) {}

  private async connect(): Promise<pg.Client> {
    const client = newClient(this.target(), this.timeoutMs);
    client.on('error', () => {
      if (this.client === client) this.client = undefined;
    });
    client.on('end', () => {
      if (this.client === client) this.client = undefined;
    });
    await client.connect();
    return client;
  }

  async use<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
    if (!this.client) {
      this.connecting ??= this.connect().finally(() => {
        this.connecting = undefined;
      });
      this.client = await this.connecting;
    }
    const client = this.client;
    try {
      return await work(client);
    } catch (error) {
      this.close();
      throw error;
    }
  }

  close(): void {
    const client = this.client;
    this.client = undefined;
    client?.end().catch(() => undefined);
  }
}
