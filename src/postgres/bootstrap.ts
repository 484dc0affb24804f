import { networkRoleSql } from './roles.js';
import { dirname } from 'node:path';
import type { ClusterSettings } from '../cluster/settings.js';
import type { MemberConfig } from '../config/member.js';
import { ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { archiveParameters } from '../backup/archive.js';
import { baseParameters, writeMemberConfiguration, writePassfile } from './conf.js';
import { readControlData } from './datadir.js';
import { ensureOwnedDir, removeOwnedTree } from './owned-fs.js';
import { runPostgresProgram } from './exec.js';
import type { LocalPostgres } from './local.js';
import { startPostgres } from './postmaster.js';
import { scramVerifier } from './scram.js';
import { quoteIdent, quoteLiteral } from './sql.js';

export interface BootstrapResult {
  systemIdentifier: string;
  postmasterPid: number;
}

/**
 * Creates a new cluster in an empty data directory: initdb with checksums,
 * replication settings, scram-only pg_hba, the replication and agent roles.
 * On failure before PostgreSQL held any data, removes the directory it created
 * so another attempt starts clean (it never touches a directory it did not create).
 */
export async function bootstrapCluster(
  config: MemberConfig,
  local: LocalPostgres,
  settings: ClusterSettings,
  credentials: Credentials,
): Promise<BootstrapResult> {
  ensureOwnedDir(dirname(local.dataDir), local.user, 0o755);
  ensureOwnedDir(local.dataDir, local.user, 0o700);
  ensureOwnedDir(local.socketDir, local.user, 0o755, 'shared');
  try {
    await runPostgresProgram(
      local.binDir,
      local.user,
      'initdb',
      ['-D', local.dataDir, '--data-checksums', '--encoding=UTF8', '--locale=C.UTF-8', '-U', ROLE_NAMES.superuser, '--auth-local=peer', '--auth-host=scram-sha-256'],
      { context: `initdb of member ${config.name}`, timeoutMs: 300_000 },
    );
  } catch (error) {
    removeOwnedTree(local.dataDir, local.user);
    throw error;
  }
  // Archiving from the first segment: archive_mode only takes effect at server start.
  const parameters = { ...baseParameters(config, settings), ...archiveParameters(settings.backup, config.cluster, local.dataDir) };
  writeMemberConfiguration(local.dataDir, local.user, parameters, settings, config.name);
  writePassfile(local.passfile, local.user, credentials);
  const postmasterPid = await startPostgres(local.postmaster);
  // Verifiers, not clear passwords, so nothing secret reaches the server log.
  const sql = [
    `CREATE ROLE ${quoteIdent(ROLE_NAMES.agent)} WITH SUPERUSER LOGIN PASSWORD ${quoteLiteral(scramVerifier(credentials.agentPassword))};`,
    `CREATE ROLE ${quoteIdent(ROLE_NAMES.replication)} WITH REPLICATION LOGIN PASSWORD ${quoteLiteral(scramVerifier(credentials.replicationPassword))};`,
    networkRoleSql(scramVerifier(credentials.agentPassword)),
  ].join('\n');
  await runPostgresProgram(
    local.binDir,
    local.user,
    'psql',
    ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', local.socketDir, '-p', String(local.port), '-U', ROLE_NAMES.superuser, '-d', 'postgres', '-f', '-'],
    { context: `creating roles on member ${config.name}`, stdin: sql, timeoutMs: 30_000 },
  );
  const control = await readControlData(local.binDir, local.user, local.dataDir);
  return { systemIdentifier: control.systemIdentifier, postmasterPid };
}
