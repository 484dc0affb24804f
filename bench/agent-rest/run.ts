/**
 * The agent at rest: CPU and memory of each agent of an idle 3-member
 * synchronous cluster on etcd, at relevo's default settings (1 s loop) with
 * metrics, the event log and the dashboard on (a Prometheus-like scrape of
 * /metrics and a dashboard poll of /cluster hit every agent during the window).
 * When Patroni is installed, a 3-member Patroni cluster (synchronous_mode, its
 * default 10 s loop) runs on the same etcd at the same time and is measured
 * over the same window, so both see the same machine load.
 *
 *   node dist/bench/agent-rest/run.js [--window S] [--rounds N] [--settle S] [--scrape S] [--store etcd|embedded] [--profile] [--no-patroni]
 *
 * Each round is one window over which every process is measured at once (relevo and
 * Patroni side by side, so both see the same load); rounds follow each other on the
 * same clusters and the summary gives each tool's median. relevo's fencer processes
 * (src/fence, one per member) are measured too, on rows of their own.
 *
 * --store embedded runs relevo on its embedded SQLite store (Patroni stays on etcd).
 *
 * --profile starts relevo's agents with --cpu-prof (profiles land in the
 * cluster directory, printed at the end). Writes bench/results/agent-rest-<timestamp>.json and .md.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TestCluster } from '../../test/helpers/cluster.js';
import { patroniHealthy, patroniInstalled, startPatroni } from './patroni.js';
import { startEtcd } from '../../test/helpers/etcd.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { startTlsEtcd } from './etcd-tls.js';
import { sleep } from '../../test/helpers/wait.js';

const NAMES = ['node1', 'node2', 'node3'];
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface ProcSample {
  /** utime + stime, in clock ticks. */
  ticks: number;
  rssBytes: number;
}

function sampleProc(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { ticks, rssBytes: Number(rss?.[1] ?? 0) * 1024 };
}

type Tool = 'relevo' | 'relevo fencer' | 'patroni';

interface AgentResult {
  tool: Tool;
  member: string;
  pid: number;
  cpuPercent: number;
  /** CPU ms per loop: CPU time over the window / loops in it. */
  cpuMsPerLoop: number;
  rssMb: number;
  maxRssMb: number;
}

interface Measured {
  tool: Tool;
  member: string;
  pid: number;
  loopSeconds: number;
}

/** Samples every process at the start and end of the window (and RSS once a second). */
async function measure(processes: Measured[], windowS: number, during: () => Promise<void>): Promise<AgentResult[]> {
  const start = new Map(processes.map((p) => [p.pid, sampleProc(p.pid)]));
  const maxRss = new Map(processes.map((p) => [p.pid, start.get(p.pid)!.rssBytes]));
  const startedAt = performance.now();
  const background = during();
  while (performance.now() - startedAt < windowS * 1000) {
    await sleep(1000);
    for (const p of processes) maxRss.set(p.pid, Math.max(maxRss.get(p.pid)!, sampleProc(p.pid).rssBytes));
  }
  const elapsedS = (performance.now() - startedAt) / 1000;
  await background;
  return processes.map((p) => {
    const end = sampleProc(p.pid);
    const cpuS = (end.ticks - start.get(p.pid)!.ticks) / CLK_TCK;
    return {
      tool: p.tool,
      member: p.member,
      pid: p.pid,
      cpuPercent: (cpuS / elapsedS) * 100,
      cpuMsPerLoop: (cpuS * 1000) / (elapsedS / p.loopSeconds),
      rssMb: end.rssBytes / 1024 ** 2,
      maxRssMb: maxRss.get(p.pid)! / 1024 ** 2,
    };
  });
}

function table(rows: AgentResult[]): string {
  const lines = ['| tool | member | CPU % of a core | CPU ms per loop | RSS MB (end) | RSS MB (max) |', '| --- | --- | --- | --- | --- | --- |'];
  for (const r of rows) lines.push(`| ${r.tool} | ${r.member} | ${r.cpuPercent.toFixed(3)} | ${r.cpuMsPerLoop.toFixed(2)} | ${r.rssMb.toFixed(1)} | ${r.maxRssMb.toFixed(1)} |`);
  return lines.join('\n');
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

interface ToolSummary {
  tool: Tool;
  /** Over every member and round. */
  cpuPercentMedian: number;
  cpuPercentMin: number;
  cpuPercentMax: number;
  cpuMsPerLoopMedian: number;
  maxRssMb: number;
}

function summarise(rounds: AgentResult[][]): ToolSummary[] {
  const all = rounds.flat();
  const tools = [...new Set(all.map((r) => r.tool))];
  return tools.map((tool) => {
    const rows = all.filter((r) => r.tool === tool);
    const cpu = rows.map((r) => r.cpuPercent);
    return {
      tool,
      cpuPercentMedian: median(cpu),
      cpuPercentMin: Math.min(...cpu),
      cpuPercentMax: Math.max(...cpu),
      cpuMsPerLoopMedian: median(rows.map((r) => r.cpuMsPerLoop)),
      maxRssMb: Math.max(...rows.map((r) => r.maxRssMb)),
    };
  });
}

function summaryTable(summary: ToolSummary[]): string {
  const lines = ['| tool | CPU % of a core, median (min–max) | CPU ms per loop, median | RSS MB, max |', '| --- | --- | --- | --- |'];
  for (const s of summary) lines.push(`| ${s.tool} | ${s.cpuPercentMedian.toFixed(3)} (${s.cpuPercentMin.toFixed(3)}–${s.cpuPercentMax.toFixed(3)}) | ${s.cpuMsPerLoopMedian.toFixed(2)} | ${s.maxRssMb.toFixed(1)} |`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { 'no-etcd-tls': { type: 'boolean', default: false }, window: { type: 'string', default: '30' }, rounds: { type: 'string', default: '3' }, settle: { type: 'string', default: '15' }, scrape: { type: 'string', default: '15' }, profile: { type: 'boolean', default: false }, store: { type: 'string', default: 'etcd' }, 'no-patroni': { type: 'boolean', default: false } },
  });
  const windowS = Number(values.window);
  const roundCount = Math.max(1, Number(values.rounds));
  const settleS = Number(values.settle);
  const scrapeS = Number(values.scrape);
  const storeKind = values.store === 'embedded' ? 'embedded' : 'etcd';
  const started = new Date();
  // etcd over TLS with a client certificate, as docs/deployment.md sets it up (--no-etcd-tls: plain HTTP).
  const etcdTls = values['no-etcd-tls'] ? undefined : await startTlsEtcd();
  const etcd = etcdTls?.etcd ?? (await startEtcd());
  let cluster: TestCluster | undefined;
  let patroni: Awaited<ReturnType<typeof startPatroni>> | undefined;
  const cleanup = async () => {
    await patroni?.stop().catch(() => undefined);
    await cluster?.destroy().catch(() => undefined);
    await etcd.stop();
    etcdTls?.cleanup();
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    // relevo's defaults for the loop and the lease, set explicitly: TestCluster's own are faster (500 ms), for tests.
    const defaults = defaultClusterSettings();
    cluster = await TestCluster.create({
      store: storeKind === 'embedded' ? 'embedded' : { endpoints: etcd.endpoints, ...(etcdTls ? { tls: etcdTls.files } : {}) },
      settings: { synchronousMode: 'on', loopWaitMs: defaults.loopWaitMs, ttlMs: defaults.ttlMs },
    });
    const profiles = join(cluster.dir, 'profiles');
    // node refuses --cpu-prof in NODE_OPTIONS: put it on the agent's command line.
    const placement = values.profile ? { address: '127.0.0.1', launcher: (argv: string[]) => [argv[0]!, '--cpu-prof', `--cpu-prof-dir=${profiles}`, ...argv.slice(1)] } : undefined;
    for (const name of NAMES) await cluster.defineMember(name, { log: { level: 'info' } }, placement);
    for (const name of NAMES) cluster.startAgent(name);
    const healthy = await cluster.waitHealthy(NAMES, 180_000);
    // Which row is the primary, and which agent serves the polled dashboard.
    const label = (name: string) => `${name} (${healthy.find((m) => m.name === name)?.role ?? '?'}${name === NAMES[0] ? ', dashboard' : ''})`;
    const withPatroni = !values['no-patroni'] && patroniInstalled();
    if (withPatroni) {
      patroni = await startPatroni(etcd, etcdTls?.files);
      await patroniHealthy(patroni.members, patroni.dir);
    } else {
      console.log('Patroni is not installed (Debian package patroni): measuring relevo alone');
    }
    await sleep(settleS * 1000);
    const relevo: Measured[] = NAMES.map((name) => ({ tool: 'relevo', member: label(name), pid: cluster!.member(name).agent!.pid!, loopSeconds: 1 }));
    // The fencer runs beside each agent (its own process, re-parented away from it); measured at relevo's loop period too.
    const fencers: Measured[] = NAMES.flatMap((name) => {
      const pid = cluster!.fencerPid(name);
      return pid === undefined ? [] : [{ tool: 'relevo fencer' as const, member: label(name), pid, loopSeconds: 1 }];
    });
    const c = cluster;
    // Over the agents' HTTPS API with the cluster CA, as Prometheus and a browser would (TLS is on by default).
    const get = async (name: string, path: string) => {
      const response = await c.api(name, path);
      if (response.status !== 200) throw new Error(`GET ${path} on ${name}: HTTP ${response.status}`);
      return response.body;
    };
    // What a monitored cluster sees: Prometheus scrapes every agent, one dashboard polls one agent each second.
    let scraping = true;
    const during = async () => {
      const scraper = (async () => {
        while (scraping) {
          await Promise.all(NAMES.map((name) => get(name, '/metrics')));
          await sleep(scrapeS * 1000);
        }
      })();
      const dashboard = (async () => {
        while (scraping) {
          await Promise.all([get(NAMES[0]!, '/cluster'), get(NAMES[0]!, '/events?limit=200')]);
          await sleep(1000);
        }
      })();
      // A failed scrape ends the window at once (and the run, through finally/cleanup), never as an unhandled rejection.
      const stop = () => {
        scraping = false;
      };
      scraper.catch(stop);
      dashboard.catch(stop);
      const deadline = Date.now() + windowS * 1000;
      while (scraping && Date.now() < deadline) await sleep(200);
      scraping = false;
      await Promise.all([scraper, dashboard]);
    };
    const rounds: AgentResult[][] = [];
    const loadavgAtRoundEnd: number[][] = [];
    for (let round = 1; round <= roundCount; round++) {
      const results = await measure([...relevo, ...fencers, ...(patroni?.members ?? [])], windowS, during);
      rounds.push(results);
      loadavgAtRoundEnd.push(loadavg());
      console.log(`\nround ${round}/${roundCount} (load ${loadavg().map((l) => l.toFixed(2)).join(' ')})\n${table(results)}`);
    }
    const summary = summarise(rounds);
    const environment = { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', loadavgAtEnd: loadavg(), loadavgAtRoundEnd, node: process.version, clockTicks: CLK_TCK };
    const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const stamp = started.toISOString().replace(/[:.]/g, '-').slice(0, 19);
    const options = { windowS, rounds: roundCount, etcdTls: etcdTls !== undefined, relevoLoopWaitMs: defaults.loopWaitMs, relevoTtlMs: defaults.ttlMs, settleS, scrapeS, relevoLoopS: 1, patroniLoopS: 10, store: storeKind, synchronous: true, profile: values.profile };
    writeFileSync(join(dir, `agent-rest-${storeKind === 'etcd' ? '' : 'embedded-'}${stamp}.json`), `${JSON.stringify({ started: started.toISOString(), options, environment, summary, rounds }, null, 2)}\n`);
    const md = [
      `# Agent at rest — ${started.toISOString()}`,
      '',
      `3-member synchronous cluster on ${storeKind === 'etcd' ? 'one etcd' : 'the embedded store'}, idle, ${roundCount} round(s) of ${windowS} s after ${settleS} s of settling; relevo at its default 1 s loop with metrics, event log and dashboard on, TLS on every link`,
      `(every agent's /metrics scraped every ${scrapeS} s, one agent's /cluster and /events polled every second as an open dashboard does).`,
      `etcd: ${etcdTls ? 'one member over TLS with a client certificate (relevo and Patroni alike)' : 'one member over plain HTTP (--no-etcd-tls)'}; relevo loopWaitMs=${defaults.loopWaitMs}, ttlMs=${defaults.ttlMs} (its defaults).`,
      withPatroni ? 'Patroni (Debian package) ran on the same etcd over the same window with synchronous_mode and its default loop_wait of 10 s.' : 'Patroni was not run (not installed, or --no-patroni).',
      `CPU ms per loop: CPU time over the window divided by the window in loop periods (relevo 1 s, Patroni 10 s); an idle relevo replica with the store watch up loops every 2 s.`,
      `Machine: ${environment.cpus} × ${environment.cpuModel}, load average (1, 5, 15 min) at the end of each round: ${loadavgAtRoundEnd.map((l) => l.map((x) => x.toFixed(2)).join(' ')).join('; ')} — other work shares the machine.`,
      '',
      '## Summary over every member and round',
      '',
      summaryTable(summary),
      '',
      ...rounds.flatMap((results, i) => [`## Round ${i + 1}`, '', table(results), '']),
    ].join('\n');
    writeFileSync(join(dir, `agent-rest-${storeKind === 'etcd' ? '' : 'embedded-'}${stamp}.md`), md);
    console.log(`\n${summaryTable(summary)}\n\nwritten bench/results/agent-rest-${storeKind === 'etcd' ? '' : 'embedded-'}${stamp}.json and .md`);
    if (values.profile) {
      for (const name of NAMES) await cluster.signalAgent(name, 'SIGTERM');
      const kept = join(tmpdir(), `relevo-agent-profiles-${stamp}`);
      execFileSync('cp', ['-r', profiles, kept]);
      console.log(`CPU profiles: ${kept}`);
    }
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
