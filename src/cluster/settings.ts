import { z } from 'zod';

/**
 * Cluster-wide settings, kept in the store under `config` and changeable at run
 * time with `relevo config set|edit`. Every member reads them each loop.
 */
export const ClusterSettingsSchema = z
  .object({
    /** Leader lease TTL. A replica may take over only after it expires. */
    ttlMs: z.number().int().min(1000).max(300_000).default(10_000),
    /** Agent loop period: how often each agent observes, decides and publishes. */
    loopWaitMs: z.number().int().min(100).max(60_000).default(1_000),
    /** How long a removed member's replication slot is kept before it is dropped. */
    slotGraceSeconds: z.number().int().min(0).max(30 * 86_400).default(1_800),
    /** Replicas further behind than this (bytes) are not eligible for promotion. */
    maximumLagOnFailover: z.number().int().min(0).default(1_048_576),
    /** PostgreSQL parameters applied on every member (on top of relevo's own). */
    postgresql: z
      .record(z.string().regex(/^[a-z_][a-z0-9_.]*$/), z.union([z.string(), z.number(), z.boolean()]))
      .default({}),
    /** Networks allowed to connect (pg_hba address field), always with scram-sha-256. */
    allowedNetworks: z.array(z.string().min(1)).min(1).default(['samenet', '::1/128']),
  })
  .strict();

export type ClusterSettings = z.infer<typeof ClusterSettingsSchema>;

export function defaultClusterSettings(): ClusterSettings {
  return ClusterSettingsSchema.parse({});
}
