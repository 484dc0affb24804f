import { randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { secretFileProblem } from '../util/secret-file.js';
import type { MemberConfig, SecretSource } from './member.js';

/** Passwords of the roles relevo creates. Held in memory; never logged, never in argv. */
export interface Credentials {
  replicationPassword: string;
  agentPassword: string;
}

export const ROLE_NAMES = {
  /** Streaming replication and pg_basebackup. */
  replication: 'replicator',
  /** The agent's own superuser role: monitoring, promotion, slots. Local socket only (pg_hba rejects it on the network). */
  agent: 'relevo',
  /**
   * relevo over the network (pg_rewind's source, fencing, backups, rotation): not a
   * superuser, only the grants those need (src/postgres/roles.ts). Same password as `agent`.
   */
  network: 'relevo_remote',
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
  const problem = secretFileProblem(file, what);
  if (problem === 'missing') throw new SecretError(`${what}: cannot read ${file} (ENOENT)`);
  if (problem) throw new SecretError(problem);
}

/**
 * Every secret file the member file names, checked against the 0600 rule
 * (`relevo config check` and agent start). The shared secrets file may be
 * missing before bootstrap; the others must exist.
 */
export function secretFileProblems(config: MemberConfig): string[] {
  const files: { path: string; what: string; optional?: boolean }[] = [{ path: config.secrets.file, what: 'secrets.file', optional: true }];
  const source = (value: SecretSource | undefined, what: string) => value && 'file' in value && files.push({ path: value.file, what });
  source(config.secrets.replicationPassword, 'secrets.replicationPassword.file');
  source(config.secrets.agentPassword, 'secrets.agentPassword.file');
  source(config.api.auth?.password, 'api.auth.password.file');
  if (config.store.backend === 'etcd' && config.store.passwordFile) files.push({ path: config.store.passwordFile, what: 'store.passwordFile' });
  const verifiers = config.router?.session?.verifiersFile;
  if (verifiers) files.push({ path: verifiers, what: 'router.session.verifiersFile' });
  return files.flatMap(({ path, what, optional }) => {
    const problem = secretFileProblem(path, what);
    if (problem === 'missing') return optional ? [] : [`${what}: ${path} does not exist`];
    return problem ? [problem] : [];
  });
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
  // A fresh name, never a link: O_EXCL and O_NOFOLLOW; rename replaces a link at `path` instead of following it.
  const temp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
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
