/**
 * Session mode against two real standalone PostgreSQL servers and a real
 * (embedded) store; the test plays the agents by writing the `leader`,
 * `members/*` and `failover` records. Quick cases that do not need a whole
 * cluster: SCRAM at the router, a move with SET values and prepared statements
 * replayed, a temporary table, a server lost with a transaction open, a
 * cancel routed to the session's current server. The real switchover is in
 * router-session.test.ts.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { clusterKeys } from '../../src/cluster/keys.js';
import type { MemberStatus } from '../../src/cluster/types.js';
import { EmbeddedStore } from '../../src/store/embedded.js';
import type { LeaseId } from '../../src/store/store.js';
import { startRouter, type RouterHandle } from '../../src/router/index.js';
import { startStandalone, type StandaloneServer } from '../helpers/standalone-postgres.js';
import { waitFor } from '../helpers/wait.js';

const CLUSTER = 'sm';
const keys = clusterKeys(CLUSTER);
const PASSWORD = 'move-Me-7';
const DRAIN_MS = 1_500;

function memberStatus(name: string, server: StandaloneServer, role: 'primary' | 'replica'): MemberStatus {
  return {
    name, state: role === 'primary' ? 'primary' : 'replica', role, reason: 'test', timeline: 1, receivedLsn: null, receivedTimeline: null, replayedLsn: null,
    lagBytes: 0, lagSeconds: 0, replayPaused: false, streaming: true, upstream: null, slots: [], replication: [],
    postgresVersion: '15', pendingRestart: [], systemIdentifier: '1', agentPid: 1, postmasterPid: server.pid, dataDir: server.dataDir,
    apiUrl: 'http://127.0.0.1:1', connectAddress: server.address, tags: {}, paused: false, settingsGeneration: 0, updatedAt: new Date().toISOString(),
  } as MemberStatus;
}

describe('router session mode with standalone servers', { timeout: 120_000 }, () => {
  let a: StandaloneServer;
  let b: StandaloneServer;
  let dir: string;
  let store: EmbeddedStore;
  let router: RouterHandle;
  let port: number;
  let lease: LeaseId | undefined;
  const clients = new Set<pg.Client>();

  async function lead(name: 'a' | 'b'): Promise<void> {
    const servers = { a, b };
    await store.put(keys.member(name), JSON.stringify(memberStatus(name, servers[name], 'primary')));
    const other = name === 'a' ? 'b' : 'a';
    await store.put(keys.member(other), JSON.stringify(memberStatus(other, servers[other], 'replica')));
    if (lease !== undefined) await store.revokeLease(lease);
    lease = await store.grantLease(60_000);
    await store.put(keys.leader, JSON.stringify({ member: name, ttlMs: 5_000, acquiredAt: new Date().toISOString() }), { lease });
    await waitFor(`router to route to ${name}`, () => router.stats().primary === name && !router.stats().switchover, 5_000, 20);
  }

  /** A planned switchover as the agents write it: failover key, then the leader moves, then the key goes. */
  async function switchover(from: 'a' | 'b', to: 'a' | 'b', beforeLeaderMoves?: () => Promise<void>): Promise<void> {
    await store.put(keys.failover, JSON.stringify({ kind: 'switchover', from, to, at: null, force: false, shutdownLsn: null, requestedAt: new Date().toISOString() }));
    await waitFor('router to see the switchover', () => router.stats().switchover, 5_000, 20);
    await beforeLeaderMoves?.();
    await store.delete(keys.failover);
    await lead(to);
  }

  async function open(over: pg.ClientConfig = {}): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: PASSWORD, database: 'postgres', ...over });
    c.on('error', () => undefined);
    await c.connect();
    clients.add(c);
    return c;
  }

  const serverPort = async (c: pg.Client) => Number((await c.query('SELECT inet_server_port() AS p')).rows[0].p);

  before(async () => {
    [a, b] = await Promise.all([startStandalone({ password: PASSWORD }), startStandalone({ password: PASSWORD })]);
    // Both servers must hold the same verifier, as replicas of one cluster do (pg_authid is replicated).
    const ca = await a.connect();
    const verifier = (await ca.query(`SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'`)).rows[0].rolpassword as string;
    await ca.end();
    const cb = await b.connect();
    await cb.query(`ALTER ROLE postgres PASSWORD '${verifier}'`);
    await cb.end();
    dir = mkdtempSync(join(tmpdir(), 'relevo-session-'));
    const verifiersFile = join(dir, 'verifiers');
    writeFileSync(verifiersFile, `"postgres" "${verifier}"\n`, { mode: 0o600 });
    // The router's own certificate (one name for the service, whichever member is primary).
    execFileSync('openssl', ['req', '-new', '-x509', '-days', '2', '-nodes', '-subj', '/CN=relevo-router-test', '-newkey', 'rsa:2048',
      '-keyout', join(dir, 'router.key'), '-out', join(dir, 'router.crt')], { stdio: 'ignore' });
    store = await EmbeddedStore.open({ path: join(dir, 'store.db'), timeoutMs: 2_000 }, { pollIntervalMs: 20 });
    await store.put(keys.member('a'), JSON.stringify(memberStatus('a', a, 'primary')));
    lease = await store.grantLease(60_000);
    await store.put(keys.leader, JSON.stringify({ member: 'a', ttlMs: 5_000, acquiredAt: new Date().toISOString() }), { lease });
    router = await startRouter({
      name: 'sm', cluster: CLUSTER, store,
      listen: { readWrite: '127.0.0.1:0', readOnly: null },
      mode: { readWrite: 'session' },
      session: { verifiersFile, tls: { certFile: join(dir, 'router.crt'), keyFile: join(dir, 'router.key') } },
      timeouts: { startupMs: 2_000, connectMs: 1_000, holdMs: 5_000, drainMs: DRAIN_MS, refreshMs: 100, defaultTtlMs: 5_000 },
    });
    port = Number(router.addresses.readWrite!.split(':').pop());
    await lead('a');
  });

  after(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    await router?.stop();
    await store?.close();
    await Promise.all([a?.stop(), b?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('authenticates with SCRAM at the router and refuses a wrong password', async () => {
    const c = await open();
    assert.equal(await serverPort(c), a.port);
    const bad = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: 'nope', database: 'postgres' });
    bad.on('error', () => undefined);
    await assert.rejects(bad.connect(), /password authentication failed for user "postgres"/);
    const unknown = new pg.Client({ host: '127.0.0.1', port, user: 'nobody', password: 'x', database: 'postgres' });
    unknown.on('error', () => undefined);
    await assert.rejects(unknown.connect(), /password authentication failed for user "nobody"/);
  });

  it('refuses a server that lets the session in without SCRAM, over plain TCP too', async () => {
    // An impostor at the leader's address: it trusts every TCP client, so it never proves it holds the ServerKey.
    const impostor = await startStandalone({});
    try {
      await store.put(keys.member('c'), JSON.stringify(memberStatus('c', impostor, 'primary')));
      await store.put(keys.leader, JSON.stringify({ member: 'c', ttlMs: 5_000, acquiredAt: new Date().toISOString() }), { lease });
      await waitFor('router to route to c', () => router.stats().primary === 'c', 5_000, 20);
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: PASSWORD, database: 'postgres' });
      c.on('error', () => undefined);
      await assert.rejects(c.connect(), /without SCRAM/);
      await c.end().catch(() => undefined);
    } finally {
      await store.delete(keys.member('c'));
      await lead('a');
      await impostor.stop();
    }
  });

  it('terminates TLS with the router\'s own certificate when configured', async () => {
    await lead('a');
    const c = await open({ ssl: { ca: readFileSync(join(dir, 'router.crt'), 'utf8'), servername: 'relevo-router-test', checkServerIdentity: () => undefined } });
    const stream = (c as unknown as { connection: { stream: import('node:tls').TLSSocket } }).connection.stream;
    assert.equal(stream.encrypted, true);
    assert.equal(stream.getPeerCertificate().subject.CN, 'relevo-router-test');
    assert.equal(await serverPort(c), a.port);
  });

  it('moves an idle session with its SET values and prepared statements; a temp table session is closed', async () => {
    await lead('a');
    const c = await open({ application_name: 'mover' });
    await c.query(`SET work_mem = '9MB'`);
    await c.query(`PREPARE sq AS SELECT 7 AS v`);
    assert.equal((await c.query({ name: 'np', text: 'SELECT $1::int + 1 AS v', values: [1] })).rows[0].v, 2);
    const temp = await open();
    await temp.query('CREATE TEMP TABLE t1 (x int)');
    const tempEnded = new Promise<string>((resolve) => temp.once('error', (e) => resolve(e.message)));
    // As in a real switchover, the leader moves after the sessions had time to be read at their idle
    // point (here: once the temp table session was closed, or 5 s); moving it within a millisecond of
    // the failover key would test the unplanned path ("held … on the server that was lost") instead.
    await switchover('a', 'b', () => Promise.race([tempEnded, new Promise((r) => setTimeout(r, 5_000))]).then(() => undefined));
    assert.equal(await serverPort(c), b.port);
    const r = await c.query(`SELECT current_setting('work_mem') AS wm, current_setting('application_name') AS app`);
    assert.deepEqual(r.rows[0], { wm: '9MB', app: 'mover' });
    assert.equal((await c.query('EXECUTE sq')).rows[0].v, 7);
    assert.equal((await c.query({ name: 'np', text: 'SELECT $1::int + 1 AS v', values: [41] })).rows[0].v, 42);
    assert.equal(await tempEnded, 'relevo router: terminating session: it cannot move from a to the new primary because it holds temporary tables');
  });

  it('a transaction open past drainMs ends with the documented error; one that commits in time moves', async () => {
    await lead('b');
    const stuck = await open();
    await stuck.query('BEGIN');
    await stuck.query('SELECT 1');
    const stuckEnded = new Promise<Error & { code?: string }>((resolve) => stuck.once('error', resolve));
    const quick = await open();
    await quick.query('BEGIN');
    await quick.query('SELECT 1');
    await switchover('b', 'a', async () => {
      await quick.query('COMMIT');
      const e = await stuckEnded;
      assert.equal(e.code, '57P01');
      assert.match(e.message, /^relevo router: terminating session: a transaction was still open 1\.5 s after a planned switchover from b began/);
    });
    assert.equal(await serverPort(quick), a.port);
  });

  it('a server lost with a transaction open: a retryable ERROR, and the session goes on on the new primary', async () => {
    await lead('a');
    const c = await open();
    await c.query('BEGIN');
    await c.query('SELECT 1');
    // The leader moves without a switchover (failover): the router leaves a's server session at once.
    await lead('b');
    await assert.rejects(c.query('COMMIT'), (e: Error & { code?: string }) => {
      assert.equal(e.code, '57P01');
      assert.match(e.message, /^relevo router: the transaction was lost: a stopped being the primary while it was open/);
      return true;
    });
    assert.equal(await serverPort(c), b.port);
    // An idle session in the same failover notices nothing.
    const idle = await open();
    await lead('a');
    assert.equal(await serverPort(idle), a.port);
  });

  it('pools server sessions: reused after DISCARD ALL, bounded, waiting clients served in turn', async () => {
    await lead('a');
    const pooled = await startRouter({
      name: 'smp', cluster: CLUSTER, store,
      listen: { readWrite: '127.0.0.1:0', readOnly: null },
      mode: { readWrite: 'session' },
      session: { verifiersFile: join(dir, 'verifiers'), pool: { size: 1, idleMs: 10_000 } },
      timeouts: { startupMs: 2_000, connectMs: 1_000, holdMs: 5_000, drainMs: DRAIN_MS, refreshMs: 100, defaultTtlMs: 5_000 },
    });
    try {
      const poolPort = Number(pooled.addresses.readWrite!.split(':').pop());
      const connectPooled = async () => {
        const c = new pg.Client({ host: '127.0.0.1', port: poolPort, user: 'postgres', password: PASSWORD, database: 'postgres' });
        c.on('error', () => undefined);
        await c.connect();
        clients.add(c);
        return c;
      };
      const first = await connectPooled();
      const pid = (await first.query('SELECT pg_backend_pid() AS p')).rows[0].p;
      await first.query(`SET work_mem = '11MB'`);
      // Pool of one: a second client waits until the first leaves, then gets the same, reset, backend.
      let secondConnected = false;
      const second = connectPooled().then((c) => {
        secondConnected = true;
        return c;
      });
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(secondConnected, false, 'a second client waits while the only server session is in use');
      await first.end();
      const c2 = await second;
      const r = await c2.query(`SELECT pg_backend_pid() AS p, current_setting('work_mem') AS wm`);
      assert.deepEqual(r.rows[0], { p: pid, wm: '4MB' });
      await c2.end();
    } finally {
      await pooled.stop();
    }
  });

  it('routes a cancel to the session\'s current server', async () => {
    await lead('a');
    const c = await open();
    await switchover('a', 'b');
    const running = c.query('SELECT pg_sleep(30)');
    await new Promise((r) => setTimeout(r, 300));
    // A CancelRequest with the key the client got (the router's own), on a fresh connection, as libpq sends it.
    const key = c as unknown as { processID: number; secretKey: number };
    const { connect } = await import('node:net');
    await new Promise<void>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => {
        const p = Buffer.alloc(16);
        p.writeInt32BE(16, 0);
        p.writeInt32BE(80877102, 4);
        p.writeInt32BE(key.processID, 8);
        p.writeInt32BE(key.secretKey, 12);
        s.end(p);
      });
      s.on('close', () => resolve());
      s.on('error', reject);
    });
    await assert.rejects(running, /canceling statement due to user request/);
    assert.equal(await serverPort(c), b.port);
  });
});
