/**
 * Every backup failure is a value with a stable code the operator can act on.
 * docs/backup.md lists them (test/unit/backup-docs.test.ts keeps the two in step).
 */
export const BACKUP_ERRORS = {
  REPOSITORY_UNREACHABLE: { exit: 1, hint: 'check that the repository path exists, is mounted and is writable by the PostgreSQL OS user' },
  REPOSITORY_NOT_INITIALISED: { exit: 2, hint: "run 'relevo backup init' once (it writes relevo-repository.json)" },
  REPOSITORY_OTHER_CLUSTER: { exit: 2, hint: "point backup.repository (or --repository) at a repository that holds this cluster, or run 'relevo backup init' there" },
  BACKUP_NOT_CONFIGURED: { exit: 2, hint: "set the repository: relevo config set backup.repository=/path" },
  BACKUP_UNKNOWN: { exit: 2, hint: "'relevo backup list' shows the backup ids" },
  NO_BACKUP: { exit: 2, hint: "take one with 'relevo backup'" },
  TARGET_OUT_OF_RANGE: { exit: 2, hint: 'choose a target inside the range given; an older point needs an older backup that retention kept' },
  TARGET_INVALID: { exit: 2, hint: 'give exactly one of --time, --lsn, --xid, --name or --latest' },
  RESTORE_POINT_EXISTS: { exit: 2, hint: 'restore point names are unique: choose another name' },
  DESTINATION_NOT_EMPTY: { exit: 2, hint: 'restore into a new directory, or pass --delta to update an existing (stopped) one' },
  DESTINATION_RUNNING: { exit: 2, hint: 'stop the PostgreSQL server using that directory first' },
  NO_SOURCE: { exit: 1, hint: 'no streaming replica is available: wait for one, or pass --from-primary' },
  BACKUP_FAILED: { exit: 1, hint: 'see the message; the incomplete backup was removed from the repository' },
  WAL_MISSING: { exit: 1, hint: "WAL archiving is behind or broken: check 'relevo list' (archive backlog) and the PostgreSQL log" },
  BACKUP_CORRUPT: { exit: 3, hint: 'the named file does not match its checksum: take a new full backup; keep this one for investigation' },
  VERIFY_FAILED: { exit: 3, hint: 'the restore drill failed at the step named; the scratch directory was removed' },
} as const;

export type BackupErrorCode = keyof typeof BACKUP_ERRORS;

export class BackupError extends Error {
  readonly exitCode: number;
  readonly hint: string;
  constructor(
    readonly code: BackupErrorCode,
    message: string,
  ) {
    super(`${message} [${code}]`);
    this.name = 'BackupError';
    this.exitCode = BACKUP_ERRORS[code].exit;
    this.hint = BACKUP_ERRORS[code].hint;
  }
}
