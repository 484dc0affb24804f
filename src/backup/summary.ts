import { formatBytes, renderTable } from '../cli/table.js';
import { latestVerification, listBackups, openClusterRepository } from './catalog.js';
import type { ArchiveStatus } from './monitor.js';

/** The backup lines of `relevo list`: newest backup, newest passed restore drill and its restore time. */
export interface BackupSummary {
  repository: string;
  error: string | null;
  backups: number;
  newest: { id: string; finishedAt: string } | null;
  lastVerified: { id: string; at: string; restoreMs: number | null } | null;
  lastVerifyFailed: { id: string; at: string; step: string | null } | null;
}

export async function backupSummary(repository: string, cluster: string, systemIdentifier: string | undefined): Promise<BackupSummary> {
  const summary: BackupSummary = { repository, error: null, backups: 0, newest: null, lastVerified: null, lastVerifyFailed: null };
  if (!systemIdentifier) return { ...summary, error: 'cluster not initialised' };
  try {
    const repo = openClusterRepository(repository, cluster, systemIdentifier);
    const backups = await listBackups(repo);
    summary.backups = backups.length;
    const newest = backups[backups.length - 1];
    summary.newest = newest ? { id: newest.id, finishedAt: newest.finishedAt } : null;
    for (const b of [...backups].reverse()) {
      const report = await latestVerification(repo, b.id);
      if (report && !report.ok && !summary.lastVerifyFailed && !summary.lastVerified) summary.lastVerifyFailed = { id: b.id, at: report.at, step: report.failedStep };
      if (report?.ok) {
        summary.lastVerified = { id: b.id, at: report.at, restoreMs: report.restoreMs };
        break;
      }
    }
  } catch (error) {
    summary.error = (error as Error).message;
  }
  return summary;
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
