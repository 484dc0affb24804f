import { readCluster } from '../agent/observe.js';
import { backupSummary, type BackupSummary } from '../backup/summary.js';
import { archiveStatusPrefix, ArchiveStatusSchema, type ArchiveStatus } from '../backup/monitor.js';
import { parseRecord, repairHint } from '../cluster/records.js';
import type { MemberStatus } from '../cluster/types.js';
import { versionsInUse } from '../cluster/versions.js';
import { unknownMembers, unreadableOf } from '../cluster/view.js';
import { RouterStatusSchema, type RouterStatus } from '../router/status.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';
import { formatBytes, renderTable } from './table.js';
import { TONE_COLOURS, toneOf } from '../agent/state-tones.js';
import { apiUrlOf } from '../config/member.js';
import { agentApiCall } from './agent-api.js';
import { renderLogical } from './logical-command.js';
import { siteListing } from './site.js';
import type { SiteLink } from '../cluster/site.js';

export interface ClusterListing {
  cluster: string;
  leader: string | null;
  systemIdentifier: string | null;
  paused: boolean;
  members: MemberStatus[];
  routers: RouterStatus[];
  /** Archive backlog per member, and the newest backup and restore drill (when a repository is configured). */
  archive: ArchiveStatus[];
  backup: BackupSummary | null;
  /** Generation of the cluster settings in the store (null when that record is unreadable). */
  settingsGeneration: number | null;
  /** Every member published that it has applied settingsGeneration. */
  settingsAppliedByAll: boolean;
  /** Distinct PostgreSQL major.minor versions the members run; more than one is a mixed cluster (mid-update). */
  versions: string[];
  /** Members with parameters waiting for a restart (`relevo restart --pending` rolls them out). */
  pendingRestart: string[];
  /** Standby clusters (docs/sites.md): the source this one follows with its link, and the standby clusters following this one. */
  site: { standbyOf: { sourceCluster: string; link: SiteLink | null } | null; followers: SiteLink[] };
  /** Records in the store that fail to parse: key, revision, what is wrong, how to repair. */
  unreadable: { key: string; revision: number; problem: string; repair: string }[];
}

export async function clusterListing(handle: ClusterHandle): Promise<ClusterListing> {
  const { view, settings } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) throw new CliError('STORE_UNREACHABLE', `store unreachable: ${view.error}${await localMemberSays(handle)}`);
  const routers = (await handle.store.list(handle.keys.routersPrefix)).flatMap((kv) => {
    const parsed = parseRecord(RouterStatusSchema, kv.value);
    return parsed.ok ? [parsed.value] : [];
  });
  const settingsGeneration = unreadableOf(view, 'config') ? null : settings.generation;
  return {
    cluster: handle.config.cluster,
    leader: view.leader?.member ?? null,
    systemIdentifier: view.init?.systemIdentifier ?? null,
    paused: settings.paused,
    members: [...view.members].sort((a, b) => a.name.localeCompare(b.name)),
    routers,
    archive: (await handle.store.list(archiveStatusPrefix(handle.keys))).flatMap((kv) => {
      const parsed = parseRecord(ArchiveStatusSchema, kv.value);
      return parsed.ok ? [parsed.value] : [];
    }),
    backup: settings.backup.repository ? await backupSummary(settings.backup.repository, handle.config.cluster, view.init?.systemIdentifier) : null,
    settingsGeneration,
    settingsAppliedByAll: settingsGeneration !== null && unknownMembers(view).length === 0 && view.members.every((m) => m.settingsGeneration === settingsGeneration),
    versions: versionsInUse(view.members),
    pendingRestart: view.members.filter((m) => m.pendingRestart.length > 0).map((m) => m.name).sort(),
    site: await siteListing(handle, settings.standbyCluster),
    unreadable: view.unreadable.map((r) => ({ key: r.key, revision: r.revision, problem: r.problem, repair: repairHint(r) })),
  };
}

/**
 * Without the store, what this member's agent says over its API (e.g. a
 * primary riding out the outage: "failsafe active: …").
 */
async function localMemberSays(handle: ClusterHandle): Promise<string> {
  try {
    const response = await agentApiCall(handle.config, `${apiUrlOf(handle.config)}/status`, { timeoutMs: 2_000 });
    const status = JSON.parse(response.body) as Partial<MemberStatus>;
    return `\nmember ${status.name ?? handle.config.name} (its agent's API): ${status.role ?? '?'}, ${status.state ?? '?'} — ${status.reason ?? ''}`;
  } catch (error) {
    return `\nmember ${handle.config.name}'s agent API at ${handle.config.api.listen} does not answer either (${(error as Error).message})`;
  }
}

/** `primary (failsafe)` while a primary rides out a store outage. */
function stateLabel(m: MemberStatus): string {
  return m.reason.startsWith('failsafe active') ? `${m.state} (failsafe)` : m.state;
}

function renderRouters(routers: RouterStatus[]): string {
  if (routers.length === 0) return '';
  const rows = routers.flatMap((r) =>
    r.listeners.map((l) => [
      r.name,
      l.role === 'rw' ? 'read-write' : 'read-only',
      l.address,
      String(l.open),
      Object.entries(l.backends).map(([member, n]) => `${member}:${n}`).join(',') || '-',
      String(l.held),
      String(Object.values(l.refused).reduce((a, b) => a + b, 0)),
      formatBytes(l.bytesFromClients + l.bytesToClients),
    ]),
  );
  return `\n\nRouters\n${renderTable(['Router', 'Listener', 'Address', 'Open', 'Per backend', 'Held', 'Refused', 'Bytes'], rows)}`;
}

/** The State column in the colour of its tone (src/agent/state-tones.ts, shared with the dashboard). */
const colourState = (padded: string, column: number, raw: string) =>
  column === 3 ? `\x1b[${TONE_COLOURS[toneOf(raw)].ansi}m${raw}\x1b[0m${padded.slice(raw.length)}` : padded;

function settingsCell(m: MemberStatus, current: number | null): string {
  if (m.settingsGeneration === null) return '-';
  return m.settingsGeneration === current ? String(m.settingsGeneration) : `${m.settingsGeneration} (not ${current ?? '?'})`;
}

function renderUnreadable(listing: ClusterListing): string {
  if (listing.unreadable.length === 0) return '';
  const lines = listing.unreadable.map((r) => `  ${r.key} (revision ${r.revision}): ${r.problem}\n    ${r.repair}`);
  return `\n\nUnreadable records (RECORD_UNREADABLE; \`relevo store repair\` lists and fixes them)\n${lines.join('\n')}`;
}

export function renderListing(listing: ClusterListing, options: { colour?: boolean } = {}): string {
  const unknown = listing.unreadable.flatMap((r) => {
    const name = r.key.match(/\/members\/([^/]+)$/)?.[1];
    return name ? [[name, '-', 'unknown', 'RECORD UNREADABLE', '-', '-', '-', '-', '-', '-', '-', '-', '-']] : [];
  });
  const rows = listing.members.map((m) => [
    m.name,
    m.connectAddress,
    m.name === listing.leader ? `${m.role} (leader)` : m.role,
    stateLabel(m),
    m.timeline === null ? '-' : String(m.timeline),
    m.receivedLsn ?? '-',
    m.replayedLsn ?? '-',
    formatBytes(m.lagBytes),
    m.lagSeconds === null ? '-' : m.lagSeconds.toFixed(1),
    m.role === 'primary' ? m.slots.map((s) => `${s.name}${s.active ? '' : '(inactive)'}`).join(',') || '-' : m.streaming ? 'streaming' : m.replayPaused ? 'paused' : '-',
    settingsCell(m, listing.settingsGeneration),
    m.postgresVersion?.split(' ')[0] ?? '-',
    m.pendingRestart.length > 0 ? `* ${m.pendingRestart.join(',')}` : '-',
  ]);
  rows.push(...unknown);
  rows.sort((a, b) => a[0]!.localeCompare(b[0]!));
  const paused = listing.paused ? ' — PAUSED: no automatic failover' : '';
  const applied =
    listing.settingsGeneration === null
      ? 'settings record unreadable'
      : `settings generation ${listing.settingsGeneration}${listing.settingsAppliedByAll ? ', applied by every member' : ', NOT yet applied by every member'}`;
  const leader = listing.leader ?? (listing.unreadable.some((r) => r.key.endsWith('/leader')) ? 'UNREADABLE (see below)' : 'none');
  const mixed = listing.versions.length > 1 ? `; MIXED PostgreSQL versions ${listing.versions.join(', ')}` : '';
  const pending = listing.pendingRestart.length > 0 ? `; pending restart on ${listing.pendingRestart.join(', ')} (\`relevo restart --pending\`)` : '';
  const header = `Cluster ${listing.cluster} (system ${listing.systemIdentifier ?? 'not initialised'}), leader: ${leader}${paused}; ${applied}${mixed}${pending}`;
  const table = renderTable(
    ['Member', 'Address', 'Role', 'State', 'TL', 'Received', 'Replayed', 'Lag', 'Lag s', 'Slots / stream', 'Settings', 'Version', 'Pending restart'],
    rows,
    options.colour ? colourState : undefined,
  );
  const logical = renderLogical(listing.members, listing.leader);
  return `${header}\n${table}${renderSite(listing.site)}${renderDelayed(listing.members)}${renderFencing(listing.members)}${renderRouters(listing.routers)}${logical ? `\n\n${logical}` : ''}${renderUnreadable(listing)}${renderBackupSummary(listing.archive, listing.backup)}`;
}

/** The cross-site link, on the standby side and on the source side. */
function renderSite(site: ClusterListing['site']): string {
  const row = (l: SiteLink) => [
    l.cluster,
    l.standbyLeader,
    l.sourceCluster,
    l.upstream ?? '-',
    // Fed from the source's archive only, not streaming is the normal state.
    l.streaming ? 'streaming' : l.feed === 'archive' || l.feed === 'both' ? 'archive' : 'NOT streaming',
    l.sourceLsn ?? '-',
    l.replayedLsn ?? '-',
    formatBytes(l.lagBytes),
    l.lagSeconds === null ? '-' : l.lagSeconds.toFixed(1),
    l.at.slice(11, 19),
    l.problem ?? '-',
  ];
  const headers = ['Standby cluster', 'Standby leader', 'Source', 'Upstream', 'Link', 'Source LSN', 'Replayed', 'Lag', 'Lag s', 'Seen', 'Problem'];
  const parts: string[] = [];
  if (site.standbyOf) {
    parts.push(
      `STANDBY CLUSTER of ${site.standbyOf.sourceCluster}: no writable primary here (\`relevo site switchover|promote\`)\n` +
        (site.standbyOf.link ? renderTable(headers, [row(site.standbyOf.link)]) : '  no standby leader has published the link yet'),
    );
  }
  if (site.followers.length > 0) parts.push(`Standby clusters following this cluster\n${renderTable(headers, site.followers.map(row))}`);
  return parts.length > 0 ? `\n\n${parts.join('\n\n')}` : '';
}

/** Delayed replicas (docs/undo.md): the delay measured as now − last replayed commit, not the configured one. */
function renderDelayed(members: MemberStatus[]): string {
  const delayed = members.filter((m) => m.delay);
  if (delayed.length === 0) return '';
  const rows = delayed.map((m) => {
    const d = m.delay!;
    const t = d.recoveryTarget;
    const target = !t ? '-' : 'lsn' in t ? `held before ${t.lsn}` : 'xid' in t ? `held before xid ${t.xid}` : `held before ${t.time}`;
    return [m.name, `${(d.applyDelayMs / 1000).toFixed(0)} s`, d.measuredSeconds === null ? '-' : `${d.measuredSeconds.toFixed(1)} s`, d.replayPaused ? 'PAUSED' : 'replaying', d.feed, target];
  });
  return `\n\nDelayed replicas (never promoted, never synchronous)\n${renderTable(['Member', 'Delay', 'Measured', 'Replay', 'Feed', 'Recovery target'], rows)}`;
}

/** One line per member: its fencer, and whether a watchdog device backs it (said plainly when there is none). */
export function renderFencing(members: MemberStatus[]): string {
  const lines = members.flatMap((m) => {
    const f = m.fence;
    if (!f) return [];
    const fencer = f.fencer === 'running' ? `fencer running (pid ${f.pid}, ${f.state}${f.fences > 0 ? `, fenced ${f.fences}×` : ''})` : 'FENCER MISSING: takes no leader lease';
    return [`  ${m.name}: ${fencer}; watchdog ${f.watchdog}${f.detail ? ` — ${f.detail}` : ''}`];
  });
  return lines.length > 0 ? `\n\nFencing\n${lines.join('\n')}` : '';
}

export function renderBackupSummary(archive: ArchiveStatus[], backup: BackupSummary | null): string {
  if (!backup && archive.length === 0) return '';
  const lines: string[] = [];
  if (archive.length > 0) {
    const rows = [...archive]
      .sort((a, b) => a.member.localeCompare(b.member))
      .map((a) => [a.member, String(a.readyFiles), formatBytes(a.backlogBytes), a.oldest ?? '-', a.freeBytes === null ? '-' : formatBytes(a.freeBytes), a.level === 'ok' ? 'ok' : a.level.toUpperCase(), a.dropped.length > 0 ? `${a.dropped.length} DROPPED` : '-', a.at.slice(11, 19)]);
    lines.push(`WAL archive\n${renderTable(['Member', 'Waiting', 'Backlog', 'Oldest waiting', 'Free in pg_wal', 'Backlog level', 'Dropped', 'Checked'], rows)}`);
  }
  if (backup) {
    if (backup.error) lines.push(`Backups: repository ${backup.repository}: ${backup.error}`);
    else {
      const verified = backup.lastVerified ? `last verified restore ${backup.lastVerified.id} at ${backup.lastVerified.at} (restore time ${((backup.lastVerified.restoreMs ?? 0) / 1000).toFixed(1)} s)` : 'no verified restore yet';
      const failed = backup.lastVerifyFailed ? `; NEWER DRILL FAILED: ${backup.lastVerifyFailed.id} at ${backup.lastVerifyFailed.step}` : '';
      lines.push(`Backups: ${backup.backups} in ${backup.repository}, newest ${backup.newest ? `${backup.newest.id} (${backup.newest.finishedAt})` : 'none'}; ${verified}${failed}`);
    }
  }
  return `\n\n${lines.join('\n\n')}`;
}
