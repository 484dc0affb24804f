/**
 * The role the new cluster's subscription logs in as on the old primary.
 * relevo's superuser never logs in over the network, so the copy gets its own
 * role with only what logical replication needs there: LOGIN REPLICATION and
 * read access to every table (pg_read_all_data, PostgreSQL 14+). Its password
 * is random per `upgrade start`, sent to the server only as a SCRAM verifier,
 * and kept only in the subscriber's passfile (0600, owned by PostgreSQL's OS
 * user). Dropped at `relevo upgrade forget`.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { scramVerifier } from '../postgres/scram.js';
import { quoteLiteral } from '../postgres/sql.js';

export const UPGRADE_ROLE = 'relevo_upgrade';

/** Creates or updates the role with a fresh random password; returns the password (for the passfile only). */
export async function ensureUpgradeRole(client: pg.Client): Promise<string> {
  const password = randomBytes(24).toString('base64url');
  await client.query(`DO $$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${UPGRADE_ROLE}') THEN CREATE ROLE ${UPGRADE_ROLE}; END IF;
    END $$`);
  await client.query(`ALTER ROLE ${UPGRADE_ROLE} LOGIN REPLICATION NOSUPERUSER PASSWORD ${quoteLiteral(scramVerifier(password))}`);
  await client.query(`GRANT pg_read_all_data TO ${UPGRADE_ROLE}`);
  return password;
}

export async function dropUpgradeRole(client: pg.Client): Promise<void> {
  await client.query(`DROP ROLE IF EXISTS ${UPGRADE_ROLE}`);
}
