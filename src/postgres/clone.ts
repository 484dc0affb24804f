import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { splitHostPort, writePassfile } from './conf.js';
import { dataDirState } from './datadir.js';
import { ensureOwnedDir, removeOwnedTree } from './owned-fs.js';
import { PostgresCommandError, runPostgresProgram } from './exec.js';
import type { BaseBackupJob } from './basebackup-main.js';
import { spawnIdentity, type OsUser } from '../util/os-user.js';
import type { LocalPostgres } from './local.js';
import { libpqTlsEnv } from '../tls/client.js';

export type CloneMethod = 'pg_basebackup' | 'relevo';

/** Major version printed by `<program> --version` in binDir; undefined when the program is missing or silent. */
async function programMajor(binDir: string, user: OsUser, program: string): Promise<number | undefined> {
  if (!existsSync(join(binDir, program))) return undefined;
  const out = await runPostgresProgram(binDir, user, program, ['--version'], { context: `reading the version of ${program}`, timeoutMs: 10_000 }).catch(() => '');
  const m = /\(PostgreSQL\)\s+(\d+)/.exec(out);
  return m ? Number(m[1]) : undefined;
}

/**
 * pg_basebackup when binDir has one of the server's major (or newer), else
 * relevo's own base backup: pg_basebackup refuses a server of a newer major,
 * and a newer major's server build may come without client programs (the
 * 17 build used for upgrades). RELEVO_CLONE_METHOD=relevo|pg_basebackup
 * forces one (tests and benchmarks).
 */
export async function chooseCloneMethod(binDir: string, user: OsUser, forced = process.env.RELEVO_CLONE_METHOD): Promise<CloneMethod> {
  if (forced === 'relevo' || forced === 'pg_basebackup') return forced;
  const [client, server] = await Promise.all([programMajor(binDir, user, 'pg_basebackup'), programMajor(binDir, user, 'postgres')]);
  if (client === undefined) return 'relevo';
  return server !== undefined && client < server ? 'relevo' : 'pg_basebackup';
}

const BASEBACKUP_MAIN = fileURLToPath(new URL('./basebackup-main.js', import.meta.url));

/** Runs relevo's own base backup in a child process as the PostgreSQL OS user (the files are theirs, as with pg_basebackup). */
function runOwnBaseBackup(user: OsUser, job: BaseBackupJob, context: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BASEBACKUP_MAIN], {
      ...spawnIdentity(user),
      cwd: '/',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: user.home },
      stdio: ['pipe', 'pipe', job.showProgress ? 'inherit' : 'pipe'],
    });
    let output = '';
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-32_000);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    // The same bound as pg_basebackup's run (runPostgresProgram).
    const timer = setTimeout(() => child.kill('SIGKILL'), 24 * 3600_000);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new PostgresCommandError('relevo base backup', null, error.message, context));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(output);
      else reject(new PostgresCommandError('relevo base backup', code, output, context));
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(JSON.stringify(job));
  });
}

/**
 * Clones the primary into this member's empty data directory, fast
 * checkpoint. With pg_basebackup: WAL streamed through the member's own
 * slot; the replication password travels through the 0600 passfile, not
 * argv. With relevo's own base backup (chooseCloneMethod): the WAL of the
 * backup inside it (the slot, created with its WAL reserved before the
 * clone, keeps that WAL on the primary); the password through the child's
 * stdin. A failed clone leaves an empty directory (it only ever held the
 * partial copy).
 */
export async function cloneFromPrimary(
  local: LocalPostgres,
  primaryAddress: string,
  slot: string,
  credentials: Credentials,
  showProgress: boolean,
  method?: CloneMethod,
): Promise<CloneMethod> {
  if (dataDirState(local.dataDir) !== 'empty') {
    throw new Error(`refusing to clone into ${local.dataDir}: it is not empty`);
  }
  ensureOwnedDir(dirname(local.dataDir), local.user, 0o755);
  ensureOwnedDir(local.dataDir, local.user, 0o700);
  ensureOwnedDir(local.socketDir, local.user, 0o755, 'shared');
  writePassfile(local.passfile, local.user, credentials);
  const [host, port] = splitHostPort(primaryAddress);
  const how = method ?? (await chooseCloneMethod(local.binDir, local.user));
  const context = `cloning member ${local.memberName} from ${primaryAddress}`;
  // No slot: a standby cluster's first clone of another cluster's primary (which keeps no slot for it).
  const args = ['-D', local.dataDir, '-X', 'stream', ...(slot ? ['-S', slot] : []), '-c', 'fast', '--no-password'];
  if (showProgress) args.push('-P');
  try {
    if (how === 'relevo') {
      await runOwnBaseBackup(
        local.user,
        {
          host,
          port,
          user: ROLE_NAMES.replication,
          password: credentials.replicationPassword,
          applicationName: local.memberName,
          ...(local.tls?.caCert ? { caFile: local.tls.caCert } : {}),
          dataDir: local.dataDir,
          label: `relevo clone of ${local.memberName}`,
          fastCheckpoint: true,
          showProgress,
        },
        context,
      );
      return how;
    }
    await runPostgresProgram(local.binDir, local.user, 'pg_basebackup', args, {
      context,
      env: { PGHOST: host, PGPORT: String(port), PGUSER: ROLE_NAMES.replication, PGPASSFILE: local.passfile, PGAPPNAME: local.memberName, ...libpqTlsEnv(local.tls?.caCert) },
      showProgress,
      timeoutMs: 24 * 3600_000,
    });
    return how;
  } catch (error) {
    removeOwnedTree(local.dataDir, local.user);
    ensureOwnedDir(local.dataDir, local.user, 0o700);
    throw error;
  }
}
