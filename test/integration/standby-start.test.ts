/**
 * Starting a standby must not block the agent's loop until replay reaches a
 * consistent state. Regression for failover (b) in a full CI run: after
 * pg_rewind the former primary's agent waited in `pg_ctl start -w -t 60` and
 * logged nothing for 60 s, neither publishing its status nor reacting.
 * Here the standby can never become consistent (a base backup without WAL,
 * its upstream unreachable): startStandby() must still return with the
 * postmaster's PID, and the server must still be starting.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runningPostmasterPid } from '../../src/postgres/datadir.js';
import { startStandby, stopPostgres, type PostmasterTarget } from '../../src/postgres/postmaster.js';
import { lookupOsUser, runningAsRoot, spawnIdentity } from '../../src/util/os-user.js';
import { freePort } from '../helpers/ports.js';
import { PG_BIN, startStandalone } from '../helpers/standalone-postgres.js';

/** The status line of postmaster.pid: starting, ready, standby or stopping. */
const postmasterStatus = (dataDir: string) => readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[7]?.trim();

describe('starting a standby', () => {
  it('returns with a postmaster still starting once its short wait ends, before replay is consistent', { timeout: 60_000 }, async (t) => {
    const source = await startStandalone({ hba: 'local all all trust\nlocal replication all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n' });
    t.after(() => source.stop());
    const user = lookupOsUser('postgres');
    const base = mkdtempSync(join(tmpdir(), 'relevo-standby-start-'));
    if (runningAsRoot()) chownSync(base, user.uid, user.gid);
    const dataDir = join(base, 'data');
    // No WAL in the copy and no way to fetch it: replay can never reach the backup's end.
    execFileSync(join(PG_BIN, 'pg_basebackup'), ['-h', '127.0.0.1', '-p', String(source.port), '-U', 'postgres', '-D', dataDir, '-X', 'none', '--no-sync'], {
      ...spawnIdentity(user),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const dead = await freePort();
    const port = await freePort();
    appendFileSync(
      join(dataDir, 'postgresql.conf'),
      `port = ${port}\nunix_socket_directories = '${base}'\nprimary_conninfo = 'host=127.0.0.1 port=${dead} user=postgres connect_timeout=1'\nrestore_command = ''\n`,
    );
    writeFileSync(join(dataDir, 'standby.signal'), '');
    if (runningAsRoot()) execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, dataDir]);
    const target: PostmasterTarget = { binDir: PG_BIN, user, dataDir, logFile: join(base, 'postgres.log') };
    t.after(async () => {
      await stopPostgres(target, 'immediate', 20).catch(() => undefined);
      const left = runningPostmasterPid(dataDir);
      if (left !== undefined) process.kill(left, 'SIGKILL');
      // Only once the server is down: its postmaster.pid is how it is found.
      rmSync(base, { recursive: true, force: true });
    });

    const pid = await startStandby(target);

    assert.equal(runningPostmasterPid(dataDir), pid, 'the postmaster whose PID was returned runs');
    assert.equal(postmasterStatus(dataDir), 'starting', 'replay is not consistent yet: pg_ctl -w would still be waiting');
  });
});
