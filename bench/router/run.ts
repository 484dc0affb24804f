/**
 * Router cost benchmark: pgbench select-only and TPC-B-like at several client
 * counts, straight to PostgreSQL and through the relevo router, HAProxy (TCP
 * mode) and pgbouncer (session pooling), interleaved in one run so every
 * target sees the same machine state. Reports TPS, latency, the ratio to
 * direct and each proxy's CPU time per transaction (utime+stime deltas from
 * /proc/<pid>/stat). Everything listens on 127.0.0.1.
 *
 *   node dist/bench/router/run.js [--duration 5] [--rounds 3] [--clients 1,8,32]
 *        [--workloads select,tpcb] [--targets direct,relevo,haproxy,pgbouncer] [--scale 10]
 *
 * Writes bench/results/router-<timestamp>.json and .md.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { clusterKeys } from '../../src/cluster/keys.js';
import { EmbeddedStore } from '../../src/store/embedded.js';
import { lookupOsUser, spawnIdentity } from '../../src/util/os-user.js';
import { freePort } from '../../test/helpers/ports.js';
import { PG_BIN, startStandalone, type StandaloneServer } from '../../test/helpers/standalone-postgres.js';

type Target = 'direct' | 'relevo' | 'haproxy' | 'pgbouncer';
type Workload = 'select' | 'tpcb';

interface Cell {
  round: number;
  workload: Workload;
  clients: number;
  target: Target;
  tps: number;
  latencyMs: number;
  transactions: number;
  /** Proxy CPU (user+system) per transaction, µs; null for direct. */
  cpuUsPerTxn: number | null;
  cpuSeconds: number | null;
}

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

// Several short interleaved rounds beat one long one on a noisy machine: medians are reported.
const duration = Number(flag('duration', '5'));
const rounds = Number(flag('rounds', '3'));
const clientCounts = flag('clients', '1,8,32').split(',').map(Number);
const workloads = flag('workloads', 'select,tpcb').split(',') as Workload[];
const targets = flag('targets', 'direct,relevo,haproxy,pgbouncer').split(',') as Target[];
const scale = Number(flag('scale', '10'));

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

function cpuTicks(pid: number): number {
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

const children: ChildProcess[] = [];
function track(child: ChildProcess): ChildProcess {
  children.push(child);
  return child;
}

async function waitPort(port: number, child: ChildProcess, what: string): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        res(true);
      });
      s.on('error', () => res(false));
    });
    if (ok) return;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${what} did not start listening on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startRelevo(dir: string, pg: StandaloneServer): Promise<{ port: number; pid: number }> {
  const storePath = join(dir, 'store.db');
  const store = await EmbeddedStore.open({ path: storePath, timeoutMs: 2_000 });
  const keys = clusterKeys('bench');
  const member = {
    name: 'pg1', state: 'running', role: 'primary', reason: 'bench', timeline: 1, receivedLsn: null, replayedLsn: null,
    lagBytes: 0, lagSeconds: 0, replayPaused: false, streaming: false, upstream: null, slots: [], replication: [],
    postgresVersion: '15', systemIdentifier: '1', agentPid: process.pid, postmasterPid: pg.pid, dataDir: pg.dataDir,
    apiUrl: 'http://127.0.0.1:1', connectAddress: pg.address, tags: {}, paused: false, updatedAt: new Date().toISOString(),
  };
  await store.put(keys.member('pg1'), JSON.stringify(member));
  await store.put(keys.leader, JSON.stringify({ member: 'pg1', ttlMs: 3_600_000, acquiredAt: new Date().toISOString() }));
  await store.close();
  const port = await freePort();
  const child = track(
    spawn(process.execPath, [join(here, 'router-process.js'), JSON.stringify({ storePath, cluster: 'bench', listen: `127.0.0.1:${port}` })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  const first = await new Promise<string>((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', res);
    child.once('exit', (code) => rej(new Error(`router exited with ${code}`)));
  });
  if (!first.includes(String(port))) throw new Error(`router did not start: ${first}`);
  return { port, pid: child.pid! };
}

async function startHaproxy(dir: string, pg: StandaloneServer): Promise<{ port: number; pid: number }> {
  const port = await freePort();
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    [
      'global',
      '  maxconn 1000',
      'defaults',
      '  mode tcp',
      '  timeout connect 5s',
      '  timeout client 1h',
      '  timeout server 1h',
      'listen pg',
      `  bind 127.0.0.1:${port}`,
      `  server pg1 ${pg.address}`,
      '',
    ].join('\n'),
  );
  const child = track(spawn('haproxy', ['-f', cfg, '-db'], { stdio: ['ignore', 'ignore', 'inherit'] }));
  await waitPort(port, child, 'haproxy');
  return { port, pid: child.pid! };
}

async function startPgbouncer(dir: string, pg: StandaloneServer): Promise<{ port: number; pid: number }> {
  const port = await freePort();
  const user = lookupOsUser('postgres');
  mkdirSync(dir, { recursive: true });
  const ini = join(dir, 'pgbouncer.ini');
  const users = join(dir, 'userlist.txt');
  writeFileSync(users, '"postgres" ""\n');
  writeFileSync(
    ini,
    [
      '[databases]',
      `postgres = host=127.0.0.1 port=${pg.port} dbname=postgres`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      "unix_socket_dir =",
      'auth_type = trust',
      `auth_file = ${users}`,
      'pool_mode = session',
      'max_client_conn = 500',
      'default_pool_size = 64',
      'log_connections = 0',
      'log_disconnections = 0',
      `logfile = ${join(dir, 'pgbouncer.log')}`,
      '',
    ].join('\n'),
  );
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
  // pgbouncer refuses to run as root.
  const child = track(spawn('pgbouncer', [ini], { ...spawnIdentity(user), stdio: ['ignore', 'ignore', 'ignore'] }));
  await waitPort(port, child, 'pgbouncer');
  return { port, pid: child.pid! };
}

function pgbench(port: number, workload: Workload, clients: number, seconds: number): { tps: number; latencyMs: number; transactions: number } {
  const args = ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-n', '-c', String(clients), '-j', String(Math.min(clients, cpus().length)), '-T', String(seconds)];
  if (workload === 'select') args.push('-S');
  args.push('postgres');
  const out = execFileSync(join(PG_BIN, 'pgbench'), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const num = (re: RegExp): number => Number(re.exec(out)?.[1] ?? NaN);
  return {
    tps: num(/tps = ([\d.]+) \(without initial connection time\)/),
    latencyMs: num(/latency average = ([\d.]+) ms/),
    transactions: num(/number of transactions actually processed: (\d+)/),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-bench-router-'));
  chmodSync(dir, 0o755);
  let pg: StandaloneServer | undefined;
  try {
    pg = await startStandalone({ settings: { max_connections: 200, shared_buffers: "'256MB'" } });
    process.stderr.write(`postgres on ${pg.address}; pgbench -i -s ${scale}\n`);
    execFileSync(join(PG_BIN, 'pgbench'), ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '-i', '-q', '-s', String(scale), 'postgres'], { stdio: 'ignore' });
    const ports: Record<Target, { port: number; pid: number | null }> = {
      direct: { port: pg.port, pid: null },
      relevo: await startRelevo(dir, pg),
      haproxy: await startHaproxy(dir, pg),
      pgbouncer: await startPgbouncer(join(dir, 'pgbouncer'), pg),
    };
    // Warm caches and every path once.
    for (const t of targets) pgbench(ports[t].port, 'select', 2, 1);

    const cells: Cell[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const workload of workloads) {
        for (const clients of clientCounts) {
          // Rotate the order each round so no target always runs first.
          const order = targets.map((_, i) => targets[(i + round) % targets.length] as Target);
          for (const target of order) {
            const { port, pid } = ports[target];
            const before = pid === null ? 0 : cpuTicks(pid);
            const r = pgbench(port, workload, clients, duration);
            const cpuSeconds = pid === null ? null : (cpuTicks(pid) - before) / CLK_TCK;
            const cell: Cell = {
              round, workload, clients, target, ...r, cpuSeconds,
              cpuUsPerTxn: cpuSeconds === null ? null : (cpuSeconds * 1e6) / r.transactions,
            };
            cells.push(cell);
            process.stderr.write(
              `${workload.padEnd(6)} c=${String(clients).padStart(2)} ${target.padEnd(9)} ${r.tps.toFixed(0).padStart(7)} tps ` +
                `${r.latencyMs.toFixed(3)} ms${cell.cpuUsPerTxn === null ? '' : ` cpu ${cell.cpuUsPerTxn.toFixed(1)} µs/txn`}\n`,
            );
          }
        }
      }
    }
    report(cells);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await pg?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function report(cells: Cell[]): void {
  const rows: string[] = [];
  const summary: Array<Record<string, unknown>> = [];
  rows.push('| workload | clients | target | TPS | latency ms | ratio to direct | CPU µs/txn |');
  rows.push('|---|---:|---|---:|---:|---:|---:|');
  for (const workload of workloads) {
    for (const clients of clientCounts) {
      const of = (t: Target) => cells.filter((c) => c.workload === workload && c.clients === clients && c.target === t);
      const direct = median(of('direct').map((c) => c.tps));
      for (const target of targets) {
        const cs = of(target);
        if (cs.length === 0) continue;
        const tps = median(cs.map((c) => c.tps));
        const lat = median(cs.map((c) => c.latencyMs));
        const cpu = target === 'direct' ? null : median(cs.map((c) => c.cpuUsPerTxn ?? NaN));
        const ratio = tps / direct;
        summary.push({ workload, clients, target, tps, latencyMs: lat, ratioToDirect: ratio, cpuUsPerTxn: cpu });
        rows.push(
          `| ${workload === 'select' ? 'select-only' : 'TPC-B-like'} | ${clients} | ${target} | ${tps.toFixed(0)} | ${lat.toFixed(3)} | ${ratio.toFixed(2)} | ${cpu === null ? '—' : cpu.toFixed(1)} |`,
        );
      }
    }
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const outDir = join(repo, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const meta = {
    date: new Date().toISOString(),
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? '?',
    node: process.version,
    durationSeconds: duration,
    rounds,
    scale,
    postgres: execFileSync(join(PG_BIN, 'postgres'), ['--version'], { encoding: 'utf8' }).trim(),
    haproxy: execFileSync('haproxy', ['-v'], { encoding: 'utf8' }).split('\n')[0],
    pgbouncer: execFileSync('pgbouncer', ['--version'], { encoding: 'utf8' }).split('\n')[0],
  };
  writeFileSync(join(outDir, `router-${stamp}.json`), `${JSON.stringify({ meta, summary, cells }, null, 2)}\n`);
  const md = [
    `# Router benchmark ${meta.date}`,
    '',
    `${meta.cpus} × ${meta.cpuModel}, Node ${meta.node}, ${meta.postgres}, ${meta.haproxy}, ${meta.pgbouncer}.`,
    `pgbench scale ${scale}, ${duration} s per cell, ${rounds} round(s), interleaved; medians over rounds.`,
    'All on 127.0.0.1; PostgreSQL with fsync/synchronous_commit off so the hop, not the disk, is measured.',
    'CPU µs/txn = proxy process user+system time / transactions (from /proc/<pid>/stat).',
    '',
    ...rows,
    '',
  ].join('\n');
  writeFileSync(join(outDir, `router-${stamp}.md`), md);
  process.stdout.write(`${md}\nwritten: bench/results/router-${stamp}.{json,md}\n`);
}

await main();
