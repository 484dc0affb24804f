/**
 * A PostgreSQL minor update from one real 15.x build to another (15.17 →
 * 15.18) on a 3-member cluster, under writes through relevo's router (and a
 * multi-host writer beside it, for comparison): the new binaries are installed
 * in place, each agent reports them as a pending restart, and `relevo restart
 * --pending` rolls every member onto them (replicas, a
 * switchover, the former primary). Every member ends on 15.18, nothing
 * acknowledged is lost, and the writers' longest pause and errors are reported.
 *
 * In the default suite (about 25 s); alone: npm run test:minor-update. The
 * builds are fetched once by scripts/fetch-postgres.sh (cached).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { FAULT_TEST_MEMBERS, FAULT_TEST_SETTINGS, TestCluster } from '../helpers/cluster.js';
import { fetchPostgres, LinkedBinDir, routedWriter, setBinDir } from '../helpers/minor-update.js';
import { waitFor } from '../helpers/wait.js';
import { Writer } from '../helpers/writer.js';

const NAMES = FAULT_TEST_MEMBERS;

/** The CLI with a longer timeout: a whole roll takes several restarts and a switchover. */
const relevo = (cluster: TestCluster, args: string[]) => cluster.cli(args, undefined, 300_000);

const versions = async (cluster: TestCluster) =>
  Object.fromEntries(await Promise.all(NAMES.map(async (n) => [n, (await cluster.sql<{ v: string }>(n, `SELECT current_setting('server_version') AS v`))[0]!.v] as const)));

test('a minor update 15.17 → 15.18 rolls every member under writes through the router, nothing lost', { timeout: 420_000 }, async (t) => {
  const old = fetchPostgres('15.17');
  const next = fetchPostgres('15.18');
  const cluster = await TestCluster.create({ store: 'embedded', settings: FAULT_TEST_SETTINGS });
  const bins = new Map(NAMES.map((n) => [n, new LinkedBinDir(old)]));
  const writers: Writer[] = [];
  let stopRouter: (() => Promise<void>) | undefined;
  t.after(async () => {
    for (const w of writers) await w.stop().catch(() => undefined);
    await stopRouter?.().catch(() => undefined);
    await cluster.destroy();
    for (const b of bins.values()) b.remove();
  });
  const passwordFile = join(cluster.dir, 'api-password');
  writeFileSync(passwordFile, 'minor-Up-1\n', { mode: 0o600 });
  for (const name of NAMES) {
    await cluster.defineMember(name, { api: { auth: { username: 'ops', password: { file: passwordFile } } } });
    setBinDir(cluster, name, bins.get(name)!.dir);
  }
  for (const name of NAMES) cluster.startAgent(name);
  const before = await cluster.waitHealthy(NAMES, 120_000);
  const primary = before.find((m) => m.state === 'primary')!.name;
  assert.deepEqual(Object.values(await versions(cluster)).map((v) => v.split(' ')[0]), ['15.17', '15.17', '15.17']);

  const routed = await routedWriter(cluster, 'minor_router');
  stopRouter = () => routed.router.stop();
  const multiHost = Writer.forCluster(cluster, 'minor_multi_host', { connectTimeoutMs: 1_000 });
  writers.push(routed.writer, multiHost);
  for (const w of writers) await w.start();
  for (const w of writers) await w.waitForAcks(30);

  // The package manager installs 15.18 on every host; the running servers are still 15.17,
  // and each agent reports the new binaries as a pending restart.
  for (const b of bins.values()) b.point(next);
  await waitFor('the new binaries pending on every member', async () => (await cluster.memberStatuses()).filter((m) => m.pendingRestart.includes('binaries 15.18')).length === NAMES.length, 30_000);
  const started = Date.now();
  const roll = await relevo(cluster, ['restart', '--pending']);
  const elapsed = Date.now() - started;
  assert.equal(roll.code, 0, `roll failed: ${roll.stdout}\n${roll.stderr}`);
  console.log(roll.stdout.trimEnd().replace(/^/gm, '# '));

  const after = await cluster.waitHealthy(NAMES, 90_000);
  const newPrimary = after.find((m) => m.state === 'primary')!.name;
  assert.notEqual(newPrimary, primary, 'the primary moved by switchover');
  assert.deepEqual(Object.values(await versions(cluster)).map((v) => v.split(' ')[0]), ['15.18', '15.18', '15.18'], 'every member runs 15.18');
  const listed = JSON.parse((await relevo(cluster, ['list', '--json'])).stdout) as { versions: string[] };
  assert.deepEqual(listed.versions, ['15.18'], 'relevo list: one version, not mixed');

  for (const w of writers) await w.waitForAcks(20, 30_000);
  for (const [label, w] of [['router', routed.writer], ['multi-host', multiHost]] as const) {
    const gap = w.longestGap(started, started + elapsed);
    const errors = w.failures.filter((f) => f.at >= started && f.at <= started + elapsed).length;
    await w.stop();
    const result = await w.verify(cluster);
    assert.deepEqual(result.lost, [], `${label}: no acknowledged write is lost`);
    console.log(`# minor update 15.17→15.18, ${label} writer: roll ${(elapsed / 1000).toFixed(1)} s, longest write pause ${gap} ms, ${errors} client errors, ${result.acknowledged} acknowledged, 0 lost (measured under load)`);
  }
});
