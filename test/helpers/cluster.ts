/**
 * A real relevo cluster for integration tests: every member is a separate
 * agent process (node dist/src/cli/main.js agent) managing a real PostgreSQL 15.
 * Tests signal those processes directly. destroy() stops everything by PID and
 * is registered with `after` by the caller; an exit hook is the last resort.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { stringify as stringifyYaml } from 'yaml';
import { readCluster } from '../../src/agent/observe.js';
import { clusterKeys } from '../../src/cluster/keys.js';
import { ClusterSettingsSchema, type ClusterSettings } from '../../src/cluster/settings.js';
import type { MemberStatus } from '../../src/cluster/types.js';
import { loadMemberConfig } from '../../src/config/load.js';
import { apiUrlOf, type MemberConfig } from '../../src/config/member.js';
import { apiCall, type ApiClientTls, type ApiResponse } from '../../src/tls/client.js';
import { caFilesOf } from '../../src/tls/member.js';
import { loadCredentials } from '../../src/config/secrets.js';
import { runningPostmasterPid } from '../../src/postgres/datadir.js';
import type { StoreConfig } from '../../src/store/config.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { fenceFiles, readFencerStatus } from '../../src/fence/files.js';
import { isFencerProcess } from '../../src/fence/identity.js';
import { freePorts } from './ports.js';
import { waitFor } from './wait.js';

/** The three members of the fault-injection tests. */
export const FAULT_TEST_MEMBERS = ['node1', 'node2', 'node3'];
export const FAULT_TEST_TTL_MS = 3_000;
/** Short leases keep fault tests quick; the fallback never fires, so no acknowledged commit may be lost. */
export const FAULT_TEST_SETTINGS: Partial<ClusterSettings> = {
  ttlMs: FAULT_TEST_TTL_MS,
  loopWaitMs: 300,
  fenceMarginMs: 1_000,
  synchronousMode: 'on',
  synchronousFallbackMs: 120_000,
  primaryRestartTimeoutMs: 10_000,
};

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const execFileAsync = promisify(execFile);

const livePids = new Set<number>();
process.on('exit', () => {
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

export interface TestClusterOptions {
  /** A new embedded store, etcd endpoints, or the store of another test cluster (two clusters in one store). */
  store: 'embedded' | { endpoints: string[]; tls?: { ca: string; cert?: string; key?: string } } | { sharedWith: TestCluster };
  /** Cluster settings written to the store before any agent starts. */
  settings?: Partial<ClusterSettings>;
  name?: string;
  /** TLS on every member (the default, as for real clusters); false writes tls.enabled: false. */
  tls?: boolean;
}

export interface Member {
  name: string;
  file: string;
  config: MemberConfig;
  agent: ChildProcess | undefined;
  logFile: string;
  /** The member runs on its own "host": this argv prefix starts a program in its network namespace. */
  launcher: ((argv: string[]) => string[]) | undefined;
}

/** Where a member runs when it is not on loopback: its own address, and how to start programs there. */
export interface Placement {
  address: string;
  launcher: (argv: string[]) => string[];
}

/** The application role of test clients over TCP (created by waitHealthy on the primary). */
export const TEST_APP_ROLE = { user: 'relevo_test_app', password: 'test-App-Pw-7' } as const;

export class TestCluster {
  readonly members = new Map<string, Member>();
  private constructor(
    readonly dir: string,
    readonly clusterName: string,
    readonly storeConfig: StoreConfig,
    readonly store: Store,
    private readonly tls = true,
  ) {}

  static async create(options: TestClusterOptions): Promise<TestCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'relevo-test-'));
    chmodSync(dir, 0o755);
    const storeConfig: StoreConfig =
      options.store === 'embedded'
        ? { backend: 'embedded', path: join(dir, 'store', 'relevo.db'), timeoutMs: 2_000 }
        : 'sharedWith' in options.store
          ? options.store.sharedWith.storeConfig
          : { backend: 'etcd', endpoints: options.store.endpoints, timeoutMs: 2_000, ...(options.store.tls ? { tls: options.store.tls } : {}) };
    const store = await openStore(storeConfig);
    const name = options.name ?? 'test';
    const cluster = new TestCluster(dir, name, storeConfig, store, options.tls ?? true);
    const settings = ClusterSettingsSchema.parse({ loopWaitMs: 500, ttlMs: 5_000, ...options.settings });
    await store.put(clusterKeys(name).config, JSON.stringify(settings));
    return cluster;
  }

  /** Writes a member file with free ports; does not start it. */
  async defineMember(name: string, extra: Record<string, unknown> = {}, placement?: Placement): Promise<Member> {
    const [port, apiPort] = await freePorts(2);
    const address = placement?.address ?? '127.0.0.1';
    const config = {
      cluster: this.clusterName,
      name,
      store: this.storeConfig,
      // `extra.postgresExtra` adds to the postgres section (e.g. binDir of another version).
      postgres: { dataDir: join(this.dir, name, 'data'), listen: address, port, socketDir: join(this.dir, 'run'), ...(extra.postgresExtra as Record<string, unknown> | undefined) },
      secrets: { file: join(this.dir, 'secrets.yaml') },
      log: { level: 'debug' },
      ...(this.tls ? {} : { tls: { enabled: false } }),
      ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'postgresExtra')),
      // `extra.api` adds to the listen address (e.g. auth), it does not replace it.
      api: { listen: `${address}:${apiPort}`, ...(extra.api as Record<string, unknown> | undefined) },
    };
    const file = join(this.dir, `${name}.yaml`);
    writeFileSync(file, stringifyYaml(config));
    const member: Member = { name, file, config: loadMemberConfig(file), agent: undefined, logFile: join(this.dir, `${name}.agent.log`), launcher: placement?.launcher };
    this.members.set(name, member);
    return member;
  }

  member(name: string): Member {
    const member = this.members.get(name);
    if (!member) throw new Error(`no member ${name} in the test cluster`);
    return member;
  }

  startAgent(name: string): ChildProcess {
    const member = this.member(name);
    const log = openSync(member.logFile, 'a');
    const argv = [process.execPath, MAIN, 'agent', '-c', member.file];
    const [program, ...args] = member.launcher ? member.launcher(argv) : argv;
    const child = spawn(program!, args, { stdio: ['ignore', log, log] });
    if (child.pid) livePids.add(child.pid);
    child.once('exit', () => child.pid && livePids.delete(child.pid));
    member.agent = child;
    return child;
  }

  /** Sends a signal to the member's agent process and, for terminating signals, waits for it to exit. */
  async signalAgent(name: string, signal: NodeJS.Signals, waitExitMs = 30_000): Promise<void> {
    const agent = this.member(name).agent;
    if (!agent || agent.exitCode !== null || agent.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => agent.once('exit', () => resolve()));
    agent.kill(signal);
    if (signal === 'SIGSTOP' || signal === 'SIGCONT') return;
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, waitExitMs))]);
  }

  postmasterPid(name: string): number | undefined {
    return runningPostmasterPid(this.member(name).config.postgres.dataDir);
  }

  async memberStatuses(): Promise<MemberStatus[]> {
    const { view } = await readCluster(this.store, clusterKeys(this.clusterName));
    if (!view.reachable) throw new Error(view.error);
    return view.members;
  }

  async status(name: string): Promise<MemberStatus | undefined> {
    return (await this.memberStatuses()).find((m) => m.name === name);
  }

  /** Waits until exactly one primary and every other listed member streams as a replica. */
  async waitHealthy(names: string[], timeoutMs = 120_000): Promise<MemberStatus[]> {
    return waitFor(
      `1 primary and ${names.length - 1} streaming replicas among ${names.join(', ')}`,
      async () => {
        const members = (await this.memberStatuses()).filter((m) => names.includes(m.name));
        const primaries = members.filter((m) => m.state === 'primary' && m.role === 'primary');
        const replicas = members.filter((m) => m.state === 'replica' && m.streaming);
        return members.length === names.length && primaries.length === 1 && replicas.length === names.length - 1 ? members : undefined;
      },
      timeoutMs,
      250,
    ).then(async (members) => {
      await this.ensureAppRole(members.find((m) => m.state === 'primary')!.name);
      return members;
    });
  }

  private appRoleReady = false;

  /**
   * The role test clients use over TCP (writers, probes): relevo's own roles
   * are no network superusers (pg_hba rejects `relevo` on TCP), so the tests
   * write as an ordinary application role that may create tables in public.
   */
  async ensureAppRole(primary: string): Promise<void> {
    if (this.appRoleReady) return;
    await this.sql(primary, `DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${TEST_APP_ROLE.user}') THEN
        CREATE ROLE ${TEST_APP_ROLE.user} LOGIN PASSWORD '${TEST_APP_ROLE.password}';
      END IF;
    END $$`);
    await this.sql(primary, `GRANT CREATE ON SCHEMA public TO ${TEST_APP_ROLE.user}`);
    this.appRoleReady = true;
  }

  /** Runs SQL on a member as the agent role through its Unix socket. */
  async sql<R extends pg.QueryResultRow = pg.QueryResultRow>(name: string, text: string, params: unknown[] = []): Promise<R[]> {
    const member = this.member(name);
    const credentials = loadCredentials(member.config);
    if (!credentials) throw new Error('no credentials yet');
    const client = new pg.Client({
      host: member.config.postgres.socketDir,
      port: member.config.postgres.port,
      user: 'relevo',
      password: credentials.agentPassword,
      database: 'postgres',
      connectionTimeoutMillis: 5_000,
    });
    // A server that crashes mid-query (a fault test) fails the query; without a listener it would also crash the test process.
    client.on('error', () => undefined);
    await client.connect();
    try {
      return (await client.query<R>(text, params)).rows;
    } finally {
      await client.end();
    }
  }

  /** One REST call to a member's agent, over HTTPS verified against the cluster CA when TLS is on. */
  async api(name: string, path: string, options: { method?: string; headers?: Record<string, string>; tls?: ApiClientTls } = {}): Promise<ApiResponse> {
    const config = this.member(name).config;
    const ca = config.tls.enabled ? readFileSync(caFilesOf(config).cert, 'utf8') : undefined;
    return apiCall(`${apiUrlOf(config)}${path}`, { timeoutMs: 5_000, ...options, ...(options.tls ? {} : ca ? { tls: { ca } } : {}) });
  }

  /** Runs the relevo CLI with a member's config; resolves with exit code and output (a whole rolling restart needs a longer timeoutMs). */
  async cli(args: string[], name?: string, timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
    const file = this.member(name ?? [...this.members.keys()][0]!).file;
    try {
      const { stdout, stderr } = await execFileAsync(process.execPath, [MAIN, ...args, '-c', file], { timeout: timeoutMs });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  }

  logTail(name: string, lines = 40): string {
    try {
      return readFileSync(this.member(name).logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** The member's fencer process (src/fence), from its status file, if it runs. */
  fencerPid(name: string): number | undefined {
    const dataDir = this.member(name).config.postgres.dataDir;
    const status = readFencerStatus(fenceFiles(dataDir).status);
    return status && isFencerProcess(status.pid, dataDir) ? status.pid : undefined;
  }

  killFencer(name: string): void {
    const pid = this.fencerPid(name);
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGCONT');
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }

  /** Stops every agent and PostgreSQL by PID, then removes the directory. Safe to call twice. */
  async destroy(): Promise<void> {
    for (const member of this.members.values()) {
      const agent = member.agent;
      if (agent && agent.exitCode === null && agent.signalCode === null) {
        const exited = new Promise<void>((resolve) => agent.once('exit', () => resolve()));
        agent.kill('SIGCONT');
        agent.kill('SIGKILL');
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
      }
    }
    // Fencers run apart from their agents (own session, re-parented): stopped by the PID they report, once the agents are gone.
    for (const member of this.members.values()) this.killFencer(member.name);
    for (const member of this.members.values()) {
      const pid = runningPostmasterPid(member.config.postgres.dataDir);
      if (pid === undefined) continue;
      try {
        process.kill(pid, 'SIGCONT');
        process.kill(pid, 'SIGQUIT');
      } catch {
        // gone already
      }
      await waitFor(`postmaster ${pid} of ${member.name} to exit`, () => runningPostmasterPid(member.config.postgres.dataDir) === undefined, 15_000).catch(() => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      });
    }
    await this.store.close().catch(() => undefined);
    if (!process.env.RELEVO_KEEP_TEST_DIRS) rmSync(this.dir, { recursive: true, force: true });
  }
}
