import { chownSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ClusterKeys } from '../cluster/keys.js';
import type { ClusterSettings } from '../cluster/settings.js';
import type { Store } from '../store/store.js';
import { runningAsRoot, type OsUser } from '../util/os-user.js';
import { backlogLevel, measureBacklog } from './archive.js';

export const ArchiveStatusSchema = z.object({
  member: z.string(),
  at: z.string(),
  readyFiles: z.number(),
  backlogBytes: z.number(),
  oldest: z.string().nullable(),
  freeBytes: z.number().nullable(),
  level: z.enum(['ok', 'warn', 'limit']),
  /** Segments recycled unarchived under atBacklogLimit=drop (a gap in the archive). */
  dropped: z.array(z.string()),
});
export type ArchiveStatus = z.infer<typeof ArchiveStatusSchema>;

export const archiveStatusPrefix = (keys: ClusterKeys) => `${keys.root}archive/`;

export interface MonitorContext {
  member: string;
  dataDir: string;
  user: OsUser;
  store: Store;
  keys: ClusterKeys;
  log: Logger;
  settings(): ClusterSettings;
  /** Each pass's result (undefined: no repository, or no archive_status directory yet): the metrics. */
  onStatus?(status: ArchiveStatus | undefined): void;
}

const DROP_FLAG = 'relevo-archive-drop';
const DROPPED_LIST = 'relevo-archive-dropped';

/**
 * One pass of the archive watch on this member: measures the backlog in
 * pg_wal/archive_status, warns before pg_wal can fill its disk, applies the
 * operator's choice at the limit, and publishes the figures for `relevo list`.
 */
export async function checkArchive(ctx: MonitorContext): Promise<ArchiveStatus | undefined> {
  const settings = ctx.settings().backup;
  if (!settings.repository || !existsSync(join(ctx.dataDir, 'pg_wal', 'archive_status'))) return undefined;
  const backlog = await measureBacklog(ctx.dataDir);
  const level = backlogLevel(backlog, settings);
  const figures = { readyFiles: backlog.readyFiles, backlogBytes: backlog.bytes, oldest: backlog.oldest, freeBytes: backlog.freeBytes, repository: settings.repository };
  if (level === 'warn') ctx.log.warn(figures, `WAL archive backlog: ${backlog.readyFiles} files wait for archiving; pg_wal grows until the repository accepts them`);
  if (level === 'limit') {
    ctx.log.error({ ...figures, limit: settings.backlogLimitBytes, action: settings.atBacklogLimit }, `WAL archive backlog over backup.backlogLimitBytes: ${settings.atBacklogLimit === 'drop' ? 'dropping unarchived segments (the archive gets a gap)' : 'keeping every segment (pg_wal may fill its disk)'}`);
  }
  const flag = join(ctx.dataDir, DROP_FLAG);
  const drop = level === 'limit' && settings.atBacklogLimit === 'drop';
  if (drop && !existsSync(flag)) {
    // 'wx': never through a name (or link) that is already there.
    writeFileSync(flag, `${new Date().toISOString()}\n`, { mode: 0o600, flag: 'wx' });
    if (runningAsRoot()) chownSync(flag, ctx.user.uid, ctx.user.gid);
  } else if (!drop && existsSync(flag) && backlog.bytes < settings.backlogWarnBytes) {
    rmSync(flag, { force: true });
  }
  const droppedPath = join(ctx.dataDir, DROPPED_LIST);
  const dropped = existsSync(droppedPath) ? readFileSync(droppedPath, 'utf8').split('\n').filter(Boolean) : [];
  if (dropped.length > 0) ctx.log.error({ dropped: dropped.length, last: dropped[dropped.length - 1] }, 'WAL segments were dropped unarchived: point-in-time recovery across them is impossible; take a new full backup');
  const status: ArchiveStatus = { member: ctx.member, at: new Date().toISOString(), readyFiles: backlog.readyFiles, backlogBytes: backlog.bytes, oldest: backlog.oldest, freeBytes: backlog.freeBytes, level, dropped: dropped.slice(-20) };
  // The metrics first: a store that cannot take the record does not make the local figures unknown.
  ctx.onStatus?.(status);
  await ctx.store.put(`${archiveStatusPrefix(ctx.keys)}${ctx.member}`, JSON.stringify(status));
  return status;
}

/** Runs checkArchive every `periodMs` until the returned stop function is called. */
export function startArchiveMonitor(ctx: MonitorContext, periodMs = 5_000): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = async () => {
    let reported = false;
    try {
      const status = await checkArchive({ ...ctx, onStatus: (s) => ((reported = true), ctx.onStatus?.(s)) });
      if (!status) ctx.onStatus?.(undefined);
    } catch (error) {
      if (!reported) ctx.onStatus?.(undefined);
      ctx.log.warn({ err: (error as Error).message }, 'archive backlog check failed');
    }
    if (!stopped) timer = setTimeout(() => void tick(), periodMs);
  };
  timer = setTimeout(() => void tick(), 1_000);
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
