/**
 * Prometheus metrics of one agent, served on GET /metrics of its REST API.
 * Values are set once per loop from the round's report (one hook call in
 * agent.ts) — a scrape only renders them. The catalogue below is the single
 * source of names: the registry, docs/metrics.md and the tests of the Grafana
 * dashboard and alert rules all read it.
 */
import { Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import type { MemberStatus } from '../cluster/types.js';
import { parseLsn } from '../postgres/lsn.js';
import type { Store } from '../store/store.js';
import type { ArchiveStatus } from '../backup/monitor.js';
import type { BackupSummary } from '../backup/summary.js';
import { ranActions, type CycleObserver, type CycleReport } from './cycle-report.js';
import { AGENT_STATES, type AgentState } from './states.js';

export type MetricType = 'gauge' | 'counter' | 'histogram';

export interface MetricSpec {
  name: string;
  type: MetricType;
  help: string;
  labels: string[];
  /** The Patroni series this one replaces, if any (docs/metrics.md's mapping table). */
  patroni?: string;
}

const g = (name: string, help: string, labels: string[] = [], patroni?: string): MetricSpec => ({ name, type: 'gauge', help, labels, patroni });
const c = (name: string, help: string, labels: string[] = [], patroni?: string): MetricSpec => ({ name, type: 'counter', help, labels, patroni });
const h = (name: string, help: string, labels: string[] = []): MetricSpec => ({ name, type: 'histogram', help, labels });

/** Every series an agent exports. Each also carries the labels cluster and member. */
export const AGENT_METRICS: readonly MetricSpec[] = [
  g('relevo_build_info', 'Always 1; the relevo version as a label', ['version'], 'patroni_version'),
  g('relevo_postgres_running', '1 while PostgreSQL answers SQL', [], 'patroni_postgres_running'),
  g('relevo_postgres_start_time_seconds', 'pg_postmaster_start_time(), seconds since the epoch', [], 'patroni_postmaster_start_time'),
  g('relevo_postgres_server_version', 'PostgreSQL version as a number, e.g. 150004', [], 'patroni_postgres_server_version'),
  g('relevo_role', '1 for the role PostgreSQL runs in now (primary, replica, unknown), else 0', ['role'], 'patroni_primary, patroni_replica'),
  g('relevo_leader', '1 while this member holds the leader lease', [], 'patroni_primary (with leader lock)'),
  g('relevo_state', '1 for the agent state this member is in now, 0 for the others', ['state'], 'patroni_postgres_state'),
  g('relevo_timeline', 'PostgreSQL timeline', [], 'patroni_postgres_timeline'),
  g('relevo_wal_current_lsn_bytes', 'Primary: pg_current_wal_lsn() as a byte position', [], 'patroni_xlog_location'),
  g('relevo_wal_received_lsn_bytes', 'Replica: last WAL position received', [], 'patroni_xlog_received_location'),
  g('relevo_wal_replayed_lsn_bytes', 'Replica: last WAL position replayed', [], 'patroni_xlog_replayed_location'),
  g('relevo_lag_bytes', "This member's replay lag behind the primary, bytes (0 on the primary)", []),
  g('relevo_lag_seconds', "This member's replay lag, seconds since the last replayed transaction while WAL is pending", [], 'patroni_xlog_replayed_timestamp'),
  g('relevo_streaming', '1 while this replica streams WAL from its upstream', [], 'patroni_postgres_streaming'),
  g('relevo_replay_paused', '1 while WAL replay is paused on this replica', [], 'patroni_xlog_paused'),
  g('relevo_pending_restart', '1 when a changed setting waits for a restart (pg_settings.pending_restart)', [], 'patroni_pending_restart'),
  g('relevo_cluster_paused', '1 while the cluster is paused (no automatic failover)', [], 'patroni_is_paused'),
  g('relevo_cluster_has_leader', '1 while some member holds the leader lease', [], 'patroni_cluster_unlocked (inverted)'),
  g('relevo_sync_standby', '1 while this member is in the synchronous standby set', [], 'patroni_sync_standby'),
  g('relevo_sync_standbys', 'Members in the synchronous standby set', []),
  g('relevo_replication_sent_lsn_bytes', 'Primary: WAL position sent to each replica (pg_stat_replication)', ['replica']),
  g('relevo_replication_flush_lsn_bytes', 'Primary: WAL position each replica has flushed', ['replica']),
  g('relevo_replication_replay_lsn_bytes', 'Primary: WAL position each replica has replayed', ['replica']),
  g('relevo_replication_lag_bytes', "Primary: bytes between the primary's position and each replica's replay position", ['replica']),
  g('relevo_replication_lag_seconds', "Primary: each replica's replay_lag from pg_stat_replication", ['replica']),
  g('relevo_replication_sync', "Primary: 1 when the replica's sync_state is sync or quorum", ['replica']),
  g('relevo_slot_retained_bytes', 'WAL bytes a physical replication slot holds back on this server', ['slot']),
  g('relevo_slot_active', '1 while a replication slot is in use', ['slot']),
  g('relevo_leader_lease_remaining_seconds', 'Leader only: seconds until the leader lease would expire without renewal', []),
  g('relevo_store_reachable', '1 when the last read of the coordination store succeeded', []),
  g('relevo_failsafe_active', '1 while this primary runs without the store on every member\'s failsafe confirmation, else 0', [], 'patroni_failsafe_mode_is_active'),
  g('relevo_store_last_seen_timestamp_seconds', 'When the coordination store last answered, seconds since the epoch', [], 'patroni_dcs_last_seen'),
  h('relevo_store_operation_duration_seconds', 'Coordination store calls by operation, seconds', ['operation']),
  h('relevo_loop_duration_seconds', 'One observe-decide-act round, seconds', []),
  c('relevo_decisions_total', 'Decisions taken, by the state decided', ['state']),
  c('relevo_failovers_total', 'Promotions of this member that were not switchovers', []),
  c('relevo_switchovers_total', 'Promotions of this member that completed a switchover', []),
  c('relevo_fencing_events_total', 'Fencing: this primary stopped itself (self), or fenced a former primary (former_primary)', ['kind']),
  c('relevo_action_failures_total', 'Actions that failed, by action type', ['action']),
  g('relevo_archive_backlog_files', 'WAL files in pg_wal waiting for archiving (.ready), checked every 5 s; absent without a backup repository', []),
  g('relevo_archive_backlog_bytes', 'Bytes of WAL in pg_wal waiting for archiving', []),
  g('relevo_archive_backlog_level', '1 for the backlog level now (ok, warn from backup.backlogWarnBytes, limit from backup.backlogLimitBytes), else 0', ['level']),
  g('relevo_archive_pg_wal_free_bytes', "Free bytes in pg_wal's filesystem", []),
  g('relevo_archive_dropped_segments', 'WAL segments recycled unarchived under atBacklogLimit=drop (a gap in the archive)', []),
  g('relevo_backups', 'Complete base backups in the repository (read once per backup.schedule.checkSeconds)', []),
  g('relevo_backup_last_finished_timestamp_seconds', 'When the newest base backup finished, seconds since the epoch', []),
  g('relevo_backup_last_verified_timestamp_seconds', 'When the newest passed restore drill ran (relevo backup verify), seconds since the epoch', []),
  g('relevo_backup_verified_restore_duration_seconds', 'Measured restore time of that drill: files restored and recovery to the check point', []),
  g('relevo_backup_verify_failed', '1 when a restore drill newer than the last passed one failed', []),
];

/** PostgreSQL's server_version ("15.4 (Debian 15.4-1)") as 150004. */
export function serverVersionNumber(version: string | null): number | undefined {
  const match = /^(\d+)(?:\.(\d+))?/.exec(version ?? '');
  return match ? Number(match[1]) * 10_000 + Number(match[2] ?? 0) : undefined;
}

const lsnBytes = (lsn: string | null | undefined): number | undefined => (lsn ? Number(parseLsn(lsn)) : undefined);

const STORE_OPERATIONS = ['get', 'list', 'create', 'compareAndSwap', 'put', 'delete', 'grantLease', 'keepAlive', 'revokeLease'] as const;

export class AgentMetrics implements CycleObserver {
  readonly registry = new Registry();
  private readonly metrics = new Map<string, Metric>();
  private lastFencedTarget: string | undefined;

  constructor(labels: { cluster: string; member: string; version: string }) {
    this.registry.setDefaultLabels({ cluster: labels.cluster, member: labels.member });
    for (const spec of AGENT_METRICS) {
      const options = { name: spec.name, help: spec.help, labelNames: spec.labels, registers: [this.registry] };
      const metric =
        spec.type === 'gauge'
          ? new Gauge(options)
          : spec.type === 'counter'
            ? new Counter(options)
            : new Histogram({ ...options, buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] });
      this.metrics.set(spec.name, metric);
    }
    this.gauge('relevo_build_info').set({ version: labels.version }, 1);
    // Known label values start at 0, so rate() and increase() see the first event.
    for (const state of AGENT_STATES) this.counter('relevo_decisions_total').inc({ state }, 0);
    for (const kind of ['self', 'former_primary']) this.counter('relevo_fencing_events_total').inc({ kind }, 0);
  }

  private gauge(name: string): Gauge {
    return this.metrics.get(name) as Gauge;
  }
  private counter(name: string): Counter {
    return this.metrics.get(name) as Counter;
  }
  private histogram(name: string): Histogram {
    return this.metrics.get(name) as Histogram;
  }

  /** Sets a gauge, or removes its value when unknown (absent beats a false 0). */
  private set(name: string, value: number | boolean | null | undefined): void {
    const gauge = this.gauge(name);
    // remove({}) drops the sample; reset() would leave an unlabelled gauge at 0.
    if (value === undefined || value === null) gauge.remove({});
    else gauge.set(typeof value === 'boolean' ? Number(value) : value);
  }

  onCycle(report: CycleReport): void {
    const { observation: o, decision, status } = report;
    this.histogram('relevo_loop_duration_seconds').observe(report.durationMs / 1000);
    this.counter('relevo_decisions_total').inc({ state: decision.state });
    for (const { outcome, action } of ranActions(report)) {
      if (outcome.result !== 'ok') {
        this.counter('relevo_action_failures_total').inc({ action: action.type });
        continue;
      }
      if (action.type === 'promote') {
        const switchover = o.store.reachable ? o.store.failover?.kind === 'switchover' : false;
        this.counter(switchover || /switchover/i.test(action.reason) ? 'relevo_switchovers_total' : 'relevo_failovers_total').inc();
      }
      // The fence probe repeats every round until the former primary is gone: count each target once.
      if (action.type === 'fenceFormerPrimary' && this.lastFencedTarget !== action.member) {
        this.lastFencedTarget = action.member;
        this.counter('relevo_fencing_events_total').inc({ kind: 'former_primary' });
      }
    }
    if (isFencing(decision.state) && !isFencing(report.from)) this.counter('relevo_fencing_events_total').inc({ kind: 'self' });

    const state = this.gauge('relevo_state');
    for (const s of AGENT_STATES) state.set({ state: s }, s === decision.state ? 1 : 0);
    const server = o.server.kind === 'running' ? o.server.inspection : undefined;
    this.set('relevo_postgres_running', server !== undefined);
    this.set('relevo_postgres_start_time_seconds', server?.startedAt);
    this.set('relevo_postgres_server_version', serverVersionNumber(server?.version ?? null));
    const role = status?.role ?? 'unknown';
    for (const r of ['primary', 'replica', 'unknown']) this.gauge('relevo_role').set({ role: r }, r === role ? 1 : 0);
    this.set('relevo_timeline', server?.timeline);
    const primary = server !== undefined && !server.inRecovery;
    this.set('relevo_wal_current_lsn_bytes', primary ? lsnBytes(server.receivedLsn) : undefined);
    this.set('relevo_wal_received_lsn_bytes', primary ? undefined : lsnBytes(server?.receivedLsn));
    this.set('relevo_wal_replayed_lsn_bytes', primary ? undefined : lsnBytes(server?.replayedLsn));
    this.set('relevo_lag_bytes', status?.lagBytes);
    this.set('relevo_lag_seconds', status?.lagSeconds);
    this.set('relevo_streaming', server ? server.streaming : undefined);
    this.set('relevo_replay_paused', server ? server.replayPaused : undefined);
    this.set('relevo_pending_restart', server ? server.pendingRestart.length > 0 : undefined);
    this.set('relevo_cluster_paused', o.settings.paused);
    this.replication(status, server?.receivedLsn);

    const store = o.store;
    this.set('relevo_store_reachable', store.reachable);
    const held = o.failsafe?.heldUntil;
    this.set('relevo_failsafe_active', held !== undefined && o.monotonic < held);
    if (!store.reachable) return;
    this.set('relevo_store_last_seen_timestamp_seconds', o.now / 1000);
    const leader = store.leader?.member === o.member.name;
    this.set('relevo_leader', leader);
    this.set('relevo_cluster_has_leader', store.leader !== undefined);
    this.set('relevo_sync_standby', store.sync?.members.includes(o.member.name) ?? false);
    this.set('relevo_sync_standbys', store.sync?.members.length ?? 0);
    const renewed = o.leaseRenewedAt;
    this.set('relevo_leader_lease_remaining_seconds', leader && renewed !== undefined ? Math.max(0, renewed + o.settings.ttlMs - o.monotonic) / 1000 : undefined);
  }

  /** Per-replica series from pg_stat_replication, and slots: labels come and go with the replicas. */
  private replication(status: MemberStatus | undefined, currentLsn: string | null | undefined): void {
    const names = [
      'relevo_replication_sent_lsn_bytes',
      'relevo_replication_flush_lsn_bytes',
      'relevo_replication_replay_lsn_bytes',
      'relevo_replication_lag_bytes',
      'relevo_replication_lag_seconds',
      'relevo_replication_sync',
      'relevo_slot_retained_bytes',
      'relevo_slot_active',
    ];
    for (const name of names) this.gauge(name).reset();
    if (!status) return;
    const current = lsnBytes(currentLsn);
    for (const peer of status.replication) {
      const labels = { replica: peer.member };
      const put = (name: string, value: number | undefined | null) => value !== undefined && value !== null && this.gauge(name).set(labels, value);
      put('relevo_replication_sent_lsn_bytes', lsnBytes(peer.sentLsn));
      put('relevo_replication_flush_lsn_bytes', lsnBytes(peer.flushLsn));
      const replay = lsnBytes(peer.replayLsn);
      put('relevo_replication_replay_lsn_bytes', replay);
      put('relevo_replication_lag_bytes', current !== undefined && replay !== undefined ? Math.max(0, current - replay) : undefined);
      put('relevo_replication_lag_seconds', peer.replayLagSeconds ?? (replay !== undefined && replay === current ? 0 : undefined));
      put('relevo_replication_sync', peer.syncState === 'sync' || peer.syncState === 'quorum' ? 1 : 0);
    }
    for (const slot of status.slots) {
      if (slot.retainedBytes !== null) this.gauge('relevo_slot_retained_bytes').set({ slot: slot.name }, slot.retainedBytes);
      this.gauge('relevo_slot_active').set({ slot: slot.name }, slot.active ? 1 : 0);
    }
  }

  /** The archive backlog of this member (src/backup/monitor.ts); undefined: no repository, or no archive status yet. */
  onArchiveStatus(status: ArchiveStatus | undefined): void {
    this.set('relevo_archive_backlog_files', status?.readyFiles);
    this.set('relevo_archive_backlog_bytes', status?.backlogBytes);
    this.set('relevo_archive_pg_wal_free_bytes', status?.freeBytes);
    this.set('relevo_archive_dropped_segments', status?.dropped.length);
    const level = this.gauge('relevo_archive_backlog_level');
    level.reset();
    if (status) for (const l of ['ok', 'warn', 'limit']) level.set({ level: l }, l === status.level ? 1 : 0);
  }

  /** The repository's catalogue as `relevo list` shows it (src/backup/summary.ts); undefined or an error: unknown. */
  onBackupSummary(summary: BackupSummary | undefined): void {
    const known = summary && !summary.error ? summary : undefined;
    const seconds = (iso: string | undefined) => (iso === undefined ? undefined : Date.parse(iso) / 1000);
    this.set('relevo_backups', known?.backups);
    this.set('relevo_backup_last_finished_timestamp_seconds', seconds(known?.newest?.finishedAt));
    this.set('relevo_backup_last_verified_timestamp_seconds', seconds(known?.lastVerified?.at));
    const restoreMs = known?.lastVerified?.restoreMs;
    this.set('relevo_backup_verified_restore_duration_seconds', restoreMs === undefined || restoreMs === null ? undefined : restoreMs / 1000);
    this.set('relevo_backup_verify_failed', known ? known.lastVerifyFailed !== null : undefined);
  }

  /** The store with every call timed into relevo_store_operation_duration_seconds. */
  timedStore(store: Store): Store {
    const histogram = this.histogram('relevo_store_operation_duration_seconds');
    const timed: Record<string, unknown> = {
      backend: store.backend,
      watch: store.watch.bind(store),
      close: store.close.bind(store),
    };
    for (const operation of STORE_OPERATIONS) {
      const original = store[operation] as (...args: unknown[]) => Promise<unknown>;
      timed[operation] = (...args: unknown[]) => {
        const end = histogram.startTimer({ operation });
        return original.apply(store, args).finally(() => end());
      };
    }
    return timed as unknown as Store;
  }
}

/** docs/metrics.md, generated from the catalogue (a unit test checks it is current). */
export function renderMetricsDoc(): string {
  const rows = AGENT_METRICS.map((m) => `| \`${m.name}\` | ${m.type} | ${m.labels.map((l) => `\`${l}\``).join(', ') || '-'} | ${m.help} |`);
  const mapped = AGENT_METRICS.filter((m) => m.patroni).flatMap((m) => m.patroni!.split(', ').map((p) => [p, m.name] as const));
  mapped.sort((a, b) => a[0].localeCompare(b[0]));
  return `# Metrics

<!-- Generated from src/agent/metrics.ts by \`npm run docs\`; test/unit/metrics.test.ts checks it is current. -->

Every agent serves Prometheus metrics on \`GET /metrics\` of its REST API port
(\`api.listen\`, behind the API's authentication when \`api.authReadOnly\` is set).
Every series carries the labels \`cluster\` and \`member\`. Values are refreshed
once per agent loop (\`loopWaitMs\`), not at scrape time, so a scrape costs
nothing on PostgreSQL or the store. A gauge whose value is unknown (PostgreSQL
stopped, store unreachable) is absent rather than 0.

The router exports its own series (\`relevo_router_*\`, see docs/router.md).
Grafana and Prometheus files using these series are in \`deploy/\`.

| Name | Type | Labels | Meaning |
| --- | --- | --- | --- |
${rows.join('\n')}

## From Patroni

| Patroni | relevo |
| --- | --- |
${mapped.map(([p, r]) => `| \`${p}\` | \`${r}\` |`).join('\n')}
| \`patroni_standby_leader\` | none yet (standby clusters are not implemented) |
| \`patroni_postgres_in_archive_recovery\` | \`relevo_role{role="replica"}\` |
| \`patroni_quorum_standby\` | \`relevo_replication_sync\` (sync_state \`quorum\` counts) |

Backup series (docs/backup.md): every member publishes its own WAL archive
backlog (\`relevo_archive_*\`, refreshed every 5 s) and reads the repository's
catalogue once per \`backup.schedule.checkSeconds\` (\`relevo_backup*\`: the
same on every member; alert on \`max by (cluster)\`). A restore drill
older than you accept:
\`time() - relevo_backup_last_verified_timestamp_seconds > 8 * 86400\`.

Series Patroni has no equivalent for: lag in bytes and seconds as direct series
(\`relevo_lag_*\`, \`relevo_replication_lag_*\`), per-replica positions from the
primary, slot retention, leader lease remaining, store latency, loop duration,
decisions by state, failovers, switchovers and fencing counters, WAL archive
backlog, and the last verified restore.
`;
}

/** The states in which this member stops its own PostgreSQL so that two primaries cannot exist. */
function isFencing(state: AgentState): boolean {
  return state === 'fencing_split_brain' || state === 'fencing_old_timeline' || state === 'fencing_store_lost';
}
