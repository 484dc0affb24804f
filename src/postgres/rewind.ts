import { existsSync, renameSync } from 'node:fs';
import { ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { clearFenceSettings, splitHostPort, writePassfile } from './conf.js';
import { runPostgresProgram } from './exec.js';
import { withOwnedDir } from './owned-fs.js';
import { withConnection } from './sql.js';
import type { LocalPostgres } from './local.js';
import { libpqTlsParams } from '../tls/client.js';

/** The leader to rewind from could not be reached: retry later, the data directory is not at fault. */
export class RewindSourceUnavailableError extends Error {
  readonly code = 'REWIND_SOURCE_UNAVAILABLE';
  readonly retryable = true;
  constructor(source: string, detail: string) {
    super(`cannot reach the rewind source ${source}: ${detail}; will retry`);
    this.name = 'RewindSourceUnavailableError';
  }
}

/**
 * pg_rewind succeeded but PostgreSQL did not start as a standby afterwards:
 * that says nothing about the data directory, so it is retried, never
 * answered by the rewind fallback (which moves the data directory aside).
 */
export class RewindStartError extends Error {
  readonly code = 'REWIND_START_FAILED';
  readonly retryable = true;
  constructor(source: string, detail: string) {
    super(`rewound from ${source}, then could not start as its standby: ${detail}`);
    this.name = 'RewindStartError';
  }
}

/**
 * Reconciles a stopped data directory with the source's timeline using
 * pg_rewind. pg_rewind (PostgreSQL 13+) first runs single-user crash recovery
 * itself when the target was not shut down cleanly. The agent role's password
 * reaches it through the 0600 passfile, never argv.
 */
export async function rewindFrom(local: LocalPostgres, sourceAddress: string, credentials: Credentials): Promise<string> {
  const [host, port] = splitHostPort(sourceAddress);
  // An unreachable source says nothing about this data directory: not a rewind failure.
  try {
    await withConnection(
      { host, port, user: ROLE_NAMES.network, password: credentials.agentPassword, tlsCaFile: local.tls?.caCert },
      async (client) => {
        // pg_rewind reads the source's timeline from pg_control, updated only at a checkpoint after promotion.
        const tli = await client.query<{ stale: boolean }>(
          `SELECT NOT pg_is_in_recovery() AND (pg_control_checkpoint()).timeline_id <> ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS stale`,
        );
        if (tli.rows[0]?.stale) await client.query('CHECKPOINT');
      },
      60_000,
    );
  } catch (error) {
    throw new RewindSourceUnavailableError(sourceAddress, (error as Error).message);
  }
  writePassfile(local.passfile, local.user, credentials);
  // Single-user recovery refuses a standby signal; relevo rewrites it after the rewind.
  withOwnedDir(local.dataDir, local.user, (dir) => dir.remove('standby.signal'));
  clearFenceSettings(local.dataDir, local.user);
  const source = `host=${host} port=${port} user=${ROLE_NAMES.network} dbname=postgres connect_timeout=5 ${libpqTlsParams(local.tls?.caCert)}`;
  const output = await runPostgresProgram(local.binDir, local.user, 'pg_rewind', ['--target-pgdata', local.dataDir, '--source-server', source], {
    context: `rewinding member ${local.memberName} from ${sourceAddress}`,
    env: { PGPASSFILE: local.passfile },
    timeoutMs: 3600_000,
  });
  return output.includes('no rewind required') ? 'no rewind required' : 'rewound';
}

/**
 * Keeps a data directory that cannot rejoin by renaming it, never deleting it:
 * the operator decides when the old copy may go (invariant: no data destroyed
 * without an explicit action).
 */
export function moveDataDirAside(local: LocalPostgres, now: Date): string {
  if (!existsSync(local.dataDir)) return local.dataDir;
  const target = `${local.dataDir}.moved-${now.toISOString().replace(/[:.]/g, '-')}`;
  renameSync(local.dataDir, target);
  return target;
}
