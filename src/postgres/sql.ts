import pg from 'pg';

export interface SqlTarget {
  /** Unix socket directory or host name. */
  host: string;
  port: number;
  user: string;
  password: string;
  database?: string;
}

/**
 * One short-lived connection per call: the agent asks a few questions per loop,
 * and a fresh connection never carries state (or a stuck transaction) over.
 */
export async function withConnection<T>(target: SqlTarget, work: (client: pg.Client) => Promise<T>, timeoutMs = 5_000): Promise<T> {
  const client = new pg.Client({
    host: target.host,
    port: target.port,
    user: target.user,
    password: target.password,
    database: target.database ?? 'postgres',
    connectionTimeoutMillis: timeoutMs,
    statement_timeout: timeoutMs,
    application_name: 'relevo-agent',
  });
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
