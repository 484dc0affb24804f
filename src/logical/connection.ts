/**
 * The other side of a subscription, as declared: its secret (read from a
 * file or the environment on this member, never from the store) and a SQL
 * connection to its primary for checks and lag.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { ConnectionDeclaration, SecretRef } from '../cluster/logical-settings.js';
import { readSource } from '../config/secrets.js';
import { LogicalError } from './errors.js';
import { pgpassField } from '../postgres/libpq.js';

export function readSubscriptionSecret(ref: SecretRef, what: string): string {
  try {
    return readSource(ref, what);
  } catch (error) {
    throw new LogicalError('LOGICAL_SECRET_UNAVAILABLE', (error as Error).message);
  }
}

/** A pgpass line for the declared user: the subscription's worker reads its password from there. */
export function passfileContent(connection: ConnectionDeclaration, password: string): string {
  return `*:*:*:${pgpassField(connection.user)}:${pgpassField(password)}\n`;
}

function sslOptions(connection: ConnectionDeclaration): pg.ClientConfig['ssl'] {
  switch (connection.sslmode) {
    case 'disable':
      return false;
    case 'prefer':
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
      return { ca: readFileSync(connection.sslrootcert!, 'utf8'), rejectUnauthorized: true, checkServerIdentity: () => undefined };
    case 'verify-full':
      return { ca: readFileSync(connection.sslrootcert!, 'utf8'), rejectUnauthorized: true };
  }
}

/**
 * Runs `work` on the first declared host that is a primary (as libpq's
 * target_session_attrs=primary would choose). Errors name the hosts tried, never the password.
 */
export async function withPublisher<T>(
  connection: ConnectionDeclaration,
  password: string,
  work: (client: pg.Client, host: string) => Promise<T>,
  timeoutMs = 5_000,
): Promise<T> {
  const failures: string[] = [];
  for (const address of connection.hosts) {
    const index = address.lastIndexOf(':');
    const client = new pg.Client({
      host: address.slice(0, index).replace(/^\[|\]$/g, ''),
      port: Number(address.slice(index + 1)),
      user: connection.user,
      password,
      database: connection.dbname,
      connectionTimeoutMillis: timeoutMs,
      statement_timeout: timeoutMs,
      application_name: 'relevo-logical',
      ssl: sslOptions(connection),
    });
    client.on('error', () => undefined);
    try {
      await client.connect();
    } catch (error) {
      failures.push(`${address}: ${(error as Error).message}`);
      continue;
    }
    try {
      const standby = (await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r;
      if (standby) {
        failures.push(`${address}: a standby`);
        continue;
      }
      return await work(client, address);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  throw new LogicalError('LOGICAL_PUBLISHER_UNREACHABLE', `no primary answered as ${connection.user}@${connection.dbname} (${failures.join('; ')})`);
}
