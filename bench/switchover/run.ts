/**
 * Planned switchover benchmark (issue 13): a local 3-member cluster (real
 * agents, PostgreSQL 15, etcd or the embedded store), and during the same
 * switchovers three writers at once, each inserting one row per autocommit
 * transaction back to back on its own table:
 *
 *   - through a relevo router in relay mode (reconnects after an error);
 *   - through a relevo router in session mode (same client code);
 *   - with a libpq-style multi-host client (every member's address,
 *     target_session_attrs=read-write), no router.
 *
 * For each switchover and path: the longest write pause (longest stretch
 * without an acknowledgement around the switchover), client errors (failed
 * connects and statements), and the duration of `relevo switchover`; at the
 * end, acknowledged commits missing on the final primary. At the default
 * settings and at the fastest documented safe settings.
 *
 *   node dist/bench/switchover/run.js [--runs 3] [--settings default|fast|both] [--store etcd|embedded]
 *
 * Writes bench/results/switchover-<timestamp>.json and .md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadCredentials } from '../../src/config/secrets.js';
import type { ClusterSettings } from '../../src/cluster/settings.js';
import { startRouter, type RouterHandle } from '../../src/router/index.js';
import { TEST_APP_ROLE, TestCluster } from '../../test/helpers/cluster.js';
import { clusterCaFile } from '../../src/tls/member.js';
import { startEtcd, type EtcdProcess } from '../../test/helpers/etcd.js';
import { waitFor } from '../../test/helpers/wait.js';
import { Writer } from '../../test/helpers/writer.js';

const NAMES = ['node1', 'node2', 'node3'];
const PROFILES: Record<'default' | 'fast', Partial<ClusterSettings>> = {
  // The documented defaults, written out: the test cluster's own defaults are faster (500 ms loop).
  default: { ttlMs: 6_000, loopWaitMs: 1_000, fenceMarginMs: 2_000 },
  // docs/configuration.md: the fastest documented safe timing.
  fast: { ttlMs: 2_000, loopWaitMs: 250, fenceMarginMs: 800 },
};
type Path = 'router-relay' | 'router-session' | 'multi-host';
const PATHS: Path[] = ['router-relay', 'router-session', 'multi-host'];

interface Sample {
  profile: string;
  run: number;
  path: Path;
  from: string;
  to: string;
  pauseMs: number;
  errors: number;
  errorSample: string[];
  commandMs: number;
  commandOk: boolean;
}

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    settings: { type: 'string', default: 'both' },
    store: { type: 'string', default: 'etcd' },
  },
});
const runs = Number(values.runs);
const profiles = values.settings === 'both' ? (['default', 'fast'] as const) : [values.settings as 'default' | 'fast'];
const storeKind = values.store as 'etcd' | 'embedded';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function runProfile(profile: 'default' | 'fast', samples: Sample[], lost: Record<string, number>): Promise<void> {
  let etcd: EtcdProcess | undefined;
  let cluster: TestCluster | undefined;
  const routers: RouterHandle[] = [];
  const writers = new Map<Path, Writer>();
  try {
    if (storeKind === 'etcd') etcd = await startEtcd();
    cluster = await TestCluster.create({ store: etcd ? { endpoints: etcd.endpoints } : 'embedded', settings: PROFILES[profile], name: `sw${profile}` });
    for (const name of NAMES) await cluster.defineMember(name);
    for (const name of NAMES) cluster.startAgent(name);
    let primary = (await cluster.waitHealthy(NAMES, 120_000)).find((m) => m.state === 'primary')!.name;
    const credentials = loadCredentials(cluster.member(NAMES[0]!).config)!;
    // Session mode reads the verifiers exported from pg_authid (docs/router.md).
    const rows = await cluster.sql<{ line: string }>(primary, `SELECT format('"%s" "%s"', rolname, rolpassword) AS line FROM pg_authid WHERE rolpassword LIKE 'SCRAM-SHA-256$%'`);
    const verifiersFile = join(cluster.dir, 'verifiers');
    writeFileSync(verifiersFile, `${rows.map((r) => r.line).join('\n')}\n`, { mode: 0o600 });
    // Routers at their default settings, as a new user runs them.
    for (const mode of ['relay', 'session'] as const) {
      routers.push(
        await startRouter({
          name: `sw-${mode}`,
          cluster: cluster.clusterName,
          store: cluster.storeConfig,
          listen: { readWrite: '127.0.0.1:0', readOnly: null },
          mode: { readWrite: mode },
          // Session mode verifies the servers against the cluster CA (TLS is on by default).
          session: mode === 'session' ? { verifiersFile, serverCaFile: clusterCaFile(cluster.member(NAMES[0]!).config) ?? null } : null,
        }),
      );
    }
    const routed = (path: Path, router: RouterHandle): Writer => {
      const [host, port] = [router.addresses.readWrite!.replace(/:\d+$/, ''), Number(router.addresses.readWrite!.split(':').pop())];
      // An application role (relevo's own roles do not log in over TCP); the relay carries TLS to the member, session mode ends it in the router.
      const tlsCaFile = path === 'router-relay' ? clusterCaFile(cluster!.member(NAMES[0]!).config) : undefined;
      return new Writer({ targets: [{ name: path, host, port }], user: TEST_APP_ROLE.user, password: TEST_APP_ROLE.password, ...(tlsCaFile ? { tlsCaFile } : {}), table: path.replace('-', '_'), intervalMs: 0, connectTimeoutMs: 1_000 });
    };
    writers.set('router-relay', routed('router-relay', routers[0]!));
    writers.set('router-session', routed('router-session', routers[1]!));
    writers.set('multi-host', Writer.forCluster(cluster, 'multi_host', { intervalMs: 0, connectTimeoutMs: 1_000 }));
    for (const w of writers.values()) await w.start();
    await sleep(2_000);

    for (let run = 1; run <= runs; run++) {
      const members = await cluster.waitHealthy(NAMES, 120_000);
      primary = members.find((m) => m.state === 'primary')!.name;
      const to = NAMES.filter((n) => n !== primary)[run % 2]!;
      const failuresBefore = new Map([...writers].map(([p, w]) => [p, w.failures.length]));
      const startedAt = Date.now();
      const result = await cluster.cli(['switchover', '--to', to]);
      const commandMs = Date.now() - startedAt;
      await waitFor(`${to} to take writes`, async () => (await cluster!.status(to))?.role === 'primary', 60_000, 100);
      // Let every path settle: each writer has written again after the switchover.
      const settledAt = Date.now();
      await waitFor('every writer writing again', () => [...writers.values()].every((w) => w.acks.some((a) => a.sentAt > settledAt)), 60_000, 50).catch(() => undefined);
      await sleep(1_000);
      for (const [path, w] of writers) {
        const failures = w.failures.slice(failuresBefore.get(path));
        samples.push({
          profile, run, path, from: primary, to,
          pauseMs: w.longestGap(startedAt - 500, Date.now()),
          errors: failures.length,
          errorSample: failures.slice(0, 3).map((f) => `${f.phase}: ${f.message}`),
          commandMs,
          commandOk: result.code === 0,
        });
        const s = samples[samples.length - 1]!;
        process.stderr.write(`${profile} run ${run} ${primary}→${to} ${path.padEnd(14)} pause ${s.pauseMs} ms, errors ${s.errors}, command ${commandMs} ms${result.code === 0 ? '' : ` (exit ${result.code})`}${s.errors ? ` e.g. ${s.errorSample[0]}` : ''}\n`);
      }
    }
    for (const [path, w] of writers) {
      await w.stop();
      // Read back straight from the primary, which admits the application role over TCP only with TLS
      // (the session-mode writer reached the router without it).
      const v = await w.verify(cluster, { tlsCaFile: clusterCaFile(cluster.member(NAMES[0]!).config) });
      lost[`${profile}/${path}`] = v.lost.length;
    }
  } finally {
    for (const w of writers.values()) await w.stop().catch(() => undefined);
    for (const r of routers) await r.stop().catch(() => undefined);
    await cluster?.destroy();
    await etcd?.stop();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  const samples: Sample[] = [];
  const lost: Record<string, number> = {};
  for (const profile of profiles) await runProfile(profile, samples, lost);
  const rows = ['| settings | path | runs | longest write pause, median (max) | client errors (total) | `relevo switchover` duration, median | acknowledged commits lost |', '|---|---|---:|---:|---:|---:|---:|'];
  for (const profile of profiles) {
    for (const path of PATHS) {
      const ss = samples.filter((s) => s.profile === profile && s.path === path);
      if (ss.length === 0) continue;
      const pauses = ss.map((s) => s.pauseMs);
      rows.push(
        `| ${profile} | ${path} | ${ss.length} | ${(median(pauses) / 1000).toFixed(2)} s (${(Math.max(...pauses) / 1000).toFixed(2)} s) | ${ss.reduce((n, s) => n + s.errors, 0)} | ${(median(ss.map((s) => s.commandMs)) / 1000).toFixed(2)} s | ${lost[`${profile}/${path}`] ?? '?'} |`,
      );
    }
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const here = dirname(fileURLToPath(import.meta.url));
  const outDir = join(here, '../../../bench/results');
  mkdirSync(outDir, { recursive: true });
  const meta = { date: new Date().toISOString(), cpus: cpus().length, loadavg: loadavg(), store: storeKind, runs, profiles };
  writeFileSync(join(outDir, `switchover-${stamp}.json`), `${JSON.stringify({ meta, samples, lost }, null, 2)}\n`);
  const md = [
    `# Switchover benchmark ${meta.date}`,
    '',
    `${meta.cpus} CPUs, load average ${meta.loadavg.map((l) => l.toFixed(2)).join(' ')} at the end (other work on the machine counts), ${storeKind} store, 3 members, synchronous mode.`,
    'Three writers at once (one autocommit INSERT per transaction, back to back), each on its own table, through the same switchovers.',
    'Routers at their default settings; clients reconnect after any error with a 1 s connect timeout.',
    '',
    ...rows,
    '',
  ].join('\n');
  writeFileSync(join(outDir, `switchover-${stamp}.md`), md);
  process.stdout.write(`${md}\nwritten: bench/results/switchover-${stamp}.{json,md}\n`);
}

await main();
