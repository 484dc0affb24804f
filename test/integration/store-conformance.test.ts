/**
 * One conformance suite for every Store backend (see src/store/store.ts for
 * the contract). `contract()` runs the same tests against each backend; each
 * backend then has its own fault tests: a real etcd process that is
 * SIGSTOPped and killed, and embedded-store writers that are SIGKILLed or
 * frozen while holding the SQLite lock.
 */
import { describe, it, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { Etcd3 } from 'etcd3';
import { StoreError, StoreUnavailableError } from '../../src/store/errors.js';
import { EmbeddedStore } from '../../src/store/embedded.js';
import { EtcdStore } from '../../src/store/etcd.js';
import { openStore } from '../../src/store/open.js';
import type { StoreConfig } from '../../src/store/config.js';
import type { Store, WatchEvent } from '../../src/store/store.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { freePort } from '../helpers/ports.js';

const moduleUrl = (relative: string): string => new URL(relative, import.meta.url).href;
const OPEN_JS = moduleUrl('../../src/store/open.js');
const EMBEDDED_JS = moduleUrl('../../src/store/embedded.js');
const SQLITE_JS = pathToFileURL(createRequire(import.meta.url).resolve('better-sqlite3')).href;

interface Backend {
  /** The store configuration a member would use (also handed to child processes). */
  config(overrides?: { timeoutMs?: number }): StoreConfig;
  /** Lease TTL used by the tests: the shortest the backend honours exactly. */
  ttlMs: number;
  /** How long after the TTL a lease's keys may linger before they must be gone. */
  expiryGraceMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what: string, condition: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

let prefixCounter = 0;
/** A key prefix no other test uses, so tests can run concurrently on one store. */
function uniquePrefix(name: string): string {
  return `/relevo/conformance-${process.pid}-${++prefixCounter}-${name}/`;
}

/** Opens a store that is closed when the test ends, pass or fail. */
async function openFor(t: TestContext, backend: Backend, overrides?: { timeoutMs?: number }): Promise<Store> {
  const store = await openStore(backend.config(overrides), { embedded: { pollIntervalMs: 50 } });
  t.after(() => store.close());
  return store;
}

/** Expects `promise` to reject with StoreUnavailableError; returns the error and how long it took. */
async function expectUnavailable(promise: Promise<unknown>): Promise<{ error: StoreUnavailableError; ms: number }> {
  const started = Date.now();
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof StoreUnavailableError, `expected StoreUnavailableError, got ${String(error)}`);
    assert.equal(error.retryable, true);
    return { error, ms: Date.now() - started };
  }
  return assert.fail('expected StoreUnavailableError, but the operation succeeded');
}

interface Child {
  process: ChildProcess;
  stdout: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first stdout line satisfying `match`. */
  line(match: (line: string) => boolean, timeoutMs: number): Promise<string>;
}

/** Runs an ES module script in a separate node process; killed when the test ends. */
function runChild(t: TestContext, script: string, args: string[] = []): Child {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdout: string[] = [];
  let stderr = '';
  let buffer = '';
  const waiters = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk;
    const lines = buffer.split('\n');
    buffer = lines.pop()!;
    stdout.push(...lines);
    for (const wake of waiters) wake();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      for (const wake of waiters) wake();
      resolve({ code, signal });
    }),
  );
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      await exited;
    }
  });
  const line = (match: (line: string) => boolean, timeoutMs: number): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = stdout.find(match);
        if (found !== undefined) {
          cleanup();
          resolve(found);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          cleanup();
          reject(new Error(`child exited (${child.exitCode ?? child.signalCode}) before the expected line; stderr:\n${stderr}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`child printed no expected line within ${timeoutMs} ms; stdout: ${stdout.join('|')}; stderr:\n${stderr}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  return { process: child, stdout, exited, line };
}

/** The contract every backend must meet. Tests use their own key prefixes and may run concurrently. */
function contract(backend: Backend): void {
  it('get, list, put and delete', async (t) => {
    const store = await openFor(t, backend);
    const p = uniquePrefix('basic');
    assert.equal(await store.get(`${p}a`), undefined);
    const r1 = await store.put(`${p}b`, 'two');
    const r2 = await store.put(`${p}a`, 'one');
    // Neighbours that share text with the prefix but are not under it.
    await store.put(`${p.slice(0, -1)}x`, 'outside');
    await store.put(`${p}a/child`, 'nested');
    assert.ok(r1 > 0 && r2 > r1);
    assert.deepEqual(await store.get(`${p}a`), { key: `${p}a`, value: 'one', revision: r2 });
    const listed = await store.list(p);
    assert.deepEqual(
      listed.map((kv) => [kv.key, kv.value]),
      [
        [`${p}a`, 'one'],
        [`${p}a/child`, 'nested'],
        [`${p}b`, 'two'],
      ],
    );
    const r3 = await store.put(`${p}a`, 'uno');
    assert.deepEqual(await store.get(`${p}a`), { key: `${p}a`, value: 'uno', revision: r3 });
    assert.equal(await store.delete(`${p}a`), true);
    assert.equal(await store.get(`${p}a`), undefined);
    assert.equal(await store.delete(`${p}a`), false);
    assert.deepEqual((await store.list(p)).map((kv) => kv.key), [`${p}a/child`, `${p}b`]);
    assert.deepEqual(await store.list(`${p}nothing/`), []);
  });

  it('keeps values byte for byte', async (t) => {
    const store = await openFor(t, backend);
    const p = uniquePrefix('values');
    const value = JSON.stringify({ name: 'nodo-ñ', emoji: '🐘', quote: "'\"\\", empty: '' });
    await store.put(`${p}json`, value);
    await store.put(`${p}empty`, '');
    assert.equal((await store.get(`${p}json`))?.value, value);
    assert.equal((await store.get(`${p}empty`))?.value, '');
  });

  it('advances one revision counter on every write, across instances', async (t) => {
    const a = await openFor(t, backend);
    const b = await openFor(t, backend);
    const p = uniquePrefix('revision');
    const revisions: number[] = [];
    let lastK0 = 0;
    for (let i = 0; i < 10; i++) {
      const store = i % 2 === 0 ? a : b;
      const written = await store.put(`${p}k${i % 3}`, String(i));
      if (i % 3 === 0) lastK0 = written;
      revisions.push(written);
      const created = await store.create(`${p}c${i}`, 'x');
      assert.ok(created !== undefined);
      revisions.push(created);
    }
    for (let i = 1; i < revisions.length; i++) {
      assert.ok(revisions[i]! > revisions[i - 1]!, `revision ${revisions[i]} after ${revisions[i - 1]}`);
    }
    // A key's revision is the store revision of its last write.
    assert.equal((await b.get(`${p}k0`))?.revision, lastK0);
    // A failed conditional write does not advance the revision.
    const last = revisions[revisions.length - 1]!;
    assert.equal(await a.create(`${p}c0`, 'again'), undefined);
    assert.ok((await a.put(`${p}after`, 'x')) > last);
  });

  it('create: exactly one of many concurrent creators wins', async (t) => {
    const stores = await Promise.all(Array.from({ length: 4 }, () => openFor(t, backend)));
    const p = uniquePrefix('create');
    const rounds = 10;
    await Promise.all(
      Array.from({ length: rounds }, async (_, round) => {
        const key = `${p}leader-${round}`;
        const results = await Promise.all(
          stores.flatMap((store, s) => [store.create(key, `s${s}a`), store.create(key, `s${s}b`)]),
        );
        const winners = results.flatMap((revision, i) => (revision === undefined ? [] : [{ revision, i }]));
        assert.equal(winners.length, 1, `round ${round}: ${winners.length} winners`);
        const winner = winners[0]!;
        const stored = await stores[0]!.get(key);
        assert.equal(stored?.revision, winner.revision);
        assert.equal(stored?.value, `s${Math.floor(winner.i / 2)}${winner.i % 2 === 0 ? 'a' : 'b'}`);
      }),
    );
  });

  it('compareAndSwap with the right, a stale and an absent revision', async (t) => {
    const store = await openFor(t, backend);
    const p = uniquePrefix('cas');
    const r1 = await store.put(`${p}k`, 'v1');
    const r2 = await store.compareAndSwap(`${p}k`, 'v2', r1);
    assert.ok(r2 !== undefined && r2 > r1);
    assert.equal(await store.compareAndSwap(`${p}k`, 'stale', r1), undefined);
    assert.deepEqual(await store.get(`${p}k`), { key: `${p}k`, value: 'v2', revision: r2 });
    assert.equal(await store.compareAndSwap(`${p}absent`, 'x', r2), undefined);
    assert.equal(await store.compareAndSwap(`${p}absent`, 'x', 0), undefined);
    assert.equal(await store.get(`${p}absent`), undefined);
    // After a delete and re-create the old revision no longer matches.
    await store.delete(`${p}k`);
    const r3 = await store.create(`${p}k`, 'v3');
    assert.ok(r3 !== undefined);
    assert.equal(await store.compareAndSwap(`${p}k`, 'x', r2), undefined);
    assert.ok((await store.compareAndSwap(`${p}k`, 'v4', r3)) !== undefined);
  });

  it('delete with an expected revision', async (t) => {
    const store = await openFor(t, backend);
    const p = uniquePrefix('delete');
    const r1 = await store.put(`${p}k`, 'v1');
    const r2 = await store.put(`${p}k`, 'v2');
    assert.equal(await store.delete(`${p}k`, r1), false);
    assert.equal((await store.get(`${p}k`))?.value, 'v2');
    assert.equal(await store.delete(`${p}k`, r2), true);
    assert.equal(await store.get(`${p}k`), undefined);
    assert.equal(await store.delete(`${p}k`, r2), false);
  });

  it('lease: keys vanish after the TTL when nobody keeps the lease alive', async (t) => {
    const store = await openFor(t, backend);
    const p = uniquePrefix('expire');
    const granted = Date.now();
    const lease = await store.grantLease(backend.ttlMs);
    assert.equal(typeof lease, 'string');
    await store.put(`${p}a`, 'x', { lease });
    await store.create(`${p}b`, 'y', { lease });
    await store.put(`${p}plain`, 'stays');
    assert.equal((await store.get(`${p}a`))?.lease, lease);
    assert.equal((await store.get(`${p}plain`))?.lease, undefined);
    // list reports leases too: an agent tells a damaged leader key on its own lease from another member's by it.
    assert.deepEqual((await store.list(p)).map((kv) => kv.lease), [lease, lease, undefined]);
    await waitFor('leased keys to vanish', async () => (await store.list(p)).length === 1, backend.ttlMs + backend.expiryGraceMs);
    const lived = Date.now() - granted;
    // Backends may round the TTL up, never down (a little slack for the clock read before the grant).
    assert.ok(lived >= backend.ttlMs - 50, `keys lived ${lived} ms, TTL ${backend.ttlMs} ms`);
    assert.deepEqual((await store.list(p)).map((kv) => kv.key), [`${p}plain`]);
    assert.equal(await store.keepAlive(lease), false, 'keepAlive after expiry');
    // Writing with a gone lease is an error, not an outage.
    await assert.rejects(store.put(`${p}c`, 'z', { lease }), (error) => {
      assert.ok(error instanceof StoreError && !(error instanceof StoreUnavailableError), String(error));
      return true;
    });
    assert.equal(await store.get(`${p}c`), undefined);
  });

  it('lease: keys survive while keepAlive renews the lease', async (t) => {
    const store = await openFor(t, backend);
    const other = await openFor(t, backend);
    const p = uniquePrefix('keepalive');
    const lease = await store.grantLease(backend.ttlMs);
    await store.put(`${p}k`, 'x', { lease });
    const until = Date.now() + backend.ttlMs * 2.5 + backend.expiryGraceMs;
    while (Date.now() < until) {
      assert.equal(await store.keepAlive(lease), true);
      assert.equal((await other.get(`${p}k`))?.value, 'x', 'key vanished while kept alive');
      await sleep(backend.ttlMs / 4);
    }
    // A keepAlive from another instance works too (the lease belongs to the store, not the connection).
    assert.equal(await other.keepAlive(lease), true);
    await store.revokeLease(lease);
  });

  it('lease: revoke deletes the keys at once; revoking twice is fine', async (t) => {
    const store = await openFor(t, backend);
    const p = uniquePrefix('revoke');
    const lease = await store.grantLease(backend.ttlMs * 10);
    await store.put(`${p}a`, 'x', { lease });
    await store.put(`${p}b`, 'y', { lease });
    const rb = await store.put(`${p}c`, 'z', { lease });
    // compareAndSwap without a lease detaches the key from it.
    assert.ok((await store.compareAndSwap(`${p}c`, 'z2', rb)) !== undefined);
    assert.equal((await store.get(`${p}c`))?.lease, undefined);
    await store.revokeLease(lease);
    assert.deepEqual((await store.list(p)).map((kv) => kv.key), [`${p}c`]);
    assert.equal(await store.keepAlive(lease), false);
    await store.revokeLease(lease);
  });

  it('watch: sees puts and deletes under the prefix in order, lease expiry included', async (t) => {
    const store = await openFor(t, backend);
    const writer = await openFor(t, backend);
    const p = uniquePrefix('watch');
    await writer.put(`${p}before`, 'not seen');
    const events: WatchEvent[] = [];
    const errors: Error[] = [];
    const watch = await store.watch(p, (event) => events.push(event), (error) => errors.push(error));
    t.after(() => watch.close());
    const r1 = await writer.put(`${p}a`, '1');
    const r2 = await writer.create(`${p}b`, '2');
    await writer.put(`${p.slice(0, -1)}-sibling`, 'outside');
    const r3 = await writer.put(`${p}a`, '3');
    await writer.delete(`${p}b`);
    const lease = await writer.grantLease(backend.ttlMs);
    const r5 = await writer.put(`${p}leased`, 'l', { lease });
    await waitFor('the lease-expiry delete event', () => events.some((e) => e.type === 'delete' && e.key === `${p}leased`), backend.ttlMs + backend.expiryGraceMs + 1000);
    assert.deepEqual(errors, []);
    const deleteB = events[3];
    const expiry = events[5];
    assert.deepEqual(events, [
      { type: 'put', key: `${p}a`, value: '1', revision: r1 },
      { type: 'put', key: `${p}b`, value: '2', revision: r2 },
      { type: 'put', key: `${p}a`, value: '3', revision: r3 },
      { type: 'delete', key: `${p}b`, revision: deleteB?.revision },
      { type: 'put', key: `${p}leased`, value: 'l', revision: r5 },
      { type: 'delete', key: `${p}leased`, revision: expiry?.revision },
    ]);
    for (let i = 1; i < events.length; i++) assert.ok(events[i]!.revision > events[i - 1]!.revision);
    // After close, nothing more is delivered.
    await watch.close();
    await watch.close();
    const seen = events.length;
    await writer.put(`${p}after-close`, 'x');
    await sleep(200);
    assert.equal(events.length, seen);
  });

  it('close() leaves nothing that keeps a process alive', async (t) => {
    const script = `
      const { openStore } = await import(${JSON.stringify(OPEN_JS)});
      const store = await openStore(JSON.parse(process.argv[1]), { embedded: { pollIntervalMs: 20 } });
      const watch = await store.watch('/exit-test/', () => {});
      const lease = await store.grantLease(${backend.ttlMs});
      await store.put('/exit-test/k', 'v', { lease });
      await store.keepAlive(lease);
      await store.get('/exit-test/k');
      await watch.close();
      await store.revokeLease(lease);
      await store.close();
      console.log('closed');
    `;
    const child = runChild(t, script, [JSON.stringify(backend.config())]);
    await child.line((l) => l === 'closed', 10_000);
    const exit = await Promise.race([child.exited, sleep(5_000).then(() => undefined)]);
    assert.ok(exit !== undefined, 'process still running 5 s after close()');
    assert.equal(exit.code, 0);
  });
}

// ---------------------------------------------------------------- embedded

describe('store conformance: embedded', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-store-'));
  const path = join(dir, 'state', 'store.db');
  after(() => rmSync(dir, { recursive: true, force: true }));

  const backend: Backend = {
    config: (overrides) => ({ backend: 'embedded', path, timeoutMs: overrides?.timeoutMs ?? 2_000 }),
    ttlMs: 300,
    // Watchers poll every 50 ms and sweep expired leases; reads sweep too.
    expiryGraceMs: 300,
  };

  describe('contract', { concurrency: true }, () => contract(backend));

  describe('embedded specifics', () => {
    it('creates its directory 0700 and its files 0600', async (t) => {
      const store = await openFor(t, backend);
      await store.put('/mode', 'x');
      assert.equal(statSync(join(dir, 'state')).mode & 0o777, 0o700);
      for (const file of [path, `${path}-wal`, `${path}-shm`]) {
        assert.equal(statSync(file).mode & 0o777, 0o600, file);
      }
    });

    it('expired keys vanish within ~100 ms when nobody writes, swept by a watcher in another process', async (t) => {
      const writer = await openFor(t, backend);
      const p = uniquePrefix('sweep');
      const script = `
        const { EmbeddedStore } = await import(${JSON.stringify(EMBEDDED_JS)});
        const store = await EmbeddedStore.open({ path: process.argv[1], timeoutMs: 2000 }, { pollIntervalMs: 50 });
        await store.watch(process.argv[2], (e) => console.log(JSON.stringify({ ...e, at: Date.now() })));
        console.log('watching');
      `;
      const child = runChild(t, script, [path, p]);
      await child.line((l) => l === 'watching', 5_000);
      const lease = await writer.grantLease(200);
      const expiresAt = Date.now() + 200;
      await writer.put(`${p}k`, 'v', { lease });
      const line = await child.line((l) => l.includes('"delete"'), 3_000);
      const event = JSON.parse(line) as { key: string; at: number };
      assert.equal(event.key, `${p}k`);
      const late = event.at - expiresAt;
      assert.ok(late < 250, `delete seen ${late} ms after expiry`);
    });

    it('create: exactly one of several processes wins', async (t) => {
      const p = uniquePrefix('race');
      const rounds = 15;
      const startAt = Date.now() + 1_500;
      const script = `
        const { EmbeddedStore } = await import(${JSON.stringify(EMBEDDED_JS)});
        const [path, prefix, id, startAt, rounds] = process.argv.slice(1);
        const store = await EmbeddedStore.open({ path, timeoutMs: 5000 });
        await new Promise((r) => setTimeout(r, Number(startAt) - Date.now()));
        const won = [];
        for (let round = 0; round < Number(rounds); round++) {
          if ((await store.create(prefix + round, id)) !== undefined) won.push(round);
        }
        await store.close();
        console.log('won ' + JSON.stringify(won));
      `;
      const children = Array.from({ length: 5 }, (_, id) =>
        runChild(t, script, [path, p, `child-${id}`, String(startAt), String(rounds)]),
      );
      const results = await Promise.all(
        children.map(async (child) => JSON.parse((await child.line((l) => l.startsWith('won '), 15_000)).slice(4)) as number[]),
      );
      const store = await openFor(t, backend);
      for (let round = 0; round < rounds; round++) {
        const winners = results.flatMap((won, id) => (won.includes(round) ? [`child-${id}`] : []));
        assert.equal(winners.length, 1, `round ${round} winners: ${winners.join(', ')}`);
        assert.equal((await store.get(`${p}${round}`))?.value, winners[0]);
      }
    });

    it('a writer SIGKILLed mid-loop leaves the store consistent and writable', async (t) => {
      const p = uniquePrefix('sigkill');
      const script = `
        const { EmbeddedStore } = await import(${JSON.stringify(EMBEDDED_JS)});
        const [path, prefix] = process.argv.slice(1);
        const store = await EmbeddedStore.open({ path, timeoutMs: 5000 });
        console.log('ready');
        for (let i = 0; ; i++) {
          const lease = await store.grantLease(60000);
          const r = await store.put(prefix + 'k' + (i % 7), 'v' + i, { lease });
          await store.compareAndSwap(prefix + 'k' + (i % 7), 'w' + i, r);
          await store.create(prefix + 'c' + i, 'x');
          await store.delete(prefix + 'c' + (i - 3));
          await store.keepAlive(lease);
          if (i % 5 === 0) await store.revokeLease(lease);
        }
      `;
      for (let round = 0; round < 6; round++) {
        const child = runChild(t, script, [path, p]);
        await child.line((l) => l === 'ready', 5_000);
        await sleep(30 + Math.random() * 120);
        child.process.kill('SIGKILL');
        const exit = await child.exited;
        assert.equal(exit.signal, 'SIGKILL', 'the writer was still running when killed');
      }
      const db = new Database(path, { readonly: true });
      t.after(() => db.close());
      assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
      const meta = db.prepare('SELECT revision FROM meta').get() as { revision: number };
      const maxKv = (db.prepare('SELECT max(mod_revision) AS r FROM kv').get() as { r: number }).r;
      const maxEvent = (db.prepare('SELECT max(revision) AS r FROM events').get() as { r: number }).r;
      assert.equal(maxEvent, meta.revision, 'every revision has its event');
      assert.ok(maxKv <= meta.revision);
      const orphans = db.prepare('SELECT count(*) AS n FROM kv WHERE lease IS NOT NULL AND lease NOT IN (SELECT id FROM leases)').get() as { n: number };
      assert.equal(orphans.n, 0, 'no key points to a missing lease');
      const store = await openFor(t, backend);
      assert.ok((await store.list(p)).length > 0, 'the killed writers did write');
      assert.equal(await store.put(`${p}after`, 'ok'), meta.revision + 1);
    });

    it('a process frozen inside a transaction makes operations fail with StoreUnavailableError, not hang', async (t) => {
      const store = await openFor(t, backend, { timeoutMs: 400 });
      await store.put('/frozen/k', 'before');
      const script = `
        const { default: Database } = await import(${JSON.stringify(SQLITE_JS)});
        const db = new Database(process.argv[1]);
        db.exec('BEGIN IMMEDIATE');
        db.prepare('UPDATE meta SET revision = revision WHERE id = 1').run();
        console.log('locked');
        setInterval(() => {}, 1000);
      `;
      const child = runChild(t, script, [path]);
      await child.line((l) => l === 'locked', 5_000);
      child.process.kill('SIGSTOP');
      // The wait for the lock must not block this process's event loop.
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 10);
      t.after(() => clearInterval(ticker));
      const { error, ms } = await expectUnavailable(store.put('/frozen/k', 'during'));
      clearInterval(ticker);
      assert.ok(ms >= 350 && ms < 1_500, `failed after ${ms} ms with timeoutMs 400`);
      assert.ok(error.message.includes(path), `message names the path: ${error.message}`);
      assert.ok(ticks >= 15, `event loop ran only ${ticks} ticks while waiting`);
      await expectUnavailable(store.get('/frozen/k'));
      // Killing the frozen process releases its lock; nothing it did survives.
      child.process.kill('SIGKILL');
      await child.exited;
      assert.equal((await store.get('/frozen/k'))?.value, 'before');
      await store.put('/frozen/k', 'after');
      assert.equal((await store.get('/frozen/k'))?.value, 'after');
    });

    it('an unusable path fails with StoreUnavailableError naming it', async () => {
      const file = join(dir, 'plain-file');
      writeFileSync(file, 'not a directory');
      const paths = [join(file, 'store.db'), dir];
      const garbage = join(dir, 'garbage.db');
      writeFileSync(garbage, 'x'.repeat(4096));
      paths.push(garbage);
      for (const bad of paths) {
        const { error } = await expectUnavailable(EmbeddedStore.open({ path: bad, timeoutMs: 300 }));
        assert.ok(error.message.includes(bad), `message names ${bad}: ${error.message}`);
      }
    });

    it('a watcher that falls behind the trimmed events gets onError', async (t) => {
      const writer = await EmbeddedStore.open({ path, timeoutMs: 2_000 }, { maxEvents: 5 });
      t.after(() => writer.close());
      const slow = await EmbeddedStore.open({ path, timeoutMs: 2_000 }, { pollIntervalMs: 400 });
      t.after(() => slow.close());
      const p = uniquePrefix('trim');
      const errors: Error[] = [];
      const events: WatchEvent[] = [];
      await slow.watch(p, (e) => events.push(e), (e) => errors.push(e));
      for (let i = 0; i < 20; i++) await writer.put(`${p}k`, String(i));
      await waitFor('onError', () => errors.length > 0, 2_000);
      assert.deepEqual(events, []);
      assert.ok(errors[0] instanceof StoreError);
    });
  });
});

// -------------------------------------------------------------------- etcd

describe('store conformance: etcd', () => {
  let etcd: EtcdProcess | undefined;
  before(async () => {
    etcd = await startEtcd();
  });
  after(() => etcd?.stop());

  const backend: Backend = {
    config: (overrides) => ({ backend: 'etcd', endpoints: etcd!.endpoints, timeoutMs: overrides?.timeoutMs ?? 2_000 }),
    // etcd's shortest TTL: whole seconds, at least ceil(1.5 × election timeout) = 1 s here.
    ttlMs: 1_000,
    // etcd's lessor looks for expired leases every 500 ms.
    expiryGraceMs: 1_200,
  };

  describe('contract', { concurrency: true }, () => contract(backend));

  describe('etcd specifics', () => {
    it('rounds lease TTLs up to whole seconds', async (t) => {
      const store = await openFor(t, backend);
      const admin = new Etcd3({ hosts: etcd!.endpoints });
      t.after(() => admin.close());
      const lease = await store.grantLease(1_100);
      const info = await admin.leaseClient.leaseTimeToLive({ ID: lease });
      assert.equal(info.grantedTTL, '2');
      await store.revokeLease(lease);
    });

    it('fails over to the next endpoint for reads; a conditional write fails at most once', async (t) => {
      const dead = `http://127.0.0.1:${await freePort()}`;
      const store = new EtcdStore({ endpoints: [dead, ...etcd!.endpoints], timeoutMs: 1_000 });
      t.after(() => store.close());
      const p = uniquePrefix('failover');
      for (let i = 0; i < 5; i++) assert.equal(await store.get(`${p}none`), undefined);
      const fresh = new EtcdStore({ endpoints: [dead, ...etcd!.endpoints], timeoutMs: 1_000 });
      t.after(() => fresh.close());
      let failures = 0;
      for (let i = 0; i < 5; i++) {
        try {
          assert.ok((await fresh.create(`${p}c${i}`, 'x')) !== undefined);
        } catch (error) {
          assert.ok(error instanceof StoreUnavailableError, String(error));
          failures++;
        }
      }
      assert.ok(failures <= 1, `${failures} creates failed`);
    });

    it('authenticates with a password from the environment or a 0600 file, and never echoes it', async (t) => {
      const secured = await startEtcd();
      t.after(() => secured.stop());
      const password = 'correct horse battery staple';
      const admin = new Etcd3({ hosts: secured.endpoints });
      t.after(() => admin.close());
      await admin.user('root').create(password);
      await admin.role('root').create().catch(() => undefined); // etcd may have it built in
      await admin.user('root').addRole('root');
      await admin.auth.authEnable();
      const base = { backend: 'etcd' as const, endpoints: secured.endpoints, timeoutMs: 2_000, username: 'root' };

      const fromEnv = await openStore({ ...base, passwordEnv: 'RELEVO_TEST_ETCD_PW' }, { env: { RELEVO_TEST_ETCD_PW: password } });
      t.after(() => fromEnv.close());
      await fromEnv.put('/auth/k', 'v');
      assert.equal((await fromEnv.get('/auth/k'))?.value, 'v');

      const secrets = mkdtempSync(join(tmpdir(), 'relevo-secret-'));
      t.after(() => rmSync(secrets, { recursive: true, force: true }));
      const file = join(secrets, 'etcd-password');
      writeFileSync(file, `${password}\n`, { mode: 0o600 });
      const fromFile = await openStore({ ...base, passwordFile: file });
      t.after(() => fromFile.close());
      assert.equal((await fromFile.get('/auth/k'))?.value, 'v');

      // The same 0600 rule as every secret file: group-readable (0640) is refused too.
      chmodSync(file, 0o640);
      await assert.rejects(openStore({ ...base, passwordFile: file }), /accessible by group or others/);
      await assert.rejects(openStore({ ...base, passwordEnv: 'RELEVO_TEST_UNSET' }, { env: {} }), /RELEVO_TEST_UNSET/);

      const wrong = await openStore({ ...base, passwordEnv: 'PW' }, { env: { PW: 'wrong password' } });
      t.after(() => wrong.close());
      await assert.rejects(wrong.get('/auth/k'), (error) => {
        assert.ok(error instanceof StoreError && !(error instanceof StoreUnavailableError), String(error));
        assert.ok(!String(error).includes('wrong password') && !String(error).includes(password));
        return true;
      });
    });

    it('a hung etcd (SIGSTOP) makes every operation fail within the timeout; it recovers on SIGCONT', async (t) => {
      const store = await openFor(t, backend, { timeoutMs: 500 });
      const lease = await store.grantLease(10_000);
      await store.put('/hung/k', 'v', { lease });
      etcd!.suspend();
      t.after(() => etcd!.resume());
      const results = await Promise.all([
        expectUnavailable(store.get('/hung/k')),
        expectUnavailable(store.list('/hung/')),
        expectUnavailable(store.create('/hung/new', 'x')),
        expectUnavailable(store.compareAndSwap('/hung/k', 'x', 1)),
        expectUnavailable(store.put('/hung/k', 'x')),
        expectUnavailable(store.delete('/hung/k')),
        expectUnavailable(store.keepAlive(lease)),
        expectUnavailable(store.grantLease(5_000)),
        expectUnavailable(store.watch('/hung/', () => {})),
      ]);
      for (const { ms } of results) assert.ok(ms >= 450 && ms < 1_500, `failed after ${ms} ms with timeoutMs 500`);
      etcd!.resume();
      // Requests that timed out may still be applied once etcd resumes (they were
      // already on the wire): a failed operation means "unknown", never "not done".
      await waitFor('etcd to answer again', async () => (await store.put('/hung/after', 'x').catch(() => undefined)) !== undefined, 3_000);
      assert.equal((await store.get('/hung/after'))?.value, 'x');
      assert.equal(await store.keepAlive(lease), true);
    });

    it('a stopped etcd fails operations fast and breaks watches through onError', async (t) => {
      const store = await openFor(t, backend, { timeoutMs: 1_000 });
      const errors: Error[] = [];
      await store.watch('/stopped/', () => {}, (error) => errors.push(error));
      await etcd!.stop();
      await waitFor('the watch to report the outage', () => errors.length > 0, 5_000);
      assert.ok(errors[0] instanceof StoreUnavailableError, String(errors[0]));
      const { ms } = await expectUnavailable(store.get('/stopped/k'));
      assert.ok(ms < 1_500, `failed after ${ms} ms`);
      await expectUnavailable(store.create('/stopped/k', 'x'));
    });
  });
});
