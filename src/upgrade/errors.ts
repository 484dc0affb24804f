/**
 * Every `relevo upgrade` failure is a value with a stable code. Refusals
 * (exit 2) are decided before anything is written: they change nothing.
 * docs/upgrade.md lists them (test/unit/upgrade.test.ts keeps the two in step).
 */
export const UPGRADE_ERRORS = {
  UPGRADE_SOURCE_UNREACHABLE: { summary: "the old cluster's primary cannot be reached", exit: 1, hint: "the old cluster has no reachable primary: check 'relevo list -c OLD'" },
  UPGRADE_TARGET_UNREACHABLE: { summary: "the new cluster's primary cannot be reached", exit: 1, hint: "start the new cluster's agent (member file with postgres.binDir of the new version) and wait until 'relevo list -c NEW' shows a primary" },
  UPGRADE_UNKNOWN_DATABASE: { summary: 'the database named does not exist on the old cluster', exit: 2, hint: 'name a database that exists on the old cluster (psql -l)' },
  UPGRADE_SAME_MAJOR: { summary: 'both clusters run the same major version', exit: 2, hint: 'the new cluster must run a newer major version: point its postgres.binDir at the new binaries' },
  UPGRADE_NOT_NEWER: { summary: 'the new cluster runs an older major version', exit: 2, hint: 'the new cluster runs an older major version than the old one: a logical copy downwards is not an upgrade' },
  UPGRADE_NO_REPLICA_IDENTITY: { summary: 'tables without a primary key or replica identity', exit: 2, hint: 'add a primary key to each table listed (best), or pass --replica-identity-full to let relevo set REPLICA IDENTITY FULL on them (every UPDATE/DELETE then logs the whole old row)' },
  UPGRADE_WAL_LEVEL: { summary: 'the old cluster does not run with wal_level=logical', exit: 2, hint: "logical replication needs wal_level=logical on the old cluster: relevo config set postgresql.wal_level=logical, then relevo restart --pending" },
  UPGRADE_TARGET_NOT_EMPTY: { summary: 'the database already exists on the new cluster', exit: 2, hint: 'the database already exists on the new cluster: drop it there, or upgrade into a new cluster' },
  UPGRADE_SAME_CLUSTER: { summary: 'the old and new member files name the same cluster', exit: 2, hint: 'name the new cluster\'s member file with --to' },
  UPGRADE_IN_PROGRESS: { summary: 'another upgrade of this cluster is recorded', exit: 2, hint: "another upgrade of this cluster is recorded: 'relevo upgrade status' shows it; finish it or 'relevo upgrade forget' it" },
  UPGRADE_NOT_STARTED: { summary: 'no upgrade of this cluster is recorded', exit: 2, hint: "start one with 'relevo upgrade start'" },
  UPGRADE_WRONG_STEP: { summary: 'the upgrade is not at the step this command needs', exit: 2, hint: "'relevo upgrade status' shows where the upgrade stands" },
  UPGRADE_ROUTERS_SILENT: { summary: 'a router did not apply the route record in time', exit: 1, hint: 'a router listed under the cluster did not apply the route record in time; a router stopped less than 3 publish intervals ago is still listed: retry, or stop the stale router' },
  UPGRADE_COPY_BROKEN: { summary: 'the subscription on the new cluster is not running', exit: 1, hint: "the subscription on the new cluster is not running: see the new cluster's PostgreSQL log (pg_stat_subscription), fix, then re-run 'relevo upgrade start'" },
  UPGRADE_NOT_CAUGHT_UP: { summary: 'the copy did not catch up within --catch-up-timeout', exit: 1, hint: 're-run the same command: the copy continues where it was; raise --catch-up-timeout for a large database' },
  UPGRADE_LSN_TIMEOUT: { summary: 'the subscriber did not confirm the last write in time', exit: 1, hint: 'the subscriber did not confirm the last write in time; writes were released on the old cluster: re-run to try again' },
  UPGRADE_ROW_COUNT_MISMATCH: { summary: 'row counts differ between the old cluster and the copy', exit: 1, hint: 'the copy differs from the old cluster (tables listed); writes were released on the old cluster, nothing was switched: check DDL or writes outside the router, then re-run' },
  UPGRADE_WRITES_SINCE_SWITCH: { summary: 'the new cluster took writes after the switch', exit: 2, hint: 'the new cluster took writes after the switch; they are not on the old cluster: pass --force to switch back anyway and lose them' },
  UPGRADE_NOT_PRIMARY: { summary: 'the agent asked is no longer the primary of its cluster', exit: 1, hint: "the primary moved (failover or switchover) while the command ran: re-run it; it finds the new primary and continues from the recorded step" },
  UPGRADE_API_REFUSED: { summary: "a primary's agent refused the upgrade request (authentication, address, or an agent without the operation)", exit: 2, hint: "the command asks each primary's agent over its REST API with the api.auth credentials (or client certificate) of the member file given: set api.auth in both member files, allow this host in api.allowlist, and run the same relevo version on the agents" },
  UPGRADE_OPERATION_FAILED: { summary: 'an upgrade operation failed on a primary', exit: 1, hint: "see the message (and the agent's log on that member); fix the cause and re-run: the upgrade continues from the recorded step" },
  UPGRADE_SCHEMA_COPY_FAILED: { summary: 'copying the schema (pg_dump, psql) failed', exit: 1, hint: 'pg_dump or psql failed (message above); fix the cause and re-run: the half-built database on the new cluster is rebuilt' },
} as const;

export type UpgradeErrorCode = keyof typeof UPGRADE_ERRORS;

export class UpgradeError extends Error {
  readonly exitCode: number;
  readonly hint: string;
  constructor(
    readonly code: UpgradeErrorCode,
    message: string,
  ) {
    super(`${message} [${code}]`);
    this.name = 'UpgradeError';
    this.exitCode = UPGRADE_ERRORS[code].exit;
    this.hint = UPGRADE_ERRORS[code].hint;
  }
}
