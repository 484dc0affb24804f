/**
 * Standby cluster fed from the source's WAL archive, and routers of both sites
 * following a site switchover (issue 11, docs/sites.md). Not in the default
 * suite (about 2–3 min): `npm run test:sites`. Two 2-member clusters with
 * separate stores; src archives its WAL into a backup repository.
 *
 *   - `dr` follows `src` on `feed: archive`: no primary_conninfo at all (the
 *     strongest cut of streaming: no WAL receiver, src's pg_stat_replication
 *     knows no dr member), yet a row written on src reaches dr's standby leader
 *     and its cascading member once src's segment is archived; `relevo list`
 *     shows the link as "archive" and the cross-site lag in bytes and seconds;
 *   - `feed: both` then, and one relevo router per site (src's, dr's: dr's
 *     sends writes to src through the route record `relevo site follow`
 *     wrote, reading src's store); a writer through each router; `relevo site
 *     switchover`: both writers go on after a pause, no acknowledged commit
 *     lost, both routers follow dr.
 */
import assert from 'node:assert/strict';
import { chownSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { clusterKeys } from '../../src/cluster/keys.js';
import { SiteLinkSchema, type SiteLink } from '../../src/cluster/site.js';
import type { RouterHandle } from '../../src/router/index.js';
import { lookupOsUser } from '../../src/util/os-user.js';
import type { TestCluster } from '../helpers/cluster.js';
import { createSites, primaryOf, routerWriter, siteRouter, waitStandbyCluster, type Sites } from '../helpers/sites.js';
import { waitFor } from '../helpers/wait.js';
import { createProbeTable } from '../helpers/writer.js';

async function count(cluster: TestCluster, member: string, sql: string): Promise<number> {
  return Number((await cluster.sql<{ n: string }>(member, sql))[0]!.n);
}

async function link(dr: TestCluster): Promise<SiteLink | undefined> {
  const kv = await dr.store.get(clusterKeys('dr').siteLink);
  const parsed = kv && SiteLinkSchema.safeParse(JSON.parse(kv.value));
  return parsed && parsed.success ? parsed.data : undefined;
}

describe('sites: a standby cluster fed from the archive; routers of both sites across a site switchover', { timeout: 600_000 }, () => {
  let sites: Sites;
  let repo = '';
  const routers: RouterHandle[] = [];

  before(async () => {
    sites = await createSites({
      beforeStart: async (src) => {
        repo = join(src.dir, 'repo');
        mkdirSync(repo);
        const user = lookupOsUser('postgres');
        chownSync(repo, user.uid, user.gid);
        for (const args of [['config', 'set', `backup.repository=${repo}`, 'backup.archiveTimeoutSeconds=0'], ['backup', 'init']]) {
          const r = await src.cli(args, 'a1');
          assert.equal(r.code, 0, r.stderr);
        }
      },
    });
    const init = await sites.src.cli(['backup', 'init'], 'a1');
    assert.equal(init.code, 0, init.stderr);
  });

  after(async () => {
    for (const r of routers) await r.stop().catch(() => undefined);
    await sites?.destroy();
  });

  it('feed: archive: follows the source with no stream at all; the cascading member too; the lag in bytes and seconds in `relevo list`', async (t) => {
    const { src, dr } = sites;
    const refused = await dr.cli(['site', 'follow', '--source-config', src.member('a1').file, '--feed', 'archive'], 'b1');
    assert.equal(refused.code, 2, 'archive without a repository');
    assert.match(refused.stderr, /--source-repository/);
    const follow = await dr.cli(['site', 'follow', '--source-config', src.member('a1').file, '--source-repository', repo, '--feed', 'archive'], 'b1');
    assert.equal(follow.code, 0, follow.stderr);
    assert.match(follow.stdout, /routers configured for dr send writes to src/);
    // Cloning still needs the source's primary once (pg_basebackup); from then on only the archive feeds dr.
    dr.startAgent('b1');
    await waitFor('b1 standby leader', async () => (await dr.status('b1'))?.state === 'standby_leader', 90_000);
    dr.startAgent('b2');
    await waitFor('b2 cascading from b1', async () => {
      const s = await dr.status('b2');
      return s?.state === 'replica' && s.streaming && s.upstream === 'b1';
    }, 90_000);
    const primary = await primaryOf(src);
    await createProbeTable(src, primary, 'archive_probe');
    const rowsOn = (member: string) => count(dr, member, 'SELECT count(*) AS n FROM archive_probe');
    const archived = (rows: number) =>
      waitFor(`${rows} rows on the standby leader, from the archive`, async () => {
        await src.sql(primary, 'SELECT pg_switch_wal()');
        return (await rowsOn('b1').catch(() => -1)) === rows;
      }, 90_000, 1_000);
    await src.sql(primary, 'INSERT INTO archive_probe DEFAULT VALUES');
    await archived(1);
    // Written, not archived yet: dr is behind by it and says so in bytes and in seconds (the age of its last replayed commit).
    await src.sql(primary, 'INSERT INTO archive_probe SELECT FROM generate_series(1, 999)');
    let last: SiteLink | undefined;
    const behind = await waitFor('the lag published', async () => {
      const l = (last = await link(dr));
      return l && l.feed === 'archive' && !l.streaming && (l.lagBytes ?? 0) > 0 && (l.lagSeconds ?? 0) > 0 ? l : undefined;
    }, 30_000).catch((error: Error) => {
      throw new Error(`${error.message}; last link: ${JSON.stringify(last)}`);
    });
    t.diagnostic(`before the segment is archived: lag ${behind.lagBytes} bytes, ${behind.lagSeconds} s`);
    const listed = await dr.cli(['list'], 'b1');
    assert.match(listed.stdout, new RegExp(`dr +b1 +src +${primary} +archive `), listed.stdout);
    await archived(1000);
    await waitFor('the rows on the cascading member', async () => (await rowsOn('b2')) === 1000, 30_000);
    // Streaming was never there: no WAL receiver on b1, no dr member among src's replication connections.
    assert.equal(await count(dr, 'b1', 'SELECT count(*) AS n FROM pg_stat_wal_receiver'), 0);
    assert.equal(await count(src, primary, "SELECT count(*) AS n FROM pg_stat_replication WHERE application_name IN ('b1', 'b2')"), 0);
    assert.equal((await dr.status('b1'))?.streaming, false);
    const caught = await waitFor('the lag back down', async () => {
      const l = await link(dr);
      return l && l.lagBytes !== null && l.lagBytes < 1024 * 1024 ? l : undefined;
    }, 30_000);
    t.diagnostic(`after: lag ${caught.lagBytes} bytes, ${caught.lagSeconds} s`);
  });

  it('routers of both sites follow a site switchover: writes through each go on after a pause, no acknowledged commit lost', async (t) => {
    const { src, dr } = sites;
    const both = await dr.cli(['config', 'set', 'standbyCluster.feed=both'], 'b1');
    assert.equal(both.code, 0, both.stderr);
    await waitStandbyCluster(dr, src);
    const oldPrimary = await primaryOf(src);
    for (const [name, cluster] of [['ra', src], ['rb', dr]] as const) {
      routers.push(await siteRouter(cluster, name));
    }
    const [ra, rb] = routers as [RouterHandle, RouterHandle];
    await waitFor("dr's router sends writes to src", () => rb.stats().primary === oldPrimary && rb.stats().route?.following === 'src', 20_000, 50);
    assert.equal(ra.stats().primary, oldPrimary);
    const writers = [routerWriter(ra, src, 'via_ra'), routerWriter(rb, dr, 'via_rb')];
    for (const w of writers) await w.start();
    let startedAt = 0;
    try {
      for (const w of writers) await w.waitForAcks(100);
      startedAt = Date.now();
      // Longer than the command's own step timeout (60 s), so that a stuck step reports itself.
      const result = await dr.cli(['site', 'switchover'], 'b1', 200_000);
      assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
      t.diagnostic(result.stdout.trim());
      const newPrimary = await primaryOf(dr);
      for (const w of writers) await w.waitForAcks(100, 60_000);
      for (const r of [ra, rb]) {
        assert.equal(r.stats().route?.following, 'dr');
        assert.equal(r.stats().primary, newPrimary);
      }
    } finally {
      for (const w of writers) await w.stop();
    }
    for (const [i, w] of writers.entries()) {
      const verdict = await w.verify(dr);
      t.diagnostic(`writer via ${['ra', 'rb'][i]}: ${verdict.acknowledged} acknowledged, longest pause ${w.longestGap(startedAt, Date.now())} ms, ${w.failures.filter((f) => f.at >= startedAt).length} client errors (not asserted)`);
      assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
    }
    await waitStandbyCluster(src, dr);
  });
});
