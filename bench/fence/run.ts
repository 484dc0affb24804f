/**
 * The fencer's false-positive rate under CPU starvation: a healthy 3-member
 * cluster on etcd (asynchronous mode, a writer every 10 ms) runs while busy
 * loops at nice 0 occupy every core, for --minutes per settings profile
 * (relevo's defaults: ttlMs 6000, fenceMarginMs 2000, loopWaitMs 1000; and the
 * fast test settings: 3000/1000/300). Nothing is frozen: every fence firing is
 * a false positive. Counted: the fencers' own count (their status files), the
 * agents' in-process watchdog stops, primaries lost; sampled every 50 ms: the
 * oldest feed an armed fencer saw (its headroom is ttlMs - fenceMarginMs).
 *
 *   node dist/bench/fence/run.js [--minutes M] [--busy N]
 *
 * No anchor tool: Patroni's equivalent is the watchdog device, absent on this
 * kernel (no /dev/watchdog, no softdog module). Writes bench/results/fence-<timestamp>.json and .md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ClusterSettings } from '../../src/cluster/settings.js';
import { monotonicMs } from '../../src/fence/deadline.js';
import { fenceFiles, readFeed, readFencerStatus } from '../../src/fence/files.js';
import { FAULT_TEST_MEMBERS, TestCluster } from '../../test/helpers/cluster.js';
import { startEtcd } from '../../test/helpers/etcd.js';
import { sleep } from '../../test/helpers/wait.js';
import { Writer } from '../../test/helpers/writer.js';

const { values } = parseArgs({ options: { minutes: { type: 'string', default: '2' }, busy: { type: 'string', default: String(cpus().length) } } });
const minutes = Number(values.minutes);
const busy = Number(values.busy);

const PROFILES: { name: string; settings: Partial<ClusterSettings> }[] = [
  { name: 'default', settings: { synchronousMode: 'off' } },
  { name: 'fast', settings: { synchronousMode: 'off', ttlMs: 3_000, loopWaitMs: 300, fenceMarginMs: 1_000 } },
];

interface Row {
  profile: string;
  minutes: number;
  busyLoops: number;
  thresholdMs: number;
  fencerFirings: number;
  watchdogStops: number;
  primaryChanges: number;
  worstFeedAgeMs: number;
  p99FeedAgeMs: number;
  acknowledged: number;
  loadAvg1: number;
}

async function runProfile(profile: (typeof PROFILES)[number]): Promise<Row> {
  const etcd = await startEtcd();
  const cluster = await TestCluster.create({ store: { endpoints: etcd.endpoints }, settings: profile.settings });
  const burners: ChildProcess[] = [];
  let writer: Writer | undefined;
  try {
    for (const name of FAULT_TEST_MEMBERS) await cluster.defineMember(name, { log: { level: 'info' } });
    for (const name of FAULT_TEST_MEMBERS) cluster.startAgent(name);
    const members = await cluster.waitHealthy(FAULT_TEST_MEMBERS, 120_000);
    const primary = members.find((m) => m.state === 'primary')!.name;
    writer = Writer.forCluster(cluster, 'fence_bench');
    await writer.start();
    // Busy loops at nice 0, one per core: the agents, etcd and PostgreSQL compete with them for every slice.
    for (let i = 0; i < busy; i++) burners.push(spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
    const ages: number[] = [];
    const until = Date.now() + minutes * 60_000;
    let primaryChanges = 0;
    let lastPrimary = primary;
    let nextStatus = 0;
    while (Date.now() < until) {
      const now = monotonicMs();
      for (const name of FAULT_TEST_MEMBERS) {
        const feed = readFeed(fenceFiles(cluster.member(name).config.postgres.dataDir).feed);
        if (feed?.armed) ages.push(now - feed.writtenMs);
      }
      if (Date.now() > nextStatus) {
        nextStatus = Date.now() + 2_000;
        const current = (await cluster.memberStatuses().catch(() => [])).find((m) => m.state === 'primary')?.name;
        if (current && current !== lastPrimary) {
          primaryChanges++;
          lastPrimary = current;
        }
      }
      await sleep(50);
    }
    const load = loadavg()[0]!;
    for (const b of burners) b.kill('SIGKILL');
    let fencerFirings = 0;
    let watchdogStops = 0;
    for (const name of FAULT_TEST_MEMBERS) {
      const member = cluster.member(name);
      fencerFirings += readFencerStatus(fenceFiles(member.config.postgres.dataDir).status)?.fences ?? 0;
      watchdogStops += (readFileSync(member.logFile, 'utf8').match(/stopping PostgreSQL before the lease can expire/g) ?? []).length;
    }
    ages.sort((a, b) => a - b);
    const s = { ttlMs: 6_000, fenceMarginMs: 2_000, ...profile.settings };
    return {
      profile: profile.name,
      minutes,
      busyLoops: busy,
      thresholdMs: s.ttlMs - s.fenceMarginMs,
      fencerFirings,
      watchdogStops,
      primaryChanges,
      worstFeedAgeMs: Math.round(ages[ages.length - 1] ?? 0),
      p99FeedAgeMs: Math.round(ages[Math.floor(ages.length * 0.99)] ?? 0),
      acknowledged: writer.acknowledged,
      loadAvg1: Math.round(load * 100) / 100,
    };
  } finally {
    for (const b of burners) if (b.exitCode === null && b.signalCode === null) b.kill('SIGKILL');
    await writer?.stop().catch(() => undefined);
    await cluster.destroy();
    await etcd.stop();
  }
}

function table(rows: Row[]): string {
  const head = '| settings | minutes | busy loops | fence threshold (ms) | fencer firings | agent watchdog stops | primary changes | worst feed age (ms) | p99 feed age (ms) | commits | load avg |';
  const lines = rows.map((r) => `| ${r.profile} | ${r.minutes} | ${r.busyLoops} | ${r.thresholdMs} | ${r.fencerFirings} | ${r.watchdogStops} | ${r.primaryChanges} | ${r.worstFeedAgeMs} | ${r.p99FeedAgeMs} | ${r.acknowledged} | ${r.loadAvg1} |`);
  return [head, '|---|---|---|---|---|---|---|---|---|---|---|', ...lines].join('\n');
}

const started = new Date();
const rows: Row[] = [];
for (const profile of PROFILES) {
  rows.push(await runProfile(profile));
  console.log(table(rows));
}
const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');
mkdirSync(dir, { recursive: true });
const stamp = started.toISOString().replace(/:/g, '-').replace(/\..*$/, '');
writeFileSync(join(dir, `fence-${stamp}.json`), `${JSON.stringify({ started: started.toISOString(), minutes, busy, cores: cpus().length, rows }, null, 2)}\n`);
writeFileSync(
  join(dir, `fence-${stamp}.md`),
  [
    `# Fencer false positives under CPU starvation (${started.toISOString()})`,
    '',
    `${cpus().length} cores, ${busy} busy loops at nice 0, a healthy 3-member cluster on etcd (asynchronous, writer every 10 ms), nothing frozen: every firing is a false positive. Measured under load (other helpers share the machine). No anchor: Patroni's counterpart needs /dev/watchdog, absent here.`,
    '',
    table(rows),
    '',
  ].join('\n'),
);
console.log(`\nwritten bench/results/fence-${stamp}.json and .md`);
process.exit(0);
