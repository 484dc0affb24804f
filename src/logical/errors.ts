/**
 * Stable error codes of logical replication, each with what to do. docs/logical.md
 * lists them; a unit test checks that it lists every one.
 */
export const LOGICAL_CODES = {
  LOGICAL_UNKNOWN_DATABASE: 'the database named does not exist (or refuses connections): create it, or fix the declaration',
  LOGICAL_UNKNOWN_TABLE: 'a table named in a publication does not exist: create it first, or fix the declaration',
  LOGICAL_UNKNOWN_SCHEMA: 'a schema named in a publication does not exist: create it first, or fix the declaration',
  LOGICAL_NO_REPLICA_IDENTITY:
    'a table without a primary key or replica identity would be published with UPDATE or DELETE, which PostgreSQL then refuses on the publishing side: add a primary key, or ALTER TABLE … REPLICA IDENTITY FULL, or publish only insert,truncate',
  LOGICAL_SECRET_UNAVAILABLE: "the subscription's password file or environment variable cannot be read on this member: create it (mode 0600) or export the variable for the agent",
  LOGICAL_PASSWORD_IN_CLEAR: 'a password was given in clear: give password: {file: …} or {env: …}',
  LOGICAL_PUBLISHER_UNREACHABLE: 'no primary of the publishing side answered with these connection settings: check hosts, user, password, pg_hba and TLS there',
  LOGICAL_UNKNOWN_PUBLICATION: 'a publication the subscription names does not exist on the publishing side: declare it there first',
  LOGICAL_TARGET_TABLE_MISSING: 'a published table does not exist in the subscribing database: create it there (same columns) before subscribing',
  LOGICAL_WAL_LEVEL: 'publishing needs wal_level=logical: set postgresql.wal_level=logical and restart (relevo restart --pending)',
  LOGICAL_APPLY_FAILED: 'PostgreSQL refused a statement relevo ran to apply a declaration: the message says why; fix and relevo retries',
  LOGICAL_DRIFT: 'an object differs from its declaration or is undeclared: change the declaration, or set logical.repairDrift=true to let relevo repair it',
  LOGICAL_SLOT_COPY_FAILED: "a replica could not copy a logical slot's state from the primary: see the message; it retries",
  LOGICAL_SLOT_ADVANCE_FAILED: "a replica could not move its copy of a logical slot forward (often: the WAL it starts from is gone): the copy is dropped and copied again at the next restart",
  LOGICAL_SLOT_NOT_READY: "a replica's copy of a logical slot is missing or not yet protected by hot_standby_feedback: a failover to it now would lose the slot",
  LOGICAL_NOT_LEADER: 'logical replication is applied by the leader only: run this against a cluster with a leader',
} as const;

export type LogicalCode = keyof typeof LOGICAL_CODES;

export class LogicalError extends Error {
  constructor(
    readonly code: LogicalCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'LogicalError';
  }

  get remedy(): string {
    return LOGICAL_CODES[this.code];
  }
}
