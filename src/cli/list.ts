import { readCluster } from '../agent/observe.js';
import { backupSummary, type BackupSummary } from '../backup/summary.js';
import { archiveStatusPrefix, ArchiveStatusSchema, type ArchiveStatus } from '../backup/monitor.js';
import type { MemberStatus } from '../cluster/types.js';
import { RouterStatusSchema, type RouterStatus } from '../router/status.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';
import { formatBytes, renderTable } from './table.js';

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
}

export async function clusterListing(handle: ClusterHandle): Promise<ClusterListing> {
  const { view, settings } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) throw new CliError(view.error, EXIT.failure);
  const routers = (await handle.store.list(handle.keys.routersPrefix))
    .map((kv) => RouterStatusSchema.safeParse(JSON.parse(kv.value)))
    .flatMap((parsed) => (parsed.success ? [parsed.data] : []));
  return {
    cluster: handle.config.cluster,
    leader: view.leader?.member ?? null,
    systemIdentifier: view.init?.systemIdentifier ?? null,
    paused: settings.paused,
    members: [...view.members].sort((a, b) => a.name.localeCompare(b.name)),
    routers,
    archive: (await handle.store.list(archiveStatusPrefix(handle.keys)))
      .map((kv) => ArchiveStatusSchema.safeParse(JSON.parse(kv.value)))
      .flatMap((parsed) => (parsed.success ? [parsed.data] : [])),
    backup: settings.backup.repository ? await backupSummary(settings.backup.repository, handle.config.cluster, view.init?.systemIdentifier) : null,
  };
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

export function renderListing(listing: ClusterListing): string {
  const rows = listing.members.map((m) => [
    m.name,
    m.connectAddress,
    m.name === listing.leader ? `${m.role} (leader)` : m.role,
    m.state,
    m.timeline === null ? '-' : String(m.timeline),
    m.receivedLsn ?? '-',
    m.replayedLsn ?? '-',
    formatBytes(m.lagBytes),
    m.lagSeconds === null ? '-' : m.lagSeconds.toFixed(1),
    m.role === 'primary' ? m.slots.map((s) => `${s.name}${s.active ? '' : '(inactive)'}`).join(',') || '-' : m.streaming ? 'streaming' : m.replayPaused ? 'paused' : '-',
  ]);
  const paused = listing.paused ? ' — PAUSED: no automatic failover' : '';
  const header = `Cluster ${listing.cluster} (system ${listing.systemIdentifier ?? 'not initialised'}), leader: ${listing.leader ?? 'none'}${paused}`;
  return `${header}\n${renderTable(['Member', 'Address', 'Role', 'State', 'TL', 'Received', 'Replayed', 'Lag', 'Lag s', 'Slots / stream'], rows)}${renderRouters(listing.routers)}${renderBackupSummary(listing.archive, listing.backup)}`;
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
