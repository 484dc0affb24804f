import { z } from 'zod';
import { BackupSettingsSchema } from './backup-settings.js';
import { AllowedNetworksSchema, PostgresParametersSchema } from './parameters.js';
import { defaultLogicalSettings, LogicalSettingsSchema, walLevelProblem } from './logical-settings.js';
import { StandbyClusterSchema } from './site.js';

/**
 * Cluster-wide settings, kept in the store under `config` and changeable at run
 * time with `relevo config set|edit`. Every member reads them each loop.
 */
export const ClusterSettingsSchema = z
  .object({
    /**
     * Leader lease TTL. A replica may take over only after it expires; the
     * primary fences itself fenceMarginMs before it could expire.
     */
    ttlMs: z.number().int().min(1000).max(300_000).default(6_000),
    /** Agent loop period: how often each agent observes, decides, renews and publishes. */
    loopWaitMs: z.number().int().min(100).max(60_000).default(1_000),
    /**
     * A primary that has not renewed its lease for ttlMs - fenceMarginMs stops
     * PostgreSQL. Must exceed one loop plus one store timeout (checked below).
     */
    fenceMarginMs: z.number().int().min(200).max(300_000).default(2_000),
    /**
     * 'on': relevo manages synchronous_standby_names as FIRST n; only members holding every acknowledged
     * commit are promoted automatically. 'quorum': ANY synchronousCount over every healthy streaming standby;
     * a failover first compares WAL positions with enough members of the quorum record (docs/architecture.md).
     */
    synchronousMode: z.enum(['on', 'quorum', 'off']).default('on'),
    /** Number of synchronous standbys (when that many are available); in quorum mode, how many must acknowledge each commit. */
    synchronousCount: z.number().int().min(1).max(10).default(1),
    /** strict: writes wait while no synchronous standby is available. Otherwise fall back to asynchronous after synchronousFallbackMs. */
    synchronousStrict: z.boolean().default(false),
    synchronousFallbackMs: z.number().int().min(0).max(3_600_000).default(30_000),
    /** A crashed primary is restarted in place; if it is not back within this time, the lease is released for a failover. */
    primaryRestartTimeoutMs: z.number().int().min(1_000).max(3_600_000).default(30_000),
    /**
     * When pg_rewind cannot reconcile a former primary: 'none' leaves it stopped
     * for the operator; 'reclone' moves the old data directory aside (kept, never
     * deleted) and clones afresh.
     */
    rewindFallback: z.enum(['none', 'reclone']).default('reclone'),
    /** On a switchover, the old primary waits up to this long for open client transactions to finish before it shuts down. */
    switchoverDrainMs: z.number().int().min(0).max(600_000).default(5_000),
    /**
     * While the store is unreachable, the primary keeps running as long as every member it last knew confirms
     * over the REST API (POST /failsafe) that it still follows it and has not promoted. Needs api.auth on every member.
     */
    failsafe: z.boolean().default(false),
    /** Maintenance mode: no automatic action (no failover, no restart, no fencing by stopping PostgreSQL). */
    paused: z.boolean().default(false),
    /** How long a removed member's replication slot is kept before it is dropped. */
    slotGraceSeconds: z.number().int().min(0).max(30 * 86_400).default(1_800),
    /** Replicas further behind than this (bytes) are not eligible for promotion. */
    maximumLagOnFailover: z.number().int().min(0).default(1_048_576),
    /**
     * PostgreSQL parameters applied on every member (over relevo's defaults).
     * Parameters relevo manages or that change authentication are refused (src/cluster/parameters.ts).
     */
    postgresql: PostgresParametersSchema.default({}),
    /**
     * Networks allowed to connect (pg_hba address field), always with scram-sha-256:
     * CIDR ranges, samehost, samenet or host names; anything else is refused.
     */
    allowedNetworks: AllowedNetworksSchema.default(['samenet', '::1/128']),
    /**
     * Roll restart-requiring changes out by themselves: the leader runs the same rolling
     * restart as `relevo restart --pending` (replicas, switchover, former primary) when a
     * member has parameters pending restart, inside `window` (UTC "HH:MM"-"HH:MM", may wrap
     * midnight; null: any time). Off by default.
     */
    autoRestart: z
      .object({
        pending: z.boolean().default(false),
        window: z
          .object({ start: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'expected HH:MM (UTC)'), end: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'expected HH:MM (UTC)') })
          .strict()
          .nullable()
          .default(null),
      })
      .strict()
      .default({ pending: false, window: null }),
    /** WAL archive, base backups, retention and schedules (src/cluster/backup-settings.ts, docs/backup.md). */
    backup: BackupSettingsSchema.default(BackupSettingsSchema.parse({})),
    /** Publications, subscriptions and failover of logical slots (src/cluster/logical-settings.ts, docs/logical.md). */
    logical: LogicalSettingsSchema.default(defaultLogicalSettings()),
    /**
     * Set: this cluster is a standby cluster of another (docs/sites.md). Its leader is a standby leader that
     * replicates from the source's current primary; nothing here is ever promoted. null: an ordinary cluster.
     * Written by `relevo site follow|switchover|promote`, which check it first.
     */
    standbyCluster: StandbyClusterSchema.nullable().default(null),
    /**
     * Raised by one at every change of these settings (by the writer, never by hand);
     * each member publishes the generation it has applied, so `relevo list` shows
     * whether every member runs with the current settings.
     */
    generation: z.number().int().min(0).default(0),
  })
  .strict()
  .refine((s) => s.ttlMs - s.fenceMarginMs >= s.loopWaitMs, {
    message: 'ttlMs - fenceMarginMs must be at least loopWaitMs, or a healthy primary would fence itself',
    path: ['fenceMarginMs'],
  })
  .superRefine((s, ctx) => {
    const problem = walLevelProblem(s.logical, s.postgresql.wal_level);
    if (problem) ctx.addIssue({ code: 'custom', path: ['logical', 'publications'], message: problem });
  });

export type ClusterSettings = z.infer<typeof ClusterSettingsSchema>;

export function defaultClusterSettings(): ClusterSettings {
  return ClusterSettingsSchema.parse({});
}

