/**
 * Issue 10 (C7) 6.3: a new cluster bootstraps from a backup instead of initdb
 * (backup.bootstrapFrom). A one-member source cluster takes a backup and keeps
 * writing; a new two-member cluster of another name restores it to a noted
 * time, promotes, and its second member clones from it. Not in the default
 * suite (about 22 s): `npm run test:backup-extra`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { BackupSettingsSchema } from '../../src/cluster/backup-settings.js';
import { lookupOsUser } from '../../src/util/os-user.js';
import { FAULT_TEST_SETTINGS, MAIN, TestCluster } from '../helpers/cluster.js';
import { sleep, waitFor } from '../helpers/wait.js';

const execFileAsync = promisify(execFile);

describe('a new cluster bootstraps from a backup instead of initdb', { timeout: 300_000 }, () => {
  let source: TestCluster;
  let copy: TestCluster | undefined;
  let repo: string;
  const user = lookupOsUser('postgres');

  const relevo = async (cluster: TestCluster, member: string, args: string[]) => {
    const { stdout } = await execFileAsync(process.execPath, [MAIN, ...args, '-c', cluster.member(member).file], { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  };

  before(async () => {
    source = await TestCluster.create({ store: 'embedded', name: 'src', settings: { ...FAULT_TEST_SETTINGS, synchronousMode: 'off' } });
    repo = join(source.dir, 'repo');
    mkdirSync(repo);
    chownSync(repo, user.uid, user.gid);
    await source.defineMember('s1');
    await relevo(source, 's1', ['config', 'set', `backup.repository=${repo}`, 'backup.archiveTimeoutSeconds=0']);
    await relevo(source, 's1', ['backup', 'init']);
    source.startAgent('s1');
    await source.waitHealthy(['s1']);
    await relevo(source, 's1', ['backup', 'init']);
  });

  after(async () => {
    await copy?.destroy();
    await source?.destroy();
  });

  it('restores to the noted time, promotes on a new timeline archived into its own directory, and the second member clones from it', async () => {
    await source.sql('s1', 'CREATE TABLE items (id int PRIMARY KEY, phase text NOT NULL)');
    await source.sql('s1', "INSERT INTO items SELECT g, 'in backup' FROM generate_series(1, 1000) g");
    const backup = JSON.parse(await relevo(source, 's1', ['backup', '--from-primary', '--json'])) as { id: string };
    await source.sql('s1', "INSERT INTO items SELECT g, 'after backup' FROM generate_series(1001, 1500) g");
    await sleep(1_000);
    const noted = new Date();
    await sleep(1_000);
    await source.sql('s1', "INSERT INTO items SELECT g, 'after noted time' FROM generate_series(1501, 1600) g");
    const lsn = (await source.sql<{ l: string }>('s1', 'SELECT pg_current_wal_lsn()::text AS l'))[0]!.l;
    await waitFor(`WAL past ${lsn} in the archive`, async () => {
      await source.sql('s1', 'SELECT pg_switch_wal()');
      const end = (JSON.parse(await relevo(source, 's1', ['backup', 'list', '--json'])) as { archive: { end: string | null } }).archive.end;
      return end !== null && (await source.sql<{ ok: boolean }>('s1', 'SELECT $1::pg_lsn >= $2::pg_lsn AS ok', [end, lsn]))[0]!.ok;
    }, 60_000, 500);
    const sourceSystem = (await source.sql<{ id: string }>('s1', 'SELECT system_identifier::text AS id FROM pg_control_system()'))[0]!.id;

    copy = await TestCluster.create({
      store: 'embedded',
      name: 'copy',
      settings: { ...FAULT_TEST_SETTINGS, synchronousMode: 'off', backup: BackupSettingsSchema.parse({ repository: repo, archiveTimeoutSeconds: 0, bootstrapFrom: { cluster: 'src', time: noted.toISOString() } }) },
    });
    await copy.defineMember('c1');
    await copy.defineMember('c2');
    copy.startAgent('c1');
    await copy.waitHealthy(['c1'], 120_000);
    copy.startAgent('c2');
    await copy.waitHealthy(['c1', 'c2'], 120_000);

    const phases = await copy.sql<{ phase: string; n: string }>('c1', 'SELECT phase, count(*) AS n FROM items GROUP BY phase ORDER BY phase');
    assert.deepEqual(phases.map((p) => [p.phase, Number(p.n)]), [['after backup', 500], ['in backup', 1000]], 'every row committed before the noted time, none after');
    const system = (await copy.sql<{ id: string }>('c1', 'SELECT system_identifier::text AS id FROM pg_control_system()'))[0]!.id;
    assert.equal(system, sourceSystem, 'a physical restore keeps the system identifier');
    const log = await relevo(copy, 'c1', ['list']);
    assert.match(log, /c2/);
    // Writes work and reach the replica that cloned from the restored primary.
    await copy.sql('c1', "INSERT INTO items VALUES (5000, 'new cluster')");
    await waitFor('the write on the replica', async () => (await copy!.sql<{ n: string }>('c2', "SELECT count(*) AS n FROM items WHERE phase = 'new cluster'"))[0]!.n === '1', 30_000, 250);
    // The new timeline goes to the new cluster's own directory, never into the source's.
    const dir = join(repo, `copy-${system}`);
    await waitFor('the new timeline archived under the new cluster', async () => existsSync(join(dir, 'wal', 'other')) && readdirSync(join(dir, 'wal', 'other')).some((n) => n.endsWith('.history')), 60_000, 500);
    const sourceTimelines = readdirSync(join(repo, `src-${system}`, 'wal')).filter((d) => d !== 'other').map((d) => d.slice(0, 8));
    assert.deepEqual([...new Set(sourceTimelines)], ['00000001'], "the source's directory holds only its own timeline");
    const agentLog = readFileSync(copy.member('c1').logFile, 'utf8');
    assert.match(agentLog, new RegExp(`cluster initialised from backup ${backup.id}`));
    assert.doesNotMatch(agentLog, /running initdb/);
  });
});
