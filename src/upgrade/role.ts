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

/** A fresh random password for the role: the CLI sends its SCRAM verifier to the old primary and the password to the new one's passfile. */
export function upgradePassword(): { password: string; verifier: string } {
  const password = randomBytes(24).toString('base64url');
  return { password, verifier: scramVerifier(password) };
}

/** Creates or updates the role with the given SCRAM verifier (the old primary's agent never sees the password). */
export async function ensureUpgradeRole(client: pg.Client, verifier: string): Promise<void> {
  await client.query(`DO $$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${UPGRADE_ROLE}') THEN CREATE ROLE ${UPGRADE_ROLE}; END IF;
    END $$`);
  await client.query(`ALTER ROLE ${UPGRADE_ROLE} LOGIN REPLICATION NOSUPERUSER PASSWORD ${quoteLiteral(verifier)}`);
  await client.query(`GRANT pg_read_all_data TO ${UPGRADE_ROLE}`);
}

export async function dropUpgradeRole(client: pg.Client): Promise<void> {
  await client.query(`DROP ROLE IF EXISTS ${UPGRADE_ROLE}`);
}
