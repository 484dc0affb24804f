/**
 * Logical replication declared in the cluster settings (`logical.*`):
 * publications this cluster offers, subscriptions it keeps, and how drift is
 * handled. Pure schemas and checks; the leader's agent applies them
 * (src/logical/reconcile.ts), `relevo logical` writes them (src/cli/logical-command.ts).
 */
import { z } from 'zod';

/** Unquoted PostgreSQL identifiers only: what relevo writes into SQL is then never ambiguous. */
const IDENT = /^[a-z_][a-z0-9_$]{0,62}$/;
const identifier = (what: string) => z.string().regex(IDENT, `expected a lower-case ${what} name (letters, digits, _; at most 63)`);
/** `schema.table` or `table` (public). */
const tableName = z.string().regex(/^([a-z_][a-z0-9_$]{0,62}\.)?[a-z_][a-z0-9_$]{0,62}$/, 'expected a table as schema.table or table (lower case, unquoted)');
/** Libpq values are quoted when rendered; control characters and spaces have no business in them. */
const conninfoValue = (what: string) => z.string().min(1).regex(/^[^\s\x00-\x1f\x7f'\\]+$/, `expected a ${what} without spaces, quotes, backslashes or control characters`);

export const PUBLISH_OPERATIONS = ['insert', 'update', 'delete', 'truncate'] as const;
export type PublishOperation = (typeof PUBLISH_OPERATIONS)[number];

export const PublicationDeclarationSchema = z
  .object({
    name: identifier('publication'),
    database: identifier('database'),
    /** Exactly one of tables, schemas, allTables. */
    tables: z.array(tableName).min(1).optional(),
    schemas: z.array(identifier('schema')).min(1).optional(),
    allTables: z.literal(true).optional(),
    publish: z.array(z.enum(PUBLISH_OPERATIONS)).min(1).default([...PUBLISH_OPERATIONS]),
  })
  .strict()
  .superRefine((p, ctx) => {
    const kinds = [p.tables, p.schemas, p.allTables].filter((k) => k !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', path: [], message: `publication ${p.name}: give exactly one of tables, schemas or allTables` });
  });
export type PublicationDeclaration = z.infer<typeof PublicationDeclarationSchema>;

/** Where a secret comes from: a 0600 file or an environment variable of the agent, never the store. */
export const SecretRefSchema = z.union([
  z.object({ file: z.string().regex(/^\//, 'expected an absolute path') }).strict(),
  z.object({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name') }).strict(),
]);
export type SecretRef = z.infer<typeof SecretRefSchema>;

export const CLEAR_PASSWORD_MESSAGE = 'LOGICAL_PASSWORD_IN_CLEAR: a password is never kept in the store; give password: {file: /path/0600-file} or password: {env: VARIABLE}';

export const ConnectionDeclarationSchema = z
  .object({
    /** host:port of every member of the publishing side; the subscription follows its primary (target_session_attrs=primary). */
    hosts: z.array(z.string().regex(/^[A-Za-z0-9.\-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'expected host:port')).min(1),
    dbname: conninfoValue('database name'),
    user: conninfoValue('role name'),
    password: z.preprocess((value, ctx) => {
      if (typeof value === 'string') {
        ctx.addIssue({ code: 'custom', message: CLEAR_PASSWORD_MESSAGE });
        return z.NEVER;
      }
      return value;
    }, SecretRefSchema),
    sslmode: z.enum(['disable', 'prefer', 'require', 'verify-ca', 'verify-full']).default('verify-full'),
    /** CA file on the subscribing members (needed for verify-ca / verify-full). */
    sslrootcert: conninfoValue('file path').optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if ((c.sslmode === 'verify-ca' || c.sslmode === 'verify-full') && !c.sslrootcert) {
      ctx.addIssue({ code: 'custom', path: ['sslrootcert'], message: `sslmode ${c.sslmode} needs sslrootcert (the publishing side's CA file on this cluster's members), or choose sslmode require` });
    }
  });
export type ConnectionDeclaration = z.infer<typeof ConnectionDeclarationSchema>;

export const SubscriptionDeclarationSchema = z
  .object({
    /** Also the name of its replication slot on the publishing side. */
    name: identifier('subscription'),
    database: identifier('database'),
    publications: z.array(identifier('publication')).min(1),
    connection: ConnectionDeclarationSchema,
    /** Copy the tables' existing rows first (initial synchronisation). */
    copyData: z.boolean().default(true),
    enabled: z.boolean().default(true),
  })
  .strict();
export type SubscriptionDeclaration = z.infer<typeof SubscriptionDeclarationSchema>;

export const LogicalSettingsSchema = z
  .object({
    publications: z.array(PublicationDeclarationSchema).default([]),
    subscriptions: z.array(SubscriptionDeclarationSchema).default([]),
    /**
     * Drift (an object that differs from its declaration, or one relevo finds undeclared in a
     * database it manages) is always reported; with repairDrift the leader also alters or drops it.
     */
    repairDrift: z.boolean().default(false),
    /**
     * Keep a copy of every logical slot of the primary on each replica that may be promoted
     * (PostgreSQL 15 has no failover slots; docs/logical.md says what this guarantees).
     */
    failoverSlots: z.boolean().default(true),
    /** How often the leader compares the declarations with the databases (at once after a settings change). */
    reconcileIntervalMs: z.number().int().min(500).max(3_600_000).default(5_000),
  })
  .strict()
  .superRefine((s, ctx) => {
    const seen = new Set<string>();
    s.publications.forEach((p, index) => {
      const key = `${p.database}/${p.name}`;
      if (seen.has(key)) ctx.addIssue({ code: 'custom', path: ['publications', index, 'name'], message: `publication ${p.name} is declared twice in database ${p.database}` });
      seen.add(key);
    });
    const subs = new Set<string>();
    s.subscriptions.forEach((sub, index) => {
      // Slot names are cluster-wide on the publishing side: the name must be unique here too.
      if (subs.has(sub.name)) ctx.addIssue({ code: 'custom', path: ['subscriptions', index, 'name'], message: `subscription ${sub.name} is declared twice` });
      subs.add(sub.name);
    });
  });
export type LogicalSettings = z.infer<typeof LogicalSettingsSchema>;

export function defaultLogicalSettings(): LogicalSettings {
  return LogicalSettingsSchema.parse({});
}

/** A cluster that publishes needs wal_level=logical (checked with the whole settings). */
export function walLevelProblem(logical: LogicalSettings, walLevel: unknown): string | undefined {
  if (logical.publications.length === 0) return undefined;
  if (walLevel === 'logical') return undefined;
  return 'LOGICAL_WAL_LEVEL: publications need postgresql.wal_level=logical (set it in the same change; it takes effect after `relevo restart --pending`)';
}

/** `schema.table` with the default schema made explicit. */
export function qualified(table: string): string {
  return table.includes('.') ? table : `public.${table}`;
}
