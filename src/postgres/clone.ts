import { dirname } from 'node:path';
import { ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { splitHostPort, writePassfile } from './conf.js';
import { dataDirState } from './datadir.js';
import { ensureOwnedDir, removeOwnedTree } from './owned-fs.js';
import { runPostgresProgram } from './exec.js';
import type { LocalPostgres } from './local.js';
import { libpqTlsEnv } from '../tls/client.js';

/**
 * Clones the primary into this member's empty data directory with
 * pg_basebackup: WAL streamed, through the member's own slot, fast checkpoint.
 * The replication password travels through the 0600 passfile, not argv.
 * A failed clone leaves an empty directory (it only ever held the partial copy).
 */
export async function cloneFromPrimary(
  local: LocalPostgres,
  primaryAddress: string,
  slot: string,
  credentials: Credentials,
  showProgress: boolean,
): Promise<void> {
  if (dataDirState(local.dataDir) !== 'empty') {
    throw new Error(`refusing to clone into ${local.dataDir}: it is not empty`);
  }
  ensureOwnedDir(dirname(local.dataDir), local.user, 0o755);
  ensureOwnedDir(local.dataDir, local.user, 0o700);
  ensureOwnedDir(local.socketDir, local.user, 0o755, 'shared');
  writePassfile(local.passfile, local.user, credentials);
  const [host, port] = splitHostPort(primaryAddress);
  // No slot: a standby cluster's first clone of another cluster's primary (which keeps no slot for it).
  const args = ['-D', local.dataDir, '-X', 'stream', ...(slot ? ['-S', slot] : []), '-c', 'fast', '--no-password'];
  if (showProgress) args.push('-P');
  try {
    await runPostgresProgram(local.binDir, local.user, 'pg_basebackup', args, {
      context: `cloning member ${local.memberName} from ${primaryAddress}`,
      env: { PGHOST: host, PGPORT: String(port), PGUSER: ROLE_NAMES.replication, PGPASSFILE: local.passfile, PGAPPNAME: local.memberName, ...libpqTlsEnv(local.tls?.caCert) },
      showProgress,
      timeoutMs: 24 * 3600_000,
    });
  } catch (error) {
    removeOwnedTree(local.dataDir, local.user);
    ensureOwnedDir(local.dataDir, local.user, 0o700);
    throw error;
  }
}
