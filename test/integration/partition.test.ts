/**
 * A network partition between "hosts": each member runs in its own network
 * namespace; etcd and the clients sit on the bridge in the root namespace.
 * The primary's link is cut, so it loses the store, its peers and the clients
 * at once while its agent and PostgreSQL keep running. Invariants checked:
 * one primary; the isolated primary acknowledges nothing after it lost its
 * standbys (a client on its own host, through the Unix socket, keeps trying);
 * zero acknowledged commits lost; once the link is back, the old primary is
 * rewound and streams on the new timeline.
 */
import { loadCredentials } from '../../src/config/secrets.js';
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { FAULT_TEST_MEMBERS, FAULT_TEST_SETTINGS, FAULT_TEST_TTL_MS, TestCluster } from '../helpers/cluster.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { NetworkLab } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait.js';
import { Writer } from '../helpers/writer.js';

const NAMES = FAULT_TEST_MEMBERS;
const unavailable = NetworkLab.available();

describe('network partition (members in their own network namespaces)', { timeout: 240_000, skip: unavailable ?? false }, () => {
  it('(k) the primary cut off from the store, its peers and its clients: it acknowledges nothing more, a replica takes over, nothing is lost, it rejoins', async (t: TestContext) => {
    let lab: NetworkLab | undefined;
    let etcd: EtcdProcess | undefined;
    let cluster: TestCluster | undefined;
    const writers: Writer[] = [];
    t.after(async () => {
      for (const w of writers) await w.stop().catch(() => undefined);
      await cluster?.destroy();
      await etcd?.stop();
      lab?.destroy();
    });
    lab = NetworkLab.create();
    etcd = await startEtcd({ host: lab.gateway });
    cluster = await TestCluster.create({ store: { endpoints: etcd.endpoints }, settings: FAULT_TEST_SETTINGS });
    for (const name of NAMES) {
      const address = lab.addHost(name);
      const network = lab;
      await cluster.defineMember(name, {}, { address, launcher: (argv) => network.wrap(name, argv) });
    }
    for (const name of NAMES) cluster.startAgent(name);
    const members = await cluster.waitHealthy(NAMES, 90_000);
    const old = members.find((m) => m.state === 'primary')!;
    assert.ok(old.timeline !== null);

    // A client elsewhere (multi-host, over the bridge) and one on the primary's own host (its Unix socket).
    const writer = Writer.forCluster(cluster, 'writes_k');
    writers.push(writer);
    const base = writer.options;
    const oldConfig = cluster.member(old.name).config.postgres;
    assert.ok(oldConfig.socketDir, 'test members have a socket directory');
    // On its own host, through the socket, as the agent role (pg_hba has local rules only for relevo's roles).
    const agentCredentials = loadCredentials(cluster.member(old.name).config)!;
    const local = new Writer({ ...base, user: 'relevo', password: agentCredentials.agentPassword, table: 'local_k', targets: [{ name: old.name, host: oldConfig.socketDir, port: oldConfig.port }], queryTimeoutMs: 60_000, retryMs: 200 });
    writers.push(local);
    await writer.start();
    await local.start();
    await writer.waitForAcks(50);
    await local.waitForAcks(20);

    const cutAt = lab.cut(old.name);
    const heir = await waitFor(
      'a replica to take over',
      async () => (await cluster!.memberStatuses()).find((m) => m.state === 'primary' && m.name !== old.name && (m.timeline ?? 0) > old.timeline!)?.name,
      60_000,
    );
    await writer.waitForAcks(10, 30_000, heir);
    const unavailability = writer.unavailability(cutAt, heir);
    // The isolated primary lost its synchronous standbys with the link: from then on nothing it commits may be acknowledged.
    const late = local.acks.filter((a) => a.sentAt > cutAt + 200);
    assert.deepEqual(late.map((a) => a.id), [], `${old.name} acknowledged ${late.length} writes from its own host after its link was cut`);
    // Past the lease it has fenced itself: its PostgreSQL is stopped.
    await waitFor(`${old.name} to stop PostgreSQL`, () => cluster!.postmasterPid(old.name) === undefined, FAULT_TEST_TTL_MS + 10_000);

    const healedAt = lab.heal(old.name);
    await waitFor(
      `${old.name} streaming from ${heir} on the new timeline`,
      async () => {
        const s = await cluster!.status(old.name);
        return s && s.state === 'replica' && s.streaming && s.upstream === heir && (s.timeline ?? 0) > old.timeline!;
      },
      90_000,
    );
    const rejoinMs = Date.now() - healedAt;
    await cluster.waitHealthy(NAMES, 60_000);
    await writer.waitForAcks(20, 30_000, heir);
    await writer.stop();
    await local.stop();
    for (const w of [writer, local]) {
      const result = await w.verify(cluster);
      assert.equal(result.primary, heir);
      assert.deepEqual(result.lost, [], `${result.lost.length} of ${result.acknowledged} acknowledged commits lost (${w.options.table})`);
    }
    const primaries = (await cluster.memberStatuses()).filter((m) => m.role === 'primary');
    assert.deepEqual(primaries.map((m) => m.name), [heir], 'exactly one primary');
    console.log(`# (k) partition: ${old.name} cut off, ${heir} took writes after ${unavailability} ms; ${old.name} streaming again ${rejoinMs} ms after the link came back`);
  });
});
