import { z } from 'zod';
import { StoreConfigSchema } from '../store/config.js';

/**
 * Standby cluster (docs/sites.md): the cluster this one follows. Its standby
 * leader streams from that cluster's current primary, found in that cluster's
 * store (its leader key and member records), so it follows the source's failovers.
 */
export const StandbyClusterSchema = z
  .object({
    /** The source cluster's name (its keys live under /relevo/<sourceCluster>/). */
    sourceCluster: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'expected a cluster name'),
    /** How to reach the source's store; absent: the same store as this cluster (another key space in it). */
    sourceStore: StoreConfigSchema.optional(),
    /**
     * The source's backup repository (its `backup.repository`, reachable from this site, e.g. a shared or
     * replicated mount): the members also restore the source's archived WAL (restore_command), so a standby
     * leader that fell behind what the source keeps in pg_wal catches up from the archive. Absent: streaming only.
     */
    sourceRepository: z.string().startsWith('/', 'expected an absolute path').optional(),
    /**
     * Where the standby leader's WAL comes from: "stream" (the source's primary), "archive" (the source's
     * WAL archive in sourceRepository only: no connection to the source, so it keeps following while the
     * source cannot be reached by streaming, a WAL segment behind), or "both". Absent: "both" with a
     * sourceRepository, else "stream". The other members always stream from the standby leader.
     */
    feed: z.enum(['stream', 'archive', 'both']).optional(),
  })
  .strict()
  .refine((s) => s.feed === undefined || s.feed === 'stream' || s.sourceRepository !== undefined, { message: 'feed "archive" or "both" needs sourceRepository (the source\'s backup repository as mounted here)', path: ['feed'] });
export type StandbyCluster = z.infer<typeof StandbyClusterSchema>;
export type SiteFeed = NonNullable<StandbyCluster['feed']>;

/** The feed in force (see `feed`). */
export function feedOf(link: StandbyCluster): SiteFeed {
  return link.feed ?? (link.sourceRepository ? 'both' : 'stream');
}

/** Record under `site/link`, and under the source's `site/standby-clusters/<name>`: the cross-site link as the standby leader sees it. */
export const SiteLinkSchema = z.object({
  /** The standby cluster and its standby leader. */
  cluster: z.string(),
  standbyLeader: z.string(),
  sourceCluster: z.string(),
  /** The source member streamed from (its primary), or null while none is known. */
  upstream: z.string().nullable(),
  upstreamAddress: z.string().nullable(),
  streaming: z.boolean(),
  /** The standby cluster's feed (StandbyCluster.feed); absent in links written before it existed. */
  feed: z.enum(['stream', 'archive', 'both']).optional(),
  /** The source primary's last published WAL position and timeline (the source's last known LSN). */
  sourceLsn: z.string().nullable(),
  sourceTimeline: z.number().nullable(),
  receivedLsn: z.string().nullable(),
  replayedLsn: z.string().nullable(),
  /** sourceLsn - replayedLsn (0 when the source's published position is behind ours). */
  lagBytes: z.number().nullable(),
  /** now - timestamp of the last replayed commit, 0 when everything received is replayed. */
  lagSeconds: z.number().nullable(),
  /** Why the source is not followed, when it is not. */
  problem: z.string().nullable(),
  at: z.string(),
});
export type SiteLink = z.infer<typeof SiteLinkSchema>;

/** Record under `site/demotion`: the former primary of a cluster turned into a standby cluster shut down cleanly here. */
export const SiteDemotionSchema = z.object({
  member: z.string(),
  /** The shutdown checkpoint: the new source has every commit once it has replayed past it. */
  shutdownLsn: z.string(),
  timeline: z.number(),
  /** The settings generation that asked for the demotion (a later demotion writes again). */
  generation: z.number(),
  at: z.string(),
});
export type SiteDemotion = z.infer<typeof SiteDemotionSchema>;

/** Stable error codes of `relevo site ...` and of standby-cluster agents. */
export const SITE_CODES = {
  notStandby: 'SITE_NOT_STANDBY_CLUSTER',
  alreadyStandby: 'SITE_ALREADY_STANDBY_CLUSTER',
  self: 'SITE_SOURCE_IS_SELF',
  unknownSource: 'SITE_UNKNOWN_SOURCE',
  sourceUnreachable: 'SITE_SOURCE_UNREACHABLE',
  noSourcePrimary: 'SITE_NO_SOURCE_PRIMARY',
  sourceAlive: 'SITE_SOURCE_PRIMARY_RUNNING',
  foreignSource: 'SITE_FOREIGN_SOURCE',
  noStandbyLeader: 'SITE_NO_STANDBY_LEADER',
  notStreaming: 'SITE_TARGET_NOT_STREAMING',
  lagTooLarge: 'SITE_LAG_TOO_LARGE',
  timeout: 'SITE_TIMEOUT',
  nameClash: 'SITE_NAME_CLASH',
  sourceIsStandby: 'SITE_SOURCE_IS_STANDBY',
  wouldDemote: 'SITE_WOULD_DEMOTE',
} as const;
export type SiteCode = (typeof SITE_CODES)[keyof typeof SITE_CODES];
