/**
 * A router following a cluster kept in another store (another site's), as
 * named by its route record's `store` (docs/sites.md): no PostgreSQL, two
 * embedded store files and plain TCP servers standing in for the members. A
 * client's connection on the read-write port shows where the router sends it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { clusterKeys } from '../../src/cluster/keys.js';
import type { MemberStatus } from '../../src/cluster/types.js';
import { startRouter, type RouterHandle } from '../../src/router/index.js';
import type { StoreConfig } from '../../src/store/config.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';

function status(name: string, role: 'primary' | 'replica', address: string): MemberStatus {
  return {
    name, state: role === 'primary' ? 'primary' : 'standby_leader', role, reason: 'test', timeline: 1, receivedLsn: null, receivedTimeline: null, replayedLsn: null,
    lagBytes: 0, lagSeconds: 0, replayPaused: false, streaming: true, upstream: null, slots: [], replication: [],
    postgresVersion: '15', pendingRestart: [], systemIdentifier: '1', agentPid: 1, postmasterPid: 1, dataDir: '/nonexistent',
    apiUrl: 'http://127.0.0.1:1', connectAddress: address, tags: {}, paused: false, settingsGeneration: null,
    updatedAt: new Date().toISOString(),
  };
}

/** A TCP server that records the first bytes of each connection (a client's startup packet) under its name. */
async function fakeMember(name: string, seen: string[]): Promise<{ server: Server; address: string }> {
  const server = createServer((socket) => {
    socket.once('data', () => seen.push(name));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return { server, address: `127.0.0.1:${port}` };
}

/** Opens a connection through the router and sends a startup packet; the router relays it to the member it picked. */
function connectThrough(address: string): () => void {
  const [host, port] = address.split(':');
  const socket = createConnection({ host: host!, port: Number(port) });
  socket.on('error', () => undefined);
  const params = Buffer.from('user\0app\0database\0app\0\0');
  const packet = Buffer.alloc(8 + params.length);
  packet.writeInt32BE(packet.length, 0);
  packet.writeInt32BE(196608, 4);
  params.copy(packet, 8);
  socket.write(packet);
  return () => socket.destroy();
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const leaderRecord = (member: string) => JSON.stringify({ member, ttlMs: 3_000, acquiredAt: new Date().toISOString() });
const route = (cluster: string, store?: StoreConfig, hold = false) => JSON.stringify({ cluster, hold, reason: 'test', updatedAt: new Date().toISOString(), ...(store ? { store } : {}) });

describe('router: following a cluster in another site\'s store', { timeout: 60_000 }, () => {
  let dir: string;
  let storeA: Store;
  let storeB: Store;
  let configA: StoreConfig;
  let configB: StoreConfig;
  const seen: string[] = [];
  const servers: Server[] = [];
  const addresses = new Map<string, string>();
  let router: RouterHandle;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'relevo-router-sites-'));
    configA = { backend: 'embedded', path: join(dir, 'a.db'), timeoutMs: 2_000 };
    configB = { backend: 'embedded', path: join(dir, 'b.db'), timeoutMs: 2_000 };
    storeA = await openStore(configA);
    storeB = await openStore(configB);
    for (const name of ['a1', 'b1', 'x1']) {
      const m = await fakeMember(name, seen);
      servers.push(m.server);
      addresses.set(name, m.address);
    }
    // Site A: cluster `src` runs primary a1. Site B: cluster `dr` is its standby cluster (b1 in recovery);
    // and a cluster named `src` in B's store too (x1), which a router following A's `src` must never mix in.
    await storeA.put(clusterKeys('src').leader, leaderRecord('a1'));
    await storeA.put(clusterKeys('src').member('a1'), JSON.stringify(status('a1', 'primary', addresses.get('a1')!)));
    await storeB.put(clusterKeys('dr').leader, leaderRecord('b1'));
    await storeB.put(clusterKeys('dr').member('b1'), JSON.stringify(status('b1', 'replica', addresses.get('b1')!)));
    await storeB.put(clusterKeys('src').leader, leaderRecord('x1'));
    await storeB.put(clusterKeys('src').member('x1'), JSON.stringify(status('x1', 'primary', addresses.get('x1')!)));
    // Written by `relevo site follow`: dr's routers send writes to the source site.
    await storeB.put(clusterKeys('dr').route, route('src', configA));
    router = await startRouter({
      name: 'rb', cluster: 'dr', store: storeB, listen: { readWrite: '127.0.0.1:0', readOnly: null },
      timeouts: { refreshMs: 200, holdMs: 10_000, defaultTtlMs: 3_000, startupMs: 2_000, connectMs: 1_000, drainMs: 500 },
      publishIntervalMs: 500,
    });
  });

  after(async () => {
    await router?.stop();
    for (const s of servers) s.close();
    await storeA?.close();
    await storeB?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("sends writes to the other site's primary, never to a cluster of the same name in its own store", async () => {
    await waitFor('router on a1', () => router.stats().primary === 'a1');
    assert.deepEqual(router.stats().route, { following: 'src', hold: false, revision: router.stats().route!.revision });
    const close = connectThrough(router.addresses.readWrite!);
    await waitFor('a connection on a1', () => seen.includes('a1'));
    close();
    assert.ok(!seen.includes('x1') && !seen.includes('b1'), `seen: ${seen.join(',')}`);
  });

  it('follows the other store live: a leader change there moves writes', async () => {
    await storeA.put(clusterKeys('src').member('a2'), JSON.stringify(status('a2', 'primary', addresses.get('x1')!)));
    await storeA.put(clusterKeys('src').leader, leaderRecord('a2'));
    await waitFor('router on a2', () => router.stats().primary === 'a2');
    // a2 is listed under x1's address: put a1 back for the next step.
    await storeA.put(clusterKeys('src').leader, leaderRecord('a1'));
    await waitFor('router on a1 again', () => router.stats().primary === 'a1');
  });

  it('a site switchover: hold, then its own cluster once the route record names it; the held connection goes to the new primary', async () => {
    await storeB.put(clusterKeys('dr').route, route('src', configA, true));
    await waitFor('holding', () => router.stats().route?.hold === true);
    seen.length = 0;
    const close = connectThrough(router.addresses.readWrite!);
    await waitFor('the connection held', () => router.stats().listeners[0]!.held === 1);
    // dr is promoted (b1 primary) and the route record is removed: dr's routers follow their own cluster.
    await storeB.put(clusterKeys('dr').member('b1'), JSON.stringify(status('b1', 'primary', addresses.get('b1')!)));
    await storeB.delete(clusterKeys('dr').route);
    await waitFor('router on b1', () => router.stats().primary === 'b1' && router.stats().route?.following === 'dr');
    await waitFor('the held connection on b1', () => seen.includes('b1'));
    close();
    assert.deepEqual(seen, ['b1']);
  });

  it('back to the other site, and a store that cannot be opened holds writes instead of guessing', async () => {
    await storeB.put(clusterKeys('dr').route, route('src', configA));
    await waitFor('router on a1', () => router.stats().primary === 'a1' && router.stats().route?.following === 'src');
    // Under a file: no store can be created there.
    const missing: StoreConfig = { backend: 'embedded', path: join(dir, 'a.db', 'c.db'), timeoutMs: 2_000 };
    await storeB.put(clusterKeys('dr').route, route('src', missing));
    await waitFor('no primary while the store cannot be opened', () => router.stats().primary === null && router.stats().route?.hold === true);
  });
});
