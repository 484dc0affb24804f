import type pg from 'pg';
import type { ReplicationPeer, SlotStatus } from '../cluster/types.js';

/** What the agent learns from a running PostgreSQL over SQL in one visit. */
export interface ServerInspection {
  inRecovery: boolean;
  version: string;
  timeline: number | null;
  /** Primary: current WAL write position. Replica: last received (or replayed if nothing received). */
  receivedLsn: string | null;
  replayedLsn: string | null;
  replayPaused: boolean;
  /** Replica: seconds since the last replayed transaction while WAL is pending, else 0. */
  lagSeconds: number | null;
  /** Replica: now − pg_last_xact_replay_timestamp() (null before the first replayed commit): a delayed replica's effective delay. */
  replayAgeSeconds?: number | null;
  /** Replica: walreceiver is streaming, and from where. */
  streaming: boolean;
  /**
   * Replica: the timeline the walreceiver asks for (null when none runs). A
   * standby that replayed past the fork of the next timeline keeps asking for
   * its old one.
   */
  receivedTimeline: number | null;
  upstreamConninfo: string | null;
  slots: SlotStatus[];
  replication: ReplicationPeer[];
  /** synchronous_standby_names in effect. */
  synchronousStandbyNames: string;
  /** Client sessions inside a transaction right now (not counting relevo's own). */
  openTransactions: number;
  /**
   * Parameters changed in the configuration that take effect only at the next
   * restart (pg_settings.pending_restart). On a primary, recovery_target_*
   * is left out: a promoted standby's configuration drops it, it matters only
   * in recovery, and the next start as a standby applies it anyway.
   */
  pendingRestart: string[];
  /** pg_postmaster_start_time(), seconds since the epoch. */
  startedAt?: number;
}

/**
 * `historyTimeline`: the newest timeline history file in the standby's pg_wal
 * (see ControlData.timeline): without it a standby whose walreceiver stopped
 * would report its last restartpoint's older timeline.
 */
export async function inspectServer(client: pg.Client, historyTimeline = 1): Promise<ServerInspection> {
  const base = await client.query<{ in_recovery: boolean; version: string; ssn: string; open: number; pending: string[]; started: number }>(
    `SELECT pg_is_in_recovery() AS in_recovery, current_setting('server_version') AS version, current_setting('synchronous_standby_names') AS ssn,
            (SELECT coalesce(array_agg(name::text ORDER BY name), '{}') FROM pg_settings
              WHERE pending_restart AND NOT (name LIKE 'recovery\\_target%' AND NOT pg_is_in_recovery())) AS pending, extract(epoch FROM pg_postmaster_start_time())::float8 AS started,
            (SELECT count(*)::int FROM pg_stat_activity
              WHERE backend_type = 'client backend' AND xact_start IS NOT NULL AND pid <> pg_backend_pid() AND application_name <> 'relevo-agent') AS open`,
  );
  const { in_recovery: inRecovery, version, ssn: synchronousStandbyNames, open: openTransactions, pending: pendingRestart, started: startedAt } = base.rows[0]!;
  const slots = await client.query<{ slot_name: string; active: boolean; restart_lsn: string | null; retained: string | null }>(
    `SELECT slot_name, active, restart_lsn::text,
            CASE WHEN restart_lsn IS NULL THEN NULL
                 ELSE (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END - restart_lsn)::bigint::text END AS retained
       FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name`,
  );
  const slotList: SlotStatus[] = slots.rows.map((r) => ({
    name: r.slot_name,
    active: r.active,
    restartLsn: r.restart_lsn,
    retainedBytes: r.retained === null ? null : Number(r.retained),
  }));
  if (!inRecovery) {
    const primary = await client.query<{ lsn: string; tli: number }>(
      `SELECT pg_current_wal_lsn()::text AS lsn, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS tli`,
    );
    const peers = await client.query<{
      application_name: string;
      state: string;
      sync_state: string;
      sent_lsn: string | null;
      flush_lsn: string | null;
      replay_lsn: string | null;
      replay_lag: number | null;
    }>(
      `SELECT application_name, state, sync_state, sent_lsn::text, flush_lsn::text, replay_lsn::text,
              extract(epoch FROM replay_lag)::float8 AS replay_lag
         FROM pg_stat_replication ORDER BY application_name`,
    );
    const row = primary.rows[0]!;
    return {
      inRecovery,
      version,
      timeline: row.tli,
      receivedLsn: row.lsn,
      replayedLsn: row.lsn,
      replayPaused: false,
      lagSeconds: 0,
      streaming: false,
      receivedTimeline: null,
      upstreamConninfo: null,
      slots: slotList,
      synchronousStandbyNames,
      openTransactions,
      pendingRestart,
      startedAt,
      replication: peers.rows.map((p) => ({
        member: p.application_name,
        state: p.state,
        syncState: p.sync_state,
        sentLsn: p.sent_lsn,
        flushLsn: p.flush_lsn,
        replayLsn: p.replay_lsn,
        replayLagSeconds: p.replay_lag,
      })),
    };
  }
  const standby = await client.query<{
    received: string | null;
    replayed: string | null;
    paused: boolean;
    lag: number | null;
    replay_age: number | null;
    status: string | null;
    received_tli: number | null;
    conninfo: string | null;
    checkpoint_tli: number;
  }>(
    `SELECT pg_last_wal_receive_lsn()::text AS received,
            pg_last_wal_replay_lsn()::text AS replayed,
            pg_get_wal_replay_pause_state() <> 'not paused' AS paused,
            CASE WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                 ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS lag,
            extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age,
            r.status, r.received_tli, r.conninfo,
            greatest((pg_control_checkpoint()).timeline_id, (pg_control_recovery()).min_recovery_end_timeline) AS checkpoint_tli
       FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver r ON true`,
  );
  const s = standby.rows[0]!;
  return {
    inRecovery,
    version,
    timeline: Math.max(s.received_tli ?? 0, s.checkpoint_tli, historyTimeline),
    receivedLsn: s.received ?? s.replayed,
    replayedLsn: s.replayed,
    replayPaused: s.paused,
    lagSeconds: s.lag === null ? null : Math.max(0, s.lag),
    replayAgeSeconds: s.replay_age === null ? null : Math.max(0, s.replay_age),
    streaming: s.status === 'streaming',
    receivedTimeline: s.received_tli,
    upstreamConninfo: s.conninfo,
    slots: slotList,
    synchronousStandbyNames,
    openTransactions,
    pendingRestart,
    startedAt,
    replication: [],
  };
}

/** Slot names follow the member name; PostgreSQL allows only [a-z0-9_]. */
export function slotNameFor(member: string): string {
  return member.replace(/[^a-z0-9_]/g, '_');
}

export async function createPhysicalSlot(client: pg.Client, slot: string): Promise<void> {
  await client.query(
    `SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`,
    [slot],
  );
}

export async function dropSlot(client: pg.Client, slot: string): Promise<void> {
  await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, [slot]);
}
