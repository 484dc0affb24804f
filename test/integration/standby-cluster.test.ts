/**
 * Standby cluster and moving the primary between sites (issue 11, items 3–4;
 * docs/sites.md). Two 2-member clusters with separate stores:
 *   - bad input (follow itself, an unknown cluster, switchover/promote of a
 *     cluster that is not a standby cluster) is refused with its code and
 *     changes nothing;
 *   - `dr` follows `src`: its standby leader streams from src's primary, b2
 *     cascades from it, nothing in dr is writable; it follows a failover in src,
 *     and a failover inside dr moves the standby leadership (no promotion);
 *   - `relevo site switchover` under write load (a writer over all four
 *     members, like a multi-host string): no acknowledged commit lost, src
 *     ends as a streaming standby cluster of dr;
 *   - `relevo site promote` refuses while the source's primary runs; once the
 *     source site is lost it promotes and reports its loss bound.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SITE_CODES } from '../../src/cluster/site.js';
import { createProbeTable } from '../helpers/writer.js';
import { createSites, killMember, leaderOf, primaryOf, siteWriter, waitStandbyCluster, type Sites } from '../helpers/sites.js';
import { waitFor } from '../helpers/wait.js';

async function generation(cluster: Sites['src']): Promise<number> {
  const kv = await cluster.store.get(`/relevo/${cluster.clusterName}/config`);
  return (JSON.parse(kv!.value) as { generation: number }).generation;
}

async function rowsOn(cluster: Sites['src'], member: string, sql: string): Promise<number> {
  const rows = await cluster.sql<{ n: string }>(member, sql);
  return Number(rows[0]!.n);
}

describe('standby cluster and site switchover', { timeout: 400_000 }, () => {
  let sites: Sites;
  before(async () => {
    sites = await createSites();
  });
  after(async () => {
    await sites?.destroy();
  });

  it('refuses bad input with a stable code and changes nothing', async () => {
    const { src, dr } = sites;
    const before = [await generation(src), await generation(dr)];
    const self = await dr.cli(['site', 'follow', '--source', 'dr'], 'b1');
    assert.equal(self.code, 2, self.stderr);
    assert.match(self.stderr, new RegExp(`${SITE_CODES.self}: .*nothing was changed`));
    const unknown = await dr.cli(['site', 'follow', '--source', 'nosuch'], 'b1');
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.match(unknown.stderr, new RegExp(SITE_CODES.unknownSource));
    const notStandby = await dr.cli(['site', 'switchover'], 'b1');
    assert.match(notStandby.stderr, new RegExp(SITE_CODES.notStandby));
    const promoteSource = await src.cli(['site', 'promote'], 'a1');
    assert.match(promoteSource.stderr, new RegExp(SITE_CODES.notStandby));
    const demote = await src.cli(['site', 'follow', '--source-config', dr.member('b1').file], 'a1');
    assert.match(demote.stderr, new RegExp(SITE_CODES.unknownSource), 'dr is not initialised yet');
    assert.deepEqual([await generation(src), await generation(dr)], before, 'no settings were written');
  });

  it('a standby cluster follows its source, cascades inside, has no writable primary, and follows a source failover', async (t) => {
    const { src, dr } = sites;
    const follow = await dr.cli(['site', 'follow', '--source-config', src.member('a1').file], 'b1');
    assert.equal(follow.code, 0, follow.stderr);
    dr.startAgent('b1');
    await waitFor('b1 standby leader', async () => (await dr.status('b1'))?.state === 'standby_leader', 90_000);
    dr.startAgent('b2');
    const first = await waitStandbyCluster(dr, src);
    t.diagnostic(`dr: standby leader ${first.leader.name} streams from src/${first.upstream}`);
    assert.equal((await dr.memberStatuses()).filter((m) => m.role === 'primary').length, 0, 'no writable primary in a standby cluster');
    await createProbeTable(src, first.upstream, 'site_probe');
    await src.sql(first.upstream, 'INSERT INTO site_probe DEFAULT VALUES');
    const other = first.leader.name === 'b1' ? 'b2' : 'b1';
    await waitFor('the row on the cascading member', async () => (await rowsOn(dr, other, 'SELECT count(*) AS n FROM site_probe')) === 1, 30_000);
    const drList = await dr.cli(['list'], 'b1');
    assert.match(drList.stdout, /STANDBY CLUSTER of src/);
    assert.match(drList.stdout, new RegExp(`dr +${first.leader.name} +src +${first.upstream} +streaming`));
    const srcList = await src.cli(['list'], 'a1');
    assert.match(srcList.stdout, /Standby clusters following this cluster/);
    // A failover in the source: the standby leader moves to the new primary.
    const survivor = first.upstream === 'a1' ? 'a2' : 'a1';
    await killMember(src, first.upstream);
    const moved = await waitStandbyCluster(dr, src);
    assert.equal(moved.upstream, survivor);
    await src.sql(survivor, 'INSERT INTO site_probe DEFAULT VALUES');
    await waitFor('the new primary\'s row on the cascading member', async () => (await rowsOn(dr, other, 'SELECT count(*) AS n FROM site_probe')) === 2, 30_000);
    // The lost source member rejoins meanwhile (pg_rewind); the switchover test waits for the whole source.
    src.startAgent(first.upstream);
    // A failover inside the standby cluster: the other member becomes the standby leader, nothing is promoted.
    await killMember(dr, first.leader.name);
    const inside = await waitFor(`${other} standby leader`, async () => {
      const s = await dr.status(other);
      return s?.state === 'standby_leader' && s.streaming && s.role === 'replica' ? s : undefined;
    }, 60_000);
    t.diagnostic(`dr: ${inside.name} took over as standby leader, streaming from ${inside.upstream}`);
    assert.equal((await dr.memberStatuses()).filter((m) => m.role === 'primary').length, 0, 'still no writable primary in dr');
    // It rejoins meanwhile (as a cascading replica of the new standby leader); the next test waits for it.
    dr.startAgent(first.leader.name);
  });

  it('site switchover under write load loses no acknowledged commit; the old source ends as a streaming standby cluster', async (t) => {
    const { src, dr } = sites;
    await src.waitHealthy(['a1', 'a2']);
    await waitStandbyCluster(dr, src);
    const oldPrimary = await primaryOf(src);
    const writer = siteWriter(sites, 'site_writes');
    await writer.start();
    try {
      await writer.waitForAcks(100);
      const lagRefusal = await dr.cli(['site', 'switchover', '--max-lag-bytes', '0', '--timeout', '5'], 'b1');
      if (lagRefusal.code !== 0) assert.match(lagRefusal.stderr, new RegExp(SITE_CODES.lagTooLarge));
      else t.diagnostic('the standby leader was exactly caught up: the lag refusal could not be shown this time');
      const startedAt = Date.now();
      const result = lagRefusal.code === 0 ? lagRefusal : await dr.cli(['site', 'switchover'], 'b1');
      assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
      t.diagnostic(result.stdout.trim());
      const newPrimary = await primaryOf(dr);
      await writer.waitForAcks(100, 60_000, newPrimary);
      t.diagnostic(`longest write pause ${writer.longestGap(startedAt, Date.now())} ms; acks ${writer.serverSequence()}`);
    } finally {
      await writer.stop();
    }
    const verdict = await writer.verify(dr);
    assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
    assert.ok(verdict.acknowledged > 200);
    const followed = await waitStandbyCluster(src, dr);
    assert.equal(followed.leader.name, oldPrimary, 'the former primary is the standby leader (rejoined, rewound if needed)');
    // Every acknowledged row reached the old source too.
    const last = Math.max(...writer.acks.map((a) => a.id));
    await waitFor('the last acknowledged row on the old source', async () => (await rowsOn(src, oldPrimary, `SELECT count(*) AS n FROM site_writes WHERE id = ${last}`)) === 1, 30_000);
  });

  it('site promote refuses while the source primary runs; after losing the source site it promotes and reports the loss bound', async (t) => {
    const { src, dr } = sites;
    // Now src is the standby cluster of dr.
    const alive = await src.cli(['site', 'promote'], 'a1');
    assert.equal(alive.code, 2, alive.stderr);
    assert.match(alive.stderr, new RegExp(SITE_CODES.sourceAlive));
    assert.equal((await leaderOf(src))?.state, 'standby_leader', 'the refusal changed nothing');
    for (const name of ['b1', 'b2']) await killMember(dr, name);
    await waitFor("dr's leader key expired", async () => (await dr.store.get('/relevo/dr/leader')) === undefined, 30_000);
    const promoted = await src.cli(['site', 'promote', '--json'], 'a1');
    assert.equal(promoted.code, 0, promoted.stderr);
    const report = JSON.parse(promoted.stdout) as { promoted: string | null; lossBoundBytes: number | null; sourceLastLsn: string | null; replayedLsn: string | null; sourceMarkedStandby: boolean };
    t.diagnostic(`promote report: ${promoted.stdout.replace(/\s+/g, ' ')}`);
    assert.ok(report.promoted, 'a primary runs in src');
    assert.ok(report.sourceLastLsn && report.replayedLsn);
    assert.equal(typeof report.lossBoundBytes, 'number');
    assert.equal(report.sourceMarkedStandby, true, "dr's store answered: dr is marked a standby cluster of src");
    const primary = await primaryOf(src);
    await src.sql(primary, 'INSERT INTO site_probe DEFAULT VALUES');
  });
});
