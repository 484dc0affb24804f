import { z } from 'zod';
import { LogicalStatusSchema } from './logical-status.js';

/** Record under `initialize`: who bootstraps, and once done, the system identifier. */
export const InitRecordSchema = z.object({
  member: z.string(),
  startedAt: z.string(),
  /** Set once initdb finished; members refuse data directories of any other system. */
  systemIdentifier: z.string().optional(),
});
export type InitRecord = z.infer<typeof InitRecordSchema>;

/** Record under `leader`, attached to the primary agent's lease. */
export const LeaderRecordSchema = z.object({
  member: z.string(),
  /** Store lease TTL the holder renews against, so readers know how long a silent leader may keep it. */
  ttlMs: z.number(),
  acquiredAt: z.string(),
  timeline: z.number().optional(),
});
export type LeaderRecord = z.infer<typeof LeaderRecordSchema>;

export const MemberRoleSchema = z.enum(['primary', 'replica', 'unknown']);
export type MemberRole = z.infer<typeof MemberRoleSchema>;

export const SlotStatusSchema = z.object({
  name: z.string(),
  active: z.boolean(),
  restartLsn: z.string().nullable(),
  /** Bytes of WAL the slot holds back on this server. */
  retainedBytes: z.number().nullable(),
});
export type SlotStatus = z.infer<typeof SlotStatusSchema>;

export const ReplicationPeerSchema = z.object({
  /** application_name of the walsender's client: the member name. */
  member: z.string(),
  state: z.string(),
  syncState: z.string(),
  sentLsn: z.string().nullable(),
  flushLsn: z.string().nullable(),
  replayLsn: z.string().nullable(),
  replayLagSeconds: z.number().nullable(),
});
export type ReplicationPeer = z.infer<typeof ReplicationPeerSchema>;

/** What each agent publishes about its member, under `members/<name>`. */
export const MemberStatusSchema = z.object({
  name: z.string(),
  /** Agent state name (see src/agent/states.ts). */
  state: z.string(),
  role: MemberRoleSchema,
  reason: z.string(),
  timeline: z.number().nullable(),
  /** On a primary: pg_current_wal_lsn(). On a replica: last received. */
  receivedLsn: z.string().nullable(),
  /**
   * On a replica: the timeline its walreceiver streams (null when none runs).
   * Only a replica streaming the primary's own timeline may be named in
   * synchronous_standby_names.
   */
  receivedTimeline: z.number().nullable().default(null),
  /** On a primary: same as receivedLsn. On a replica: pg_last_wal_replay_lsn(). */
  replayedLsn: z.string().nullable(),
  /** Replay lag behind the primary, bytes, as seen from the primary's last published position. */
  lagBytes: z.number().nullable(),
  lagSeconds: z.number().nullable(),
  replayPaused: z.boolean(),
  streaming: z.boolean(),
  /** The member this replica streams from. */
  upstream: z.string().nullable(),
  slots: z.array(SlotStatusSchema),
  replication: z.array(ReplicationPeerSchema),
  /** server_version of the running PostgreSQL (e.g. "15.14 (Debian 15.14-0+deb12u1)"). */
  postgresVersion: z.string().nullable(),
  /** Parameters changed but waiting for a PostgreSQL restart (pg_settings.pending_restart); empty when none or unknown. */
  pendingRestart: z.array(z.string()).default([]),
  systemIdentifier: z.string().nullable(),
  agentPid: z.number(),
  postmasterPid: z.number().nullable(),
  dataDir: z.string(),
  apiUrl: z.string(),
  /** host:port clients and replicas use to reach this PostgreSQL. */
  connectAddress: z.string(),
  tags: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  paused: z.boolean(),
  /** A delayed replica (docs/undo.md): configured and measured delay; null on other members. */
  delay: z
    .object({
      applyDelayMs: z.number(),
      /** now − pg_last_xact_replay_timestamp(): measured, not configured (null before the first replayed commit). */
      measuredSeconds: z.number().nullable(),
      replayPaused: z.boolean(),
      feed: z.enum(['stream', 'archive']),
      /** recover-table holds it at this target (replay without delay up to just before it, then paused). */
      recoveryTarget: z.union([z.object({ lsn: z.string() }), z.object({ xid: z.string() }), z.object({ time: z.string() })]).nullable(),
    })
    .nullish(),
  /** Generation of the cluster settings this agent has applied (ran a whole cycle with); null before its first. */
  settingsGeneration: z.number().int().nullable().default(null),
  /** The member's fencer (src/fence) and watchdog device, as its agent last checked them (absent: an agent without a fencer). */
  fence: z
    .object({
      fencer: z.enum(['running', 'missing']),
      pid: z.number().nullable(),
      /** idle, armed (primary: it fences when not fed in time), fenced (it stopped PostgreSQL). */
      state: z.string(),
      fences: z.number().int(),
      watchdog: z.string(),
      detail: z.string(),
    })
    .optional(),
  /** Publications, subscriptions and logical slots as this member last saw them (docs/logical.md); absent when none matter. */
  logical: LogicalStatusSchema.optional(),
  updatedAt: z.string(),
});
export type MemberStatus = z.infer<typeof MemberStatusSchema>;

/**
 * Record under `slots`: members the primary keeps slots for. `lastSeenAt` is
 * null while the member is present, else when it was last seen (grace period).
 */
export const SlotRegistrySchema = z.record(z.string(), z.object({ lastSeenAt: z.string().nullable() }));
export type SlotRegistry = z.infer<typeof SlotRegistrySchema>;

/** One promotion: appended to `history` by the new primary before it promotes. */
export const HistoryEntrySchema = z.object({
  /** The timeline the promotion starts. */
  timeline: z.number(),
  from: z.string().nullable(),
  to: z.string(),
  reason: z.string(),
  /** Last WAL position the new primary had replayed from the old timeline: the fork point. */
  lsn: z.string().nullable(),
  at: z.string(),
});
export type HistoryEntry = z.infer<typeof HistoryEntrySchema>;
export const HistorySchema = z.array(HistoryEntrySchema);

/**
 * Record under `sync`: the members that hold every commit the leader has
 * acknowledged. Only they may be promoted automatically in synchronous mode.
 * Written before synchronous_standby_names shrinks, after it grows.
 *
 * `previous` (only while `members` is empty): the set is changing, e.g. the
 * synchronous standby was lost and its replacement is still catching up. It
 * lists the former members and every standby named since, so each commit
 * acknowledged by the leader lies on one of them, hence (WAL on one timeline
 * being linear) on the most advanced of them. The election then promotes only
 * a member at least as advanced as every one of them, and nobody while one of
 * them cannot be asked. Cleared once a standby is verified synchronous and is
 * written to `members`, or on the fallback to asynchronous replication.
 * Optional: a record written by an older agent parses (no change under way).
 */
export const SyncRecordSchema = z.object({
  leader: z.string(),
  members: z.array(z.string()),
  previous: z.array(z.string()).optional(),
  updatedAt: z.string(),
});
export type SyncRecord = z.infer<typeof SyncRecordSchema>;

/**
 * Record under `quorum` (synchronousMode: quorum): every commit the leader has
 * acknowledged is held by at least `quorum` of `members`. So the most advanced
 * of any members.length - quorum + 1 of them holds every acknowledged commit.
 * Written by compare-and-swap: grown before synchronous_standby_names names a
 * new standby, lowered before it asks fewer, raised and shrunk only once the
 * standbys it keeps have flushed past the change.
 */
export const QuorumRecordSchema = z.object({
  leader: z.string(),
  members: z.array(z.string()),
  quorum: z.number().int().min(0),
  updatedAt: z.string(),
});
export type QuorumRecord = z.infer<typeof QuorumRecordSchema>;

/** Record under `optime`: the primary's last known WAL position, for lag checks once it is gone. */
export const OptimeSchema = z.object({ member: z.string(), address: z.string(), lsn: z.string(), timeline: z.number(), at: z.string() });
export type Optime = z.infer<typeof OptimeSchema>;

/** Record under `failover`: a switchover or manual failover in progress. */
export const FailoverRequestSchema = z.object({
  kind: z.enum(['switchover', 'failover']),
  /** The primary being replaced (switchover), or null. */
  from: z.string().nullable(),
  /** The member to promote, or null for "the best one". */
  to: z.string().nullable(),
  /** Do not start before this time (scheduled switchover). */
  at: z.string().nullable(),
  /** Promote even if the candidate may lack acknowledged commits (operator's explicit choice). */
  force: z.boolean(),
  requestedAt: z.string(),
  /** Set by the old primary once it has shut down cleanly: the candidate must replay up to here. */
  shutdownLsn: z.string().nullable(),
});
export type FailoverRequest = z.infer<typeof FailoverRequestSchema>;
