/**
 * Rolling restart of a 3-member cluster, end to end: a restart-requiring
 * parameter change (shared_buffers, alternating values) rolled out under a
 * write load, several rounds. For each round: total time of the roll, longest
 * write pause and client errors, for a writer through relevo's router (relay
 * mode, its defaults) and for a libpq-style multi-host writer beside it.
 *
 * Anchor, in the same run and interleaved round by round: Patroni (Debian's
 * package, on the same etcd) rolled by hand the way its documentation has it —
 * `patronictl restart` of each replica, `patronictl switchover` to a restarted
 * one, then `patronictl restart` of the former leader — with a multi-host
 * writer (Patroni has no router of its own).
 *
 *   node dist/bench/rolling/run.js [--rounds N] [--no-patroni]
 *
 * Writes bench/results/rolling-<timestamp>.json and .md. Never a test: figures
 * depend on the machine's load.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { RouterHandle } from '../../src/router/index.js';
import { TestCluster } from '../../test/helpers/cluster.js';
import { startEtcd, type EtcdProcess } from '../../test/helpers/etcd.js';
import { routedWriter } from '../../test/helpers/minor-update.js';
import { waitFor } from '../../test/helpers/wait.js';
import { Writer } from '../../test/helpers/writer.js';
import { patroniHealthy, patroniInstalled, startPatroni, type PatroniCluster } from '../agent-rest/patroni.js';

const NAMES = ['node1', 'node2', 'node3'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Sample {
  tool: 'relevo' | 'patroni';
  path: 'router' | 'multi-host';
  round: number;
  totalS: number;
  pauseMs: number;
  errors: number;
  ok: boolean;
  note?: string;
}

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, 'no-patroni': { type: 'boolean', default: false } } });
const rounds = Number(values.rounds);

function measure(writer: Writer, from: number, to: number) {
  return { pauseMs: writer.longestGap(from, to), errors: writer.failures.filter((f) => f.at >= from && f.at <= to).length };
}

async function relevoRound(cluster: TestCluster, writers: Map<'router' | 'multi-host', Writer>, round: number, samples: Sample[]): Promise<void> {
  const value = round % 2 === 1 ? '48MB' : '32MB';
  const set = await cluster.cli(['config', 'set', `postgresql.shared_buffers=${value}`]);
  if (set.code !== 0) throw new Error(`config set: ${set.stderr}`);
  await waitFor('shared_buffers pending everywhere', async () => (await cluster.memberStatuses()).filter((m) => m.pendingRestart.includes('shared_buffers')).length === NAMES.length, 60_000, 200);
  await sleep(1_000);
  const started = Date.now();
  const roll = await cluster.cli(['restart', '--pending']);
  const ended = Date.now();
  await cluster.waitHealthy(NAMES, 60_000);
  for (const [path, w] of writers) {
    const m = measure(w, started, ended);
    samples.push({ tool: 'relevo', path, round, totalS: (ended - started) / 1000, ...m, ok: roll.code === 0, ...(roll.code === 0 ? {} : { note: roll.stderr.slice(0, 200) }) });
  }
}

async function patroniJson<T>(port: number, path: string): Promise<T> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(3_000) });
  return (await response.json()) as T;
}

type PatroniClusterView = { members: { name: string; role: string; state: string; pending_restart?: boolean }[] };

async function patroniRound(p: PatroniCluster, writer: Writer, round: number, samples: Sample[]): Promise<void> {
  const api = p.members[0]!.apiPort;
  const value = round % 2 === 1 ? '48MB' : '32MB';
  p.ctl(['edit-config', '--force', '-p', `shared_buffers=${value}`]);
  await waitFor('patroni: shared_buffers pending everywhere', async () => (await patroniJson<PatroniClusterView>(api, '/cluster')).members.filter((m) => m.pending_restart).length === 3, 60_000, 500);
  await sleep(1_000);
  const started = Date.now();
  const view = await patroniJson<PatroniClusterView>(api, '/cluster');
  const leader = view.members.find((m) => m.role === 'leader')!.name;
  const replicas = view.members.filter((m) => m.role !== 'leader').map((m) => m.name).sort();
  const streamingAgain = (name: string) =>
    waitFor(`patroni: ${name} streaming with nothing pending`, async () => {
      const m = (await patroniJson<PatroniClusterView>(api, '/cluster')).members.find((x) => x.name === name);
      return m !== undefined && m.role !== 'leader' && (m.state === 'streaming' || m.state === 'running') && !m.pending_restart;
    }, 120_000, 200);
  // What an operator does by hand: each replica, a switchover, the former leader.
  for (const name of replicas) {
    p.ctl(['restart', 'bench', name, '--force']);
    await streamingAgain(name);
  }
  // In synchronous mode Patroni switches over only to the synchronous standby.
  const now = (await patroniJson<PatroniClusterView>(api, '/cluster')).members;
  const candidate = now.find((m) => m.role === 'sync_standby')?.name ?? replicas[0]!;
  p.ctl(['switchover', '--leader', leader, '--candidate', candidate, '--force']);
  await waitFor(`patroni: ${candidate} leads`, async () => (await patroniJson<PatroniClusterView>(api, '/cluster')).members.some((m) => m.name === candidate && m.role === 'leader'), 120_000, 200);
  const former = (await patroniJson<PatroniClusterView>(api, '/cluster')).members.find((m) => m.name === leader);
  if (former?.pending_restart) p.ctl(['restart', 'bench', leader, '--force']);
  await streamingAgain(leader);
  const ended = Date.now();
  samples.push({ tool: 'patroni', path: 'multi-host', round, totalS: (ended - started) / 1000, ...measure(writer, started, ended), ok: true });
}

/** Every acknowledged id is on Patroni's leader. */
async function patroniLost(p: PatroniCluster, writer: Writer): Promise<number> {
  const view = await patroniJson<PatroniClusterView>(p.members[0]!.apiPort, '/cluster');
  const leader = p.members.find((m) => m.member === view.members.find((x) => x.role === 'leader')!.name)!;
  const client = new pg.Client({ host: '127.0.0.1', port: leader.pgPort, user: p.superuser.user, password: p.superuser.password, database: 'postgres' });
  await client.connect();
  try {
    const rows = await client.query<{ id: string }>(`SELECT id FROM ${writer.options.table}`);
    const present = new Set(rows.rows.map((r) => Number(r.id)));
    return writer.acks.filter((a) => !present.has(a.id)).length;
  } finally {
    await client.end();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function main(): Promise<void> {
  const startedAt = new Date();
  let etcd: EtcdProcess | undefined;
  let cluster: TestCluster | undefined;
  let router: RouterHandle | undefined;
  let patroni: PatroniCluster | undefined;
  const writers: Writer[] = [];
  const samples: Sample[] = [];
  const lost: Record<string, number> = {};
  const cleanup = async () => {
    for (const w of writers) await w.stop().catch(() => undefined);
    await router?.stop().catch(() => undefined);
    await patroni?.stop().catch(() => undefined);
    await cluster?.destroy().catch(() => undefined);
    await etcd?.stop().catch(() => undefined);
  };
  // Stopped from outside (timeout, Ctrl-C): every process this run started is stopped first.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void cleanup().finally(() => process.exit(1)));
  try {
    etcd = await startEtcd();
    cluster = await TestCluster.create({ store: { endpoints: etcd.endpoints }, settings: { synchronousMode: 'on' }, name: 'rolling' });
    const passwordFile = join(cluster.dir, 'api-password');
    writeFileSync(passwordFile, 'roll-Bench-1\n', { mode: 0o600 });
    for (const name of NAMES) await cluster.defineMember(name, { log: { level: 'info' }, api: { auth: { username: 'ops', password: { file: passwordFile } } } });
    for (const name of NAMES) cluster.startAgent(name);
    await cluster.waitHealthy(NAMES, 180_000);
    const routed = await routedWriter(cluster, 'roll_router');
    router = routed.router;
    const multi = Writer.forCluster(cluster, 'roll_multi_host', { connectTimeoutMs: 1_000 });
    const relevoWriters = new Map<'router' | 'multi-host', Writer>([['router', routed.writer], ['multi-host', multi]]);
    writers.push(routed.writer, multi);
    let patroniWriter: Writer | undefined;
    if (!values['no-patroni'] && patroniInstalled()) {
      patroni = await startPatroni(etcd);
      await patroniHealthy(patroni.members, patroni.dir);
      patroniWriter = new Writer({
        targets: patroni.members.map((m) => ({ name: m.member, host: '127.0.0.1', port: m.pgPort })),
        user: patroni.superuser.user,
        password: patroni.superuser.password,
        table: 'roll_patroni',
        connectTimeoutMs: 1_000,
      });
      writers.push(patroniWriter);
    } else {
      console.log('Patroni not run (not installed, or --no-patroni)');
    }
    for (const w of writers) await w.start();
    await sleep(2_000);
    for (let round = 1; round <= rounds; round++) {
      await relevoRound(cluster, relevoWriters, round, samples);
      if (patroni && patroniWriter) await patroniRound(patroni, patroniWriter, round, samples);
      for (const s of samples.filter((x) => x.round === round)) process.stderr.write(`round ${round} ${s.tool} ${s.path}: ${s.totalS.toFixed(1)} s, pause ${s.pauseMs} ms, ${s.errors} errors${s.ok ? '' : ` FAILED ${s.note}`}\n`);
    }
    for (const [path, w] of relevoWriters) {
      await w.stop();
      lost[`relevo/${path}`] = (await w.verify(cluster)).lost.length;
    }
    if (patroni && patroniWriter) {
      await patroniWriter.stop();
      lost['patroni/multi-host'] = await patroniLost(patroni, patroniWriter);
    }
  } finally {
    await cleanup();
  }
  const groups = new Map<string, Sample[]>();
  for (const s of samples) groups.set(`${s.tool} | ${s.path}`, [...(groups.get(`${s.tool} | ${s.path}`) ?? []), s]);
  const lines = ['| tool | writer | rounds | total s (median, range) | longest pause ms (median, max) | client errors per roll (median, max) | lost |', '| --- | --- | --- | --- | --- | --- | --- |'];
  for (const [key, xs] of groups) {
    const [tool, path] = key.split(' | ');
    const t = xs.map((x) => x.totalS);
    const p = xs.map((x) => x.pauseMs);
    const e = xs.map((x) => x.errors);
    lines.push(`| ${tool} | ${path} | ${xs.length}${xs.every((x) => x.ok) ? '' : ' (some failed)'} | ${median(t).toFixed(1)} (${Math.min(...t).toFixed(1)}–${Math.max(...t).toFixed(1)}) | ${median(p)} (${Math.max(...p)}) | ${median(e)} (${Math.max(...e)}) | ${lost[`${tool}/${path}`] ?? 'n/a'} |`);
  }
  const environment = { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', loadavgAtEnd: loadavg(), node: process.version };
  const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-').slice(0, 19);
  writeFileSync(join(dir, `rolling-${stamp}.json`), `${JSON.stringify({ started: startedAt.toISOString(), rounds, environment, samples, lost }, null, 2)}\n`);
  const md = [
    `# Rolling restart — ${startedAt.toISOString()}`,
    '',
    `3 members, etcd, TLS on, relevo at its default settings (synchronous mode on); ${rounds} rounds of a shared_buffers change rolled out under writes,`,
    'relevo by `relevo restart --pending` (writers through its router in relay mode and with a multi-host string);',
    'Patroni (same etcd, same run, interleaved) by hand: `patronictl restart` per replica, `patronictl switchover`, `patronictl restart` of the former leader.',
    `Machine: ${environment.cpus} × ${environment.cpuModel}, load average at the end ${environment.loadavgAtEnd.map((l) => l.toFixed(2)).join(' ')} — measured under load (other work shares the machine).`,
    '',
    ...lines,
    '',
  ].join('\n');
  writeFileSync(join(dir, `rolling-${stamp}.md`), md);
  console.log(`\n${lines.join('\n')}\n\nwritten bench/results/rolling-${stamp}.json and .md`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
