import { latestVerification, listBackups, openClusterRepository } from './catalog.js';

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
