/**
 * `relevo upgrade` from PostgreSQL 15 (Debian) to 17 (fetched server build)
 * under continuous writes through relevo's router in session mode:
 * - bad input is refused with its code and changes nothing (no record, no
 *   route, no publication on the old cluster, no database on the new one);
 * - after the upgrade, the new cluster has every acknowledged row, its
 *   sequences are ahead of every used value, clients saw no error (only a
 *   pause), and the old cluster is intact and read-only;
 * - a rollback is refused while the new cluster holds writes the old one
 *   lacks, and with --force switches the routers back to the old cluster,
 *   which takes writes again.
 * Both clusters have two members, and every command is given the member
 * files of the REPLICAS (blue2, green2), whose socket directories are not
 * the primaries': the command reaches relevo's superuser only through the
 * primaries' agents (POST /upgrade/<operation>, authenticated with api.auth),
 * as when it runs on a host that holds neither primary. The new cluster's
 * replica is cloned by relevo's own base backup (Debian's pg_basebackup 15
 * refuses a 17 server, docs/upgrade.md) and has every acknowledged row
 * after the switch.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { clusterKeys } from '../../src/cluster/keys.js';
import { readCluster } from '../../src/cluster/view.js';
import type { RouterHandle } from '../../src/router/index.js';
import { TestCluster } from '../helpers/cluster.js';
import { newVersionBinDir, RouterWriters, sqlIn, startBlueGreen, type BlueGreen } from '../helpers/upgrade.js';
import { waitFor } from '../helpers/wait.js';

const fetched = newVersionBinDir('17');
const skip = 'skip' in fetched ? fetched.skip : false;

describe('relevo upgrade 15 -> 17 through the router', { timeout: 240_000, skip }, () => {
  let env: BlueGreen;
  let blue: TestCluster;
  let green: TestCluster;
  let twin: TestCluster;
  let router: RouterHandle;

  /** Replicas' member files: of the old cluster always, of the new one unless another cluster is named. */
  const upgrade = (args: string[], to?: TestCluster) => env.upgrade(args, to, { from: blue.member('blue2').file, ...(to ? {} : { to: green.member('green2').file }) });

  /** The member files given are not the primaries', and their sockets are not the primaries': no local superuser path. */
  async function assertGivenFilesAreReplicas(): Promise<void> {
    for (const [cluster, primary, replica] of [[blue, 'blue1', 'blue2'], [green, 'green1', 'green2']] as const) {
      const { view } = await readCluster(cluster.store, clusterKeys(cluster.clusterName));
      assert.equal(view.reachable && view.leader?.member, primary, `${primary} leads ${cluster.clusterName}`);
      assert.notEqual(cluster.member(replica).config.postgres.socketDir, cluster.member(primary).config.postgres.socketDir, `${replica}'s socket directory is not the primary's`);
    }
  }

  /** What a refused command must not have changed. */
  async function assertUntouched(): Promise<void> {
    const keys = clusterKeys('blue');
    assert.equal(await blue.store.get(keys.upgrade), undefined, 'no upgrade record');
    assert.equal(await blue.store.get(keys.route), undefined, 'no route record');
    assert.deepEqual(await sqlIn(blue, 'blue1', 'app', 'SELECT pubname FROM pg_publication'), [], 'no publication on the old cluster');
    assert.deepEqual(await sqlIn(green, 'green1', 'postgres', "SELECT datname FROM pg_database WHERE datname = 'app'"), [], 'no database on the new cluster');
    assert.deepEqual(await sqlIn(blue, 'blue1', 'app', "SELECT relname FROM pg_class WHERE relname = 'items' AND relreplident <> 'd'"), [], 'replica identity unchanged');
  }

  before(async () => {
    if ('skip' in fetched) return;
    env = await startBlueGreen(fetched.binDir, undefined, 2, 2);
    ({ blue, green, router } = env);
    twin = await TestCluster.create({ store: { sharedWith: blue }, name: 'twin', tls: false, settings: { loopWaitMs: 300, ttlMs: 3_000 } });
    await twin.defineMember('twin1', { api: env.api });
    twin.startAgent('twin1');
    await twin.waitHealthy(['twin1']);
    await sqlIn(blue, 'blue1', 'app', `
      SET ROLE app;
      CREATE TABLE items (id bigserial PRIMARY KEY, writer int NOT NULL, n int NOT NULL, at timestamptz NOT NULL DEFAULT now());
      CREATE TABLE notes (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text);
      CREATE SEQUENCE tickets START 1000;
      INSERT INTO items (writer, n) SELECT -1, g FROM generate_series(1, 20000) g;
      INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 500) g;
      SELECT nextval('tickets') FROM generate_series(1, 7);`);
  });

  after(async () => {
    await twin?.destroy();
    await env?.destroy();
  });

  it('refuses bad input with a stable code and changes nothing', async () => {
    await sqlIn(blue, 'blue1', 'app', 'CREATE TABLE loose (x int)');
    let r = await upgrade(['start', '-d', 'app']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /UPGRADE_NO_REPLICA_IDENTITY/);
    assert.match(r.stderr, /public\.loose/);
    assert.match(r.stderr, /--replica-identity-full/);
    await assertUntouched();
    await sqlIn(blue, 'blue1', 'app', 'DROP TABLE loose');

    r = await upgrade(['start', '-d', 'nosuch']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /UPGRADE_UNKNOWN_DATABASE/);
    await assertUntouched();

    r = await upgrade(['plan', '-d', 'app'], twin);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /UPGRADE_SAME_MAJOR/);
    r = await upgrade(['start', '-d', 'app'], twin);
    assert.match(r.stderr, /UPGRADE_SAME_MAJOR/);
    await assertUntouched();

    // A new cluster with no primary (its agent not running): unreachable.
    await twin.signalAgent('twin1', 'SIGTERM');
    await waitFor('twin to lose its leader', async () => (await twin.store.get(clusterKeys('twin').leader)) === undefined, 20_000, 100);
    r = await upgrade(['start', '-d', 'app'], twin);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /UPGRADE_TARGET_UNREACHABLE/);
    await assertUntouched();

    r = await upgrade(['plan', '-d', 'app']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /PostgreSQL 15.*PostgreSQL 17/);
    assert.match(r.stdout, /routers following blue: r1/);
    await assertUntouched();
  });

  it('upgrades under writes through the router: every acknowledged row, sequences ahead, no client error; the old cluster stays intact and can take clients back', async () => {
    const client = env.client;
    const bluePort = blue.member('blue1').config.postgres.port;
    const greenPort = green.member('green1').config.postgres.port;
    await assertGivenFilesAreReplicas();
    const writers = new RouterWriters(client, 'items', 3);
    try {
      await waitFor('writes through the router', () => writers.acks.length > 50, 20_000, 50);
      const r = await upgrade(['start', '-d', 'app']);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      for (const step of ['checked', 'schema', 'subscribed', 'caught-up', 'held', 'drained', 'synced', 'sequences', 'counted', 'switched']) assert.match(r.stdout, new RegExp(`\\] ${step}:`));
      await waitFor('writes acknowledged by the new cluster', () => writers.acks.filter((a) => a.port === greenPort).length > 50, 20_000, 50);
    } finally {
      await writers.stop();
    }
    assert.deepEqual(writers.errors, [], 'clients through the router saw no error');
    // The copy logged in to the old primary as its own non-superuser role, never as relevo's superuser.
    const subscriptions = await sqlIn<{ subconninfo: string }>(green, 'green1', 'app', 'SELECT subconninfo FROM pg_subscription');
    const upgradeRole = await sqlIn<{ rolsuper: boolean; rolreplication: boolean }>(blue, 'blue1', 'postgres', "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = 'relevo_upgrade'");
    assert.deepEqual(upgradeRole, [{ rolsuper: false, rolreplication: true }]);
    assert.equal(subscriptions.length, 1);
    assert.match(subscriptions[0]!.subconninfo, /user='relevo_upgrade'/);
    assert.doesNotMatch(subscriptions[0]!.subconninfo, /password/);
    const onBlue = writers.acks.filter((a) => a.port === bluePort);
    const onGreen = writers.acks.filter((a) => a.port === greenPort);
    assert.ok(onBlue.length > 0 && onGreen.length > 0);
    const switchAt = onGreen.reduce((m, a) => Math.min(m, a.at), Infinity);
    assert.ok(onBlue.every((a) => a.at <= switchAt), 'no write reached the old cluster after the first on the new one');
    console.log(`# write pause seen by clients through the router: ${writers.longestGap()} ms (measured under load, not asserted)`);

    // Every acknowledged row is on the new cluster; the old one has exactly the rows acknowledged there.
    const greenIds = new Set((await sqlIn<{ id: string }>(green, 'green1', 'app', 'SELECT id::text FROM items')).map((r) => Number(r.id)));
    const missing = writers.acks.filter((a) => !greenIds.has(a.id));
    assert.deepEqual(missing, [], 'every acknowledged row is on the new cluster');
    const blueIds = (await sqlIn<{ id: string }>(blue, 'blue1', 'app', 'SELECT id::text FROM items WHERE writer >= 0')).map((r) => Number(r.id));
    assert.deepEqual(blueIds.sort((a, b) => a - b), onBlue.map((a) => a.id).sort((a, b) => a - b), 'the old cluster holds what it acknowledged, nothing more');
    assert.equal(greenIds.size, 20_000 + writers.acks.length);
    // The new cluster's replica (cloned by relevo's own base backup) has them too.
    await waitFor('every row on the new cluster\'s replica', async () => Number((await sqlIn<{ n: string }>(green, 'green2', 'app', 'SELECT count(*) AS n FROM items'))[0]?.n) === greenIds.size || undefined, 15_000, 100);

    // Sequences: ahead of every value used on the old cluster (rows written on the new one prove it for items).
    const maxBlue = Math.max(...onBlue.map((a) => a.id));
    assert.ok(onGreen.every((a) => a.id > maxBlue));
    const [tickets] = await sqlIn<{ v: string }>(green, 'green1', 'app', "SELECT nextval('tickets')::text AS v");
    assert.ok(Number(tickets!.v) > 1006, `tickets on the new cluster: ${tickets!.v}`);
    const [note] = await sqlIn<{ id: number }>(green, 'green1', 'app', "INSERT INTO notes (body) VALUES ('after') RETURNING id");
    assert.ok(note!.id > 500);

    // The old cluster: intact, read-only, still publishing status.
    await assert.rejects(sqlIn(blue, 'blue1', 'app', "INSERT INTO notes (body) VALUES ('x')"), /read-only transaction/);
    assert.equal(router.stats().route?.following, 'green');
    const status = await upgrade(['status', '-d', 'app']);
    assert.match(status.stdout, /step switched/);
    assert.match(status.stdout, /router r1: follows green/);

    // Rollback: refused while the new cluster holds writes the old lacks (and nothing changes)…
    let r = await upgrade(['rollback', '-d', 'app']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /UPGRADE_WRITES_SINCE_SWITCH/);
    await waitFor('the router to follow green without a hold', () => router.stats().route?.following === 'green' && !router.stats().route?.hold, 10_000, 50);
    await sqlIn(green, 'green1', 'app', "INSERT INTO notes (body) VALUES ('still writable')");
    // …and with --force, clients go back to the old cluster, which takes writes again.
    r = await upgrade(['rollback', '-d', 'app', '--force']);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /rolled-back/);
    assert.equal(router.stats().route?.following, 'blue');
    const back = new RouterWriters(client, 'items', 1);
    try {
      await waitFor('writes through the router on the old cluster', () => back.acks.length > 5, 20_000, 50);
    } finally {
      await back.stop();
    }
    assert.deepEqual(back.errors, []);
    assert.ok(back.acks.every((a) => a.port === bluePort));
    await assert.rejects(sqlIn(green, 'green1', 'app', "INSERT INTO notes (body) VALUES ('x')"), /read-only transaction/);

    r = await upgrade(['forget', '-d', 'app']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await sqlIn(blue, 'blue1', 'app', 'SELECT slot_name FROM pg_replication_slots WHERE slot_type = $1', ['logical']), []);
    assert.deepEqual(await sqlIn(blue, 'blue1', 'postgres', "SELECT 1 FROM pg_roles WHERE rolname = 'relevo_upgrade'"), [], 'the upgrade role is dropped at forget');
  });
});
