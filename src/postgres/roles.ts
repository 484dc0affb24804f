/**
 * relevo's network role: what the agents and the CLI use over TCP (pg_rewind's
 * source, fencing a former primary, backups, secret rotation). It is not a
 * superuser; it holds exactly the grants those need. The agent role `relevo`
 * stays a superuser reachable only through the local socket (pg_hba rejects
 * it on the network), and `postgres` only with peer authentication.
 *
 * The same SQL creates the role at bootstrap and migrates an older cluster
 * (whose `relevo` logged in over the network as a superuser) when an agent
 * runs as the primary: it is idempotent, and versioned by the role's comment
 * so it runs once per version.
 */
import type pg from 'pg';
import { ROLE_NAMES } from '../config/secrets.js';
import { scramVerifier } from './scram.js';
import { quoteIdent, quoteLiteral } from './sql.js';

/** Bump when the grants below change: primaries re-apply them once. */
export const NETWORK_ROLE_VERSION = 'relevo network role v1';

/** Functions pg_rewind calls on its source (PostgreSQL's pg_rewind documentation, "Notes"), and relevo's own calls. */
const FUNCTIONS = [
  // pg_rewind
  'pg_catalog.pg_ls_dir(text, boolean, boolean)',
  'pg_catalog.pg_stat_file(text, boolean)',
  'pg_catalog.pg_read_binary_file(text)',
  'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)',
  // the rewind's timeline check, fencing, backups
  'pg_catalog.pg_control_checkpoint()',
  'pg_catalog.pg_reload_conf()',
  'pg_catalog.pg_switch_wal()',
  'pg_catalog.pg_create_restore_point(text)',
  'pg_catalog.pg_wal_replay_pause()',
  'pg_catalog.pg_wal_replay_resume()',
];

/**
 * Predefined roles: CHECKPOINT before a rewind (pg_checkpoint, PostgreSQL 15+),
 * ending client sessions when fencing (pg_signal_backend: never a superuser's),
 * statistics (pg_monitor), and pg_dump of every database (pg_read_all_data).
 */
const MEMBER_OF = ['pg_checkpoint', 'pg_signal_backend', 'pg_monitor', 'pg_read_all_data'];

/** Fencing a former primary persists these with ALTER SYSTEM (grantable since PostgreSQL 15). */
const ALTER_SYSTEM = ['synchronous_standby_names', 'default_transaction_read_only'];

/** Roles whose password `relevo secrets rotate` may set through `_relevo.set_password`. */
const ROTATABLE = [ROLE_NAMES.agent, ROLE_NAMES.network, ROLE_NAMES.replication];

/**
 * The SQL, run by a superuser in the `postgres` database (function grants are
 * per database; pg_rewind connects to `postgres`). `verifier`: the network
 * role's SCRAM verifier (the agent password), set only when the role is new.
 */
export function networkRoleSql(verifier: string): string {
  const role = quoteIdent(ROLE_NAMES.network);
  const allowed = ROTATABLE.map(quoteLiteral).join(', ');
  return [
    `DO $$ BEGIN
       IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = ${quoteLiteral(ROLE_NAMES.network)}) THEN
         CREATE ROLE ${role} LOGIN PASSWORD ${quoteLiteral(verifier)};
       END IF;
     END $$;`,
    `ALTER ROLE ${role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;`,
    `GRANT EXECUTE ON FUNCTION ${FUNCTIONS.join(', ')} TO ${role};`,
    `GRANT ${MEMBER_OF.join(', ')} TO ${role};`,
    `GRANT ALTER SYSTEM ON PARAMETER ${ALTER_SYSTEM.join(', ')} TO ${role};`,
    // Changing a replication role's or another role's password needs a superuser: one narrow definer function.
    `CREATE SCHEMA IF NOT EXISTS _relevo;`,
    `REVOKE ALL ON SCHEMA _relevo FROM PUBLIC;`,
    `GRANT USAGE ON SCHEMA _relevo TO ${role};`,
    `CREATE OR REPLACE FUNCTION _relevo.set_password(role_name text, verifier text) RETURNS void
       LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
     BEGIN
       IF role_name NOT IN (${allowed}) THEN
         RAISE EXCEPTION 'relevo: % is not a role relevo manages', role_name;
       END IF;
       IF verifier !~ '^SCRAM-SHA-256\\$[0-9]+:[A-Za-z0-9+/=]+\\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' THEN
         RAISE EXCEPTION 'relevo: a SCRAM-SHA-256 verifier is required, never a password';
       END IF;
       EXECUTE format('ALTER ROLE %I PASSWORD %L', role_name, verifier);
     END $fn$;`,
    `REVOKE ALL ON FUNCTION _relevo.set_password(text, text) FROM PUBLIC;`,
    `GRANT EXECUTE ON FUNCTION _relevo.set_password(text, text) TO ${role};`,
    `COMMENT ON ROLE ${role} IS ${quoteLiteral(NETWORK_ROLE_VERSION)};`,
  ].join('\n');
}

/**
 * On the primary, through the agent's local superuser connection: creates or
 * updates the network role when its version comment differs. Returns true
 * when it changed anything. Replicas get it by replication.
 */
export async function ensureNetworkRole(client: pg.Client, agentPassword: string): Promise<boolean> {
  const current = await client.query<{ c: string | null }>(
    `SELECT pg_catalog.shobj_description(oid, 'pg_authid') AS c FROM pg_catalog.pg_roles WHERE rolname = $1`,
    [ROLE_NAMES.network],
  );
  if (current.rows[0]?.c === NETWORK_ROLE_VERSION) return false;
  await client.query('BEGIN');
  try {
    await client.query(networkRoleSql(scramVerifier(agentPassword)));
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  return true;
}
