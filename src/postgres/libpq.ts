/**
 * libpq's own text formats, written by relevo for PostgreSQL's clients and
 * servers: passfile (pgpass) fields and connection-string values.
 */

/** A pgpass field: backslash and colon escaped (libpq's "Password File"). */
export function pgpassField(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
}

/** A conninfo value, single-quoted with backslash and quote escaped (libpq's "Connection Strings"). */
export function conninfoValue(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
