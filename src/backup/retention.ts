import type { BackupSettings } from '../cluster/backup-settings.js';
import { latestVerification, listBackups, type BackupRecord } from './catalog.js';
import { listDumps } from './dump.js';
import type { BackupContext } from './context.js';
import { parseSegmentName, segmentOfLsn } from './layout.js';
import { archivedSegments } from './wal.js';

export interface Deletion {
  what: string;
  reason: string;
}

/**
 * Which backups the policy keeps (pure: the clock is passed in). A backup is
 * deleted only when every configured rule lets it go:
 *  - fullCount: the newest N full backups and their incrementals;
 *  - maxAgeDays: every backup that finished inside the window, plus the newest
 *    one before it (a recovery to the window's first moment starts there);
 *  - always: the newest backup that passed verification, and every ancestor
 *    of a kept incremental.
 * No rule configured: nothing is deleted.
 */
export function backupsToKeep(backups: BackupRecord[], retention: BackupSettings['retention'], now: Date, newestVerified: string | undefined): Map<string, string> {
  const keep = new Map<string, string>();
  if (retention.fullCount === undefined && retention.maxAgeDays === undefined) {
    for (const b of backups) keep.set(b.id, 'no retention rule configured');
    return keep;
  }
  const byId = new Map(backups.map((b) => [b.id, b]));
  const fullOf = (b: BackupRecord): string => {
    let current = b;
    while (current.parent && byId.has(current.parent)) current = byId.get(current.parent)!;
    return current.id;
  };
  if (retention.fullCount !== undefined) {
    const fulls = backups.filter((b) => b.type === 'full').slice(-retention.fullCount).map((b) => b.id);
    for (const b of backups) if (fulls.includes(fullOf(b))) keep.set(b.id, `among the newest ${retention.fullCount} full backups and their incrementals`);
  }
  if (retention.maxAgeDays !== undefined) {
    const windowStart = now.getTime() - retention.maxAgeDays * 86_400_000;
    const before = backups.filter((b) => Date.parse(b.finishedAt) < windowStart).pop();
    for (const b of backups) {
      if (Date.parse(b.finishedAt) >= windowStart) keep.set(b.id, `finished within ${retention.maxAgeDays} days`);
    }
    if (before) keep.set(before.id, `the newest backup before the ${retention.maxAgeDays}-day window: recovery to its first moment starts here`);
  }
  if (newestVerified) keep.set(newestVerified, 'the newest backup that passed verification');
  for (const id of [...keep.keys()]) {
    let current = byId.get(id);
    while (current?.parent) {
      if (!keep.has(current.parent)) keep.set(current.parent, `parent of kept backup ${current.id}`);
      current = byId.get(current.parent);
    }
  }
  return keep;
}

/**
 * Applies the retention policy: deletes backups it does not keep, then the WAL
 * segments older than the start of the oldest kept backup (no kept backup
 * reads them). Each deletion is logged with its reason, in the repository
 * (log/) and through `ctx.note`.
 */
export async function applyRetention(ctx: BackupContext, now = new Date()): Promise<Deletion[]> {
  const backups = await listBackups(ctx.repository);
  const { fullCount, maxAgeDays } = ctx.settings.retention;
  // No policy configured: nothing is deleted, not even WAL older than every backup.
  if (backups.length === 0 || (fullCount === undefined && maxAgeDays === undefined)) return [];
  let newestVerified: string | undefined;
  for (const b of [...backups].reverse()) {
    if ((await latestVerification(ctx.repository, b.id))?.ok) {
      newestVerified = b.id;
      break;
    }
  }
  const keep = backupsToKeep(backups, ctx.settings.retention, now, newestVerified);
  const deletions: Deletion[] = [];
  const log = async (deletion: Deletion) => {
    deletions.push(deletion);
    ctx.note(`retention: deleting ${deletion.what}: ${deletion.reason}`);
    const stamp = new Date().toISOString().replace(/[-:.]/g, '');
    await ctx.repository.putIfAbsent(`log/${stamp}-${deletions.length}-delete.json`, Buffer.from(JSON.stringify(deletion)));
  };
  const rules = [
    ctx.settings.retention.fullCount !== undefined ? `fullCount=${ctx.settings.retention.fullCount}` : '',
    ctx.settings.retention.maxAgeDays !== undefined ? `maxAgeDays=${ctx.settings.retention.maxAgeDays}` : '',
  ].filter(Boolean).join(', ');
  // Newest first, so an incremental goes before its parent.
  for (const b of [...backups].reverse()) {
    if (keep.has(b.id)) continue;
    await log({ what: `backup ${b.id} (${b.type}, finished ${b.finishedAt})`, reason: `outside the retention policy (${rules})` });
    await ctx.repository.deletePrefix(`backups/${b.id}`);
  }
  // Logical dumps follow the same rules: the newest fullCount dumps, and those within maxAgeDays.
  const dumps = await listDumps(ctx);
  const windowStart = maxAgeDays === undefined ? undefined : now.getTime() - maxAgeDays * 86_400_000;
  for (const [index, dump] of dumps.entries()) {
    const byCount = fullCount !== undefined && index >= dumps.length - fullCount;
    const byAge = windowStart !== undefined && Date.parse(dump.finishedAt) >= windowStart;
    if (byCount || byAge) continue;
    await log({ what: `dump ${dump.id} (${dump.databases.map((d) => d.name).join(', ')})`, reason: `outside the retention policy (${rules})` });
    await ctx.repository.deletePrefix(`dumps/${dump.id}`);
  }
  const kept = backups.filter((b) => keep.has(b.id));
  const oldest = kept[0];
  if (!oldest) return deletions;
  const firstNeeded = segmentOfLsn(oldest.startLsn);
  const old = [...(await archivedSegments(ctx.repository)).keys()].filter((name) => parseSegmentName(name)!.number < firstNeeded).sort();
  if (old.length > 0) {
    await log({
      what: `${old.length} WAL segments ${old[0]} .. ${old[old.length - 1]}`,
      reason: `older than the start ${oldest.startLsn} of the oldest kept backup ${oldest.id}: no kept backup reads them`,
    });
    for (const name of old) await ctx.repository.delete(`wal/${name.slice(0, 16)}/${name}`);
  }
  return deletions;
}
