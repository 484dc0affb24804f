import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { z } from 'zod';
import { ROLE_NAMES } from '../config/secrets.js';
import { splitHostPort } from '../postgres/conf.js';
import { spawnIdentity } from '../util/os-user.js';
import { clientProgramEnv, primaryOf, sqlOn, withPassfile, type BackupContext } from './context.js';
import { BackupError } from './errors.js';
import { DATABASES_SQL } from './rows.js';

export const DumpRecordSchema = z.object({
  id: z.string(),
  source: z.string(),
  startedAt: z.string(),
  finishedAt: z.string(),
  databases: z.array(z.object({ name: z.string(), key: z.string(), bytes: z.number(), sha256: z.string() })),
});
export type DumpRecord = z.infer<typeof DumpRecordSchema>;

/**
 * `relevo dump`: pg_dump in custom format, one file per database, into
 * dumps/<id>/<database>.dump (sha256 sidecars), then dumps/<id>/dump.json.
 * From a streaming replica when there is one (hot_standby_feedback keeps the
 * rows the dump reads), else from the primary.
 */
export async function takeDump(ctx: BackupContext, now = new Date()): Promise<DumpRecord> {
  const source = ctx.members.find((m) => m.role === 'replica' && m.streaming) ?? primaryOf(ctx);
  if (!source) throw new BackupError('NO_SOURCE', `cluster ${ctx.cluster} has no member to dump from`);
  const id = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const databases = await sqlOn(ctx, source, async (c) => (await c.query<{ datname: string }>(DATABASES_SQL)).rows.map((r) => r.datname));
  const [host, port] = splitHostPort(source.connectAddress);
  const out: DumpRecord['databases'] = [];
  try {
    await withPassfile(ctx, async (passfile) => {
      for (const database of databases) {
        const child = spawn(join(ctx.binDir, 'pg_dump'), ['-Fc', '-h', host, '-p', String(port), '-U', ROLE_NAMES.network, '--no-password', '-d', database], {
          ...spawnIdentity(ctx.osUser),
          cwd: '/',
          env: clientProgramEnv(ctx, passfile),
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-8_000)));
        const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
        const key = `dumps/${id}/${encodeURIComponent(database)}.dump`;
        const put = await ctx.repository.putIfAbsent(key, child.stdout);
        const code = await exited;
        if (code !== 0) throw new Error(`pg_dump of database ${database} on ${source.name} exited with ${code}: ${stderr.trim()}`);
        out.push({ name: database, key, bytes: put.size, sha256: put.sha256 });
        ctx.note(`dump ${id}: ${database} ${put.size} bytes`);
      }
    });
  } catch (error) {
    await ctx.repository.deletePrefix(`dumps/${id}`).catch(() => undefined);
    throw new BackupError('BACKUP_FAILED', `dump ${id} failed: ${(error as Error).message}`);
  }
  const record: DumpRecord = { id, source: source.name, startedAt: now.toISOString(), finishedAt: new Date().toISOString(), databases: out };
  await ctx.repository.putIfAbsent(`dumps/${id}/dump.json`, Buffer.from(JSON.stringify(record, null, 1)));
  return record;
}

export async function listDumps(ctx: BackupContext): Promise<DumpRecord[]> {
  const out: DumpRecord[] = [];
  for (const id of await ctx.repository.children('dumps')) {
    if (!(await ctx.repository.stat(`dumps/${id}/dump.json`))) continue;
    out.push(DumpRecordSchema.parse(JSON.parse((await ctx.repository.readBuffer(`dumps/${id}/dump.json`)).toString('utf8'))));
  }
  return out.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
}
