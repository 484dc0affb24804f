/**
 * Checks a declaration against the live databases before anything is
 * created: `relevo logical … add` runs them before writing the settings (bad
 * input changes nothing), and the leader runs them before creating an object.
 * Each problem carries a stable code (src/logical/errors.ts).
 */
import type { PublicationDeclaration, SubscriptionDeclaration } from '../cluster/logical-settings.js';
import { withConnection, type SqlTarget } from '../postgres/sql.js';
import { readSubscriptionSecret, withPublisher } from './connection.js';
import { LogicalError } from './errors.js';
import { databaseExists, existingTables, publishedTables, resolvePublicationTables } from './sql.js';

/** Opens a connection to a database of this cluster's primary. */
export type DatabaseTarget = (database: string) => SqlTarget;

async function requireDatabase(target: DatabaseTarget, database: string): Promise<void> {
  const exists = await withConnection(target('postgres'), (client) => databaseExists(client, database));
  if (!exists) throw new LogicalError('LOGICAL_UNKNOWN_DATABASE', `database ${database} does not exist on this cluster`);
}

export async function checkPublication(target: DatabaseTarget, p: PublicationDeclaration): Promise<{ tables: number }> {
  await requireDatabase(target, p.database);
  const resolved = await withConnection(target(p.database), (client) => resolvePublicationTables(client, p));
  if (resolved.unknownTables.length > 0) throw new LogicalError('LOGICAL_UNKNOWN_TABLE', `publication ${p.name}: no table ${resolved.unknownTables.join(', ')} in database ${p.database}`);
  if (resolved.unknownSchemas.length > 0) throw new LogicalError('LOGICAL_UNKNOWN_SCHEMA', `publication ${p.name}: no schema ${resolved.unknownSchemas.join(', ')} in database ${p.database}`);
  if (p.publish.includes('update') || p.publish.includes('delete')) {
    const without = resolved.tables.filter((t) => !t.replicaIdentity).map((t) => t.name);
    if (without.length > 0) {
      throw new LogicalError(
        'LOGICAL_NO_REPLICA_IDENTITY',
        `publication ${p.name} publishes ${p.publish.join(',')} but ${without.join(', ')} ha${without.length === 1 ? 's' : 've'} no primary key or replica identity; add one (ALTER TABLE ${without[0]} REPLICA IDENTITY FULL, or a primary key), or publish only insert,truncate`,
      );
    }
  }
  return { tables: resolved.tables.length };
}

/** The subscribing database exists, the secret is readable, the publishing primary answers, its publications exist, and every table they send exists here. */
export async function checkSubscription(target: DatabaseTarget, s: SubscriptionDeclaration): Promise<{ publisher: string; tables: string[]; publisherClusterName: string }> {
  await requireDatabase(target, s.database);
  const password = readSubscriptionSecret(s.connection.password, `subscription ${s.name}: connection.password`);
  const { publisher, found, tables, clusterName } = await withPublisher(s.connection, password, async (client, host) => ({ publisher: host, ...(await publishedTables(client, s.publications)) }));
  const unknown = s.publications.filter((p) => !found.includes(p));
  if (unknown.length > 0) throw new LogicalError('LOGICAL_UNKNOWN_PUBLICATION', `subscription ${s.name}: no publication ${unknown.join(', ')} in database ${s.connection.dbname} at ${publisher}`);
  const here = await withConnection(target(s.database), (client) => existingTables(client, tables));
  const missing = tables.filter((t) => !here.has(t));
  if (missing.length > 0) {
    throw new LogicalError('LOGICAL_TARGET_TABLE_MISSING', `subscription ${s.name}: ${missing.join(', ')} published by ${publisher} but missing in database ${s.database} here; create ${missing.length === 1 ? 'it' : 'them'} with the same columns first`);
  }
  return { publisher, tables, publisherClusterName: clusterName };
}
