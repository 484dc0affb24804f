/**
 * A 3-member cluster on PostgreSQL 17 (the fetched server build, which has
 * no pg_basebackup; Debian's pg_basebackup 15 refuses a 17 server): its
 * replicas are cloned by relevo's own base backup (BASE_BACKUP over TLS
 * with SCRAM-SHA-256-PLUS), stream, and take over in a switchover and a
 * failover; the old primaries come back as replicas.
 *
 * `npm run test:new-major-replicas` (about a minute: longer than the default
 * suite allows).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { TestCluster } from '../helpers/cluster.js';
import { newVersionBinDir } from '../helpers/upgrade.js';
import { waitFor } from '../helpers/wait.js';

const fetched = newVersionBinDir('17');
const skip = 'skip' in fetched ? fetched.skip : false;
const NAMES = ['n1', 'n2', 'n3'];

describe('replicas of a PostgreSQL 17 cluster cloned by relevo\'s own base backup', { timeout: 300_000, skip }, () => {
  let cluster: TestCluster;

  before(async () => {
    if ('skip' in fetched) return;
    cluster = await TestCluster.create({ store: 'embedded', name: 'pg17', settings: { loopWaitMs: 300, ttlMs: 3_000 } });
    for (const name of NAMES) await cluster.defineMember(name, { postgresExtra: { binDir: fetched.binDir } });
    cluster.startAgent('n1');
    await cluster.waitHealthy(['n1']);
    await cluster.sql('n1', 'CREATE TABLE t (id int PRIMARY KEY, body text); INSERT INTO t SELECT g, repeat(\'x\', 200) FROM generate_series(1, 50000) g');
  });

  after(async () => {
    await cluster?.destroy();
  });

  const count = async (name: string) => Number((await cluster.sql<{ n: string }>(name, 'SELECT count(*) AS n FROM t'))[0]?.n);

  it('clones two replicas of a 17 primary, which stream and hold every row', async () => {
    const started = Date.now();
    cluster.startAgent('n2');
    cluster.startAgent('n3');
    await cluster.waitHealthy(NAMES);
    const took = (Date.now() - started) / 1000;
    for (const name of ['n2', 'n3']) {
      const log = readFileSync(cluster.member(name).logFile, 'utf8');
      assert.match(log, /cloned from n1 in [\d.]+ s \(relevo's own base backup\)/, `${name} cloned by relevo's own base backup`);
      const [row] = await cluster.sql<{ v: string; r: boolean }>(name, "SELECT current_setting('server_version') AS v, pg_is_in_recovery() AS r");
      assert.match(row?.v ?? '', /^17\./);
      assert.equal(row?.r, true);
    }
    await cluster.sql('n1', 'INSERT INTO t VALUES (50001, \'after the clone\')');
    for (const name of ['n2', 'n3']) await waitFor(`row on ${name}`, async () => ((await count(name)) === 50001 ? true : undefined), 15_000);
    const slots = await cluster.sql<{ slot_name: string; active: boolean }>('n1', 'SELECT slot_name, active FROM pg_replication_slots ORDER BY 1');
    assert.deepEqual(slots.map((s) => s.active), [true, true], JSON.stringify(slots));
    console.log(`two replicas of 17 cloned and streaming in ${took.toFixed(1)} s`);
  });

  it('switches over to a replica; the old primary follows it', async () => {
    const r = await cluster.cli(['switchover', '--to', 'n2']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    await waitFor('n2 primary, n1 and n3 streaming', async () => {
      const members = await cluster.memberStatuses();
      const primary = members.find((m) => m.role === 'primary' && m.state === 'primary');
      return primary?.name === 'n2' && members.filter((m) => m.state === 'replica' && m.streaming).length === 2 ? true : undefined;
    }, 60_000);
    await cluster.sql('n2', 'INSERT INTO t VALUES (50002, \'after the switchover\')');
    for (const name of ['n1', 'n3']) await waitFor(`row on ${name}`, async () => ((await count(name)) === 50002 ? true : undefined), 15_000);
  });

  it('fails over when the primary\'s agent and PostgreSQL die; the old primary rejoins as a replica', async () => {
    const pid = cluster.postmasterPid('n2');
    await cluster.signalAgent('n2', 'SIGKILL');
    if (pid) process.kill(pid, 'SIGKILL');
    const primary = await waitFor('a new primary among n1, n3', async () => {
      const members = await cluster.memberStatuses();
      return members.find((m) => m.name !== 'n2' && m.role === 'primary' && m.state === 'primary')?.name;
    }, 60_000);
    await cluster.sql(primary, 'INSERT INTO t VALUES (50003, \'after the failover\')');
    cluster.startAgent('n2');
    await cluster.waitHealthy(NAMES, 120_000);
    for (const name of NAMES.filter((n) => n !== primary)) await waitFor(`row on ${name}`, async () => ((await count(name)) === 50003 ? true : undefined), 15_000);
  });
});
