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
  /**
   * Client sessions inside a transaction that a switchover's drain waits for (not counting relevo's own):
   * idle in a transaction, or in one that has run 100 ms or more. A statement just begun is not counted:
   * with writers committing back to back one always is, and the drain waited its whole switchoverDrainMs
   * for none in particular (issue 13).
   */
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
  /** wal_level in effect (absent: not known). Below logical no logical slot can exist (PostgreSQL refuses to start with one). */
  walLevel?: string;
}

/**
 * `historyTimeline`: the newest timeline history file in the standby's pg_wal
 * (see ControlData.timeline): without it a standby whose walreceiver stopped
 * would report its last restartpoint's older timeline.
 */
export async function inspectServer(client: pg.Client, historyTimeline = 1): Promise<ServerInspection> {
  // One statement, one round trip: the agent asks this every loop, and at rest the
  // round trips (and their wake-ups of the backend) were most of its SQL cost. Functions
  // that fail outside their mode (pg_current_wal_lsn in recovery, the replay pause state on
  // a primary) are guarded by CASE on the recovery flag read once in `r`.
  const result = await client.query<InspectionRow>(INSPECT_SQL);
  const row = result.rows[0]!;
  const slotList: SlotStatus[] = row.slots.map((r) => ({
    name: r.slot_name,
    active: r.active,
    restartLsn: r.restart_lsn,
    retainedBytes: r.retained === null ? null : Number(r.retained),
  }));
  const common = {
    version: row.version,
    slots: slotList,
    synchronousStandbyNames: row.ssn,
    openTransactions: row.open,
    pendingRestart: row.pending,
    startedAt: row.started,
    walLevel: row.wal_level,
  };
  if (!row.in_recovery) {
    return {
      ...common,
      inRecovery: false,
      timeline: row.primary_tli,
      receivedLsn: row.primary_lsn,
      replayedLsn: row.primary_lsn,
      replayPaused: false,
      lagSeconds: 0,
      streaming: false,
      receivedTimeline: null,
      upstreamConninfo: null,
      replication: row.peers.map((p) => ({
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
  return {
    ...common,
    inRecovery: true,
    timeline: Math.max(row.received_tli ?? 0, row.checkpoint_tli ?? 0, historyTimeline),
    receivedLsn: row.received ?? row.replayed,
    replayedLsn: row.replayed,
    replayPaused: row.paused ?? false,
    lagSeconds: row.lag === null ? null : Math.max(0, row.lag),
    replayAgeSeconds: row.replay_age === null ? null : Math.max(0, row.replay_age),
    streaming: row.status === 'streaming',
    receivedTimeline: row.received_tli,
    upstreamConninfo: row.conninfo,
    replication: [],
  };
}

interface InspectionRow {
  in_recovery: boolean;
  version: string;
  ssn: string;
  open: number;
  pending: string[];
  started: number;
  wal_level: string;
  slots: { slot_name: string; active: boolean; restart_lsn: string | null; retained: string | null }[];
  primary_lsn: string | null;
  primary_tli: number | null;
  peers: { application_name: string; state: string; sync_state: string; sent_lsn: string | null; flush_lsn: string | null; replay_lsn: string | null; replay_lag: number | null }[];
  received: string | null;
  replayed: string | null;
  paused: boolean | null;
  lag: number | null;
  replay_age: number | null;
  status: string | null;
  received_tli: number | null;
  conninfo: string | null;
  checkpoint_tli: number | null;
}

const INSPECT_SQL = `
SELECT r.in_recovery, current_setting('server_version') AS version, current_setting('synchronous_standby_names') AS ssn, current_setting('wal_level') AS wal_level,
       (SELECT coalesce(array_agg(name::text ORDER BY name), '{}') FROM pg_settings
         WHERE pending_restart AND NOT (name LIKE 'recovery\\_target%' AND NOT r.in_recovery)) AS pending,
       extract(epoch FROM pg_postmaster_start_time())::float8 AS started,
       (SELECT count(*)::int FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND xact_start IS NOT NULL AND pid <> pg_backend_pid() AND application_name <> 'relevo-agent'
           AND (state LIKE 'idle in transaction%' OR xact_start < clock_timestamp() - interval '100 milliseconds')) AS open,
       (SELECT coalesce(json_agg(json_build_object('slot_name', slot_name, 'active', active, 'restart_lsn', restart_lsn::text,
                 'retained', CASE WHEN restart_lsn IS NULL THEN NULL
                                  ELSE (CASE WHEN r.in_recovery THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END - restart_lsn)::bigint::text END)
                 ORDER BY slot_name), '[]')
          FROM pg_replication_slots WHERE slot_type = 'physical') AS slots,
       CASE WHEN NOT r.in_recovery THEN pg_current_wal_lsn()::text END AS primary_lsn,
       CASE WHEN NOT r.in_recovery THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS primary_tli,
       (SELECT coalesce(json_agg(json_build_object('application_name', application_name, 'state', state, 'sync_state', sync_state,
                 'sent_lsn', sent_lsn::text, 'flush_lsn', flush_lsn::text, 'replay_lsn', replay_lsn::text,
                 'replay_lag', extract(epoch FROM replay_lag)::float8) ORDER BY application_name), '[]')
          FROM pg_stat_replication WHERE NOT r.in_recovery) AS peers,
       CASE WHEN r.in_recovery THEN pg_last_wal_receive_lsn()::text END AS received,
       CASE WHEN r.in_recovery THEN pg_last_wal_replay_lsn()::text END AS replayed,
       CASE WHEN r.in_recovery THEN pg_get_wal_replay_pause_state() <> 'not paused' END AS paused,
       CASE WHEN NOT r.in_recovery THEN NULL
            WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS lag,
       CASE WHEN r.in_recovery THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS replay_age,
       w.status, w.received_tli, w.conninfo,
       CASE WHEN r.in_recovery THEN greatest((pg_control_checkpoint()).timeline_id, (pg_control_recovery()).min_recovery_end_timeline) END AS checkpoint_tli
  FROM (SELECT pg_is_in_recovery() AS in_recovery) r LEFT JOIN pg_stat_wal_receiver w ON r.in_recovery`;

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
