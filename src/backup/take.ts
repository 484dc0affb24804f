import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { MemberStatus } from '../cluster/types.js';
import { ROLE_NAMES } from '../config/secrets.js';
import { splitHostPort } from '../postgres/conf.js';
import { compareLsn } from '../postgres/lsn.js';
import { spawnIdentity } from '../util/os-user.js';
import { backupKey, dataKey, listBackups, newBackupId, type BackupFile, type BackupRecord } from './catalog.js';
import { clientProgramEnv, primaryOf, sqlOn, withPassfile, type BackupContext, type LocalSource } from './context.js';
import { feedDataDir, hasTablespaces, listDataDir } from './direct.js';
import { BackupError } from './errors.js';
import { countRows } from './rows.js';
import { HashWorker } from './hasher.js';
import { JobPool } from './pool.js';
import { readTar, type TarBody, type TarEntry, type TarSink } from './tar.js';
import { waitForWal } from './wal.js';

const gzipAsync = promisify(gzip);
/** Files up to this size are read whole and compressed in parallel; bigger ones stream. */
const BUFFERED_FILE_BYTES = 8 * 1024 * 1024;
const COMPRESS_BLOCK_BYTES = 4 * 1024 * 1024;
const COMPRESS_BLOCKS_IN_FLIGHT = 6;
const OUTPUT_CHUNK_BYTES = 256 * 1024;
/** How much further behind than the best replica the local one may be and still be the source. */
const LOCAL_LAG_SLACK_BYTES = 16 * 1024 * 1024;

export interface TakeOptions {
  type: 'full' | 'incremental';
  fromPrimary: boolean;
  compressLevel?: number;
  parallel?: number;
  /** Count rows on the source replica (replay paused briefly) for the restore drill's row check. */
  rowCheck?: boolean;
  /** Injected clock, for ids and records. */
  now?: () => Date;
}

function chooseSource(ctx: BackupContext, fromPrimary: boolean): MemberStatus {
  const primary = primaryOf(ctx);
  if (fromPrimary) {
    if (!primary) throw new BackupError('NO_SOURCE', `cluster ${ctx.cluster} has no primary to back up from`);
    return primary;
  }
  const replicas = ctx.members
    .filter((m) => m.role === 'replica' && m.streaming && m.systemIdentifier === ctx.systemIdentifier)
    .sort((a, b) => (a.lagBytes ?? Infinity) - (b.lagBytes ?? Infinity));
  // The member on this host, when it is about as current as the best: its files are read directly (direct.ts).
  const local = replicas.find((m) => m.name === ctx.local?.member);
  if (local && (local.lagBytes ?? Infinity) <= (replicas[0]?.lagBytes ?? Infinity) + LOCAL_LAG_SLACK_BYTES) return local;
  const best = replicas[0];
  if (!best) {
    const seen = ctx.members.map((m) => `${m.name} (${m.role}${m.streaming ? ', streaming' : ''})`).join(', ');
    throw new BackupError('NO_SOURCE', `no streaming replica to back up from in cluster ${ctx.cluster}: ${seen || 'no members'}`);
  }
  return best;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * Takes a base backup with pg_basebackup (tar to stdout, no WAL: the archive
 * has it), storing each file gzip-compressed. An incremental stores only files
 * that changed since its parent: a file whose size and mtime equal the
 * parent's, and whose mtime was already older than the parent's start, is not
 * compressed again; any other file is compared by sha256. The backup exists
 * once backup.json is durable, after the WAL from its start to its end point
 * is in the archive.
 */
export async function takeBackup(ctx: BackupContext, options: TakeOptions): Promise<BackupRecord> {
  const now = options.now ?? (() => new Date());
  const source = chooseSource(ctx, options.fromPrimary);
  const existing = await listBackups(ctx.repository);
  let type = options.type;
  const parent = type === 'incremental' ? existing[existing.length - 1] : undefined;
  if (type === 'incremental' && !parent) {
    ctx.note('no earlier backup in the repository: taking a full backup instead of an incremental one');
    type = 'full';
  }
  const parentFiles = new Map((parent?.files ?? []).map((f) => [f.path, f]));
  const parentStartMs = parent ? Date.parse(parent.startedAt) : 0;
  const started = now();
  const id = newBackupId(type, started);
  if (existing.some((b) => b.id === id) || (await ctx.repository.children(`backups/${id}`)).length > 0) {
    throw new BackupError('BACKUP_FAILED', `backup id ${id} is already taken (two backups in one second?); run the command again`);
  }
  const level = options.compressLevel ?? ctx.settings.compressLevel;
  const pool = new JobPool(options.parallel ?? ctx.settings.parallel);
  const files: BackupFile[] = [];
  const directories: { path: string; mode: number }[] = [];
  const symlinks: { path: string; target: string }[] = [];
  let manifest: Buffer[] = [];
  let sizeBytes = 0;
  let storedBytes = 0;
  let switcher: NodeJS.Timeout | undefined;
  const primary = primaryOf(ctx);
  ctx.note(`backup ${id}: ${type}${parent ? ` on top of ${parent.id}` : ''} from ${source.name}${source.role === 'primary' ? ' (the primary)' : ''}, gzip level ${level}`);

  const keep = (entry: TarEntry, ref: BackupFile): void => void files.push({ ...ref, path: entry.name, mode: entry.mode, mtime: entry.mtime });
  const store = async (entry: TarEntry, digest: string, object: Buffer) => {
    const put = await ctx.repository.putIfAbsent(dataKey(id, entry.name), object, { checksum: 'caller', durability: 'batch' });
    if (put.status === 'conflict') throw new Error(`${dataKey(id, entry.name)} already holds other content`);
    files.push({ path: entry.name, size: entry.size, mtime: entry.mtime, mode: entry.mode, sha256: digest, ref: id, storedSize: put.size, storedSha256: put.sha256 });
    storedBytes += put.size;
  };

  const entry = async (e: TarEntry): Promise<TarBody | undefined> => {
    if (e.type === 'directory') return void directories.push({ path: e.name, mode: e.mode });
    if (e.type === 'symlink') return void symlinks.push({ path: e.name, target: e.linkTarget });
    if (e.name === 'backup_manifest') return { write: (chunk) => void manifest.push(Buffer.from(chunk)), end: () => undefined };
    sizeBytes += e.size;
    // pg_control comes last: the server now waits for the end segment to be archived.
    if (e.name === 'global/pg_control' && source.role !== 'primary' && primary) switcher ??= startWalSwitcher(ctx, primary);
    const previous = parentFiles.get(e.name);
    if (previous && previous.size === e.size && previous.mtime === e.mtime && previous.mtime * 1000 < parentStartMs - 1000) {
      keep(e, previous);
      return undefined;
    }
    if (e.size <= BUFFERED_FILE_BYTES) {
      const chunks: Buffer[] = [];
      return {
        // Chunks from the pipe are fresh buffers, never reused: kept without a copy.
        write: (chunk) => void chunks.push(chunk),
        end: () =>
          pool.run(async () => {
            const data = Buffer.concat(chunks);
            const digest = sha256(data);
            const unchanged = parentFiles.get(e.name);
            if (unchanged?.sha256 === digest) return keep(e, unchanged);
            await store(e, digest, await gzipAsync(data, { level }));
          }),
      };
    }
    // A big file (a relation segment is up to 1 GB) is cut into blocks compressed
    // in parallel on the thread pool, each a gzip member: the stored object is
    // their concatenation, which gunzip reads as one stream.
    const output = new PassThrough({ highWaterMark: 1024 * 1024 });
    const hash = hasher.open();
    const key = dataKey(id, e.name);
    let stored: Promise<void> = Promise.resolve();
    await pool.run(async () => {
      stored = (async () => {
        const put = await ctx.repository.putIfAbsent(key, output, { checksum: 'caller', durability: 'batch' });
        const digest = await hasher.digest(hash);
        const previous = parentFiles.get(e.name);
        if (previous?.sha256 === digest) {
          await ctx.repository.delete(key);
          return keep(e, previous);
        }
        files.push({ path: e.name, size: e.size, mtime: e.mtime, mode: e.mode, sha256: digest, ref: id, storedSize: put.size, storedSha256: put.sha256, blockSize: COMPRESS_BLOCK_BYTES, blocks });
        storedBytes += put.size;
      })();
      await stored;
    });
    /** The block being filled: each chunk is copied in as it arrives, while it is still in the CPU's cache. */
    let block: Buffer | undefined;
    let blockBytes = 0;
    /** Stored size of each gzip member, so a restore can decompress them in parallel. */
    const blocks: number[] = [];
    let written: Promise<void> = Promise.resolve();
    const pending: Promise<void>[] = [];
    const flushBlock = async () => {
      if (blockBytes === 0 || !block) return;
      const data = blockBytes === COMPRESS_BLOCK_BYTES ? block : block.subarray(0, blockBytes);
      block = undefined;
      blockBytes = 0;
      // Output chunks sized for a well-compressing block (PostgreSQL pages: a few percent at level 1);
      // more of them when it compresses worse. Every chunk is fresh memory the GC must account for.
      const compressed = gzipAsync(data, { level, chunkSize: OUTPUT_CHUNK_BYTES });
      compressed.catch(() => undefined); // awaited below, in order; not an unhandled rejection meanwhile
      written = written.then(async () => {
        const member = await compressed;
        // zlib is done with the block: it moves to the hash worker, in order.
        await hasher.update(hash, data, true);
        blocks.push(member.length);
        if (!output.write(member)) await Promise.race([once(output, 'drain'), once(output, 'close')]);
      });
      written.catch(() => undefined);
      pending.push(written);
      // At most a few blocks in flight: memory stays bounded, the thread pool stays busy.
      if (pending.length >= COMPRESS_BLOCKS_IN_FLIGHT) await pending.shift();
    };
    return {
      buffer: () => (block ??= hasher.take(COMPRESS_BLOCK_BYTES)),
      write: async (chunk) => {
        // Read straight into the block (direct.ts): nothing to copy.
        if (block && blockBytes === 0 && chunk.buffer === block.buffer && chunk.byteOffset === block.byteOffset && chunk.length <= COMPRESS_BLOCK_BYTES) {
          blockBytes = chunk.length;
          if (blockBytes === COMPRESS_BLOCK_BYTES) await flushBlock();
          return;
        }
        // Blocks of exactly COMPRESS_BLOCK_BYTES (the last one shorter): a restore writes block i at i * blockSize.
        let rest = chunk;
        while (rest.length > 0) {
          const take = Math.min(rest.length, COMPRESS_BLOCK_BYTES - blockBytes);
          // A reused buffer when the hash worker has handed one back (see HashWorker.take).
          block ??= hasher.take(COMPRESS_BLOCK_BYTES);
          rest.copy(block, blockBytes, 0, take);
          blockBytes += take;
          rest = rest.subarray(take);
          if (blockBytes === COMPRESS_BLOCK_BYTES) await flushBlock();
        }
      },
      end: async () => {
        await flushBlock();
        await written;
        output.end();
      },
    };
  };

  /** The fallback (a source on another host, tablespaces): pg_basebackup's tar stream into the same sink. */
  const viaBaseBackup = async () => {
    const [host, port] = splitHostPort(source.connectAddress);
    return withPassfile(ctx, async (passfile) => {
      const child = spawn(join(ctx.binDir, 'pg_basebackup'), ['-h', host, '-p', String(port), '-U', ROLE_NAMES.replication, '-D', '-', '-F', 't', '-X', 'none', '-c', 'fast', '--no-password', '-v', '-P', '--manifest-checksums=CRC32C'], {
        ...spawnIdentity(ctx.osUser),
        cwd: '/',
        env: clientProgramEnv(ctx, passfile, { PGAPPNAME: 'relevo-backup' }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => {
        stderr = (stderr + chunk.toString()).slice(-32_000);
        // -P: "123/4567 kB (2%), 0/1 tablespace": the server's estimate of the total.
        const progress = /(\d+)\/(\d+) kB \(\d+%\)[^\r\n]*$/.exec(stderr.split(/[\r\n]/).filter(Boolean).pop() ?? '');
        if (progress) ctx.progress?.(`backup ${id}`, Number(progress[1]) * 1024, Number(progress[2]) * 1024);
      });
      const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
      try {
        await readTar(child.stdout, { entry });
        await pool.drain();
      } catch (error) {
        child.kill('SIGTERM');
        await exited;
        throw error;
      }
      const code = await exited;
      if (code !== 0) throw new Error(`pg_basebackup from ${source.name} exited with ${code}: ${stderr.trim().split('\n').slice(-4).join(' | ')}`);
      if (manifest.length === 0) throw new Error('pg_basebackup sent no backup_manifest');
      return walRange(Buffer.concat(manifest));
    });
  };

  const started_ms = performance.now();
  const hasher = new HashWorker();
  try {
    const local = await directSource(ctx, source);
    ctx.note(local ? `backup ${id}: reading ${local.dataDir} directly (pg_backup_start/pg_backup_stop)` : `backup ${id}: copying through pg_basebackup from ${source.connectAddress}`);
    const { startLsn, endLsn, timeline } = local
      ? await readDirect(ctx, local, id, entry, pool, () => {
          if (source.role !== 'primary' && primary) switcher ??= startWalSwitcher(ctx, primary);
        })
      : await viaBaseBackup();
    await ctx.repository.flush();
    await waitForWal(ctx, timeline, startLsn, endLsn, 120_000);
    let rowCheck: BackupRecord['rowCheck'] = null;
    if (options.rowCheck !== false && source.role === 'replica') {
      rowCheck = await countRows(ctx, source);
      if (compareLsn(rowCheck.lsn, endLsn) < 0) rowCheck = null;
      else await waitForWal(ctx, timeline, endLsn, rowCheck.lsn, 120_000);
    }
    const finished = now();
    const record: BackupRecord = {
      id,
      type,
      parent: parent?.id ?? null,
      cluster: ctx.cluster,
      systemIdentifier: ctx.systemIdentifier,
      source: source.name,
      fromPrimary: source.role === 'primary',
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      durationMs: Math.round(performance.now() - started_ms),
      timeline,
      startLsn,
      endLsn,
      compression: { type: 'gzip', level },
      sizeBytes,
      storedBytes,
      files: files.sort((a, b) => a.path.localeCompare(b.path)),
      directories,
      symlinks,
      rowCheck,
    };
    // PostgreSQL's manifest (for pg_verifybackup) comes with pg_basebackup only; the record lists every file with its sha256 either way.
    if (manifest.length > 0) await ctx.repository.putIfAbsent(`backups/${id}/backup_manifest`, Buffer.concat(manifest));
    await ctx.repository.putIfAbsent(backupKey(id), Buffer.from(JSON.stringify(record, null, 1)));
    manifest = [];
    return record;
  } catch (error) {
    await ctx.repository.deletePrefix(`backups/${id}`).catch(() => undefined);
    if (error instanceof BackupError) throw error;
    throw new BackupError('BACKUP_FAILED', `backup ${id} from ${source.name} failed: ${(error as Error).message}`);
  } finally {
    if (switcher) clearInterval(switcher);
    await hasher.close();
  }
}

/** The WAL a backup needs, from PostgreSQL's manifest (pg_basebackup prints it only when it fetches WAL itself). */
function walRange(manifest: Buffer): { startLsn: string; endLsn: string; timeline: number } {
  let ranges: { Timeline: number; 'Start-LSN': string; 'End-LSN': string }[];
  try {
    ranges = (JSON.parse(manifest.toString('utf8')) as { 'WAL-Ranges': typeof ranges })['WAL-Ranges'];
  } catch (error) {
    throw new Error(`backup_manifest from pg_basebackup is not valid JSON: ${(error as Error).message}`);
  }
  const only = ranges[0];
  if (!only) throw new Error('backup_manifest has no WAL-Ranges');
  if (ranges.length > 1) throw new Error('the timeline changed while the backup ran (a failover?): take the backup again');
  return { startLsn: only['Start-LSN'], endLsn: only['End-LSN'], timeline: only.Timeline };
}

/**
 * A backup from a standby ends when the standby has archived the segment
 * holding the end point; the primary must finish that segment first.
 */
function startWalSwitcher(ctx: BackupContext, primary: MemberStatus): NodeJS.Timeout {
  const timer = setInterval(() => {
    sqlOn(ctx, primary, (c) => c.query('SELECT pg_switch_wal()'), 'postgres', 5_000).catch(() => undefined);
  }, 1_000);
  timer.unref();
  return timer;
}

/** The source's data directory when it is on this host and readable here; otherwise pg_basebackup (a note says why). */
async function directSource(ctx: BackupContext, source: MemberStatus): Promise<LocalSource | undefined> {
  const local = ctx.local;
  if (!local || local.member !== source.name) return undefined;
  try {
    await access(join(local.dataDir, 'global', 'pg_control'), constants.R_OK);
  } catch (error) {
    ctx.note(`cannot read ${local.dataDir} here (${(error as Error).message}): copying through pg_basebackup instead`);
    return undefined;
  }
  if (await hasTablespaces(local.dataDir)) {
    ctx.note(`${local.dataDir} has tablespaces: copying through pg_basebackup instead`);
    return undefined;
  }
  return local;
}

/**
 * A non-exclusive backup read from the local data directory: pg_backup_start
 * in a session held open for the whole copy (closing it aborts the backup),
 * the files through `entry` (the same sink as the tar stream's), then
 * pg_backup_stop's backup_label (and tablespace_map) as files of the backup.
 * The WAL comes from the archive, as with pg_basebackup -X none.
 */
async function readDirect(ctx: BackupContext, local: LocalSource, label: string, entry: TarSink['entry'], pool: JobPool, beforeStop: () => void): Promise<{ startLsn: string; endLsn: string; timeline: number }> {
  const session = new pg.Client({ host: local.socketDir, port: local.port, user: ROLE_NAMES.agent, password: ctx.credentials.agentPassword, database: 'postgres', application_name: 'relevo-backup', connectionTimeoutMillis: 10_000 });
  session.on('error', () => undefined); // surfaces through the pending query
  await session.connect();
  try {
    const version = Number((await session.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v);
    const modern = version >= 150_000;
    const started = await session.query<{ lsn: string }>(modern ? 'SELECT pg_backup_start($1, true)::text AS lsn' : 'SELECT pg_start_backup($1, true, false)::text AS lsn', [`relevo ${label}`]);
    const entries = await listDataDir(local.dataDir);
    const total = entries.reduce((sum, e) => sum + e.size, 0);
    let done = 0;
    const stats = await feedDataDir(
      local.dataDir,
      entries,
      {
        entry: (e) => {
          done += e.size;
          ctx.progress?.(`backup ${label}`, done, total);
          return entry(e);
        },
      },
      BUFFERED_FILE_BYTES,
    );
    await pool.drain();
    if (stats.vanished.length > 0 || stats.shrunk.length > 0) {
      ctx.note(`backup ${label}: ${stats.vanished.length} files vanished while copying (left out), ${stats.shrunk.length} shrank (padded with zeros; WAL replay truncates them)`);
    }
    beforeStop();
    const stopped = await session.query<{ lsn: string; labelfile: string; spcmapfile: string | null; recovery: boolean; tli: number | null }>(
      `SELECT s.lsn::text AS lsn, s.labelfile, s.spcmapfile, pg_is_in_recovery() AS recovery, (SELECT min_recovery_end_timeline FROM pg_control_recovery()) AS tli FROM ${modern ? 'pg_backup_stop(false)' : 'pg_stop_backup(false, false)'} s`,
    );
    const stop = stopped.rows[0]!;
    const timeline = Number(/START TIMELINE: (\d+)/.exec(stop.labelfile)?.[1]);
    if (!Number.isInteger(timeline) || timeline < 1) throw new Error(`backup_label from pg_backup_stop has no START TIMELINE: ${JSON.stringify(stop.labelfile)}`);
    // A standby that followed a new timeline meanwhile: its end point is on another timeline (pg_basebackup's manifest would have two WAL ranges).
    if (stop.recovery && stop.tli !== null && stop.tli !== 0 && stop.tli !== timeline) throw new Error('the timeline changed while the backup ran (a failover?): take the backup again');
    const now = Math.floor(Date.now() / 1000);
    for (const [name, text] of [['backup_label', stop.labelfile], ['tablespace_map', stop.spcmapfile ?? '']] as const) {
      if (name === 'tablespace_map' && text === '') continue;
      const content = Buffer.from(text, 'utf8');
      const body = await entry({ name, type: 'file', size: content.length, mode: 0o600, mtime: now, linkTarget: '' });
      if (body) {
        await body.write(content);
        await body.end();
      }
    }
    await pool.drain();
    return { startLsn: started.rows[0]!.lsn, endLsn: stop.lsn, timeline };
  } finally {
    await session.end().catch(() => undefined);
  }
}
