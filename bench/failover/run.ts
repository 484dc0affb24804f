/**
 * Failover benchmark: injects each fault of issue 3 N times into a local
 * 3-member cluster (real agents, real PostgreSQL 15, etcd or the embedded
 * store) while a multi-host read-write client writes, and measures
 *   - write unavailability: from the fault to the first write acknowledged by
 *     the new primary, as seen by that client;
 *   - acknowledged commits lost (checked on the final primary);
 *   - time until the old primary streams again, from the moment it is given
 *     back (process continued or agent restarted).
 * At the default settings and at the fastest documented safe settings.
 *
 * Issue 16 adds faults i (synchronous standby lost) and j (store outage with
 * every member healthy), where the primary stays and the longest write pause
 * counts; --sync and --failsafe run each fault in those variants. With
 * --router on, a second writer goes through relevo's router (relay mode, as
 * `relevo router -c <member file>` sets it up) during the same fault, and
 * its longest pause, failed writes and lost commits are recorded too.
 *
 *   node dist/bench/failover/run.js [--runs N] [--settings default|fast|both]
 *        [--sync on|quorum|both] [--failsafe off|on|both]
 *        [--faults a,b,c,d,e,f,g,h,i,j] [--store etcd|embedded]
 *        [--connect-timeout MS] [--query-timeout MS] [--tls on|off] [--router on|off]
 *
 * Writes bench/results/failover-<timestamp>.json and .md and prints the table.
 *
 * The client's own timeouts bound what it can see: it notices a hung server
 * only after --query-timeout and skips a hung host after --connect-timeout
 * (libpq's connect_timeout cannot go below 2 s), so both are part of the
 * measured unavailability and recorded with the results.
 */
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { defaultClusterSettings, type ClusterSettings } from '../../src/cluster/settings.js';
import { TestCluster } from '../../test/helpers/cluster.js';
import { startEtcd, type EtcdProcess } from '../../test/helpers/etcd.js';
import { FAULT_DESCRIPTIONS as INJECTED_FAULTS, FAULT_KINDS as INJECTED_KINDS, Faults, inject, type FaultKind as InjectedFault } from '../../test/helpers/faults.js';
import { clusterKeys } from '../../src/cluster/keys.js';
import { routerOptionsOf } from '../../src/cli/router-command.js';
import { startRouter, type RouterHandle } from '../../src/router/index.js';
import { clusterCaFile } from '../../src/tls/member.js';
import { TEST_APP_ROLE } from '../../test/helpers/cluster.js';
import { sleep, waitFor } from '../../test/helpers/wait.js';
import { Writer } from '../../test/helpers/writer.js';

const NAMES = ['node1', 'node2', 'node3'];

/** Issue 3's faults, plus issue 16's: the primary stays, what counts is the longest write pause. */
type FaultKind = InjectedFault | 'i' | 'j';
const FAULT_KINDS: readonly FaultKind[] = [...INJECTED_KINDS, 'i', 'j'];
const STORE_OUTAGE_MS = 10_000;
const FAULT_DESCRIPTIONS: Record<FaultKind, string> = {
  ...INJECTED_FAULTS,
  i: "synchronous standby lost: SIGKILL a synchronous (or quorum) standby's agent and PostgreSQL",
  j: `store outage with every member healthy: etcd frozen (SIGSTOP) for ${STORE_OUTAGE_MS / 1000} s`,
};

const PROFILES: Record<'default' | 'fast', Partial<ClusterSettings>> = {
  default: {},
  // docs/configuration.md: the fastest documented safe timing.
  fast: { ttlMs: 2_000, loopWaitMs: 250, fenceMarginMs: 800 },
};

interface RunResult {
  profile: string;
  fault: FaultKind;
  run: number;
  oldPrimary: string;
  newPrimary: string | null;
  /** Fault → first write acknowledged by the new primary ('g': the longest pause between acknowledged writes). */
  unavailabilityMs: number | null;
  /** 'f' only: store back → first acknowledged write. */
  afterStoreBackMs: number | null;
  /** Old primary given back → streaming on the new timeline (null when it stayed primary). */
  rejoinMs: number | null;
  acknowledged: number;
  lost: number;
  /** The first lost acknowledged writes: id, which server acknowledged it, when (ISO). */
  lostSample: { id: number; server: string; ackedAt: string; lsn: string | null }[];
  error: string | null;
  /** Where the member logs of this run were copied, when it failed or lost commits. */
  logs: string | null;
  /** --router on: the writer through the router, over the same fault. */
  router: { pauseMs: number; errors: number; acknowledged: number; lost: number; firstErrors: string[] } | null;
}

interface Options {
  runs: number;
  profiles: ('default' | 'fast')[];
  syncModes: ('on' | 'quorum')[];
  failsafe: boolean[];
  faults: FaultKind[];
  store: 'etcd' | 'embedded';
  connectTimeoutMs: number;
  queryTimeoutMs: number;
  /** TLS on every link (the default of real clusters), or off to measure its cost. */
  tls: boolean;
  /** A second writer through relevo's router during each fault. */
  router: boolean;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      settings: { type: 'string', default: 'both' },
      faults: { type: 'string', default: 'a,b,c,d,e,f,g,h' },
      store: { type: 'string', default: 'etcd' },
      sync: { type: 'string', default: 'on' },
      failsafe: { type: 'string', default: 'off' },
      'connect-timeout': { type: 'string', default: '500' },
      'query-timeout': { type: 'string', default: '1000' },
      tls: { type: 'string', default: 'on' },
      router: { type: 'string', default: 'off' },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs: expected a positive integer, got ${values.runs}`);
  const settings = values.settings!;
  if (!['default', 'fast', 'both'].includes(settings)) throw new Error(`--settings: expected default, fast or both, got ${settings}`);
  const faults = values.faults!.split(',').map((f) => f.trim()).filter(Boolean);
  for (const f of faults) if (!(FAULT_KINDS as readonly string[]).includes(f)) throw new Error(`--faults: unknown fault "${f}"; known: ${FAULT_KINDS.join(',')}`);
  const store = values.store!;
  if (store !== 'etcd' && store !== 'embedded') throw new Error(`--store: expected etcd or embedded, got ${store}`);
  if (values.tls !== 'on' && values.tls !== 'off') throw new Error(`--tls: expected on or off, got ${values.tls}`);
  if (values.router !== 'on' && values.router !== 'off') throw new Error(`--router: expected on or off, got ${values.router}`);
  const ms = (name: string, value: string | undefined) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 50) throw new Error(`--${name}: expected milliseconds ≥ 50, got ${value}`);
    return n;
  };
  const list = <T extends string>(name: string, value: string, allowed: readonly T[]): T[] => {
    const items = value === 'both' ? [...allowed] : value.split(',').map((v) => v.trim());
    for (const item of items) if (!(allowed as readonly string[]).includes(item)) throw new Error(`--${name}: expected ${allowed.join(', ')} or both, got ${item}`);
    return items as T[];
  };
  if (store !== 'etcd' && faults.includes('j')) throw new Error("--faults j (store outage) needs --store etcd");
  return {
    runs,
    profiles: settings === 'both' ? ['default', 'fast'] : [settings as 'default' | 'fast'],
    syncModes: list('sync', values.sync!, ['on', 'quorum'] as const),
    failsafe: list('failsafe', values.failsafe!, ['off', 'on'] as const).map((v) => v === 'on'),
    faults: faults as FaultKind[],
    store,
    connectTimeoutMs: ms('connect-timeout', values['connect-timeout']),
    queryTimeoutMs: ms('query-timeout', values['query-timeout']),
    tls: values.tls === 'on',
    router: values.router === 'on',
  };
}

/** A fresh cluster, or the previous one if it is healthy again. */
class ClusterPool {
  private cluster: TestCluster | undefined;
  private faults: Faults | undefined;
  private etcd: EtcdProcess | undefined;

  constructor(
    private readonly settings: ClusterSettings,
    private readonly store: 'etcd' | 'embedded',
    private readonly tls: boolean,
  ) {}

  async healthy(): Promise<{ cluster: TestCluster; faults: Faults; etcd: EtcdProcess | undefined }> {
    if (this.cluster) {
      try {
        await this.cluster.waitHealthy(NAMES, 60_000);
        // Each run starts from a settled cluster: every replica streams on the primary's timeline
        // (a replica the last run left diverged reports the new timeline before it is rewound).
        const cluster = this.cluster;
        await waitFor('every replica streaming on the primary\'s timeline', async () => {
          const members = await cluster.memberStatuses();
          const primary = members.find((m) => m.state === 'primary');
          return primary !== undefined && members.length === NAMES.length && members.every((m) => m === primary || (m.timeline === primary.timeline && m.streaming));
        }, 60_000);
        return { cluster: this.cluster, faults: this.faults!, etcd: this.etcd };
      } catch (error) {
        console.error(`# cluster not healthy again (${(error as Error).message.split('\n')[0]}): starting a new one`);
        await this.close();
      }
    }
    if (this.store === 'etcd') this.etcd = await startEtcd();
    this.cluster = await TestCluster.create({ store: this.store === 'etcd' ? { endpoints: this.etcd!.endpoints } : 'embedded', settings: this.settings, tls: this.tls });
    this.faults = new Faults(this.cluster);
    // Failsafe asks peers over the authenticated API: every member gets the same credentials.
    const password = join(this.cluster.dir, 'api-password');
    writeFileSync(password, 'bench-api-password\n', { mode: 0o600 });
    chmodSync(password, 0o600);
    for (const name of NAMES) await this.cluster.defineMember(name, { api: { auth: { username: 'relevo', password: { file: password } } } });
    for (const name of NAMES) this.cluster.startAgent(name);
    await this.cluster.waitHealthy(NAMES, 120_000);
    return { cluster: this.cluster, faults: this.faults, etcd: this.etcd };
  }

  async close(): Promise<void> {
    await this.faults?.cleanup();
    await this.cluster?.destroy();
    await this.etcd?.stop();
    this.cluster = undefined;
    this.faults = undefined;
    this.etcd = undefined;
  }
}

/** Copies every member's agent and PostgreSQL log, so a failed or lossy run can be explained later. */
function keepLogs(cluster: TestCluster, dir: string): string {
  mkdirSync(dir, { recursive: true });
  for (const member of cluster.members.values()) {
    for (const [from, to] of [
      [member.logFile, `${member.name}.agent.log`],
      [`${member.config.postgres.dataDir}.log`, `${member.name}.postgres.log`],
    ] as const) {
      try {
        copyFileSync(from, join(dir, to));
      } catch {
        // not created yet
      }
    }
  }
  return dir;
}

interface PauseOutcome {
  name: string;
  faultAt: number;
  pauseMs: number;
  afterStoreBackMs?: number;
  rejoinMs?: number;
}

async function readMembers(cluster: TestCluster, key: 'sync' | 'quorum'): Promise<string[]> {
  const kv = await cluster.store.get(clusterKeys(cluster.clusterName)[key]);
  return kv ? (JSON.parse(kv.value) as { members: string[] }).members : [];
}

/** 'i': kill a standby that acknowledges commits; the longest pause until it is replaced and 100 more commits went through. */
async function standbyLost(cluster: TestCluster, faults: Faults, writer: Writer, settings: ClusterSettings, primary: string): Promise<PauseOutcome> {
  const key = settings.synchronousMode === 'quorum' ? 'quorum' : 'sync';
  const recorded = await waitFor(`a standby in the ${key} record`, async () => {
    const members = await readMembers(cluster, key);
    return members.length > 0 ? members : undefined;
  }, 60_000);
  const lost = recorded[0]!;
  const { at } = await faults.kill(lost, 'both');
  await waitFor(`${lost} out of the ${key} record`, async () => !(await readMembers(cluster, key)).includes(lost), 90_000, 50);
  await writer.waitForAcks(100, 90_000, primary);
  const pauseMs = writer.longestGap(at, Date.now());
  cluster.startAgent(lost);
  const given = Date.now();
  await waitFor(`${lost} streaming again`, async () => {
    const status = await cluster.status(lost);
    // Its status from before the kill may still be in the store: only a fresh one counts.
    return status !== undefined && status.streaming && Date.parse(status.updatedAt) > given;
  }, 120_000, 100);
  return { name: primary, faultAt: at, pauseMs, rejoinMs: Date.now() - given };
}

/** 'j': etcd frozen for STORE_OUTAGE_MS with every member up; the longest pause until 50 commits after it came back. */
async function storeOutage(cluster: TestCluster, faults: Faults, writer: Writer, etcd: EtcdProcess): Promise<PauseOutcome> {
  const { at } = faults.suspendEtcd(etcd);
  await sleep(STORE_OUTAGE_MS);
  const back = faults.resumeEtcd(etcd).at;
  await writer.waitForAcks(50, 90_000);
  const status = await waitFor('a primary after the store outage', async () => (await cluster.memberStatuses()).find((m) => m.state === 'primary'), 90_000, 100);
  const resumed = writer.firstAckAfter(back);
  return { name: status.name, faultAt: at, pauseMs: writer.longestGap(at, Date.now()), afterStoreBackMs: resumed ? Math.max(0, resumed.ackedAt - back) : undefined };
}

async function runOnce(pool: ClusterPool, profile: string, settings: ClusterSettings, fault: FaultKind, run: number, options: Options, logRoot: string): Promise<RunResult> {
  const result: RunResult = { profile, fault, run, oldPrimary: '', newPrimary: null, unavailabilityMs: null, afterStoreBackMs: null, rejoinMs: null, acknowledged: 0, lost: 0, lostSample: [], error: null, logs: null, router: null };
  const { cluster, faults, etcd } = await pool.healthy();
  const members = await cluster.memberStatuses();
  const primary = members.find((m) => m.state === 'primary')!;
  const replicas = members.filter((m) => m.name !== primary.name).map((m) => m.name);
  result.oldPrimary = primary.name;
  const table = `bench_${profile.replace(/[^a-z0-9_]/g, '_')}_${fault}_${run}`;
  const writer = Writer.forCluster(cluster, table, { connectTimeoutMs: options.connectTimeoutMs, queryTimeoutMs: options.queryTimeoutMs });
  let routed: { router: RouterHandle; writer: Writer } | undefined;
  let faultAt: number | undefined;
  try {
    await writer.start();
    if (options.router) routed = await routedWriter(cluster, `${table}_routed`, options);
    await writer.waitForAcks(50);
    let name: string;
    if (fault === 'i' || fault === 'j') {
      const outcome = fault === 'i' ? await standbyLost(cluster, faults, writer, settings, primary.name) : await storeOutage(cluster, faults, writer, etcd!);
      faultAt = outcome.faultAt;
      name = outcome.name;
      result.newPrimary = name;
      result.unavailabilityMs = outcome.pauseMs;
      result.afterStoreBackMs = outcome.afterStoreBackMs ?? null;
      result.rejoinMs = outcome.rejoinMs ?? null;
    } else {
      const staged = await inject({ cluster, faults, writer, primary: primary.name, replicas, ttlMs: settings.ttlMs, etcd, timeoutMs: 90_000 }, fault);
      faultAt = staged.faultAt;
      ({ name } = await staged.awaitPrimary());
      result.newPrimary = name;
      if (staged.storeBackAt !== undefined) {
        // The primary keeps acknowledging until it fences itself: the outage is the longest silence until writes resume after the store is back.
        const resumed = writer.firstAckAfter(staged.storeBackAt, name);
        if (resumed) {
          result.unavailabilityMs = writer.longestGap(staged.faultAt, resumed.ackedAt);
          result.afterStoreBackMs = resumed.ackedAt - staged.storeBackAt;
        }
      } else if (fault === 'g') {
        // A switchover starts with the CLI, long before writes stop: what counts is the longest pause.
        const first = writer.firstAckAfter(staged.faultAt, name);
        if (first) result.unavailabilityMs = writer.longestGap(staged.faultAt, first.ackedAt);
      } else {
        result.unavailabilityMs = writer.unavailability(staged.faultAt, name) ?? null;
      }
      const returnedAt = (await staged.recover()) ?? staged.storeBackAt ?? staged.faultAt;
      if (name !== primary.name) {
        await waitFor(
          `${primary.name} streaming again on a newer timeline`,
          async () => {
            const s = await cluster.status(primary.name);
            return s && s.state === 'replica' && s.streaming && (s.timeline ?? 0) > (primary.timeline ?? 0);
          },
          120_000,
          50,
        );
        result.rejoinMs = Date.now() - returnedAt;
      }
    }
    await writer.waitForAcks(20, 30_000, name);
    if (routed && faultAt !== undefined) {
      await routed.writer.waitForAcks(20, 30_000);
      await routed.writer.stop();
      const verifiedRouted = await routed.writer.verify(cluster);
      result.router = {
        pauseMs: routed.writer.longestGap(faultAt, Date.now()),
        // Failed statements and refused or failed connections alike: each is an error an application sees.
        errors: routed.writer.failures.filter((f) => f.at >= faultAt!).length,
        // What the client saw, and when after the fault: to tell a router refusal from a server going away.
        firstErrors: routed.writer.failures.filter((f) => f.at >= faultAt!).slice(0, 3).map((f) => `+${f.at - faultAt!} ms ${f.phase}: ${f.message}`),
        acknowledged: verifiedRouted.acknowledged,
        lost: verifiedRouted.lost.length,
      };
    }
    await writer.stop();
    const verified = await writer.verify(cluster);
    result.acknowledged = verified.acknowledged;
    result.lost = verified.lost.length;
    result.lostSample = sampleLost(writer, verified.lost);
    if (result.lost > 0) result.logs = keepLogs(cluster, join(logRoot, `${profile}-${fault}-${run}`));
  } catch (error) {
    result.error = (error as Error).message.split('\n')[0] ?? String(error);
    result.acknowledged = writer.acknowledged;
    await writer.stop();
    // Count what we can: a wrong verdict would be worse than none, so only when one primary exists.
    const verified = await writer.verify(cluster).catch(() => undefined);
    if (verified) {
      result.lost = verified.lost.length;
      result.lostSample = sampleLost(writer, verified.lost);
    }
    result.logs = keepLogs(cluster, join(logRoot, `${profile}-${fault}-${run}`));
    await routed?.writer.stop();
    await routed?.router.stop();
    routed = undefined;
    await pool.close();
  } finally {
    await routed?.writer.stop();
    await routed?.router.stop();
  }
  return result;
}

/**
 * relevo's router as `relevo router -c <member file>` sets it up (relay mode,
 * default timeouts, the member's API access for failsafe), in this process,
 * with a writer through its read-write port that carries TLS to the member.
 */
async function routedWriter(cluster: TestCluster, table: string, options: Options): Promise<{ router: RouterHandle; writer: Writer }> {
  const config = cluster.member(NAMES[0]!).config;
  const router = await startRouter({
    ...routerOptionsOf(config),
    name: 'bench-router',
    listen: { readWrite: '127.0.0.1:0', readOnly: null },
    metrics: null,
    store: cluster.storeConfig,
  });
  try {
    const [host, port] = [router.addresses.readWrite!.replace(/:\d+$/, ''), Number(router.addresses.readWrite!.split(':').pop())];
    const tlsCaFile = clusterCaFile(config);
    const writer = new Writer({ targets: [{ name: 'router', host, port }], user: TEST_APP_ROLE.user, password: TEST_APP_ROLE.password, ...(tlsCaFile ? { tlsCaFile } : {}), table, connectTimeoutMs: options.connectTimeoutMs, queryTimeoutMs: options.queryTimeoutMs });
    await waitFor('the router routing writes', async () => router.stats().primary !== null, 30_000, 100);
    await writer.start();
    await writer.waitForAcks(50);
    return { router, writer };
  } catch (error) {
    await router.stop();
    throw error;
  }
}

function sampleLost(writer: Writer, lost: number[]): RunResult['lostSample'] {
  const wanted = new Set(lost.slice(0, 20));
  return writer.acks.filter((a) => wanted.has(a.id)).map((a) => ({ id: a.id, server: a.server, ackedAt: new Date(a.ackedAt).toISOString(), lsn: a.lsn }));
}

function stats(values: number[]): { median: number; min: number; max: number } | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]! };
}

const seconds = (ms: number) => (ms / 1000).toFixed(2);
const fmt = (s: ReturnType<typeof stats>) => (s ? `${seconds(s.median)} (${seconds(s.min)}–${seconds(s.max)})` : '–');

interface SummaryRow {
  profile: string;
  fault: FaultKind;
  runs: number;
  failedRuns: number;
  unavailability: ReturnType<typeof stats>;
  afterStoreBack: ReturnType<typeof stats>;
  rejoin: ReturnType<typeof stats>;
  acknowledged: number;
  lost: number;
  router: { pause: ReturnType<typeof stats>; errors: number; acknowledged: number; lost: number } | null;
}

function summarize(results: RunResult[]): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const keys = [...new Set(results.map((r) => `${r.profile}/${r.fault}`))];
  for (const key of keys) {
    const runs = results.filter((r) => `${r.profile}/${r.fault}` === key);
    const ok = runs.filter((r) => r.error === null);
    rows.push({
      profile: runs[0]!.profile,
      fault: runs[0]!.fault,
      runs: runs.length,
      failedRuns: runs.length - ok.length,
      unavailability: stats(ok.map((r) => r.unavailabilityMs).filter((v): v is number => v !== null)),
      afterStoreBack: stats(ok.map((r) => r.afterStoreBackMs).filter((v): v is number => v !== null)),
      rejoin: stats(ok.map((r) => r.rejoinMs).filter((v): v is number => v !== null)),
      acknowledged: runs.reduce((n, r) => n + r.acknowledged, 0),
      lost: runs.reduce((n, r) => n + r.lost, 0),
      router: ok.some((r) => r.router)
        ? {
            pause: stats(ok.flatMap((r) => (r.router ? [r.router.pauseMs] : []))),
            errors: ok.reduce((n, r) => n + (r.router?.errors ?? 0), 0),
            acknowledged: ok.reduce((n, r) => n + (r.router?.acknowledged ?? 0), 0),
            lost: ok.reduce((n, r) => n + (r.router?.lost ?? 0), 0),
          }
        : null,
    });
  }
  return rows;
}

function table(rows: SummaryRow[]): string {
  const withRouter = rows.some((r) => r.router);
  const header = ['settings', 'fault', 'runs (failed)', 'write unavailability s, median (min–max)', 'old primary streaming again s', 'acked', 'lost', ...(withRouter ? ['through the router: longest pause s', 'client errors', 'acked', 'lost'] : [])];
  const lines = rows.map((r) => [
    r.profile,
    `${r.fault}: ${FAULT_DESCRIPTIONS[r.fault]}`,
    `${r.runs} (${r.failedRuns})`,
    r.fault === 'f' || r.fault === 'j' ? `${fmt(r.unavailability)}; after store back ${fmt(r.afterStoreBack)}` : fmt(r.unavailability),
    fmt(r.rejoin),
    String(r.acknowledged),
    String(r.lost),
    ...(withRouter ? (r.router ? [fmt(r.router.pause), String(r.router.errors), String(r.router.acknowledged), String(r.router.lost)] : ['–', '–', '–', '–']) : []),
  ]);
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...lines.map((l) => `| ${l.join(' | ')} |`)].join('\n');
}

async function main(): Promise<void> {
  const options = parseOptions();
  const started = new Date();
  const stamp = started.toISOString().replace(/[:.]/g, '-').replace(/-\d{3}Z$/, '');
  const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');
  const logRoot = join(dir, `failover-${stamp}-logs`);
  const results: RunResult[] = [];
  const profiles: Record<string, ClusterSettings> = {};
  let pool: ClusterPool | undefined;
  // Ctrl-C must not leave stopped processes or clusters behind.
  process.once('SIGINT', () => {
    void (pool?.close() ?? Promise.resolve()).finally(() => process.exit(130));
  });
  try {
    const variants = options.profiles.flatMap((base) =>
      options.syncModes.flatMap((sync) =>
        options.failsafe.map((failsafe) => ({
          name: options.syncModes.length * options.failsafe.length === 1 && sync === 'on' && !failsafe ? base : `${base}/${sync}/failsafe-${failsafe ? 'on' : 'off'}`,
          settings: { ...defaultClusterSettings(), ...PROFILES[base], synchronousMode: sync, failsafe },
        })),
      ),
    );
    for (const { name: profile, settings } of variants) {
      profiles[profile] = settings;
      pool = new ClusterPool(settings, options.store, options.tls);
      try {
        for (const fault of options.faults) {
          for (let run = 1; run <= options.runs; run++) {
            const result = await runOnce(pool, profile, settings, fault, run, options, logRoot);
            results.push(result);
            console.log(
              `${profile} ${fault} #${run}: ${result.error ? `FAILED (${result.error})` : `${result.oldPrimary} → ${result.newPrimary}`}, ` +
                `unavailable ${result.unavailabilityMs ?? '–'} ms${result.afterStoreBackMs !== null ? ` (${result.afterStoreBackMs} ms after the store came back)` : ''}, ` +
                `rejoin ${result.rejoinMs ?? '–'} ms, ${result.acknowledged} acked, ${result.lost} lost` +
                (result.router ? `; through the router: longest pause ${result.router.pauseMs} ms, ${result.router.errors} errors${result.router.firstErrors.length ? ` (${result.router.firstErrors.join('; ')})` : ''}, ${result.router.acknowledged} acked, ${result.router.lost} lost` : ''),
            );
          }
        }
      } finally {
        await pool.close();
      }
    }
  } finally {
    await pool?.close();
  }

  const rows = summarize(results);
  const environment = { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', loadavgAtEnd: loadavg(), node: process.version };
  const client = { connectTimeoutMs: options.connectTimeoutMs, queryTimeoutMs: options.queryTimeoutMs, writeIntervalMs: 10 };
  mkdirSync(dir, { recursive: true });
  const json = { started: started.toISOString(), finished: new Date().toISOString(), options, profiles, client, environment, summary: rows, runs: results };
  writeFileSync(join(dir, `failover-${stamp}.json`), `${JSON.stringify(json, null, 2)}\n`);
  const md = [
    `# Failover benchmark ${started.toISOString()}`,
    '',
    `3 members, synchronous mode, ${options.store} store, TLS ${options.tls ? 'on' : 'off'}, ${options.runs} run(s) per fault. Client: multi-host, read-write only, insert every 10 ms, ` +
      `connect timeout ${options.connectTimeoutMs} ms per host, statement timeout ${options.queryTimeoutMs} ms (both part of the unavailability it sees). ` +
      `Machine: ${environment.cpus} × ${environment.cpuModel}, load average at the end ${environment.loadavgAtEnd.map((l) => l.toFixed(2)).join(' ')}.`,
    '',
    ...Object.entries(profiles).map(([name, s]) => `- **${name}**: ttlMs ${s.ttlMs}, loopWaitMs ${s.loopWaitMs}, fenceMarginMs ${s.fenceMarginMs}, synchronousMode ${s.synchronousMode}, failsafe ${s.failsafe}`),
    '',
    table(rows),
    '',
    ...(options.router ? ['Through the router: a second writer (same client settings) through relevo\'s router in relay mode at its default settings, during the same fault; its longest pause between acknowledged writes from the fault until both writers wrote again, and every failed statement or connection from the fault on.', ''] : []),
    'Write unavailability: fault → first write acknowledged by the new primary (i, j: the longest pause between acknowledged writes from the fault until the standby was replaced / the store was back, and 50–100 commits more; f: the longest silence between acknowledged writes from the outage until writes resume after the store is back; g: the longest silence between acknowledged writes from the switchover command to the first write on the new primary). Old primary streaming again: from the moment it is given back (SIGCONT, agent restarted, store back) until it streams on the new timeline. Lost: acknowledged ids missing on the final primary.',
    '',
    ...(results.some((r) => r.error || r.lost > 0)
      ? [
          '## Failed or lossy runs',
          '',
          ...results
            .filter((r) => r.error || r.lost > 0)
            .map((r) => `- ${r.profile} ${r.fault} #${r.run}: ${r.error ?? `${r.lost} acknowledged commits lost, first: ${r.lostSample.slice(0, 3).map((l) => `id ${l.id} acked by ${l.server} at ${l.ackedAt} (WAL ${l.lsn ?? '?'})`).join('; ')}`}${r.logs ? ` (logs: ${relative(join(dir, '..', '..'), r.logs)})` : ''}`),
          '',
        ]
      : []),
  ].join('\n');
  writeFileSync(join(dir, `failover-${stamp}.md`), md);
  console.log(`\n${table(rows)}\n\nwritten bench/results/failover-${stamp}.json and .md`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
