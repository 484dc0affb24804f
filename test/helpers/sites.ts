/**
 * Two relevo clusters for the standby-cluster tests and bench/site: `src`
 * and `dr`, each with its own embedded store file (separate stores, as in two
 * sites), sharing the secrets file and the cluster CA (a physical copy has
 * the source's roles; replication verifies the source's certificates).
 */
import type { MemberStatus } from '../../src/cluster/types.js';
import { startRouter, type RouterHandle } from '../../src/router/index.js';
import { clusterCaFile } from '../../src/tls/member.js';
import { TEST_APP_ROLE, TestCluster } from './cluster.js';
import { waitFor } from './wait.js';
import { Writer } from './writer.js';

export const SITE_SETTINGS = { ttlMs: 3_000, loopWaitMs: 300, fenceMarginMs: 1_000, synchronousMode: 'off' as const, primaryRestartTimeoutMs: 10_000, switchoverDrainMs: 1_000 };

export interface Sites {
  src: TestCluster;
  dr: TestCluster;
  destroy(): Promise<void>;
}

/** Creates both clusters and starts `src` (a1, a2); `dr` (b1, b2) is defined, not started, and follows nothing yet. */
export async function createSites(options: { beforeStart?: (src: TestCluster) => Promise<void> } = {}): Promise<Sites> {
  const src = await TestCluster.create({ store: 'embedded', name: 'src', settings: SITE_SETTINGS });
  const dr = await TestCluster.create({ store: 'embedded', name: 'dr', settings: SITE_SETTINGS });
  const sites = { src, dr, destroy: async () => void (await Promise.all([dr.destroy(), src.destroy()])) };
  try {
    await src.defineMember('a1');
    await src.defineMember('a2');
    const secrets = { file: src.member('a1').config.secrets.file };
    await dr.defineMember('b1', { secrets });
    await dr.defineMember('b2', { secrets });
    await options.beforeStart?.(src);
    src.startAgent('a1');
    await waitFor('a1 primary', async () => (await src.status('a1'))?.state === 'primary', 90_000, 200);
    src.startAgent('a2');
    await src.waitHealthy(['a1', 'a2']);
    return sites;
  } catch (error) {
    await sites.destroy();
    throw error;
  }
}

export async function leaderOf(cluster: TestCluster): Promise<MemberStatus | undefined> {
  const key = await cluster.store.get(`/relevo/${cluster.clusterName}/leader`);
  if (!key) return undefined;
  const name = (JSON.parse(key.value) as { member: string }).member;
  return cluster.status(name);
}

/** Waits until `cluster` is a streaming standby cluster of `source`: its standby leader streams from source's primary, every other member from it. */
export async function waitStandbyCluster(cluster: TestCluster, source: TestCluster, timeoutMs = 90_000): Promise<{ leader: MemberStatus; upstream: string }> {
  return waitFor(
    `${cluster.clusterName} streaming as a standby cluster of ${source.clusterName}`,
    async () => {
      const primary = (await source.memberStatuses()).find((m) => m.state === 'primary' && m.role === 'primary');
      const members = await cluster.memberStatuses();
      const leader = members.find((m) => m.state === 'standby_leader');
      if (!primary || !leader || !leader.streaming || leader.upstream !== `${source.clusterName}/${primary.name}`) return undefined;
      const others = members.filter((m) => m.name !== leader.name);
      const allFollow = others.length === cluster.members.size - 1 && others.every((m) => m.state === 'replica' && m.streaming && m.upstream === leader.name);
      return allFollow ? { leader, upstream: primary.name } : undefined;
    },
    timeoutMs,
    200,
  );
}

export async function primaryOf(cluster: TestCluster, timeoutMs = 60_000): Promise<string> {
  return waitFor(`a primary in ${cluster.clusterName}`, async () => (await cluster.memberStatuses()).find((m) => m.state === 'primary' && m.role === 'primary')?.name, timeoutMs, 100);
}

/** A writer over every member of both sites, in order (like a libpq multi-host string with target_session_attrs=read-write). */
export function siteWriter(sites: Sites, table: string): Writer {
  const members = [...sites.src.members.values(), ...sites.dr.members.values()];
  return new Writer({
    targets: members.map((m) => ({ name: m.name, host: m.config.postgres.listen, port: m.config.postgres.port })),
    // An application role: the superuser relevo logs in through the local socket only.
    ...TEST_APP_ROLE,
    tlsCaFile: clusterCaFile(members[0]!.config),
    table,
    intervalMs: 5,
    connectTimeoutMs: 500,
  });
}

/** A relevo router (relay mode) for `cluster`, in this process, on its own store: it follows the route record `relevo site ...` writes. */
export function siteRouter(cluster: TestCluster, name: string): Promise<RouterHandle> {
  return startRouter({ name, cluster: cluster.clusterName, store: cluster.storeConfig, listen: { readWrite: '127.0.0.1:0', readOnly: null }, timeouts: { holdMs: 60_000 } });
}

/** A writer through a router (TLS end to end: the member's certificate, verified against the shared cluster CA). */
export function routerWriter(router: RouterHandle, cluster: TestCluster, table: string): Writer {
  const address = router.addresses.readWrite!;
  return new Writer({
    targets: [{ name: 'router', host: address.replace(/:\d+$/, ''), port: Number(address.split(':').pop()) }],
    ...TEST_APP_ROLE,
    tlsCaFile: clusterCaFile(cluster.member([...cluster.members.keys()][0]!).config),
    table,
    intervalMs: 5,
    connectTimeoutMs: 1_000,
  });
}

/** SIGKILL a member's agent and PostgreSQL (a lost machine). */
export async function killMember(cluster: TestCluster, name: string): Promise<void> {
  await cluster.signalAgent(name, 'SIGKILL');
  const pid = cluster.postmasterPid(name);
  if (pid !== undefined) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  // The postmaster's children die with it (postmaster death); the pid file stays, which is what a crash leaves.
  await waitFor(`${name}'s postmaster gone`, () => {
    try {
      if (pid !== undefined) process.kill(pid, 0);
      return pid === undefined;
    } catch {
      return true;
    }
  }, 10_000, 50);
}
