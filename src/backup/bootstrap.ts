import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { ClusterSettings } from '../cluster/settings.js';
import type { MemberConfig } from '../config/member.js';
import { ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { baseParameters, clearFenceSettings, writeMemberConfiguration, writePassfile } from '../postgres/conf.js';
import { readControlData, runningPostmasterPid } from '../postgres/datadir.js';
import { runPostgresProgram } from '../postgres/exec.js';
import type { LocalPostgres } from '../postgres/local.js';
import { ensureOwnedDir, removeOwnedTree } from '../postgres/owned-fs.js';
import { restartPostgres, startPostgres, stopPostgres } from '../postgres/postmaster.js';
import { networkRoleSql } from '../postgres/roles.js';
import { scramVerifier } from '../postgres/scram.js';
import { quoteIdent, quoteLiteral } from '../postgres/sql.js';
import { archiveParameters } from './archive.js';
import { openClusterRepository } from './catalog.js';
import type { BackupContext } from './context.js';
import { BackupError } from './errors.js';
import { parseTarget, planRestore, restoreBackup } from './restore.js';

type BootstrapFrom = NonNullable<ClusterSettings['backup']['bootstrapFrom']>;

/** How long the restored server may take to reach its target and promote. */
const RECOVERY_LIMIT_MS = 6 * 3_600_000;

/**
 * The source cluster's directory in the repository: `from.cluster` as given
 * when it names one (`<name>-<system id>`), else the one directory of that name.
 */
export function sourceDirectory(names: string[], cluster: string): { dir: string; name: string; systemIdentifier: string } {
  const parse = (dir: string) => {
    const match = /^(.+)-(\d+)$/.exec(dir);
    return match ? { dir, name: match[1]!, systemIdentifier: match[2]! } : undefined;
  };
  if (names.includes(cluster) && parse(cluster)) return parse(cluster)!;
  const held = names.map(parse).filter((d) => d !== undefined && d.name === cluster);
  if (held.length === 1) return held[0]!;
  if (held.length === 0) throw new BackupError('BACKUP_UNKNOWN', `no cluster "${cluster}" in the repository; it holds ${names.filter((n) => parse(n)).join(', ') || 'none'}`);
  throw new BackupError('BACKUP_UNKNOWN', `the repository holds several clusters named ${cluster} (${held.map((d) => d!.dir).join(', ')}): set backup.bootstrapFrom.cluster to one of them`);
}

/**
 * The first member of a new cluster, instead of initdb (backup.bootstrapFrom):
 * restores the backup into the empty data directory, recovers to the target
 * (the end of the archive when none) and promotes, archiving the new timeline
 * into this cluster's part of the repository from the promotion on; then
 * drops the recovery settings, gives relevo's roles this cluster's passwords
 * and restarts with the member's own configuration. Returns like initdb's
 * bootstrap; on failure the data directory is removed so the claim can be retried.
 */
export async function bootstrapFromBackup(
  config: MemberConfig,
  local: LocalPostgres,
  settings: ClusterSettings,
  credentials: Credentials,
  note: (line: string) => void,
): Promise<{ systemIdentifier: string; postmasterPid: number; backup: string }> {
  const from: BootstrapFrom = settings.backup.bootstrapFrom!;
  const location = from.repository ?? settings.backup.repository;
  if (!location) throw new BackupError('BACKUP_NOT_CONFIGURED', 'backup.bootstrapFrom has no repository, and backup.repository is unset');
  if (!existsSync(location)) throw new BackupError('REPOSITORY_UNREACHABLE', `repository ${location} does not exist (not mounted?)`);
  const source = sourceDirectory(readdirSync(location), from.cluster);
  const ctx: BackupContext = {
    cluster: source.name,
    systemIdentifier: source.systemIdentifier,
    settings: { ...settings.backup, repository: location },
    repository: openClusterRepository(location, source.name, source.systemIdentifier, local.user),
    credentials,
    binDir: local.binDir,
    osUser: local.user,
    members: [],
    leader: null,
    note,
  };
  const plan = await planRestore(ctx, parseTarget(from), from.backup, 'promote');
  ensureOwnedDir(dirname(local.dataDir), local.user, 0o755);
  ensureOwnedDir(local.dataDir, local.user, 0o700);
  ensureOwnedDir(local.socketDir, local.user, 0o755, 'shared');
  try {
    note(`bootstrap from backup ${plan.backup.id} of ${source.dir} in ${location} (${Object.entries(plan.recovery).map(([k, v]) => `${k}=${v}`).join(', ')})`);
    // The member's own configuration (port, socket, pg_hba, this cluster's archive_command);
    // postgresql.auto.conf's recovery settings override it until they are reset below.
    const restored = await restoreBackup(ctx, plan, local.dataDir, {
      // Archive from the promotion on (history file, new timeline) into this cluster's directory, not the source's.
      extraSettings: { archive_mode: settings.backup.repository ? 'on' : 'off' },
    });
    note(`restored ${restored.files} files (${Math.round(restored.bytes / 1048576)} MB) in ${(restored.ms / 1000).toFixed(1)} s; recovering`);
    const parameters = { ...baseParameters(config, settings), ...archiveParameters(settings.backup, config.cluster, local.dataDir) };
    writeMemberConfiguration(local.dataDir, local.user, parameters, settings, config.name);
    writePassfile(local.passfile, local.user, credentials);
    clearFenceSettings(local.dataDir, local.user);
    const started = performance.now();
    await startPostgres(local.postmaster, RECOVERY_LIMIT_MS / 1000);
    await waitPromoted(local, started);
    note(`recovered and promoted in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    const reset = Object.keys({ restore_command: '', archive_mode: '', primary_conninfo: '', primary_slot_name: '', ...plan.recovery });
    const verifier = scramVerifier(credentials.agentPassword);
    await psql(local, [
      ...reset.map((name) => `ALTER SYSTEM RESET ${name};`),
      // The roles came with the backup, with the source cluster's passwords: this cluster's secrets from now on.
      `ALTER ROLE ${quoteIdent(ROLE_NAMES.agent)} WITH SUPERUSER LOGIN PASSWORD ${quoteLiteral(verifier)};`,
      `ALTER ROLE ${quoteIdent(ROLE_NAMES.replication)} WITH REPLICATION LOGIN PASSWORD ${quoteLiteral(scramVerifier(credentials.replicationPassword))};`,
      networkRoleSql(verifier),
      `ALTER ROLE ${quoteIdent(ROLE_NAMES.network)} PASSWORD ${quoteLiteral(verifier)};`,
    ].join('\n'));
    // archive_mode 'always' (relevo.conf) takes effect only at a start.
    const postmasterPid = await restartPostgres(local.postmaster);
    const control = await readControlData(local.binDir, local.user, local.dataDir);
    return { systemIdentifier: control.systemIdentifier, postmasterPid, backup: plan.backup.id };
  } catch (error) {
    await stopPostgres(local.postmaster, 'immediate').catch(() => undefined);
    removeOwnedTree(local.dataDir, local.user);
    throw error;
  }
}

async function psql(local: LocalPostgres, sql: string, tuplesOnly = false): Promise<string> {
  return runPostgresProgram(
    local.binDir,
    local.user,
    'psql',
    ['-X', '-q', ...(tuplesOnly ? ['-A', '-t'] : []), '-v', 'ON_ERROR_STOP=1', '-h', local.socketDir, '-p', String(local.port), '-U', ROLE_NAMES.superuser, '-d', 'postgres', '-f', '-'],
    { context: `bootstrap from backup on member ${local.memberName}`, stdin: sql, timeoutMs: 60_000 },
  );
}

/** Until recovery has reached its target and the server promoted (recovery_target_action = promote). */
async function waitPromoted(local: LocalPostgres, started: number): Promise<void> {
  while (performance.now() - started < RECOVERY_LIMIT_MS) {
    if (runningPostmasterPid(local.dataDir) === undefined) {
      // E.g. "recovery ended before configured recovery target was reached": the archive does not reach the target.
      const tail = existsSync(local.logFile) ? readFileSync(local.logFile, 'utf8').split('\n').filter((l) => /FATAL|PANIC/.test(l)).slice(-3).join(' | ') : '';
      throw new BackupError('BACKUP_FAILED', `the restored server stopped during recovery${tail ? `: ${tail}` : ''}; see ${local.logFile}`);
    }
    const inRecovery = (await psql(local, 'SELECT pg_is_in_recovery();', true).catch(() => 't')).trim();
    if (inRecovery === 'f') return;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new BackupError('BACKUP_FAILED', `the restored server did not promote within ${RECOVERY_LIMIT_MS / 3_600_000} h; see ${local.logFile}`);
}
