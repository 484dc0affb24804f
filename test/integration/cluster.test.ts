/**
 * Issue 2's behaviour on real PostgreSQL and a real store, once per backend:
 * bootstrap, replication through slots, status and lag, joining, adoption,
 * crash restart, slot grace, foreign data.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { clusterKeys } from '../../src/cluster/keys.js';
import { loadCredentials } from '../../src/config/secrets.js';
import { TestCluster } from '../helpers/cluster.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { sleep, waitFor } from '../helpers/wait.js';

interface ListingJson {
  leader: string | null;
  members: { name: string; role: string; state: string; lagBytes: number | null; lagSeconds: number | null; streaming: boolean; timeline: number | null }[];
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(path));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

// The default suite runs these on etcd, the production store; every other integration file runs on the
// embedded one, and store-conformance.test.ts holds both stores to one contract. `npm run test:cluster-all-stores`
// (RELEVO_TEST_ALL_STORES=1) runs them on the embedded store too.
const BACKENDS = process.env.RELEVO_TEST_ALL_STORES ? (['embedded', 'etcd'] as const) : (['etcd'] as const);

for (const backend of BACKENDS) {
  describe(`cluster on the ${backend} store`, { timeout: 300_000 }, () => {
    let etcd: EtcdProcess | undefined;
    let cluster: TestCluster;
    let primary: string;
    let replicas: string[];

    before(async () => {
      if (backend === 'etcd') etcd = await startEtcd();
      cluster = await TestCluster.create({ store: backend === 'embedded' ? 'embedded' : { endpoints: etcd!.endpoints }, settings: { slotGraceSeconds: 4 } });
      for (const name of ['node1', 'node2', 'node3']) await cluster.defineMember(name);
      for (const name of ['node1', 'node2', 'node3']) cluster.startAgent(name);
    });

    after(async () => {
      await cluster?.destroy();
      await etcd?.stop();
    });

    it('bootstraps one primary and two streaming replicas', async () => {
      const started = Date.now();
      const members = await cluster.waitHealthy(['node1', 'node2', 'node3']);
      primary = members.find((m) => m.role === 'primary')!.name;
      replicas = members.filter((m) => m.role === 'replica').map((m) => m.name);
      const init = await cluster.store.get(clusterKeys(cluster.clusterName).initialize);
      const record = JSON.parse(init!.value) as { member: string; systemIdentifier: string };
      assert.equal(record.member, primary, 'the member that won the initialisation is the primary');
      assert.match(record.systemIdentifier, /^\d+$/);
      for (const m of members) assert.equal(m.systemIdentifier, record.systemIdentifier);
      console.log(`# ${backend}: cluster healthy ${((Date.now() - started) / 1000).toFixed(1)} s after the agents started`);
    });

    it('replicates a row to both replicas, through active slots', async () => {
      await cluster.sql(primary, 'CREATE TABLE IF NOT EXISTS t (id int primary key, v text)');
      await cluster.sql(primary, `INSERT INTO t VALUES (1, 'hello')`);
      for (const replica of replicas) {
        const rows = await waitFor(`row on ${replica}`, async () => {
          const r = await cluster.sql<{ v: string }>(replica, 'SELECT v FROM t WHERE id = 1').catch(() => []);
          return r.length === 1 ? r : undefined;
        }, 20_000);
        assert.equal(rows[0]!.v, 'hello');
      }
      const slots = await cluster.sql<{ slot_name: string; active: boolean }>(primary, `SELECT slot_name, active FROM pg_replication_slots ORDER BY 1`);
      assert.deepEqual(slots.map((s) => s.slot_name).sort(), [...replicas].sort());
      assert.ok(slots.every((s) => s.active), `all slots active: ${JSON.stringify(slots)}`);
      const checksums = await cluster.sql<{ data_checksums: string }>(primary, 'SHOW data_checksums');
      assert.equal(checksums[0]!.data_checksums, 'on');
    });

    it('reports roles and a lag that grows while replay is paused and returns to about 0 after', async () => {
      const lagged = replicas[0]!;
      const listing = async (): Promise<ListingJson> => {
        const result = await cluster.cli(['list', '--json']);
        assert.equal(result.code, 0, result.stderr);
        return JSON.parse(result.stdout) as ListingJson;
      };
      const first = await listing();
      assert.equal(first.leader, primary);
      assert.equal(first.members.find((m) => m.name === primary)!.role, 'primary');
      for (const r of replicas) assert.equal(first.members.find((m) => m.name === r)!.role, 'replica');

      await cluster.sql(lagged, 'SELECT pg_wal_replay_pause()');
      await cluster.sql(primary, `INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(2, 20001) g`);
      const behind = await waitFor('lag to grow past 1 MB', async () => {
        const m = (await listing()).members.find((x) => x.name === lagged)!;
        return m.lagBytes !== null && m.lagBytes > 1_000_000 ? m : undefined;
      }, 20_000);
      assert.ok(behind.lagSeconds !== null && behind.lagSeconds > 0, `lag in seconds grows too: ${behind.lagSeconds}`);
      const plain = await cluster.cli(['list']);
      assert.match(plain.stdout, new RegExp(`${lagged}\\s.*replica`));

      await cluster.sql(lagged, 'SELECT pg_wal_replay_resume()');
      await waitFor('lag back to about 0', async () => {
        const m = (await listing()).members.find((x) => x.name === lagged)!;
        return m.lagBytes !== null && m.lagBytes < 65_536 && (m.lagSeconds ?? 99) < 2 ? m : undefined;
      }, 30_000);
    });

    it('serves the REST health endpoints', async () => {
      // HTTPS by default, verified against the cluster CA.
      const get = (name: string, path: string) => cluster.api(name, path);
      assert.equal((await get(primary, '/primary')).status, 200);
      assert.equal((await get(replicas[0]!, '/primary')).status, 503);
      assert.equal((await get(replicas[0]!, '/replica')).status, 200);
      assert.equal((await get(primary, '/replica')).status, 503);
      assert.equal((await get(replicas[0]!, '/replica?lag=1GB')).status, 200);
      assert.equal((await get(replicas[0]!, '/replica?lag=nonsense')).status, 400);
      const status = JSON.parse((await get(primary, '/status')).body) as { role: string; postmasterPid: number };
      assert.equal(status.role, 'primary');
      assert.equal(status.postmasterPid, cluster.postmasterPid(primary));
      assert.equal((await get(primary, '/health')).status, 200);
    });

    it('keeps passwords out of every generated file but the 0600 credential files, and pg_hba has no trust for host', async () => {
      const credentials = loadCredentials(cluster.member(primary).config)!;
      const secrets = [credentials.agentPassword, credentials.replicationPassword];
      for (const file of filesUnder(cluster.dir)) {
        if (file.includes('/store/') || file.endsWith('etcd.log')) continue;
        const content = readFileSync(file);
        const holds = secrets.some((s) => content.includes(s));
        if (holds) {
          const mode = statSync(file).mode & 0o777;
          assert.equal(mode & 0o077, 0, `${file} holds a password but has mode ${mode.toString(8)}`);
          assert.ok(file.endsWith('secrets.yaml') || file.endsWith('.pgpass'), `${file} holds a password but is no credential file`);
        }
      }
      // The store never holds them in clear either.
      for (const kv of await cluster.store.list(clusterKeys(cluster.clusterName).root)) {
        for (const s of secrets) assert.ok(!kv.value.includes(s), `store key ${kv.key} holds a password`);
      }
      for (const name of [primary, ...replicas]) {
        const hba = readFileSync(join(cluster.member(name).config.postgres.dataDir, 'pg_hba.conf'), 'utf8');
        const rules = hba.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
        assert.ok(rules.length > 0);
        for (const rule of rules) {
          const fields = rule.trim().split(/\s+/);
          // Network rules authenticate with SCRAM, or reject (the superusers relevo and postgres: local socket only); never trust.
          if (fields[0]!.startsWith('host')) {
            const method = fields[fields.length - 1];
            if (fields[2] === 'relevo' || fields[2] === 'postgres') assert.equal(method, 'reject', `superuser reachable over the network: ${rule}`);
            else assert.equal(method, 'scram-sha-256', `host rule not scram: ${rule}`);
          }
          assert.notEqual(fields[fields.length - 1], 'trust', rule);
        }
      }
      // Passwords never in argv of any running process.
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        let cmdline = '';
        try {
          cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        } catch {
          continue;
        }
        for (const s of secrets) assert.ok(!cmdline.includes(s), `process ${pid} has a password in argv`);
      }
    });

    it('adopts the running PostgreSQL when the agent restarts (same postmaster PID)', async () => {
      const target = replicas[1]!;
      const before = cluster.postmasterPid(target);
      assert.ok(before);
      await cluster.signalAgent(target, 'SIGKILL');
      cluster.startAgent(target);
      await waitFor('restarted agent to report the replica', async () => {
        const s = await cluster.status(target);
        return s && s.agentPid === cluster.member(target).agent!.pid && s.state === 'replica' && s.streaming ? s : undefined;
      }, 30_000);
      assert.equal(cluster.postmasterPid(target), before, 'PostgreSQL was not restarted');
      const primaryBefore = cluster.postmasterPid(primary);
      await cluster.signalAgent(primary, 'SIGKILL');
      cluster.startAgent(primary);
      await waitFor('restarted primary agent to hold the lease again', async () => {
        const s = await cluster.status(primary);
        return s && s.agentPid === cluster.member(primary).agent!.pid && s.state === 'primary' ? s : undefined;
      }, 30_000);
      assert.equal(cluster.postmasterPid(primary), primaryBefore, 'primary PostgreSQL was not restarted');
    });

    it('moves the leader key to a lease of the new ttlMs when it changes, without a failover', async () => {
      const keys = clusterKeys(cluster.clusterName);
      const before = await cluster.store.get(keys.leader);
      assert.ok(before?.lease, 'the leader key hangs on a lease');
      const postmaster = cluster.postmasterPid(primary);
      const timelines = (await cluster.store.get(keys.history))?.value;
      const set = await cluster.cli(['config', 'set', 'ttlMs=7000']);
      assert.equal(set.code, 0, set.stderr);
      try {
        const after = await waitFor('the leader key on a new lease', async () => {
          const kv = await cluster.store.get(keys.leader);
          return kv && kv.lease !== before.lease ? kv : undefined;
        }, 30_000);
        const record = JSON.parse(after.value) as { member: string; ttlMs: number };
        assert.equal(record.member, primary, 'the same member leads');
        assert.equal(record.ttlMs, 7000, 'the record says how long the leader may now stay silent');
        assert.equal(cluster.postmasterPid(primary), postmaster, 'PostgreSQL kept running');
        assert.equal((await cluster.store.get(keys.history))?.value, timelines, 'no new timeline: no failover');
        await cluster.waitHealthy(['node1', 'node2', 'node3'], 30_000);
      } finally {
        await cluster.cli(['config', 'set', 'ttlMs=6000']);
      }
    });

    it("restarts a replica's PostgreSQL after it crashes, and it streams again", async () => {
      const target = replicas[0]!;
      const pid = cluster.postmasterPid(target)!;
      process.kill(pid, 'SIGKILL');
      await waitFor('a new postmaster that streams', async () => {
        const s = await cluster.status(target);
        const now = cluster.postmasterPid(target);
        return now && now !== pid && s?.streaming && s.postmasterPid === now ? s : undefined;
      }, 60_000);
    });

    it('lets a fourth member join, then drops its slot after the grace period once it is removed', async () => {
      await cluster.defineMember('node4');
      cluster.startAgent('node4');
      await cluster.waitHealthy(['node1', 'node2', 'node3', 'node4']);
      const rows = await cluster.sql<{ c: string }>('node4', 'SELECT count(*)::text AS c FROM t');
      assert.equal(rows[0]!.c, '20001');
      await cluster.signalAgent('node4', 'SIGTERM');
      assert.equal(cluster.postmasterPid('node4'), undefined, 'SIGTERM stops the member PostgreSQL too');
      const slotExists = async () =>
        (await cluster.sql(primary, `SELECT 1 FROM pg_replication_slots WHERE slot_name = 'node4'`)).length === 1;
      assert.ok(await slotExists(), 'slot kept right after the member left');
      await waitFor("slot of the removed member to be dropped", async () => !(await slotExists()), 45_000);
    });

    // The check is store-independent: once, on the embedded store, is enough.
    it('refuses a data directory that belongs to another cluster', { skip: backend !== BACKENDS[0] && `store-independent; run on the ${BACKENDS[0]} store` }, async () => {
      const other = await TestCluster.create({ store: 'embedded', name: 'other' });
      try {
        const intruder = await other.defineMember('node1', {});
        // Point the other cluster's member at one of our data directories (agent stopped first).
        const victim = replicas[1]!;
        await cluster.signalAgent(victim, 'SIGKILL');
        const dataDir = cluster.member(victim).config.postgres.dataDir;
        const file = intruder.file;
        const text = readFileSync(file, 'utf8').replace(intruder.config.postgres.dataDir, dataDir);
        (await import('node:fs')).writeFileSync(file, text);
        // The other cluster is initialised first by a member of its own.
        await other.store.put(clusterKeys('other').initialize, JSON.stringify({ member: 'x', startedAt: new Date().toISOString(), systemIdentifier: '1' }));
        other.member('node1').config = (await import('../../src/config/load.js')).loadMemberConfig(file);
        other.startAgent('node1');
        const status = await waitFor('intruder to refuse', async () => {
          const s = await other.status('node1');
          return s?.state === 'foreign_data' ? s : undefined;
        }, 20_000);
        assert.match(status.reason, /belongs to another cluster/);
        await other.signalAgent('node1', 'SIGKILL');
        assert.ok(existsSync(join(dataDir, 'PG_VERSION')), 'data directory untouched');
        cluster.startAgent(victim);
        await cluster.waitHealthy(['node1', 'node2', 'node3']);
      } finally {
        other.members.clear();
        await other.destroy();
      }
    });
  });
}

describe('racing bootstrap', { timeout: 120_000 }, () => {
  let cluster: TestCluster;
  after(async () => cluster?.destroy());

  it('two members started together on an empty store yield exactly one primary', async () => {
    cluster = await TestCluster.create({ store: 'embedded' });
    await cluster.defineMember('a');
    await cluster.defineMember('b');
    cluster.startAgent('a');
    cluster.startAgent('b');
    const members = await cluster.waitHealthy(['a', 'b']);
    assert.equal(members.filter((m) => m.role === 'primary').length, 1);
    // Stays that way.
    await sleep(2_000);
    const again = await cluster.memberStatuses();
    assert.equal(again.filter((m) => m.role === 'primary').length, 1);
  });
});
