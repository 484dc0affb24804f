/** Any failure of relevo's own base backup (stream, archive, files): one catalogued code, the message says what and where. */
export class BaseBackupError extends Error {
  readonly code = 'BASE_BACKUP_FAILED';
}
