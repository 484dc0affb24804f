import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { MemberConfig, SecretSource } from './member.js';

/** Passwords of the roles relevo creates. Held in memory; never logged, never in argv. */
export interface Credentials {
  replicationPassword: string;
  agentPassword: string;
}

export const ROLE_NAMES = {
  /** Streaming replication and pg_basebackup. */
  replication: 'replicator',
  /** The agent's own superuser role: monitoring, promotion, slots, pg_rewind. */
  agent: 'relevo',
  /** initdb's bootstrap superuser, reachable only through the local socket with peer auth. */
  superuser: 'postgres',
} as const;

export class SecretError extends Error {
  readonly code = 'SECRET_UNAVAILABLE';
}

export function readSource(source: SecretSource, what: string): string {
  if ('env' in source) {
    const value = process.env[source.env];
    if (!value) throw new SecretError(`${what}: environment variable ${source.env} is not set or empty`);
    return value;
  }
  assertPrivate(source.file, what);
  return readFileSync(source.file, 'utf8').trim();
}

/** Refuses secret files that other users can read: the operator must chmod 600 them. */
function assertPrivate(file: string, what: string): void {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (error) {
    throw new SecretError(`${what}: cannot read ${file} (${(error as NodeJS.ErrnoException).code})`);
  }
  if ((mode & 0o077) !== 0) {
    throw new SecretError(`${what}: ${file} is readable by group or others (mode ${(mode & 0o777).toString(8)}); run chmod 600 ${file}`);
  }
}

/**
 * Loads the credentials: explicit sources (env/file) win; otherwise the shared
 * secrets file. Returns undefined when nothing exists yet (before bootstrap).
 */
export function loadCredentials(config: MemberConfig): Credentials | undefined {
  const { secrets } = config;
  let fromFile: Partial<Credentials> = {};
  let fileExists = true;
  try {
    statSync(secrets.file);
  } catch {
    fileExists = false;
  }
  if (fileExists) {
    assertPrivate(secrets.file, 'secrets file');
    const parsed = parseYaml(readFileSync(secrets.file, 'utf8')) as Record<string, unknown> | null;
    fromFile = {
      replicationPassword: typeof parsed?.replicationPassword === 'string' ? parsed.replicationPassword : undefined,
      agentPassword: typeof parsed?.agentPassword === 'string' ? parsed.agentPassword : undefined,
    };
  }
  const replicationPassword = secrets.replicationPassword
    ? readSource(secrets.replicationPassword, 'replication password')
    : fromFile.replicationPassword;
  const agentPassword = secrets.agentPassword ? readSource(secrets.agentPassword, 'agent password') : fromFile.agentPassword;
  if (replicationPassword === undefined && agentPassword === undefined) return undefined;
  if (!replicationPassword || !agentPassword) {
    throw new SecretError(`secrets file ${secrets.file} or its sources give only one of the two passwords; provide both`);
  }
  return { replicationPassword, agentPassword };
}

export function generatePassword(): string {
  return randomBytes(24).toString('base64url');
}

/** Crash-safe write of a private file: temp file (0600), fsync, rename, fsync the directory. */
export function writePrivateFile(path: string, content: string, mode = 0o600): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.tmp-${process.pid}`;
  const fd = openSync(temp, 'w', mode);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, path);
  const dirFd = openSync(dirname(path), 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

/** Generates the credentials at bootstrap, unless the operator supplied them, and stores them in the secrets file. */
export function createCredentials(config: MemberConfig): Credentials {
  const existing = loadCredentials(config);
  if (existing) return existing;
  const credentials = { replicationPassword: generatePassword(), agentPassword: generatePassword() };
  writeCredentialsFile(config, credentials);
  return credentials;
}

/** Replaces the secrets file in one atomic rename (creation and `relevo secrets rotate`). */
export function writeCredentialsFile(config: MemberConfig, credentials: Credentials): void {
  writePrivateFile(
    config.secrets.file,
    `# relevo role passwords for cluster ${config.cluster}; keep this file mode 0600\n${stringifyYaml({ replicationPassword: credentials.replicationPassword, agentPassword: credentials.agentPassword })}`,
  );
}
