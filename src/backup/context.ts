import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import type { BackupSettings } from '../cluster/backup-settings.js';
import type { MemberStatus } from '../cluster/types.js';
import { ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { splitHostPort, writePassfile } from '../postgres/conf.js';
import { withConnection } from '../postgres/sql.js';
import type { OsUser } from '../util/os-user.js';
import { makeOwnedTempDir } from '../postgres/owned-fs.js';
import { libpqTlsEnv } from '../tls/client.js';
import type { Repository } from './repository.js';

/** What backup, restore and verify need to know about the cluster, gathered once by the caller. */
export interface BackupContext {
  cluster: string;
  systemIdentifier: string;
  settings: BackupSettings;
  /** This cluster's part of the repository. */
  repository: Repository;
  credentials: Credentials;
  binDir: string;
  osUser: OsUser;
  /** The cluster CA as the PostgreSQL OS user can read it (the member's copy); undefined with TLS off. Network connections verify the server with it. */
  tlsCaFile?: string;
  members: MemberStatus[];
  leader: string | null;
  /**
   * The member on this host, when the command runs on one: a backup from it
   * reads the data directory directly (direct.ts) instead of through pg_basebackup.
   * SQL goes through its local socket as relevo's superuser role.
   */
  local?: LocalSource;
  /** Progress and notes for the operator (stderr on the command line, the log in the agent). */
  note(line: string): void;
  /** Bytes done of a total (a progress bar on a terminal); optional. */
  progress?(label: string, done: number, total: number): void;
}

export interface LocalSource {
  member: string;
  dataDir: string;
  socketDir: string;
  port: number;
}

export function memberByName(ctx: BackupContext, name: string | null): MemberStatus | undefined {
  return ctx.members.find((m) => m.name === name);
}

/** relevo's network role (scram, not a superuser): SQL on any member from wherever the command runs. */
export function sqlOn<T>(ctx: BackupContext, member: MemberStatus, work: (client: pg.Client) => Promise<T>, database = 'postgres', timeoutMs = 60_000): Promise<T> {
  const [host, port] = splitHostPort(member.connectAddress);
  return withConnection({ host, port, user: ROLE_NAMES.network, password: ctx.credentials.agentPassword, database, ...(ctx.tlsCaFile ? { tlsCaFile: ctx.tlsCaFile } : {}) }, work, timeoutMs);
}

/** A private directory (owned by the PostgreSQL OS user) holding a libpq passfile for one command. */
export function withPassfile<T>(ctx: BackupContext, work: (passfile: string) => Promise<T>): Promise<T> {
  const dir = makeOwnedTempDir(join(tmpdir(), 'relevo-backup-'), ctx.osUser);
  const passfile = join(dir, 'pgpass');
  writePassfile(passfile, ctx.osUser, ctx.credentials);
  return work(passfile).finally(() => rmSync(dir, { recursive: true, force: true }));
}

export function primaryOf(ctx: BackupContext): MemberStatus | undefined {
  const leader = memberByName(ctx, ctx.leader);
  return leader?.role === 'primary' ? leader : ctx.members.find((m) => m.role === 'primary');
}

/** Environment of a PostgreSQL client program (pg_basebackup, pg_dump) run for a backup: passfile, and verify-full TLS when on. */
export function clientProgramEnv(ctx: BackupContext, passfile: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: ctx.osUser.home, PGPASSFILE: passfile, ...libpqTlsEnv(ctx.tlsCaFile), ...extra };
}
