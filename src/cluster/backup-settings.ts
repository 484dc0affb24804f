import { z } from 'zod';

/**
 * Cluster-wide backup settings (`relevo config set backup.<name>=<value>`),
 * under `backup` in the cluster settings. Documented in docs/backup.md.
 */
export const BackupSettingsSchema = z
  .object({
    /**
     * Repository directory, the same path on every member's host (local disk or
     * a mounted NFS/CephFS). Unset: no archiving and no backups. Setting it turns
     * on archive_mode, which PostgreSQL applies only at a restart (`relevo restart`).
     */
    repository: z.string().startsWith('/', 'expected an absolute path').optional(),
    /** gzip level of base backup files, 1 (fast) to 9 (small). */
    compressLevel: z.number().int().min(1).max(9).default(1),
    /** Files compressed at the same time (node's thread pool). */
    parallel: z.number().int().min(1).max(16).default(4),
    /** Switch WAL segments at least this often on an idle server, so PITR reaches recent times (archive_timeout). */
    archiveTimeoutSeconds: z.number().int().min(0).max(86_400).default(60),
    /** The archive backlog (segments waiting in pg_wal) is logged as a warning from this size. */
    backlogWarnBytes: z.number().int().min(16 * 1024 * 1024).default(1024 * 1024 * 1024),
    /**
     * The limit: past it, `atBacklogLimit` applies. 'keep' keeps every segment
     * (pg_wal may fill its disk: the warning turns into an error each cycle);
     * 'drop' lets PostgreSQL recycle unarchived segments so the primary keeps
     * running: the archive then has a gap (logged, shown in `relevo backup list`),
     * and point-in-time recovery across it needs a new full backup.
     */
    backlogLimitBytes: z.number().int().min(16 * 1024 * 1024).default(8 * 1024 * 1024 * 1024),
    atBacklogLimit: z.enum(['keep', 'drop']).default('keep'),
    retention: z
      .object({
        /** Keep at least this many full backups (with their incrementals). */
        fullCount: z.number().int().min(1).optional(),
        /** Keep backups (and the WAL to recover within the window) this many days. */
        maxAgeDays: z.number().min(0).optional(),
      })
      .strict()
      .default({}),
    /** Schedules run by the leader's agent: hours between backups (0: none). */
    schedule: z
      .object({
        fullEveryHours: z.number().min(0).default(0),
        incrementalEveryHours: z.number().min(0).default(0),
        /** Hours between scheduled logical dumps (`relevo dump`), under the same retention (0: none). */
        dumpEveryHours: z.number().min(0).default(0),
        /** Run `backup verify` after each scheduled backup. */
        verify: z.boolean().default(true),
        /** How often the leader's agent checks whether a backup is due, and every agent re-reads the catalogue for its metrics. */
        checkSeconds: z.number().int().min(1).max(3_600).default(60),
      })
      .strict()
      .default({ fullEveryHours: 0, incrementalEveryHours: 0, dumpEveryHours: 0, verify: true, checkSeconds: 60 }),
    /**
     * A new cluster starts from a backup instead of initdb: the member that
     * initialises it restores this backup (to the target, or the end of the
     * archive), lets it promote, and the others clone from it. Read only while
     * the cluster has no system identifier yet; remove it afterwards at will.
     */
    bootstrapFrom: z
      .object({
        /** Repository holding the backup; default: `repository`. */
        repository: z.string().startsWith('/', 'expected an absolute path').optional(),
        /** The source cluster's directory there: `<name>-<system identifier>`, or the name alone when only one directory has it. */
        cluster: z.string().min(1),
        /** Backup id; default: the newest one that ended before the target. */
        backup: z.string().optional(),
        /** Recovery target, at most one; none: the end of the archive. */
        time: z.string().optional(),
        lsn: z.string().optional(),
        name: z.string().optional(),
        xid: z.string().optional(),
      })
      .strict()
      .refine((b) => [b.time, b.lsn, b.name, b.xid].filter((t) => t !== undefined).length <= 1, { message: 'give at most one of time, lsn, name, xid' })
      .optional(),
  })
  .strict();

export type BackupSettings = z.infer<typeof BackupSettingsSchema>;
