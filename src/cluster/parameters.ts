import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * PostgreSQL parameters that cluster settings (`postgresql.*`) and member
 * files (`postgres.parameters`) may not set: relevo sets them itself (its
 * addresses, replication, fencing, synchronous mode), or they change who may
 * connect and how (hba_file, ssl*, password_encryption...), or they make the
 * server read or run something else (include, archive/restore commands).
 * A unit test renders relevo.conf the way the agent does and checks that every
 * parameter in it is either listed here or one of the overridable defaults, so
 * this list cannot fall behind the code.
 */
export const MANAGED_PARAMETERS = [
  // relevo's own settings in relevo.conf
  'listen_addresses',
  'port',
  'unix_socket_directories',
  'cluster_name',
  'hot_standby',
  'wal_log_hints',
  'password_encryption',
  'synchronous_standby_names',
  'primary_conninfo',
  'primary_slot_name',
  'recovery_target_timeline',
  // fencing a former primary (ALTER SYSTEM)
  'default_transaction_read_only',
  // authentication and where the server reads its rules
  'hba_file',
  'ident_file',
  'config_file',
  'data_directory',
  'external_pid_file',
  'unix_socket_group',
  'unix_socket_permissions',
  'krb_server_keyfile',
  'krb_caseins_users',
  'db_user_namespace',
  // commands the server runs (backups manage these)
  'archive_command',
  'archive_library',
  'archive_cleanup_command',
  'restore_command',
  'recovery_end_command',
  'promote_trigger_file',
  // configuration file directives
  'include',
  'include_dir',
  'include_if_exists',
] as const;

/** Families refused by prefix: every ssl* parameter (TLS is relevo's to configure). */
const MANAGED_PREFIXES = ['ssl'] as const;

export type ManagedParameter = (typeof MANAGED_PARAMETERS)[number];

export function isManagedParameter(name: string): boolean {
  const lower = name.toLowerCase();
  return (MANAGED_PARAMETERS as readonly string[]).includes(lower) || MANAGED_PREFIXES.some((prefix) => lower.startsWith(prefix));
}

const parameterValue = z.union([
  // A line break would end the quoted value in relevo.conf and start another line.
  z.string().regex(/^[^\x00-\x1f\x7f]*$/, 'expected a value without control characters or line breaks'),
  z.number(),
  z.boolean(),
]);

/** A set of PostgreSQL parameters an operator may give: names in PostgreSQL's syntax, none that relevo manages. */
export const PostgresParametersSchema = z
  .record(z.string().regex(/^[a-z_][a-z0-9_.]*$/, 'expected a PostgreSQL parameter name (lower case)'), parameterValue)
  .superRefine((parameters, ctx) => {
    for (const name of Object.keys(parameters)) {
      if (isManagedParameter(name)) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: [name],
          message: `parameter ${name} is managed by relevo or changes authentication and cannot be set here; remove it (see docs/security.md)`,
        });
      }
    }
    const walLevel = parameters.wal_level;
    if (walLevel !== undefined && walLevel !== 'replica' && walLevel !== 'logical') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['wal_level'], message: "expected 'replica' or 'logical': replication needs at least replica" });
    }
  });

const PG_HBA_KEYWORDS = new Set(['samehost', 'samenet']);
const HOST_NAME = /^\.?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** Why `entry` cannot be a pg_hba address, or undefined when it is a CIDR range, samehost, samenet or a host name. */
export function networkProblem(entry: string): string | undefined {
  if (PG_HBA_KEYWORDS.has(entry)) return undefined;
  const slash = entry.indexOf('/');
  if (slash >= 0) {
    const address = entry.slice(0, slash);
    const prefix = entry.slice(slash + 1);
    const family = isIP(address);
    const max = family === 4 ? 32 : 128;
    if (family === 0 || !/^\d{1,3}$/.test(prefix) || Number(prefix) > max) {
      return `"${entry}" is not a CIDR range; expected e.g. 10.0.0.0/8 or fd00::/8`;
    }
    return undefined;
  }
  if (isIP(entry) !== 0) return `"${entry}" lacks a prefix length; write ${entry}/${isIP(entry) === 4 ? 32 : 128} for one address`;
  if (entry === 'all') return '"all" would admit every address; list the networks instead (0.0.0.0/0 if you truly mean it)';
  if (entry.length <= 253 && HOST_NAME.test(entry)) return undefined;
  return `"${entry}" is not a CIDR range, samehost, samenet or a host name`;
}

/** pg_hba address entries: each is checked, since it is written into pg_hba.conf as is. */
export const AllowedNetworksSchema = z
  .array(z.string())
  .min(1)
  .superRefine((entries, ctx) => {
    entries.forEach((entry, index) => {
      const problem = networkProblem(entry);
      if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [index], message: problem });
    });
  });
