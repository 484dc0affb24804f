/**
 * Issue 3's fault-injection cases (a)–(h) on real processes, in synchronous
 * mode, on 3-member clusters (one per store, reused while cases pass), with a multi-host writer running and a
 * second client pinned to the primary (an application that keeps its
 * connection). After every fault:
 *   - exactly one member is primary, and no other member acknowledges a
 *     write sent straight to its port;
 *   - no acknowledged commit is lost, from either client;
 *   - the old primary never takes the lease back nor acknowledges a write
 *     after the new primary did, and streams again on a newer timeline;
 *   - no data directory was deleted (same directory, or moved aside intact).
 * Short leases keep every case within seconds.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { clusterKeys } from '../../src/cluster/keys.js';
import type { MemberStatus } from '../../src/cluster/types.js';
import { TestCluster, FAULT_TEST_MEMBERS, FAULT_TEST_SETTINGS, FAULT_TEST_TTL_MS } from '../helpers/cluster.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { DIVERGED_ROWS, DIVERGED_TABLE, FAULT_DESCRIPTIONS, Faults, inject, type FaultKind, type ScenarioContext } from '../helpers/faults.js';
import { waitFor } from '../helpers/wait.js';
import { createProbeTable, tryDirectWrite, Writer } from '../helpers/writer.js';

const NAMES = FAULT_TEST_MEMBERS;
const TTL_MS = FAULT_TEST_TTL_MS;
const SETTINGS = FAULT_TEST_SETTINGS;
const PROBE_TABLE = 'probe';

interface DirIdentity {
  dev: number;
  ino: number;
}

interface Case {
  cluster: TestCluster;
  faults: Faults;
  etcd: EtcdProcess | undefined;
  writer: Writer;
  /** A client that only ever talks to the first primary and keeps its session: it would see a resumed old primary. */
  pinned: Writer;
  primary: string;
  replicas: string[];
  timeline: number;
  dirs: Map<string, DirIdentity>;
}

function identity(path: string): DirIdentity {
  const s = statSync(path);
  return { dev: s.dev, ino: s.ino };
}

/** Directories under root (depth-limited) with the given identity: where a data directory was moved aside. */
function findDirectory(root: string, wanted: DirIdentity, depth = 3): string | undefined {
  let entries;
  try {
    entries = readdirSync(root, { withFileTypes: true });
  } catch {
    return undefined;
  }
  for (const entry of entries) {
    if (!entry.isDirectory()) continue;
    const path = join(root, entry.name);
    const id = identity(path);
    if (id.dev === wanted.dev && id.ino === wanted.ino) return path;
    // Do not walk into data directories: thousands of files, and no data directory nests in another.
    if (depth > 1 && !existsSync(join(path, 'PG_VERSION'))) {
      const found = findDirectory(path, wanted, depth - 1);
      if (found) return found;
    }
  }
  return undefined;
}

/**
 * One cluster per store serves every case in turn: booting three members costs ~10 s, a case's
 * fault ~5-15 s. Each case starts from a healthy cluster (whoever is primary then) with its own
 * writers, faults and tables, and ends healthy (every case checks that); a case that fails leaves
 * its cluster unusable, and the next case boots a fresh one, so a failure never cascades.
 */
interface SharedCluster {
  cluster: TestCluster;
  etcd: EtcdProcess | undefined;
  reusable: boolean;
}

const shared = new Map<'embedded' | 'etcd', SharedCluster>();

after(async () => {
  for (const s of shared.values()) await disposeShared(s);
  shared.clear();
});

async function disposeShared(s: SharedCluster): Promise<void> {
  await s.cluster.destroy();
  await s.etcd?.stop();
}

/** The store's cluster, booted on first use or after a failed case; marked in use until its case succeeds. */
async function clusterFor(store: 'embedded' | 'etcd'): Promise<SharedCluster> {
  const existing = shared.get(store);
  if (existing?.reusable) {
    existing.reusable = false;
    return existing;
  }
  if (existing) {
    shared.delete(store);
    await disposeShared(existing);
  }
  const etcd = store === 'etcd' ? await startEtcd() : undefined;
  let cluster: TestCluster;
  try {
    cluster = await TestCluster.create({ store: etcd ? { endpoints: etcd.endpoints } : 'embedded', settings: SETTINGS });
  } catch (error) {
    await etcd?.stop();
    throw error;
  }
  const s: SharedCluster = { cluster, etcd, reusable: false };
  shared.set(store, s);
  for (const name of NAMES) await cluster.defineMember(name);
  for (const name of NAMES) cluster.startAgent(name);
  return s;
}

async function setUp(t: TestContext, store: 'embedded' | 'etcd', table: string, partial: Partial<Case>): Promise<Case> {
  const { cluster, etcd } = await clusterFor(store);
  const faults = new Faults(cluster);
  const writers: Writer[] = [];
  // One hook, in order: clients first, then stopped processes continued (the cluster outlives the case).
  t.after(async () => {
    for (const w of writers) await w.stop().catch(() => undefined);
    await faults.cleanup();
  });
  Object.assign(partial, { cluster, faults, etcd });
  const members = await cluster.waitHealthy(NAMES, 60_000);
  const primary = members.find((m) => m.state === 'primary')!;
  const replicas = members.filter((m) => m.name !== primary.name).map((m) => m.name);
  await createProbeTable(cluster, primary.name, PROBE_TABLE);
  const writer = Writer.forCluster(cluster, table);
  writers.push(writer);
  // Like an application without statement timeouts: one server, and it waits as long as that server makes it wait.
  const base = Writer.forCluster(cluster, `${table}_pinned`).options;
  const pinned = new Writer({ ...base, targets: base.targets.filter((x) => x.name === primary.name), queryTimeoutMs: 60_000, retryMs: 200 });
  writers.push(pinned);
  await writer.start();
  await pinned.start();
  await writer.waitForAcks(50);
  await pinned.waitForAcks(20);
  const dirs = new Map(NAMES.map((n) => [n, identity(cluster.member(n).config.postgres.dataDir)] as const));
  assert.ok(primary.timeline !== null, 'primary publishes its timeline');
  return { cluster, faults, etcd, writer, pinned, primary: primary.name, replicas, timeline: primary.timeline, dirs };
}

/** Status, agent log and server log of every member, plus the clients' view: attached to a failing assertion. */
async function diagnostics(c: Partial<Case>): Promise<string> {
  const parts: string[] = [];
  if (!c.cluster) return '(no cluster yet)';
  let statuses: MemberStatus[] = [];
  try {
    statuses = await c.cluster.memberStatuses();
  } catch (error) {
    parts.push(`store unreadable: ${(error as Error).message}`);
  }
  for (const name of NAMES) {
    const s = statuses.find((m) => m.name === name);
    parts.push(
      `--- ${name}: ${s ? `state=${s.state} role=${s.role} timeline=${s.timeline} streaming=${s.streaming} upstream=${s.upstream} reason=${s.reason}` : 'no status'}`,
      c.cluster.logTail(name, 40),
      `--- ${name} PostgreSQL log`,
      tail(`${c.cluster.member(name).config.postgres.dataDir}.log`, 20),
    );
  }
  if (c.writer) parts.push(`--- writer: ${c.writer.acknowledged} acknowledged, ${c.writer.serverSequence()}; last failures: ${c.writer.lastFailures()}`);
  if (c.pinned) parts.push(`--- pinned client: ${c.pinned.acknowledged} acknowledged, ${c.pinned.serverSequence()}; last failures: ${c.pinned.lastFailures()}`);
  return parts.join('\n');
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Runs a case body; a failure carries every member's logs so the report says what happened. */
async function runCase(t: TestContext, store: 'embedded' | 'etcd', table: string, body: (c: Case) => Promise<void>): Promise<void> {
  const partial: Partial<Case> = {};
  try {
    Object.assign(partial, await setUp(t, store, table, partial));
    await body(partial as Case);
    // Every case ends with the cluster healthy again: the next case may start from it.
    shared.get(store)!.reusable = true;
  } catch (error) {
    const text = await diagnostics(partial).catch((e: unknown) => `(diagnostics failed: ${(e as Error).message})`);
    // The reporter prints the stack, which was captured with the original message: extend both.
    if (error instanceof Error) {
      error.message = `${error.message}\n${text}`;
      error.stack = `${error.stack ?? ''}\n${text}`;
      throw error;
    }
    throw new Error(`${String(error)}\n${text}`);
  }
}

interface Watch {
  /** Members seen holding the leader key while we watched. */
  leaders: Set<string>;
  probes: { at: number; outcome: string; message: string }[];
  stop(): Promise<void>;
}

/**
 * While the old primary comes back: read the leader key every 100 ms, and
 * keep trying to write straight to the old primary's port. Neither may ever
 * show the old primary acting as primary.
 */
function watchOldPrimary(c: Case, old: string): Watch {
  const watch: Watch = { leaders: new Set(), probes: [], stop: async () => undefined };
  let running = true;
  const keys = clusterKeys(c.cluster.clusterName);
  const leaderLoop = (async () => {
    while (running) {
      const kv = await c.cluster.store.get(keys.leader).catch(() => undefined);
      if (kv) watch.leaders.add((JSON.parse(kv.value) as { member: string }).member);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  const probeLoop = (async () => {
    while (running) {
      const result = await tryDirectWrite(c.cluster, old, PROBE_TABLE, 1_500);
      watch.probes.push({ at: Date.now(), ...result });
      if (result.outcome !== 'no answer') await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  watch.stop = async () => {
    running = false;
    await Promise.all([leaderLoop, probeLoop]);
  };
  return watch;
}

/**
 * One primary (expected), every other member a streaming replica, all on the
 * primary's timeline — newer than before the fault when the primary changed.
 * Replicas may publish the new timeline a moment after they stream, so wait for it.
 */
async function checkSettled(c: Case, primary: string): Promise<void> {
  const members = await waitFor(
    `${primary} as the only primary and every member streaming on its timeline`,
    async () => {
      const all = (await c.cluster.memberStatuses()).filter((m) => NAMES.includes(m.name));
      const p = all.find((m) => m.name === primary);
      if (!p || p.state !== 'primary' || p.role !== 'primary' || p.timeline === null) return undefined;
      const ok = all.length === NAMES.length && all.every((m) => m.name === primary || (m.state === 'replica' && m.streaming && m.timeline === p.timeline));
      return ok ? all : undefined;
    },
    30_000,
  ).catch(async (error: unknown) => {
    const now = await c.cluster.memberStatuses().catch(() => []);
    throw new Error(`${(error as Error).message}; now: ${now.map((m) => `${m.name} ${m.state}/${m.role} tl=${m.timeline} streaming=${m.streaming}`).join(', ')}`);
  });
  assert.deepEqual(members.filter((m) => m.state === 'primary').map((m) => m.name), [primary], 'exactly one primary');
  const timeline = members.find((m) => m.name === primary)!.timeline!;
  if (primary !== c.primary) assert.ok(timeline > c.timeline, `the new primary ${primary} runs a newer timeline: ${timeline} after ${c.timeline}`);
  else assert.equal(timeline, c.timeline, `${primary} stayed primary on timeline ${c.timeline}`);
}

/** No data directory was deleted: each is the same directory, or was moved aside intact (rewindFallback 'reclone'). */
function assertDataDirsKept(c: Case): void {
  for (const name of NAMES) {
    const dataDir = c.cluster.member(name).config.postgres.dataDir;
    const before = c.dirs.get(name)!;
    const now = existsSync(dataDir) ? identity(dataDir) : undefined;
    if (now && now.ino === before.ino && now.dev === before.dev) continue;
    const aside = findDirectory(c.cluster.dir, before);
    assert.ok(aside && existsSync(join(aside, 'PG_VERSION')), `data directory of ${name} was replaced and its old copy is gone`);
  }
}

/**
 * Called right after `name` acknowledged its first writes. With
 * synchronousFallbackMs far beyond any case, it may only acknowledge with a
 * synchronous standby configured: an empty synchronous_standby_names means it
 * acknowledged commits no other member holds, which the next single failure loses.
 */
async function assertSynchronous(c: Case, name: string): Promise<void> {
  const rows = await c.cluster.sql<{ s: string }>(name, 'SHOW synchronous_standby_names');
  assert.notEqual(
    rows[0]!.s,
    '',
    `${name} acknowledges writes with synchronous_standby_names empty (asynchronous commits), although synchronousFallbackMs is ${SETTINGS.synchronousFallbackMs} ms`,
  );
}

interface Aftermath {
  newPrimary: string;
  unavailabilityMs: number | undefined;
  rejoinMs: number | undefined;
}

/**
 * Injects the fault and checks every invariant afterwards. Returns the
 * measurements the case reports.
 */
async function faultAndCheck(c: Case, kind: FaultKind, extra: Partial<ScenarioContext> = {}): Promise<Aftermath> {
  const { cluster } = c;
  const old = c.primary;
  const ctx: ScenarioContext = { cluster, faults: c.faults, writer: c.writer, primary: old, replicas: c.replicas, ttlMs: TTL_MS, etcd: c.etcd, timeoutMs: 45_000, ...extra };
  const staged = await inject(ctx, kind);
  const { name: newPrimary } = await staged.awaitPrimary();
  await assertSynchronous(c, newPrimary);
  if (staged.expectsNewPrimary) assert.notEqual(newPrimary, old, `${kind}: another member must take over`);
  if (kind === 'c') assert.equal(newPrimary, old, 'a crashed PostgreSQL is restarted in place, not failed over');

  // From the moment the new primary acknowledged writes, the old one must never act as primary again.
  const watch = newPrimary !== old ? watchOldPrimary(c, old) : undefined;
  let rejoinMs: number | undefined;
  let returnedAt = staged.faultAt;
  try {
    returnedAt = (await staged.recover()) ?? staged.storeBackAt ?? staged.faultAt;
    await cluster.waitHealthy(NAMES, 60_000);
    rejoinMs = Date.now() - returnedAt;
    await checkSettled(c, newPrimary);
  } finally {
    await watch?.stop();
  }
  if (watch) {
    assert.ok(!watch.leaders.has(old), `old primary ${old} never holds the lease again (seen: ${[...watch.leaders].join(', ')})`);
    const acked = watch.probes.filter((p) => p.outcome === 'acknowledged');
    assert.deepEqual(acked, [], `old primary ${old} acknowledged a direct write after ${newPrimary} took over`);
    // A probe must have run while the old primary was back, or this check proved nothing.
    assert.ok(watch.probes.some((p) => p.at > returnedAt), 'the returned old primary was probed');
  }

  // Nobody but the primary takes a write now.
  for (const name of NAMES.filter((n) => n !== newPrimary)) {
    const probe = await tryDirectWrite(cluster, name, PROBE_TABLE, 3_000);
    assert.notEqual(probe.outcome, 'acknowledged', `${name} is not the primary but took a write`);
  }
  const inRecovery = await Promise.all(NAMES.map(async (n) => [n, (await cluster.sql<{ r: boolean }>(n, 'SELECT pg_is_in_recovery() AS r'))[0]!.r] as const));
  assert.deepEqual(inRecovery.filter(([, r]) => !r).map(([n]) => n), [newPrimary], 'only the primary is out of recovery');

  // Keep writing on the final primary, then check both clients' acknowledged commits there.
  await c.writer.waitForAcks(20, 30_000, newPrimary);
  await c.writer.stop();
  await c.pinned.stop();
  const unavailabilityMs = c.writer.unavailability(staged.faultAt, newPrimary);
  for (const [label, w] of [['writer', c.writer], ['pinned client', c.pinned]] as const) {
    const result = await w.verify(cluster);
    assert.equal(result.primary, newPrimary);
    assert.deepEqual(result.lost, [], `${label}: ${result.lost.length} of ${result.acknowledged} acknowledged commits lost (${w.serverSequence()})`);
    if (newPrimary !== old) {
      const late = w.splitBrainAcks(old, newPrimary);
      assert.deepEqual(late, [], `${label}: old primary ${old} acknowledged writes after ${newPrimary} did`);
    }
  }
  assert.ok(c.writer.acks.some((a) => a.server === old) && c.writer.acks.some((a) => a.server === newPrimary), 'the writer committed before and after the fault');

  assertDataDirsKept(c);

  if (newPrimary !== old) {
    const history = await cluster.cli(['history', '--json']);
    assert.equal(history.code, 0, history.stderr);
    const entries = JSON.parse(history.stdout) as { timeline: number; from: string | null; to: string; reason: string }[];
    const last = entries[entries.length - 1];
    assert.ok(last, 'history records the promotion');
    assert.equal(last.to, newPrimary);
    assert.equal(last.from, old);
    assert.equal(last.timeline, (await cluster.status(newPrimary))!.timeline);
    assert.ok(last.reason.length > 0, 'history says why');
  }
  return { newPrimary, unavailabilityMs, rejoinMs };
}

function report(kind: FaultKind, result: Aftermath): void {
  console.log(
    `# (${kind}) ${FAULT_DESCRIPTIONS[kind]}: primary afterwards ${result.newPrimary}, write unavailability ${result.unavailabilityMs ?? '?'} ms, back to healthy ${result.rejoinMs ?? '?'} ms after the old primary returned`,
  );
}

describe('automatic failover under faults (synchronous mode, 3 members)', { timeout: 480_000 }, () => {
  it('(a) machine loss: SIGKILL agent and PostgreSQL together', { timeout: 120_000 }, async (t) => {
    await runCase(t, 'embedded', 'writes_a', async (c) => report('a', await faultAndCheck(c, 'a')));
  });

  // Cases that freeze an agent run on etcd: an agent frozen inside an embedded-store transaction keeps
  // the file lock and stalls every member's store until it resumes (docs/store.md).
  it('(b) SIGSTOP agent and all PostgreSQL processes past the lease, then SIGCONT: the old primary neither takes the lease back nor acknowledges a write', { timeout: 120_000 }, async (t) => {
    await runCase(t, 'etcd', 'writes_b', async (c) => report('b', await faultAndCheck(c, 'b')));
  });

  // The restart is held past the lease: the agent keeps its lease while pg_ctl waits (up to
  // primaryRestartTimeoutMs), so no replica takes over a primary that is coming back.
  it('(c) SIGKILL only PostgreSQL, its restart held past the lease: restarted in place, nothing lost', { timeout: 120_000 }, async (t) => {
    await runCase(t, 'embedded', 'writes_c', async (c) => {
      const before = c.cluster.postmasterPid(c.primary);
      const result = await faultAndCheck(c, 'c', { stallRestartMs: TTL_MS + 1_000 });
      assert.notEqual(c.cluster.postmasterPid(c.primary), before, 'a new postmaster runs');
      report('c', result);
    });
  });

  it('(d) SIGKILL only the agent: a replica takes over, the running old PostgreSQL acknowledges nothing more, the restarted agent rejoins it', { timeout: 120_000 }, async (t) => {
    await runCase(t, 'embedded', 'writes_d', async (c) => report('d', await faultAndCheck(c, 'd')));
  });

  it('(e) SIGSTOP only the agent past the lease, then SIGCONT', { timeout: 120_000 }, async (t) => {
    await runCase(t, 'etcd', 'writes_e', async (c) => report('e', await faultAndCheck(c, 'e')));
  });

  for (const store of ['etcd', 'embedded'] as const) {
    it(`(f) the ${store} store unavailable past the lease, then back: the primary stops acknowledging before its lease can expire`, { timeout: 120_000 }, async (t) => {
      await runCase(t, store, 'writes_f', async (c) => {
        const ctx: ScenarioContext = { cluster: c.cluster, faults: c.faults, writer: c.writer, primary: c.primary, replicas: c.replicas, ttlMs: TTL_MS, etcd: c.etcd, timeoutMs: 45_000 };
        const staged = await inject(ctx, 'f');
        const { name } = await staged.awaitPrimary();
        await assertSynchronous(c, name);
        const backAt = staged.storeBackAt!;
        // The lease was renewed at the latest when the outage began, so it expired by faultAt + ttl:
        // a write sent after that and acknowledged means a primary without a lease.
        for (const [label, w] of [['writer', c.writer], ['pinned client', c.pinned]] as const) {
          const late = w.acksSentBetween(staged.faultAt + TTL_MS, backAt);
          const iso = (ms: number) => new Date(ms).toISOString();
          assert.ok(
            late.length === 0,
            `${label}: ${late.length} writes acknowledged by ${[...new Set(late.map((a) => a.server))].join(', ')} after the lease expired while the store was down ` +
              `(store down ${iso(staged.faultAt)}, lease expired by ${iso(staged.faultAt + TTL_MS)}, last such write sent ${iso(late[late.length - 1]?.sentAt ?? 0)}, store back ${iso(backAt)})`,
          );
        }
        await c.cluster.waitHealthy(NAMES, 60_000);
        await checkSettled(c, name);
        for (const n of NAMES.filter((x) => x !== name)) {
          const probe = await tryDirectWrite(c.cluster, n, PROBE_TABLE, 3_000);
          assert.notEqual(probe.outcome, 'acknowledged', `${n} is not the primary but took a write`);
        }
        await c.writer.waitForAcks(20, 30_000, name);
        await c.writer.stop();
        await c.pinned.stop();
        for (const [label, w] of [['writer', c.writer], ['pinned client', c.pinned]] as const) {
          const result = await w.verify(c.cluster);
          assert.deepEqual(result.lost, [], `${label}: ${result.lost.length} of ${result.acknowledged} acknowledged commits lost (${w.serverSequence()})`);
          if (name !== c.primary) assert.deepEqual(w.splitBrainAcks(c.primary, name), [], `${label}: old primary acknowledged after the new one`);
        }
        assertDataDirsKept(c);
        console.log(
          `# (f, ${store}) primary after the outage: ${name} (was ${c.primary}); first write ${c.writer.unavailability(backAt) ?? '?'} ms after the store came back`,
        );
      });
    });
  }

  it('(g) switchover under write load', { timeout: 120_000 }, async (t) => {
    await runCase(t, 'embedded', 'writes_g', async (c) => {
      const target = c.replicas[0]!;
      const started = Date.now();
      const result = await faultAndCheck(c, 'g');
      assert.equal(result.newPrimary, target);
      const entries = JSON.parse((await c.cluster.cli(['history', '--json'])).stdout) as { reason: string }[];
      assert.match(entries[entries.length - 1]!.reason, /switchover/i);
      console.log(`# (g) longest write pause around the switchover: ${c.writer.longestGap(started, started + 30_000)} ms`);
      report('g', result);
    });
  });

  it('(h) a diverged old primary returns: never starts as primary, is rewound, streams on the new timeline', { timeout: 120_000 }, async (t) => {
    await runCase(t, 'embedded', 'writes_h', async (c) => {
      const old = c.primary;
      const other = c.replicas;
      const result = await faultAndCheck(c, 'h');
      // The newest rows were only on the old primary (else this case tested nothing); now it holds exactly what the new primary has.
      const count = async (name: string) => Number((await c.cluster.sql<{ n: string }>(name, `SELECT count(*)::text AS n FROM ${DIVERGED_TABLE}`))[0]!.n);
      const kept = await count(result.newPrimary);
      assert.ok(kept < DIVERGED_ROWS, `the scenario diverged: ${result.newPrimary} has ${kept} of the ${DIVERGED_ROWS} rows the old primary wrote`);
      assert.equal(await count(old), kept, 'old primary rewound to the new timeline: the rows only it had are gone');
      // Rewind keeps the directory; neither the old primary nor the other replicas were re-cloned.
      for (const name of [old, ...other]) {
        assert.deepEqual(identity(c.cluster.member(name).config.postgres.dataDir), c.dirs.get(name), `${name} kept its data directory (no re-clone)`);
      }
      assert.match(readFileSync(c.cluster.member(old).logFile, 'utf8'), /rewind/i, 'the agent log says it rewound');
      report('h', result);
    });
  });
});

/** The old primary's agent starts again; once all are healthy and the heir takes writes, nothing acknowledged may be missing. */
async function rejoinAndVerify(c: Case, heir: string): Promise<void> {
  c.cluster.startAgent(c.primary);
  await c.cluster.waitHealthy(NAMES, 60_000);
  await c.writer.waitForAcks(20, 30_000, heir);
  await c.writer.stop();
  await c.pinned.stop();
  const result = await c.writer.verify(c.cluster);
  assert.deepEqual(result.lost, [], `${result.lost.length} of ${result.acknowledged} acknowledged commits lost`);
  assertDataDirsKept(c);
}

/** The first member of the primary's sync record, once there is one: the member a failover must promote. */
async function synchronousStandby(c: Case): Promise<string> {
  const keys = clusterKeys(c.cluster.clusterName);
  const members = await waitFor('a synchronous standby in the sync record', async () => {
    const kv = await c.cluster.store.get(keys.sync);
    const record = kv ? (JSON.parse(kv.value) as { leader: string; members: string[] }) : undefined;
    return record && record.leader === c.primary && record.members.length > 0 ? record.members : undefined;
  }, 30_000);
  return members[0]!;
}

describe('synchronous mode right after a failover', { timeout: 180_000 }, () => {
  it('(i) the new primary acknowledges nothing no other member holds: with the other replica frozen it waits (synchronousFallbackMs), then nothing is lost', async (t) => {
    await runCase(t, 'etcd', 'writes_i', async (c) => {
      const { cluster } = c;
      const heir = await synchronousStandby(c);
      const other = c.replicas.find((r) => r !== heir)!;
      // The other replica is frozen: once the primary is gone, the heir has no standby at all.
      c.faults.stop(other, 'both');
      const { at } = await c.faults.kill(c.primary, 'both');
      await waitFor(`${heir} to take over`, async () => (await cluster.status(heir))?.state === 'primary', 30_000);
      const promotedAt = Date.now();
      // The absence of acknowledgements can only be observed over a span: several agent loops.
      await new Promise((resolve) => setTimeout(resolve, 4_000));
      const early = c.writer.acks.filter((a) => a.server === heir && a.sentAt >= at);
      assert.equal(
        early.length,
        0,
        `${heir} acknowledged ${early.length} writes within ${Date.now() - promotedAt} ms of taking over while no other member could hold them ` +
          `(synchronousFallbackMs ${SETTINGS.synchronousFallbackMs}); the next single failure would lose them`,
      );
      c.faults.resume(other, 'both');
      await rejoinAndVerify(c, heir);
    });
  });
});

describe('a replica that received more than the new primary', { timeout: 180_000 }, () => {
  it('(j) cannot get the new primary to acknowledge commits it does not hold: it is rewound before it may acknowledge, and then commits wait for it', async (t) => {
    await runCase(t, 'embedded', 'writes_j', async (c) => {
      const { cluster } = c;
      const heir = await synchronousStandby(c);
      const ahead = c.replicas.find((r) => r !== heir)!;
      // The heir stops receiving at the start of a WAL segment; the other replica replays ~13 MB more
      // in that same segment (never acknowledged under the synchronous guarantee). Once the heir is
      // promoted, the timeline forks early in that segment: a standby asks to stream from the start
      // of the segment it is replaying, which the new primary serves up to the fork, so the replica
      // that is ahead may connect and report its own, further position.
      await cluster.sql(c.primary, 'SELECT pg_switch_wal()');
      const segmentStart = (await cluster.sql<{ lsn: string }>(c.primary, 'SELECT pg_current_wal_lsn()::text AS lsn'))[0]!.lsn;
      await waitFor(`${heir} to receive up to ${segmentStart}`, async () => {
        const rows = await cluster.sql<{ done: boolean }>(heir, `SELECT pg_last_wal_receive_lsn() >= '${segmentStart}'::pg_lsn AS done`);
        return rows[0]?.done === true;
      }, 30_000);
      const frozen = c.faults.stopByTitle(heir, /walreceiver/).pids;
      try {
        for (let i = 0; i < 2; i++) {
          await cluster.sql(c.primary, `SET synchronous_commit = local; INSERT INTO ${PROBE_TABLE} (at) SELECT clock_timestamp() FROM generate_series(1, 50000)`);
        }
        const lsn = (await cluster.sql<{ lsn: string }>(c.primary, 'SELECT pg_current_wal_lsn()::text AS lsn'))[0]!.lsn;
        await waitFor(`${ahead} to replay up to ${lsn}`, async () => {
          const rows = await cluster.sql<{ done: boolean }>(ahead, `SELECT pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn AS done`);
          return rows[0]?.done === true;
        }, 30_000);
        // Its agent is down through the election: nobody can learn that it holds more than the heir
        // (had it answered, it would have been promoted itself, and nobody would have diverged).
        await c.faults.kill(ahead, 'agent');
        await c.faults.kill(c.primary, 'both');
      } finally {
        c.faults.resumePids(frozen);
      }
      await waitFor(`${heir} to take over`, async () => (await cluster.status(heir))?.state === 'primary', 30_000);
      // A freshly started agent adopts the running, diverged standby.
      cluster.startAgent(ahead);
      // The replica that is ahead must be reconciled and stream the new timeline: only then may it acknowledge.
      await waitFor(`${ahead} streaming on ${heir}'s timeline`, async () => {
        const [p, r] = [await cluster.status(heir), await cluster.status(ahead)];
        return p && r && r.state === 'replica' && r.streaming && r.receivedTimeline === p.timeline;
      }, 60_000);
      await c.writer.waitForAcks(5, 30_000, heir);
      // Now it is the only standby: freeze its walreceiver, and commits must wait. Had it once
      // reported its own further position as a synchronous standby, the primary would still
      // acknowledge every commit below that position without waiting.
      const receiver = c.faults.stopByTitle(ahead, /walreceiver/).pids;
      const frozenAt = Date.now();
      try {
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        const unsafe = c.writer.acks.filter((a) => a.server === heir && a.sentAt > frozenAt + 200);
        assert.equal(unsafe.length, 0, `${heir} acknowledged ${unsafe.length} commits while its only standby ${ahead} received nothing`);
      } finally {
        c.faults.resumePids(receiver);
      }
      await rejoinAndVerify(c, heir);
    });
  });
});

describe('impossible requests', { timeout: 120_000 }, () => {
  it('exit 2 with a message naming why, and change nothing', async (t) => {
    await runCase(t, 'embedded', 'writes_x', async (c) => {
      const { cluster } = c;
      const keys = clusterKeys(cluster.clusterName);
      const state = async () => {
        const leader = await cluster.store.get(keys.leader);
        const members = await cluster.memberStatuses();
        const history = await cluster.store.get(keys.history);
        return {
          leader: leader ? (JSON.parse(leader.value) as { member: string }).member : null,
          primaries: members.filter((m) => m.state === 'primary').map((m) => m.name),
          timelines: members.map((m) => `${m.name}:${m.timeline}`).sort(),
          history: history?.value ?? null,
        };
      };
      const expectRefused = async (args: string[], mentions: RegExp, why: RegExp) => {
        const before = await state();
        const result = await cluster.cli(args);
        const output = `${result.stderr}${result.stdout}`;
        assert.equal(result.code, 2, `relevo ${args.join(' ')} exits 2, got ${result.code}: ${output}`);
        assert.match(output, mentions, `relevo ${args.join(' ')} names what is wrong`);
        assert.match(output, why, `relevo ${args.join(' ')} says why`);
        assert.deepEqual(await state(), before, `relevo ${args.join(' ')} changed nothing`);
      };

      await expectRefused(['switchover', '--to', 'nosuch'], /nosuch/, /unknown|no (such )?member|not a member/i);
      await expectRefused(['switchover', '--to', c.primary], new RegExp(c.primary), /already|is the primary|current primary/i);

      const paused = await cluster.cli(['pause']);
      assert.equal(paused.code, 0, paused.stderr);
      await expectRefused(['pause'], /pause/i, /already/i);

      // A replica that stopped receiving WAL while the others commit: promoting it would lose acknowledged commits.
      const syncKv = await cluster.store.get(keys.sync);
      const syncMembers = syncKv ? (JSON.parse(syncKv.value) as { members: string[] }).members : [];
      const lagging = c.replicas.find((r) => !syncMembers.includes(r)) ?? c.replicas[1]!;
      const healthy = c.replicas.find((r) => r !== lagging)!;
      const receiver = c.faults.stopByTitle(lagging, /walreceiver/);
      try {
        await cluster.sql(c.primary, `CREATE TABLE bulk AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g`);
        await waitFor(`${lagging} to lag by more than the failover limit`, async () => {
          const s = await cluster.status(lagging);
          return s && s.lagBytes !== null && s.lagBytes > 2 * 1_048_576 ? s : undefined;
        }, 30_000);

        // The primary is lost while paused: nobody takes over, and the operator must not be allowed to pick the lagging replica.
        await c.writer.stop();
        await c.pinned.stop();
        await c.faults.kill(c.primary, 'both');
        await waitFor('the dead primary to lose its lease and its status', async () => {
          const leader = await cluster.store.get(keys.leader);
          const names = (await cluster.memberStatuses()).map((m) => m.name);
          return leader === undefined && !names.includes(c.primary);
        }, 30_000);
        await expectRefused(['failover', '--to', lagging], new RegExp(lagging), /lag|behind|lose|not (in the )?sync/i);
        await expectRefused(['switchover'], /primary|pause/i, /no primary|paused/i);
      } finally {
        c.faults.resumePids(receiver.pids);
      }

      // Automation resumes: the healthy replica takes over, the old primary comes back as a replica.
      const resumed = await cluster.cli(['resume']);
      assert.equal(resumed.code, 0, resumed.stderr);
      await waitFor(`${healthy} to take over`, async () => (await cluster.status(healthy))?.state === 'primary', 30_000);
      cluster.startAgent(c.primary);
      await cluster.waitHealthy(NAMES, 60_000);

      // With a live primary, a lagging candidate is refused by switchover and failover alike.
      // Stop the replica outside the new synchronous set, or commits would wait for it.
      const sync2 = await waitFor('a synchronous standby for the new primary', async () => {
        const kv = await cluster.store.get(keys.sync);
        const members = kv ? (JSON.parse(kv.value) as { leader: string; members: string[] }) : undefined;
        return members && members.leader === healthy && members.members.length > 0 ? members.members : undefined;
      }, 30_000);
      const behind = [c.primary, lagging].find((r) => !sync2.includes(r))!;
      const receiver2 = c.faults.stopByTitle(behind, /walreceiver/);
      try {
        await cluster.sql(healthy, `INSERT INTO bulk SELECT g, repeat('y', 500) FROM generate_series(20001, 40000) g`);
        await waitFor(`${behind} to lag`, async () => {
          const s = await cluster.status(behind);
          return s && s.lagBytes !== null && s.lagBytes > 2 * 1_048_576 ? s : undefined;
        }, 30_000);
        await expectRefused(['switchover', '--to', behind], new RegExp(behind), /lag|behind|not streaming/i);
        await expectRefused(['failover', '--to', behind], new RegExp(behind), /lag|behind|lose|not streaming/i);
      } finally {
        c.faults.resumePids(receiver2.pids);
      }
      await cluster.waitHealthy(NAMES, 30_000);
      await expectRefused(['resume'], /pause/i, /not paused|already/i);
      await cluster.waitHealthy(NAMES, 30_000);
    });
  });
});
