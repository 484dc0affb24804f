/**
 * Router cost benchmark, the strict way: pgbench 15 against a server
 * configured as relevo configures its members (fsync and synchronous commit
 * on, the product's postgresql.conf parameters), SCRAM authentication on every
 * path, VACUUM + CHECKPOINT before each run, several interleaved rounds with
 * a rotating order, `-j 2`. Targets: straight to PostgreSQL, through the
 * relevo router, HAProxy (TCP mode) and pgbouncer (session pooling). Loads:
 * select-only and TPC-B-like at several client counts, select-only with
 * prepared statements, and a new connection per transaction (`-C`).
 *
 * TLS (`--tls on`, the default) as relevo configures a member: ssl=on with a
 * certificate from a cluster CA (ECDSA P-256, issued by src/tls/pki.ts, as the
 * agent does), ssl_* parameters from baseParameters(), network rules `hostssl
 * … scram-sha-256`; pgbench connects with sslmode=verify-full against that CA.
 * The relay and HAProxy (TCP mode) pass TLS through untouched; pgbouncer and
 * session mode terminate it with a certificate of their own from the same CA
 * and connect to the server with verify-full. `--tls off` runs the server as a
 * member with tls.enabled: false (no ssl, `host` rules). `--tls both` serves
 * both on one server (ssl=on, a `hostssl` and a `hostnossl` rule) and
 * interleaves TLS and plaintext runs of each tool, to report TLS's cost.
 *
 * Reports TPS, latency, the ratio to direct, each proxy's CPU time per
 * transaction (utime+stime deltas of the proxy process from /proc/<pid>/stat)
 * and how many of the machine's cores were busy (from /proc/stat): a proxy
 * that adds waiting rather than CPU leaves cores idle.
 *
 *   node dist/bench/router/run.js [--duration 10] [--rounds 2]
 *        [--loads select-1,select-8,select-32,tpcb-8,prepared-8,connect-8]
 *        [--targets direct,relevo,relevo2,session,pool,haproxy,pgbouncer] [--scale 10]
 *        [--tls on|off|both]
 *
 * relevo = the plain relay, one process; relevo2 = the plain relay with
 * workers: 2; session = session mode (SCRAM terminated by the router);
 * pool = session mode with session pooling (pool size 64, as pgbouncer's).
 *
 * Writes bench/results/router-<timestamp>.json and .md.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { clusterKeys } from '../../src/cluster/keys.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import type { MemberConfig } from '../../src/config/member.js';
import { baseParameters } from '../../src/postgres/conf.js';
import { EmbeddedStore } from '../../src/store/embedded.js';
import { memberTlsFiles, type TlsFiles } from '../../src/tls/member.js';
import { generateKeyPem, issueCaCert, issueMemberCert } from '../../src/tls/pki.js';
import { lookupOsUser, spawnIdentity } from '../../src/util/os-user.js';
import { freePort } from '../../test/helpers/ports.js';
import { PG_BIN, startStandalone, type StandaloneServer } from '../../test/helpers/standalone-postgres.js';

export type Target = 'direct' | 'relevo' | 'relevo2' | 'session' | 'pool' | 'haproxy' | 'pgbouncer';
/** Whether a cell's client (and the proxy's server side) uses TLS. */
type Tls = 'on' | 'off';

/** One pgbench load: script, clients, protocol mode, connection per transaction. */
interface Load {
  name: string;
  label: string;
  clients: number;
  args: string[];
}

const LOADS: Record<string, Omit<Load, 'name'>> = {
  'select-1': { label: 'select-only, 1 client', clients: 1, args: ['-S'] },
  'select-8': { label: 'select-only, 8 clients', clients: 8, args: ['-S'] },
  'select-32': { label: 'select-only, 32 clients', clients: 32, args: ['-S'] },
  'tpcb-1': { label: 'TPC-B-like, 1 client', clients: 1, args: [] },
  'tpcb-8': { label: 'TPC-B-like, 8 clients', clients: 8, args: [] },
  'tpcb-32': { label: 'TPC-B-like, 32 clients', clients: 32, args: [] },
  'prepared-8': { label: 'select-only, 8 clients, prepared', clients: 8, args: ['-S', '-M', 'prepared'] },
  'connect-8': { label: 'connect per transaction, 8 clients', clients: 8, args: ['-S', '-C'] },
};

interface Cell {
  round: number;
  load: string;
  target: Target;
  tls: Tls;
  tps: number;
  latencyMs: number;
  transactions: number;
  /** Proxy CPU (user+system) per transaction, µs; null for direct. */
  cpuUsPerTxn: number | null;
  cpuSeconds: number | null;
  /** Cores busy on the whole machine during the run (0..cpus). */
  busyCores: number;
}

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

// Several interleaved rounds beat one long one on a noisy machine: medians are reported.
const duration = Number(flag('duration', '10'));
const rounds = Number(flag('rounds', '2'));
const loadNames = flag('loads', 'select-1,select-8,select-32,tpcb-8,prepared-8,connect-8').split(',');
const targets = flag('targets', 'direct,relevo,session,pool,haproxy,pgbouncer').split(',') as Target[];
const scale = Number(flag('scale', '10'));
const tlsMode = flag('tls', 'on');
if (!['on', 'off', 'both'].includes(tlsMode)) throw new Error(`--tls: expected on, off or both, got ${tlsMode}`);
const variants: Tls[] = tlsMode === 'both' ? ['on', 'off'] : [tlsMode as Tls];
const loads: Load[] = loadNames.map((name) => {
  const l = LOADS[name];
  if (!l) throw new Error(`unknown load ${name}; known: ${Object.keys(LOADS).join(', ')}`);
  return { name, ...l };
});

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
/** The bench's own SCRAM password for the postgres role (a throwaway server). */
const PASSWORD = 'bench-scram-password';

/** CPU ticks (user+system) of a process and its children (a proxy with worker processes). */
function cpuTicks(pid: number): number {
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  let ticks = Number(fields[11]) + Number(fields[12]);
  let children = '';
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8');
  } catch {
    // No children file (old kernel): the process alone.
  }
  for (const child of children.trim().split(/\s+/).filter(Boolean)) ticks += cpuTicks(Number(child));
  return ticks;
}

/** Busy and total ticks of the whole machine (first line of /proc/stat). */
function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
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

/** Extra node flags for the router process, for profiling (e.g. `--perf-basic-prof`, `--cpu-prof`); none by default. */
const routerNodeArgs = (process.env.RELEVO_BENCH_ROUTER_NODE_ARGS ?? '').split(' ').filter(Boolean);

/** Starts the router in its own process (so its CPU can be read) on a one-member cluster in an embedded store. */
export async function startRelevo(dir: string, pg: StandaloneServer, extra: Record<string, unknown> = {}): Promise<{ port: number; pid: number }> {
  const storePath = join(dir, `store-${Date.now()}.db`);
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
    spawn(process.execPath, [...routerNodeArgs, join(here, 'router-process.js'), JSON.stringify({ storePath, cluster: 'bench', listen: `127.0.0.1:${port}`, extra })], {
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

/**
 * pgbouncer in session mode. With `pki`: TLS on both sides, as relevo's own
 * clients do it — clients get pgbouncer's certificate (issued from the
 * cluster CA, naming 127.0.0.1, so clients verify it with verify-full), and
 * pgbouncer connects to the server with verify-full against the cluster CA.
 */
async function startPgbouncer(dir: string, pg: StandaloneServer, pki: Pki | undefined): Promise<{ port: number; pid: number }> {
  const port = await freePort();
  const user = lookupOsUser('postgres');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ini = join(dir, 'pgbouncer.ini');
  const users = join(dir, 'userlist.txt');
  // pgbouncer authenticates clients with SCRAM and logs in to the server with SCRAM too.
  writeFileSync(users, `"postgres" "${PASSWORD}"\n`, { mode: 0o600 });
  // pgbouncer runs as postgres and cannot read the bench's CA directory: copies in its own.
  const tlsLines: string[] = [];
  if (pki) {
    for (const [from, to] of [[pki.proxyCert, 'client.crt'], [pki.proxyKey, 'client.key'], [pki.caCert, 'ca.crt']] as const) copyFileSync(from, join(dir, to));
    chmodSync(join(dir, 'client.key'), 0o600);
    tlsLines.push(
      'client_tls_sslmode = require',
      `client_tls_cert_file = ${join(dir, 'client.crt')}`,
      `client_tls_key_file = ${join(dir, 'client.key')}`,
      'server_tls_sslmode = verify-full',
      `server_tls_ca_file = ${join(dir, 'ca.crt')}`,
    );
  }
  writeFileSync(
    ini,
    [
      '[databases]',
      `postgres = host=127.0.0.1 port=${pg.port} dbname=postgres`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = scram-sha-256',
      `auth_file = ${users}`,
      'pool_mode = session',
      'max_client_conn = 500',
      'default_pool_size = 64',
      'log_connections = 0',
      'log_disconnections = 0',
      `logfile = ${join(dir, 'pgbouncer.log')}`,
      ...tlsLines,
      '',
    ].join('\n'),
  );
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
  // pgbouncer refuses to run as root.
  const child = track(spawn('pgbouncer', [ini], { ...spawnIdentity(user), stdio: ['ignore', 'ignore', 'ignore'] }));
  try {
    await waitPort(port, child, 'pgbouncer');
  } catch (error) {
    let log = '';
    try {
      log = readFileSync(join(dir, 'pgbouncer.log'), 'utf8').slice(-1_000);
    } catch {
      // no log yet
    }
    throw new Error(`${(error as Error).message}\n${log}`);
  }
  return { port, pid: child.pid! };
}

/**
 * The bench's TLS material, issued as an agent issues it (src/tls/pki.ts):
 * an ECDSA P-256 cluster CA, the member certificate in `<dataDir>.tls/`
 * (owned by postgres, where baseParameters() points ssl_cert_file), and one
 * certificate for the proxies that terminate TLS (pgbouncer, session mode).
 * Every certificate names 127.0.0.1.
 */
interface Pki {
  caCert: string;
  proxyCert: string;
  proxyKey: string;
}

async function issuePki(dir: string, member: TlsFiles): Promise<Pki> {
  const caDir = join(dir, 'ca');
  mkdirSync(caDir, { mode: 0o700 });
  const caKey = join(caDir, 'ca.key');
  const caCert = join(caDir, 'ca.crt');
  writeFileSync(caKey, generateKeyPem(), { mode: 0o600 });
  writeFileSync(caCert, await issueCaCert(caKey, 'bench', 2));
  const issue = async (certFile: string, keyFile: string, commonName: string): Promise<void> => {
    writeFileSync(keyFile, generateKeyPem(), { mode: 0o600 });
    writeFileSync(certFile, await issueMemberCert({ keyFile, caCertFile: caCert, caKeyFile: caKey, commonName, names: ['127.0.0.1'], days: 2 }));
  };
  mkdirSync(member.dir, { mode: 0o700 });
  copyFileSync(caCert, member.caCert);
  await issue(member.cert, member.key, 'pg1');
  const user = lookupOsUser('postgres');
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, member.dir]);
  const proxyDir = join(dir, 'proxy');
  mkdirSync(proxyDir, { mode: 0o700 });
  const pki = { caCert, proxyCert: join(proxyDir, 'proxy.crt'), proxyKey: join(proxyDir, 'proxy.key') };
  await issue(pki.proxyCert, pki.proxyKey, 'bench proxy');
  return pki;
}

/**
 * pg_hba as relevo writes the network rule (scram-sha-256; `hostssl` when TLS
 * is on, src/postgres/conf.ts renderHba). Two differences: the bench logs in
 * as postgres (relevo rejects that role on the network; here it is the
 * throwaway server's only role), and the socket is trusted for VACUUM and
 * CHECKPOINT. `both` adds a `hostnossl` rule for the plaintext runs.
 */
function benchHba(mode: string): string {
  const lines = ['local all all trust', `${mode === 'off' ? 'host' : 'hostssl'} all all 127.0.0.1/32 scram-sha-256`];
  if (mode === 'both') lines.push('hostnossl all all 127.0.0.1/32 scram-sha-256');
  return `${lines.join('\n')}\n`;
}

const pgEnv = { ...process.env, PGPASSWORD: PASSWORD, PGSSLMODE: 'disable' };

/** pgbench's environment: with TLS, verify-full against the cluster CA (channel binding left at libpq's default, prefer). */
function clientEnv(tls: Tls, pki: Pki | undefined): NodeJS.ProcessEnv {
  return tls === 'on' ? { ...process.env, PGPASSWORD: PASSWORD, PGSSLMODE: 'verify-full', PGSSLROOTCERT: pki!.caCert } : pgEnv;
}

/** The server's socket directory (the bench's maintenance goes through it, whatever the network rules). */
function socketOf(pg: StandaloneServer): string {
  return dirname(pg.dataDir);
}

function psql(pg: StandaloneServer, sql: string): void {
  execFileSync(join(PG_BIN, 'psql'), ['-h', socketOf(pg), '-p', String(pg.port), '-U', 'postgres', '-X', '-q', '-c', sql, 'postgres'], {
    env: pgEnv,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

/** The bench role's SCRAM verifier from pg_authid, in the file session mode reads. */
function verifierFile(dir: string, pg: StandaloneServer): string {
  const line = execFileSync(join(PG_BIN, 'psql'), ['-h', socketOf(pg), '-p', String(pg.port), '-U', 'postgres', '-X', '-At', '-c',
    `SELECT format('"%s" "%s"', rolname, rolpassword) FROM pg_authid WHERE rolname = 'postgres'`, 'postgres'], { env: pgEnv, encoding: 'utf8' });
  const path = join(dir, 'verifiers.txt');
  writeFileSync(path, line, { mode: 0o600 });
  return path;
}

function pgbench(port: number, load: Load, seconds: number, env: NodeJS.ProcessEnv): { tps: number; latencyMs: number; transactions: number } {
  const args = ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-n', '-c', String(load.clients), '-j', String(Math.min(load.clients, 2)), '-T', String(seconds), ...load.args, 'postgres'];
  let out: string;
  try {
    out = execFileSync(join(PG_BIN, 'pgbench'), args, { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    // A target that fails a load is reported as such, not allowed to end the whole run.
    process.stderr.write(`pgbench failed on port ${port}: ${String((error as { stderr?: string }).stderr ?? error).slice(0, 500)}\n`);
    return { tps: NaN, latencyMs: NaN, transactions: NaN };
  }
  const num = (re: RegExp): number => Number(re.exec(out)?.[1] ?? NaN);
  // With -C the connection time is part of every transaction: take the figure that includes it.
  const tps = load.args.includes('-C') ? num(/tps = ([\d.]+) \(including (?:initial )?connections? (?:establishing|time)\)/) : num(/tps = ([\d.]+) \(without initial connection time\)/);
  return {
    tps: Number.isNaN(tps) ? num(/tps = ([\d.]+)/) : tps,
    latencyMs: num(/latency average = ([\d.]+) ms/),
    transactions: num(/number of transactions actually processed: (\d+)/),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** The member the bench's server stands for: its data directory path places the TLS files (`<dataDir>.tls/`). */
function benchMember(dataDir: string, tls: boolean): MemberConfig {
  return {
    cluster: 'bench', name: 'pg1',
    postgres: { listen: '127.0.0.1', port: 0, parameters: {}, dataDir },
    tls: { enabled: tls, extraNames: [], validityDays: 365 },
  } as unknown as MemberConfig;
}

/** postgresql.conf as relevo writes it for a member (ports and socket aside; ssl_* with TLS on), quoted for postgresql.conf. */
function productSettings(config: MemberConfig): Record<string, string | number> {
  const params = baseParameters(config, defaultClusterSettings());
  const out: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(params)) {
    if (['listen_addresses', 'port', 'unix_socket_directories', 'logging_collector', 'cluster_name'].includes(k)) continue;
    out[k] = typeof v === 'number' ? v : typeof v === 'boolean' ? (v ? 'on' : 'off') : `'${v}'`;
  }
  // The test helper turns durability off for speed; a member runs with it on.
  return { ...out, fsync: 'on', synchronous_commit: 'on', full_page_writes: 'on', log_min_messages: 'warning', log_checkpoints: 'off' };
}

/** Proxies that terminate TLS run one instance per TLS setting; the others pass bytes through and serve both. */
function instanceKey(target: Target, tls: Tls): string {
  return target === 'pgbouncer' || target === 'session' || target === 'pool' ? `${target}/${tls}` : target;
}

const loadavgAtStart = readFileSync('/proc/loadavg', 'utf8').trim();

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-bench-router-'));
  chmodSync(dir, 0o755);
  let pg: StandaloneServer | undefined;
  try {
    const member = benchMember(join(dir, 'member'), tlsMode !== 'off');
    const pki = tlsMode === 'off' ? undefined : await issuePki(dir, memberTlsFiles(member)!);
    pg = await startStandalone({ password: PASSWORD, settings: productSettings(member), hba: benchHba(tlsMode) });
    const server = pg;
    process.stderr.write(`postgres on ${pg.address} (SCRAM, product settings, TLS ${tlsMode}); pgbench -i -s ${scale}\n`);
    execFileSync(join(PG_BIN, 'pgbench'), ['-h', socketOf(pg), '-p', String(pg.port), '-U', 'postgres', '-i', '-q', '-s', String(scale), 'postgres'], { env: pgEnv, stdio: 'ignore' });
    let verifiers: string | undefined;
    // Session mode: with TLS, the router's own certificate for clients and verify-full to the server.
    const session = (tls: Tls, pool?: { size: number }) => ({
      verifiersFile: (verifiers ??= verifierFile(dir, server)),
      ...(tls === 'on' ? { tls: { certFile: pki!.proxyCert, keyFile: pki!.proxyKey }, serverCaFile: pki!.caCert } : {}),
      ...(pool ? { pool } : {}),
    });
    const starters: Record<Target, (tls: Tls) => Promise<{ port: number; pid: number | null }>> = {
      direct: async () => ({ port: server.port, pid: null }),
      relevo: () => startRelevo(dir, server),
      relevo2: () => startRelevo(dir, server, { workers: 2 }),
      session: (tls) => startRelevo(dir, server, { mode: { readWrite: 'session' }, session: session(tls) }),
      // Session pooling with pgbouncer's pool size below.
      pool: (tls) => startRelevo(dir, server, { mode: { readWrite: 'session' }, session: session(tls, { size: 64 }) }),
      haproxy: () => startHaproxy(dir, server),
      pgbouncer: (tls) => startPgbouncer(join(dir, `pgbouncer-${tls}`), server, tls === 'on' ? pki : undefined),
    };
    const instances = new Map<string, { port: number; pid: number | null }>();
    for (const t of targets) {
      for (const tls of variants) {
        const key = instanceKey(t, tls);
        if (!instances.has(key)) instances.set(key, await starters[t](tls));
      }
    }
    const at = (t: Target, tls: Tls) => instances.get(instanceKey(t, tls))!;
    // Warm caches and every path once.
    for (const t of targets) for (const tls of variants) pgbench(at(t, tls).port, { name: 'warm', label: 'warm', clients: 2, args: ['-S'] }, 1, clientEnv(tls, pki));

    // What each proxy costs with no client at all (store polling, timers): part of every per-transaction figure.
    const proxies = [...instances].filter(([, v]) => v.pid !== null);
    const idleBefore = new Map(proxies.map(([k, v]) => [k, cpuTicks(v.pid!)]));
    await new Promise((r) => setTimeout(r, 3_000));
    const idleCpu: Record<string, number> = {};
    for (const [k, v] of proxies) idleCpu[k] = ((cpuTicks(v.pid!) - idleBefore.get(k)!) / CLK_TCK / 3) * 100;
    process.stderr.write(`idle CPU, % of a core: ${JSON.stringify(idleCpu)}\n`);

    const cells: Cell[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const load of loads) {
        // Rotate the order of targets each round so no target always runs first; a target's TLS and
        // plaintext runs are adjacent, their order swapped every round.
        const order = targets
          .map((_, i) => targets[(i + round) % targets.length] as Target)
          .flatMap((target) => (round % 2 ? [...variants].reverse() : variants).map((tls) => ({ target, tls })));
        for (const { target, tls } of order) {
          const { port, pid } = at(target, tls);
          // Every run starts from the same state: no dead tuples, no pending dirty pages.
          psql(server, 'VACUUM');
          psql(server, 'CHECKPOINT');
          const before = pid === null ? 0 : cpuTicks(pid);
          const m0 = machineTicks();
          const r = pgbench(port, load, duration, clientEnv(tls, pki));
          const m1 = machineTicks();
          const cpuSeconds = pid === null ? null : (cpuTicks(pid) - before) / CLK_TCK;
          const busyCores = ((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * cpus().length;
          const cell: Cell = {
            round, load: load.name, target, tls, ...r, cpuSeconds, busyCores,
            cpuUsPerTxn: cpuSeconds === null ? null : (cpuSeconds * 1e6) / r.transactions,
          };
          cells.push(cell);
          process.stderr.write(
            `${load.name.padEnd(10)} ${target.padEnd(9)} tls ${tls.padEnd(3)} ${r.tps.toFixed(0).padStart(7)} tps ${r.latencyMs.toFixed(3)} ms ` +
              `busy ${busyCores.toFixed(2)}${cell.cpuUsPerTxn === null ? '' : ` cpu ${cell.cpuUsPerTxn.toFixed(1)} µs/txn`}\n`,
          );
        }
      }
    }
    report(cells, idleCpu);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await pg?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function report(cells: Cell[], idleCpu: Record<string, number>): void {
  const rows: string[] = [];
  const costRows: string[] = [];
  const summary: Array<Record<string, unknown>> = [];
  rows.push('| load | target | TLS | TPS | latency ms | ratio to direct (same TLS) | CPU µs/txn | cores busy |');
  rows.push('|---|---|---|---:|---:|---:|---:|---:|');
  costRows.push('| load | target | TPS TLS / plain | TLS ÷ plain | latency ms TLS / plain | CPU µs/txn TLS / plain |');
  costRows.push('|---|---|---:|---:|---:|---:|');
  const fmt = (x: number | null, digits: number) => (x === null || Number.isNaN(x) ? '—' : x.toFixed(digits));
  for (const load of loads) {
    const of = (t: Target, tls: Tls) => cells.filter((c) => c.load === load.name && c.target === t && c.tls === tls);
    const med = (t: Target, tls: Tls, pick: (c: Cell) => number) => median(of(t, tls).map(pick));
    for (const target of targets) {
      for (const tls of variants) {
        const cs = of(target, tls);
        if (cs.length === 0) continue;
        const tps = med(target, tls, (c) => c.tps);
        const lat = med(target, tls, (c) => c.latencyMs);
        const busy = med(target, tls, (c) => c.busyCores);
        const cpu = target === 'direct' ? null : med(target, tls, (c) => c.cpuUsPerTxn ?? NaN);
        const ratio = tps / med('direct', tls, (c) => c.tps);
        summary.push({ load: load.name, target, tls, tps, latencyMs: lat, ratioToDirect: ratio, cpuUsPerTxn: cpu, busyCores: busy });
        rows.push(`| ${load.label} | ${target} | ${tls} | ${tps.toFixed(0)} | ${lat.toFixed(3)} | ${fmt(ratio, 2)} | ${fmt(cpu, 1)} | ${busy.toFixed(2)} |`);
      }
      if (variants.length < 2) continue;
      // TLS's cost for one tool: the median over rounds of each round's adjacent TLS/plaintext pair.
      const pairs = [...new Set(of(target, 'on').map((c) => c.round))].flatMap((round) => {
        const on = of(target, 'on').find((c) => c.round === round);
        const off = of(target, 'off').find((c) => c.round === round);
        return on && off ? [on.tps / off.tps] : [];
      });
      const cpu = (tls: Tls) => (target === 'direct' ? null : med(target, tls, (c) => c.cpuUsPerTxn ?? NaN));
      const cost = median(pairs);
      summary.push({ load: load.name, target, tlsOverPlainTps: cost });
      costRows.push(
        `| ${load.label} | ${target} | ${med(target, 'on', (c) => c.tps).toFixed(0)} / ${med(target, 'off', (c) => c.tps).toFixed(0)} | ${fmt(cost, 2)} | ` +
          `${med(target, 'on', (c) => c.latencyMs).toFixed(3)} / ${med(target, 'off', (c) => c.latencyMs).toFixed(3)} | ${fmt(cpu('on'), 1)} / ${fmt(cpu('off'), 1)} |`,
      );
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
    tls: tlsMode,
    loadavgAtStart,
    loadavgAtEnd: readFileSync('/proc/loadavg', 'utf8').trim(),
    idleCpuPercent: idleCpu,
    postgres: execFileSync(join(PG_BIN, 'postgres'), ['--version'], { encoding: 'utf8' }).trim(),
    haproxy: execFileSync('haproxy', ['-v'], { encoding: 'utf8' }).split('\n')[0],
    pgbouncer: execFileSync('pgbouncer', ['--version'], { encoding: 'utf8' }).split('\n')[0],
  };
  writeFileSync(join(outDir, `router-${stamp}.json`), `${JSON.stringify({ meta, summary, cells }, null, 2)}\n`);
  const tlsText = {
    on: 'TLS on as relevo configures a member: ssl=on with a certificate from a cluster CA (ECDSA P-256), `hostssl` rules; pgbench with sslmode=verify-full against the CA.',
    off: 'TLS off (a member with tls.enabled: false: no ssl, `host` rules); pgbench with sslmode=disable.',
    both: 'One server with ssl=on as relevo configures a member (cluster CA, ECDSA P-256) and a `hostssl` and a `hostnossl` rule; each tool runs with TLS (pgbench sslmode=verify-full against the CA) and in plaintext (sslmode=disable), the two runs adjacent, their order swapped each round.',
  }[tlsMode as 'on' | 'off' | 'both'];
  const md = [
    `# Router benchmark ${meta.date}`,
    '',
    `${meta.cpus} × ${meta.cpuModel}, Node ${meta.node}, ${meta.postgres}, ${meta.haproxy}, ${meta.pgbouncer}.`,
    `pgbench scale ${scale}, -j 2, ${duration} s per cell, ${rounds} round(s), interleaved with a rotating order; medians over rounds.`,
    'PostgreSQL with relevo\'s member settings (fsync, synchronous_commit, full_page_writes on); SCRAM on every path;',
    'VACUUM + CHECKPOINT before each run. CPU µs/txn = proxy process user+system time / transactions (/proc/<pid>/stat);',
    `cores busy = whole machine, from /proc/stat. Load average at the start: ${loadavgAtStart}; at the end: ${meta.loadavgAtEnd} (other work on the machine counts).`,
    tlsText,
    ...(tlsMode === 'off'
      ? []
      : ['With TLS the relay and HAProxy (TCP mode) pass it through; pgbouncer (client_tls_sslmode=require with its own certificate from the cluster CA,',
        'server_tls_sslmode=verify-full against the CA) and session mode (session.tls, session.serverCaFile) terminate it and connect to the server over verify-full TLS.']),
    `Proxy CPU with no client (3 s), % of a core: ${Object.entries(idleCpu).map(([t, v]) => `${t} ${v.toFixed(2)}`).join(', ')}.`,
    '',
    ...rows,
    '',
    ...(variants.length < 2 ? [] : ['TLS against plaintext, same tool (TLS ÷ plain: median over rounds of the adjacent pair\'s TPS ratio):', '', ...costRows, '']),
  ].join('\n');
  writeFileSync(join(outDir, `router-${stamp}.md`), md);
  process.stdout.write(`${md}\nwritten: bench/results/router-${stamp}.{json,md}\n`);
}

await main();
