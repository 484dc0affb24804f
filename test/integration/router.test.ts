/**
 * The router against real PostgreSQL 15 servers and a real (embedded) store.
 * The test plays the agents: it writes `leader`, `members/*` and `failover`
 * records pointing at standalone servers, and watches what clients see.
 */
import assert from 'node:assert/strict';
import { connect as tcpConnect, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { clusterKeys } from '../../src/cluster/keys.js';
import type { MemberStatus } from '../../src/cluster/types.js';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { EmbeddedStore } from '../../src/store/embedded.js';
import type { KeyValue, LeaseId, Store, Watch, WatchEvent, WriteOptions } from '../../src/store/store.js';
import { startRouter, type RouterHandle } from '../../src/router/index.js';
import { startStandalone, type StandaloneServer } from '../helpers/standalone-postgres.js';

const CLUSTER = 'rt';
const keys = clusterKeys(CLUSTER);
const TTL_MS = 1_500;
const DRAIN_MS = 1_500;
const STARTUP_MS = 1_500;
const PASSWORD = 's3cret-Pass';

/** Passes through to a real store, or fails every call like an unreachable one. */
class SuspendableStore implements Store {
  readonly backend = 'embedded';
  down = false;
  constructor(private readonly inner: Store) {}
  private check(): void {
    if (this.down) throw new StoreUnavailableError('embedded', 'suspended by the test');
  }
  async get(key: string) { this.check(); return this.inner.get(key); }
  async list(prefix: string): Promise<KeyValue[]> { this.check(); return this.inner.list(prefix); }
  async create(key: string, value: string, o?: WriteOptions) { this.check(); return this.inner.create(key, value, o); }
  async compareAndSwap(key: string, value: string, rev: number, o?: WriteOptions) { this.check(); return this.inner.compareAndSwap(key, value, rev, o); }
  async put(key: string, value: string, o?: WriteOptions) { this.check(); return this.inner.put(key, value, o); }
  async delete(key: string, rev?: number) { this.check(); return this.inner.delete(key, rev); }
  async grantLease(ttlMs: number) { this.check(); return this.inner.grantLease(ttlMs); }
  async keepAlive(lease: LeaseId) { this.check(); return this.inner.keepAlive(lease); }
  async revokeLease(lease: LeaseId) { this.check(); return this.inner.revokeLease(lease); }
  async watch(prefix: string, onEvent: (e: WatchEvent) => void, onError?: (e: Error) => void): Promise<Watch> {
    this.check();
    // A suspended store delivers nothing, watches included.
    return this.inner.watch(prefix, (e) => { if (!this.down) onEvent(e); }, onError);
  }
  async close() { /* the test closes the inner store */ }
}

function memberStatus(name: string, server: StandaloneServer, over: Partial<MemberStatus> = {}): MemberStatus {
  return {
    name, state: 'running', role: 'replica', reason: 'test', timeline: 1, receivedLsn: null, receivedTimeline: null, replayedLsn: null,
    lagBytes: 0, lagSeconds: 0, replayPaused: false, streaming: true, upstream: null, slots: [], replication: [],
    postgresVersion: '15', pendingRestart: [], systemIdentifier: '1', agentPid: 1, postmasterPid: server.pid, dataDir: server.dataDir,
    apiUrl: 'http://127.0.0.1:1', connectAddress: server.address, tags: {}, paused: false, settingsGeneration: null,
    updatedAt: new Date().toISOString(), ...over,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await cond()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

describe('router with real PostgreSQL', { timeout: 90_000 }, () => {
  let a: StandaloneServer; // trust
  let b: StandaloneServer; // trust
  let c: StandaloneServer; // scram-sha-256 + TLS
  let dir: string;
  let inner: EmbeddedStore;
  let store: SuspendableStore;
  let router: RouterHandle;
  let rwPort: number;
  let roPort: number;
  let leaderLease: LeaseId | undefined;
  const clients = new Set<pg.Client>();
  const sockets = new Set<Socket>();

  const servers = () => ({ a, b, c });

  async function setMembers(roles: Record<string, Partial<MemberStatus> | null>): Promise<void> {
    for (const [name, over] of Object.entries(roles)) {
      if (over === null) await inner.delete(keys.member(name));
      else await inner.put(keys.member(name), JSON.stringify(memberStatus(name, servers()[name as 'a'], over)));
    }
  }

  let leaderName: string | null = null;

  async function setLeader(name: string | null): Promise<void> {
    // Re-writing the same leader would flap it (revoke, then put) and close its sessions.
    if (name === leaderName && leaderLease !== undefined) return;
    leaderName = name;
    if (leaderLease !== undefined) await inner.revokeLease(leaderLease);
    leaderLease = undefined;
    if (name === null) return;
    leaderLease = await inner.grantLease(60_000);
    const record = { member: name, ttlMs: TTL_MS, acquiredAt: new Date().toISOString() };
    await inner.put(keys.leader, JSON.stringify(record), { lease: leaderLease });
  }

  /** Standard layout: a primary and leader, b and c replicas. */
  async function reset(): Promise<void> {
    store.down = false;
    await inner.delete(keys.failover);
    await setMembers({ a: { role: 'primary' }, b: {}, c: {} });
    await setLeader('a');
    await waitFor('router to see the standard layout', () => {
      const s = router.stats();
      return s.primary === 'a' && !s.switchover && s.replicas.eligible.join() === 'b,c';
    });
  }

  function client(port: number, over: pg.ClientConfig = {}): pg.Client {
    const cl = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', password: PASSWORD, ...over });
    cl.on('error', () => undefined); // closures are asserted through `ended`
    clients.add(cl);
    return cl;
  }

  async function open(port: number, over: pg.ClientConfig = {}): Promise<pg.Client> {
    const cl = client(port, over);
    await cl.connect();
    return cl;
  }

  async function serverPort(cl: pg.Client): Promise<number> {
    const r = await cl.query<{ port: string }>('SHOW port');
    return Number(r.rows[0]?.port);
  }

  function ended(cl: pg.Client): Promise<string> {
    return new Promise((resolve) => {
      cl.once('error', (e) => resolve(e.message));
      cl.once('end', () => resolve('end'));
    });
  }

  before(async () => {
    [a, b, c] = await Promise.all([
      // So a backend busy in a query notices at once that the router closed its socket.
      startStandalone({ settings: { client_connection_check_interval: "'100ms'" } }),
      startStandalone({ settings: { client_connection_check_interval: "'100ms'" } }),
      startStandalone({ password: PASSWORD, ssl: true }),
    ]);
    dir = mkdtempSync(join(tmpdir(), 'relevo-router-store-'));
    inner = await EmbeddedStore.open({ path: join(dir, 'store.db'), timeoutMs: 2_000 }, { pollIntervalMs: 20 });
    store = new SuspendableStore(inner);
    await setMembers({ a: { role: 'primary' }, b: {}, c: {} });
    await setLeader('a');
    router = await startRouter({
      name: 'r1',
      cluster: CLUSTER,
      store,
      listen: { readWrite: '127.0.0.1:0', readOnly: '127.0.0.1:0' },
      metrics: '127.0.0.1:0',
      maxLagBytes: 1_000_000,
      maxLagSeconds: 10,
      fallbackToPrimary: false,
      publishIntervalMs: 500,
      timeouts: { startupMs: STARTUP_MS, connectMs: 2_000, holdMs: 2_000, drainMs: DRAIN_MS, refreshMs: 100, defaultTtlMs: TTL_MS },
    });
    rwPort = Number(router.addresses.readWrite?.split(':').pop());
    roPort = Number(router.addresses.readOnly?.split(':').pop());
  });

  after(async () => {
    for (const cl of clients) await cl.end().catch(() => undefined);
    for (const s of sockets) s.destroy();
    await router?.stop();
    await inner?.close();
    await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('sends read-write connections to the lease holder', async () => {
    await reset();
    const cl = await open(rwPort);
    assert.equal(await serverPort(cl), a.port);
    await cl.query('CREATE TABLE IF NOT EXISTS t (x int)');
    await cl.query('INSERT INTO t VALUES (1)');
    await cl.end();
    // A client that leaves ends its server session too.
    await waitFor('session gone', () => router.stats().listeners.find((l) => l.role === 'rw')?.open === 0, 2_000);
    const direct = await a.connect();
    await waitFor('server backend gone', async () => {
      const r = await direct.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`);
      return r.rows[0].n === 0;
    }, 2_000);
    await direct.end();
  });

  it('relays large results intact to a client that reads slowly (backpressure)', async () => {
    await reset();
    const cl = await open(rwPort);
    // Pause the client's socket on and off so the router's writes queue up.
    const stream = (cl as unknown as { connection: { stream: import('node:net').Socket } }).connection.stream;
    const flapper = setInterval(() => {
      stream.pause();
      setTimeout(() => stream.resume(), 15);
    }, 30);
    try {
      const sql = `SELECT i, md5(i::text) AS h, repeat('x', i % 3000) AS pad FROM generate_series(1, 30000) i`;
      const r = await cl.query<{ i: number; h: string; pad: string }>(sql);
      assert.equal(r.rows.length, 30_000);
      let bad = 0;
      for (const row of r.rows) {
        if (row.pad.length !== row.i % 3000) bad += 1;
      }
      assert.equal(bad, 0);
      const direct = await a.connect();
      const expected = await direct.query<{ h: string }>(`SELECT md5(string_agg(h, ',' ORDER BY i)) AS h FROM (${sql}) s`);
      await direct.end();
      const { createHash } = await import('node:crypto');
      const got = createHash('md5').update(r.rows.map((row) => row.h).join(',')).digest('hex');
      assert.equal(got, expected.rows[0]?.h);
    } finally {
      clearInterval(flapper);
      stream.resume();
    }
    await cl.end();
  });

  it('closes every session to the old primary soon after the leader record moves', async () => {
    await reset();
    const idle = await Promise.all([open(rwPort), open(rwPort), open(rwPort)]);
    const busy = await open(rwPort);
    const inTx = await open(rwPort);
    await inTx.query('BEGIN');
    const all = [...idle, busy, inTx];
    const endings = all.map(ended);
    const sleeping = busy.query('SELECT pg_sleep(30)').then(() => 'finished', (e: Error) => e.message);
    await sleep(100);

    const moved = Date.now();
    await setMembers({ a: { role: 'replica' }, b: { role: 'primary' } });
    await setLeader('b');
    const messages = await Promise.all(endings);
    const closedWithinMs = Date.now() - moved;
    assert.ok(closedWithinMs < 1_000, `sessions closed after ${closedWithinMs} ms`);
    assert.ok(messages.some((m) => /no longer the primary/.test(m)), messages.join(' | '));
    assert.match(await sleeping, /no longer the primary|terminated|Connection terminated/);

    // No relayed session is left on a; new connections land on b.
    const direct = await a.connect();
    await waitFor('a to lose the relayed backends', async () => {
      const r = await direct.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`);
      return r.rows[0].n === 0;
    }, 2_000);
    await direct.end();
    const next = await open(rwPort);
    assert.equal(await serverPort(next), b.port);
    await next.end();
  });

  it('closes sessions at once and refuses new ones when the leader lease vanishes', async () => {
    await reset();
    const cl = await open(rwPort);
    const end = ended(cl);
    await setLeader(null);
    assert.match(await end, /no longer the primary/);
    await assert.rejects(open(rwPort), /no primary holds the leader lease/);
  });

  it('spreads read-only connections by least connections and leaves out paused or lagging replicas', async () => {
    await reset();
    const ro = await Promise.all([open(roPort), open(roPort), open(roPort), open(roPort)]);
    const ports = await Promise.all(ro.map(serverPort));
    assert.equal(ports.filter((p) => p === b.port).length, 2, ports.join());
    assert.equal(ports.filter((p) => p === c.port).length, 2, ports.join());
    assert.ok(!ports.includes(a.port), 'never the primary');
    assert.deepEqual(router.stats().listeners.find((l) => l.role === 'ro')?.backends, { b: 2, c: 2 });

    await setMembers({ c: { replayPaused: true } });
    await waitFor('c excluded', () => router.stats().replicas.excluded.some((e) => e.member === 'c'));
    const more = await Promise.all([open(roPort), open(roPort)]);
    assert.deepEqual(await Promise.all(more.map(serverPort)), [b.port, b.port]);

    await setMembers({ c: { replayPaused: false, lagBytes: 5_000_000 } });
    await waitFor('c excluded for lag', () => router.stats().replicas.excluded.some((e) => e.member === 'c' && /lag/.test(e.reason)));
    assert.equal(await serverPort(await open(roPort)), b.port);

    // Caught up again: c has the fewest connections, so it gets the next ones.
    await setMembers({ c: { lagBytes: 0 } });
    await waitFor('c eligible', () => router.stats().replicas.eligible.includes('c'));
    assert.equal(await serverPort(await open(roPort)), c.port);
    for (const cl of [...ro, ...more]) await cl.end();

    // Nothing qualifies and fallback is off: refused, naming why.
    await setMembers({ b: { replayPaused: true }, c: { replayPaused: true } });
    await waitFor('no replica', () => router.stats().replicas.eligible.length === 0);
    await assert.rejects(open(roPort), /no replica qualifies.*b: replay is paused; c: replay is paused/);
  });

  it('refuses read-write connections with a clear message when the store is unreadable past the lease TTL', async () => {
    await reset();
    const existing = await open(rwPort);
    const end = ended(existing);
    const ro = await open(roPort);
    store.down = true;
    const since = Date.now();
    assert.match(await end, /coordination store has been unreadable/);
    const closedAfter = Date.now() - since;
    assert.ok(closedAfter >= TTL_MS - 150 && closedAfter < TTL_MS + 1_000, `closed after ${closedAfter} ms`);
    await assert.rejects(open(rwPort), (e: Error & { code?: string }) => {
      assert.match(e.message, /relevo router: the coordination store has been unreadable for \d+\.\d s, longer than the leader lease \(1\.5 s\); refusing read-write connections/);
      assert.equal(e.code, '57P03');
      return true;
    });
    // Replicas accept no writes: read-only keeps working from the last view.
    assert.equal(await serverPort(ro), b.port);
    assert.ok([b.port, c.port].includes(await serverPort(await open(roPort))));
    assert.ok((router.stats().listeners.find((l) => l.role === 'rw')?.refused['store-unreadable'] ?? 0) >= 1);

    store.down = false;
    await waitFor('store readable again', () => router.stats().store.readable);
    const back = await open(rwPort);
    assert.equal(await serverPort(back), a.port);
  });

  it('holds new read-write connections during a switchover and releases them to the new primary', async () => {
    await reset();
    const idle = await open(rwPort);
    const idleEnd = ended(idle);
    const inTx = await open(rwPort);
    await inTx.query('BEGIN');
    await inTx.query('INSERT INTO t VALUES (2)');
    const stuck = await open(rwPort);
    await stuck.query('BEGIN');
    const stuckEnd = ended(stuck);

    await inner.put(keys.failover, JSON.stringify({ kind: 'switchover', from: 'a', to: 'b', at: null, force: false, shutdownLsn: null, requestedAt: new Date().toISOString() }));
    await waitFor('switchover seen', () => router.stats().switchover);
    // The idle session goes at once; the one inside a transaction may finish it.
    assert.match(await idleEnd, /closing idle connection to a for a planned switchover/);
    const inTxEnd = ended(inTx);
    await inTx.query('INSERT INTO t VALUES (3)');
    await inTx.query('COMMIT');
    assert.match(await inTxEnd, /closing idle connection/);

    const t0 = Date.now();
    const held = Promise.all([open(rwPort), open(rwPort)]);
    await waitFor('two held', () => router.stats().listeners.find((l) => l.role === 'rw')?.held === 2);
    // Clients under load that connect during the switchover: none may see an error.
    const onB = await b.connect();
    await onB.query('CREATE TABLE IF NOT EXISTS t (x int)');
    await onB.end();
    let done = false;
    const errors: string[] = [];
    const landed: number[] = [];
    const worker = async (): Promise<void> => {
      while (!done) {
        try {
          const cl = await open(rwPort);
          await cl.query('INSERT INTO t VALUES (4)');
          landed.push(await serverPort(cl));
          await cl.end();
        } catch (error) {
          errors.push((error as Error).message);
        }
      }
    };
    const workers = Promise.all([worker(), worker(), worker()]);
    await sleep(300);
    await setMembers({ a: { role: 'replica' }, b: { role: 'primary' } });
    await setLeader('b');
    await inner.delete(keys.failover);
    const released = await held;
    assert.ok(Date.now() - t0 >= 300);
    assert.deepEqual(await Promise.all(released.map(serverPort)), [b.port, b.port]);
    await sleep(300);
    done = true;
    await workers;
    assert.deepEqual(errors, []);
    assert.ok(landed.length >= 3 && landed.every((p) => p === b.port), `landed on ${landed.join()}`);
    // The transaction that never ended was closed by the drain timeout (or the leader change).
    assert.match(await stuckEnd, /still busy|no longer the primary/);
  });

  it('refuses held connections when the switchover outlasts the hold timeout', async () => {
    await reset();
    await inner.put(keys.failover, JSON.stringify({ kind: 'switchover', from: 'a', to: null, at: null, force: false, shutdownLsn: null, requestedAt: new Date().toISOString() }));
    await waitFor('switchover seen', () => router.stats().switchover);
    await assert.rejects(open(rwPort), /gave up waiting after 2\.0 s: switchover from a in progress/);
  });

  it('is not disturbed by a malformed startup packet or a silent client', async () => {
    await reset();
    const silent = tcpConnect(rwPort, '127.0.0.1');
    sockets.add(silent);
    silent.resume(); // read, or the end of the socket would go unnoticed
    const silentClosed = new Promise<number>((resolve) => {
      const t = Date.now();
      silent.on('close', () => resolve(Date.now() - t));
    });
    const garbage = tcpConnect(rwPort, '127.0.0.1');
    sockets.add(garbage);
    const reply: Buffer[] = [];
    garbage.on('data', (d: Buffer) => reply.push(d));
    const garbageClosed = new Promise((resolve) => garbage.on('close', resolve));
    garbage.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    // A huge declared length must not make the router wait for (or buffer) it.
    const huge = tcpConnect(rwPort, '127.0.0.1');
    sockets.add(huge);
    huge.resume();
    const hugeClosed = new Promise((resolve) => huge.on('close', resolve));
    huge.write(Buffer.from([0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]));

    // Meanwhile others work normally and quickly.
    const t = Date.now();
    for (let i = 0; i < 5; i++) {
      const cl = await open(rwPort);
      assert.equal(await serverPort(cl), a.port);
      await cl.end();
    }
    assert.ok(Date.now() - t < 1_000);
    await garbageClosed;
    await hugeClosed;
    const text = Buffer.concat(reply).toString('utf8');
    assert.equal(text[0], 'E');
    assert.match(text, /08P01/);
    assert.match(text, /invalid startup packet/);
    const silentMs = await silentClosed;
    assert.ok(silentMs >= STARTUP_MS - 100 && silentMs < STARTUP_MS + 1_000, `silent client closed after ${silentMs} ms`);
  });

  it('passes TLS and SCRAM through unaltered', async () => {
    await reset();
    await setMembers({ a: { role: 'replica' }, c: { role: 'primary' } });
    await setLeader('c');
    await waitFor('c primary', () => router.stats().primary === 'c');
    const tls = await open(rwPort, { ssl: { rejectUnauthorized: false } });
    const r = await tls.query<{ ssl: boolean; port: string }>(
      "SELECT ssl, current_setting('port') AS port FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert.equal(r.rows[0]?.ssl, true);
    assert.equal(Number(r.rows[0]?.port), c.port);
    await tls.end();

    const plain = await open(rwPort);
    assert.equal(await serverPort(plain), c.port);
    await plain.end();
    await assert.rejects(open(rwPort, { password: 'wrong' }), /password authentication failed/);

    // A TLS session cannot be framed, but it is still closed when the primary changes.
    const tls2 = await open(rwPort, { ssl: { rejectUnauthorized: false } });
    const end = ended(tls2);
    await setMembers({ a: { role: 'primary' }, c: { role: 'replica' } });
    await setLeader('a');
    assert.notEqual(await end, undefined);
  });

  it('forwards a CancelRequest to the backend of the session', async () => {
    await reset();
    const cl = await open(rwPort);
    const q = cl.query('SELECT pg_sleep(20)').then(() => 'done', (e: Error) => e.message);
    await sleep(200);
    const { processID, secretKey } = cl as unknown as { processID: number; secretKey: number };
    const packet = Buffer.alloc(16);
    packet.writeUInt32BE(16, 0);
    packet.writeUInt32BE(80877102, 4);
    packet.writeInt32BE(processID, 8);
    packet.writeInt32BE(secretKey, 12); // pg keeps them signed
    const s = tcpConnect(rwPort, '127.0.0.1', () => s.end(packet));
    sockets.add(s);
    s.resume();
    assert.match(await q, /canceling statement due to user request/);
    await cl.end();
  });

  it('lets a writer that reconnects keep writing across a leader move, never on the old primary after it', async () => {
    await reset();
    const setup = await b.connect();
    await setup.query('CREATE TABLE IF NOT EXISTS w (at timestamptz DEFAULT clock_timestamp(), n int)');
    await setup.end();
    const setupA = await a.connect();
    await setupA.query('CREATE TABLE IF NOT EXISTS w (at timestamptz DEFAULT clock_timestamp(), n int)');
    await setupA.end();
    let stop = false;
    let ok = 0;
    let failed = 0;
    const writer = (async () => {
      let cl: pg.Client | undefined;
      for (let n = 0; !stop; n++) {
        try {
          cl ??= await open(rwPort);
          await cl.query('INSERT INTO w (n) VALUES ($1)', [n]);
          ok += 1;
        } catch {
          failed += 1;
          await cl?.end().catch(() => undefined);
          cl = undefined;
          await sleep(20);
        }
      }
      await cl?.end();
    })();
    await sleep(300);
    await setMembers({ a: { role: 'replica' }, b: { role: 'primary' } });
    await setLeader('b');
    const movedAt = new Date();
    await waitFor('router on b', () => router.stats().primary === 'b');
    const okAtMove = ok;
    await sleep(500);
    stop = true;
    await writer;
    assert.ok(ok > okAtMove + 5, `writes went on after the move (${okAtMove} → ${ok}, ${failed} failed)`);
    const onA = await a.connect();
    const late = await onA.query<{ n: number }>('SELECT count(*)::int AS n FROM w WHERE at > $1', [new Date(movedAt.getTime() + 200)]);
    await onA.end();
    assert.equal(late.rows[0]?.n, 0, 'no write reached the old primary after the move');
    const onB = await b.connect();
    const fresh = await onB.query<{ n: number }>('SELECT count(*)::int AS n FROM w WHERE at > $1', [movedAt]);
    await onB.end();
    assert.ok((fresh.rows[0]?.n ?? 0) > 5);
  });

  it('publishes statistics to the store and serves Prometheus metrics', async () => {
    await reset();
    const cl = await open(rwPort);
    await waitFor('published', async () => {
      const kv = await inner.get(keys.router('r1'));
      return kv !== undefined && JSON.parse(kv.value).listeners.some((l: { role: string; open: number }) => l.role === 'rw' && l.open === 1);
    }, 3_000);
    const res = await fetch(`http://${router.addresses.metrics}/metrics`);
    const text = await res.text();
    assert.match(text, /relevo_router_open_connections\{listener="rw"\} 1/);
    assert.match(text, /relevo_router_backend_connections\{listener="rw",member="a"\} 1/);
    assert.match(text, /relevo_router_refused_total\{listener="rw",reason="store-unreadable"\} [1-9]/);
    assert.match(text, /relevo_router_bytes_total\{listener="rw",direction="to_client"\} [1-9]/);
    assert.match(text, /relevo_router_held_total\{listener="rw"\} [1-9]/);
    await cl.end();
  });
});
