// Apart from replay.ts so the error catalogue (loaded by every CLI command) does not pull in PostgreSQL and pg_waldump code.
/** Error codes of replay control and recover-table (docs/undo.md lists them). */
export const REPLAY_ERROR_CODES = {
  UNKNOWN_MEMBER: 'no member of that name in the store',
  NOT_DELAYED: 'the member is not a delayed replica (no `delay` in its member file)',
  NOT_A_REPLICA: 'the member does not run as a replica right now',
  TARGET_ACTIVE: 'a recover-table run holds this replica at a recovery target',
  TARGET_OUTSIDE_WINDOW: 'the target is already replayed on the delayed replica, or is not committed on the primary yet',
  TARGET_NOT_REACHED: 'the replica did not pause at the target in time (the delay was put back)',
  TABLE_MISSING: 'the table does not exist on the delayed replica at the target',
  TABLE_LOCKED_AT_TARGET: 'a transaction in flight at the target holds the table locked there (use --find or --xid)',
  TARGET_TABLE_EXISTS: 'a table of the new name already exists on the primary',
  TABLE_ROW_SECURITY: 'the table has row-level security: relevo_remote (no BYPASSRLS) cannot read every row, so nothing is copied',
  PRIMARY_CHANGED: 'the member asked to write the recovered rows is not the running primary (a failover came between)',
  NOTHING_FOUND: '--find saw no TRUNCATE, DROP or mass DELETE of the table in the WAL of the delay window',
  BAD_REQUEST: 'the request is malformed',
  REPLAY_FAILED: 'PostgreSQL or a program failed while carrying out the request',
} as const;
export type ReplayErrorCode = keyof typeof REPLAY_ERROR_CODES;
