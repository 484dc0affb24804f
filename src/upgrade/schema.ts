/**
 * Copies the database's definition from the old to the new cluster with the
 * old version's client programs (pg_dumpall --roles-only, pg_dump
 * --schema-only, psql): a newer server restores an older pg_dump's output.
 * Passwords go through a private temporary passfile, never argv or the store.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { ROLE_NAMES } from '../config/secrets.js';
import { UpgradeError } from './errors.js';
import { localConninfo as conninfo, type Side } from './side.js';
import { UPGRADE_ROLE } from './role.js';
import { pgpassField } from '../postgres/libpq.js';

interface Tools {
  binDir: string;
  passfile: string;
}

function withPassfile<T>(sides: Side[], work: (passfile: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-upgrade-'));
  const passfile = join(dir, 'pgpass');
  writeFileSync(passfile, sides.map((s) => `${pgpassField(s.socketDir)}:${s.localPort}:*:${ROLE_NAMES.agent}:${pgpassField(s.password)}\n`).join(''), { mode: 0o600 });
  return work(passfile).finally(() => rmSync(dir, { recursive: true, force: true }));
}

/** Runs `program` with stdin `input` (string or another program's stdout); resolves its stdout. */
function run(tools: Tools, program: string, args: string[], input?: string | NodeJS.ReadableStream): { done: Promise<string>; stdout: NodeJS.ReadableStream } {
  const child = spawn(join(tools.binDir, program), args, {
    env: { ...process.env, PGPASSFILE: tools.passfile, PGCONNECT_TIMEOUT: '10', PGAPPNAME: 'relevo-upgrade' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  if (typeof input === 'string') child.stdin.end(input);
  else if (input) input.pipe(child.stdin);
  else child.stdin.end();
  child.stdin.on('error', () => undefined);
  let out = '';
  const collect = input === undefined || typeof input === 'string';
  const done = new Promise<string>((resolve, reject) => {
    if (collect) child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', (error) => reject(new UpgradeError('UPGRADE_SCHEMA_COPY_FAILED', `${program}: ${error.message}`)));
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new UpgradeError('UPGRADE_SCHEMA_COPY_FAILED', `${program} exited with ${code}: ${stderr.trim()}`))));
  });
  return { done, stdout: child.stdout };
}

const ROLE_LINE = /^(?:CREATE|ALTER) ROLE ("(?:[^"]|"")+"|[^\s;]+)/;

/** Roles of the old cluster that the new one lacks, with their password verifiers and memberships. */
export async function copyRoles(binDir: string, source: Side, target: Side, targetClient: pg.Client): Promise<number> {
  const existing = new Set((await targetClient.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map((r) => r.rolname));
  return withPassfile([source, target], async (passfile) => {
    const tools = { binDir, passfile };
    const dump = await run(tools, 'pg_dumpall', ['--roles-only', '--quote-all-identifiers', '-d', conninfo(source, 'postgres')]).done;
    let created = 0;
    const lines = dump.split('\n').filter((line) => {
      const m = ROLE_LINE.exec(line);
      // The subscription's role on the old cluster stays there (dropped at forget).
      if (line.includes(`"${UPGRADE_ROLE}"`)) return false;
      if (!m) return true;
      const name = m[1]!.startsWith('"') ? m[1]!.slice(1, -1).replace(/""/g, '"') : m[1]!;
      if (existing.has(name)) return false;
      if (line.startsWith('CREATE')) created += 1;
      return true;
    });
    await run(tools, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conninfo(target, 'postgres')], lines.join('\n')).done;
    return created;
  });
}

/** pg_dump --schema-only of the old database into the (empty) new one. */
export async function copySchema(binDir: string, source: Side, target: Side, database: string): Promise<void> {
  await withPassfile([source, target], async (passfile) => {
    const tools = { binDir, passfile };
    const dump = run(tools, 'pg_dump', ['--schema-only', '--no-publications', '--no-subscriptions', '-d', conninfo(source, database)]);
    const restore = run(tools, 'psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conninfo(target, database)], dump.stdout);
    await Promise.all([dump.done, restore.done]);
  });
}
