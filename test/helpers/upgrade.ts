/**
 * Helpers for the major-version upgrade test and benchmark: a bin directory
 * for a second PostgreSQL version, SQL on any database of a member, and a
 * write load through the router that records every acknowledged row.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { clusterKeys } from '../../src/cluster/keys.js';
import { loadCredentials } from '../../src/config/secrets.js';
import { startRouter, type RouterHandle } from '../../src/router/index.js';
import { MAIN, TestCluster } from './cluster.js';
import { waitFor } from './wait.js';

const execFileAsync = promisify(execFile);

export const DEBIAN_15_BIN = '/usr/lib/postgresql/15/bin';

/**
 * A bin directory for the agent of a new-version member: the fetched
 * server build (initdb, pg_ctl, postgres) plus the client programs the agent
 * also runs (psql to create its roles, pg_controldata to read pg_control,
 * whose first fields are read fine from Debian's 15 build). Returns
 * undefined with the reason when the build cannot be fetched.
 */
export function newVersionBinDir(major: string): { binDir: string } | { skip: string } {
  let serverBin: string;
  try {
    serverBin = execFileSync('bash', [new URL('../../../scripts/fetch-postgres.sh', import.meta.url).pathname, major], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 }).trim();
  } catch (error) {
    return { skip: `cannot fetch PostgreSQL ${major} (scripts/fetch-postgres.sh): ${(error as { stderr?: string }).stderr?.trim() || (error as Error).message}` };
  }
  const dir = mkdtempSync(join(tmpdir(), `relevo-pg${major}-bin-`));
  chmodSync(dir, 0o755);
  for (const program of ['initdb', 'pg_ctl', 'postgres']) symlinkSync(join(serverBin, program), join(dir, program));
  for (const program of ['psql', 'pg_controldata']) symlinkSync(join(DEBIAN_15_BIN, program), join(dir, program));
  return { binDir: dir };
}

/** Runs SQL on one database of a member as the agent role (Unix socket). */
export async function sqlIn<R extends pg.QueryResultRow = pg.QueryResultRow>(cluster: TestCluster, member: string, database: string, text: string, params: unknown[] = []): Promise<R[]> {
  const config = cluster.member(member).config;
  const credentials = loadCredentials(config);
  if (!credentials) throw new Error('no credentials yet');
  const client = new pg.Client({ host: config.postgres.socketDir, port: config.postgres.port, user: 'relevo', password: credentials.agentPassword, database, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return (await client.query<R>(text, params)).rows;
  } finally {
    await client.end();
  }
}

export interface RouterWrite {
  id: number;
  /** The server port that acknowledged it (which cluster). */
  port: number;
  at: number;
}

/**
 * Clients inserting one row per autocommit transaction through the router,
 * back to back; every acknowledged id is kept, and every error. A client
 * reconnects after an error (the test expects none).
 */
export class RouterWriters {
  readonly acks: RouterWrite[] = [];
  readonly errors: { at: number; message: string }[] = [];
  private running = true;
  private readonly loops: Promise<void>[] = [];

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly table: string,
    clients: number,
    private readonly intervalMs = 2,
  ) {
    for (let i = 0; i < clients; i++) this.loops.push(this.loop(i));
  }

  private async loop(writer: number): Promise<void> {
    let client: pg.Client | undefined;
    let n = 0;
    while (this.running) {
      try {
        if (!client) {
          client = new pg.Client({ ...this.config, application_name: `writer-${writer}` });
          client.on('error', () => undefined);
          await client.connect();
        }
        const r = await client.query<{ id: string; port: number }>(`INSERT INTO ${this.table} (writer, n) VALUES ($1, $2) RETURNING id::text AS id, inet_server_port() AS port`, [writer, n++]);
        this.acks.push({ id: Number(r.rows[0]!.id), port: r.rows[0]!.port, at: Date.now() });
      } catch (error) {
        this.errors.push({ at: Date.now(), message: (error as Error).message });
        await client?.end().catch(() => undefined);
        client = undefined;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      if (this.intervalMs > 0) await new Promise((resolve) => setTimeout(resolve, this.intervalMs));
    }
    await client?.end().catch(() => undefined);
  }

  /** The longest time between two consecutive acknowledgements (any client) in [from, to]. */
  longestGap(from = 0, to = Infinity): number {
    const times = this.acks.map((a) => a.at).filter((t) => t >= from && t <= to).sort((a, b) => a - b);
    let gap = 0;
    for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
    return gap;
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

export const APP_PASSWORD = 'app-Upgrade-1';

export interface BlueGreen {
  blue: TestCluster;
  green: TestCluster;
  router: RouterHandle;
  /** The api section every member file of the test has (Basic credentials the upgrade command presents). */
  api: Record<string, unknown>;
  /** How clients reach the app database through the router (session mode). */
  client: pg.ClientConfig;
  /**
   * Runs `relevo upgrade <args> -c <blue member file> --to <green member file>`:
   * by default the first member's of each (`to` another new cluster); `files`
   * names other members' files (e.g. replicas': the command then works
   * through the primaries' agents only).
   */
  upgrade(args: string[], to?: TestCluster, files?: { from?: string; to?: string }): Promise<{ code: number; stdout: string; stderr: string }>;
  destroy(): Promise<void>;
}

/**
 * Two clusters in one store: "blue" (one member) on Debian's 15 with
 * wal_level=logical and a database `app` owned by role `app`, "green" on the
 * new version's bin directory with `greenMembers` members (its replicas
 * cloned by relevo's own base backup: that bin directory has no
 * pg_basebackup); and a session-mode router configured for blue. Every
 * member's API takes the same Basic credentials (api.auth), which the
 * upgrade command presents to the primaries' agents. With `blueMembers` 2,
 * blue2 is a replica; members after the first (blue2, green2, …) have a socket
 * directory of their own, so a command given their member files cannot reach
 * a primary through a local socket.
 */
export async function startBlueGreen(binDir: string, settings: Record<string, unknown> = { loopWaitMs: 300, ttlMs: 3_000 }, greenMembers = 1, blueMembers = 1): Promise<BlueGreen> {
  const blue = await TestCluster.create({ store: 'embedded', name: 'blue', tls: false, settings: { ...settings, postgresql: { wal_level: 'logical' } } });
  const green = await TestCluster.create({ store: { sharedWith: blue }, name: 'green', tls: false, settings });
  let router: RouterHandle | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'relevo-bluegreen-'));
  const destroy = async () => {
    await router?.stop();
    await green.destroy();
    await blue.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const passwordFile = join(dir, 'api-password');
    writeFileSync(passwordFile, 'upgrade-api-Secret-1\n', { mode: 0o600 });
    const api = { auth: { username: 'ops', password: { file: passwordFile } } };
    // The agent creates the directory, owned by the PostgreSQL OS user.
    const ownSocket = (cluster: TestCluster, name: string) => ({ socketDir: join(cluster.dir, `run-${name}`) });
    const blues = Array.from({ length: blueMembers }, (_, i) => `blue${i + 1}`);
    for (const [i, name] of blues.entries()) await blue.defineMember(name, { api, ...(i > 0 ? { postgresExtra: ownSocket(blue, name) } : {}) });
    const greens = Array.from({ length: greenMembers }, (_, i) => `green${i + 1}`);
    for (const [i, name] of greens.entries()) await green.defineMember(name, { api, postgresExtra: { binDir, ...(i > 0 ? ownSocket(green, name) : {}) } });
    blue.startAgent('blue1');
    green.startAgent('green1');
    // blue1 and green1 bootstrap (they win the initialize key), the others clone them.
    await Promise.all([
      blue.waitHealthy(['blue1']).then(() => blues.slice(1).forEach((n) => blue.startAgent(n))),
      green.waitHealthy(['green1']).then(() => greens.slice(1).forEach((n) => green.startAgent(n))),
    ]);
    await Promise.all([blues.length > 1 ? blue.waitHealthy(blues) : undefined, greens.length > 1 ? green.waitHealthy(greens) : undefined]);
    await blue.sql('blue1', `CREATE ROLE app LOGIN PASSWORD '${APP_PASSWORD}'`, []);
    await blue.sql('blue1', 'CREATE DATABASE app OWNER app', []);
    const verifier = (await blue.sql<{ v: string }>('blue1', "SELECT rolpassword AS v FROM pg_authid WHERE rolname = 'app'", []))[0]!.v;
    const verifiersFile = join(dir, 'verifiers');
    writeFileSync(verifiersFile, `"app" "${verifier}"\n`, { mode: 0o600 });
    router = await startRouter({
      name: 'r1',
      cluster: 'blue',
      store: blue.store,
      listen: { readWrite: '127.0.0.1:0', readOnly: null },
      mode: { readWrite: 'session' },
      session: { verifiersFile },
      timeouts: { startupMs: 5_000, connectMs: 2_000, holdMs: 30_000, drainMs: 2_000, refreshMs: 200, defaultTtlMs: 5_000 },
      publishIntervalMs: 500,
    });
    const routerPort = Number(router.addresses.readWrite!.split(':').pop());
    await waitFor('the router to publish itself', async () => (await blue.store.list(clusterKeys('blue').routersPrefix)).length > 0, 10_000, 100);
    const fileOf = (c: TestCluster) => c.member([...c.members.keys()][0]!).file;
    return {
      blue,
      green,
      router,
      api,
      client: { host: '127.0.0.1', port: routerPort, user: 'app', password: APP_PASSWORD, database: 'app' },
      async upgrade(args, to = green, files = {}) {
        try {
          const { stdout, stderr } = await execFileAsync(process.execPath, [MAIN, 'upgrade', ...args, '-c', files.from ?? fileOf(blue), '--to', files.to ?? fileOf(to)], { timeout: 3_600_000, maxBuffer: 64 * 1024 * 1024 });
          return { code: 0, stdout, stderr };
        } catch (error) {
          const e = error as { code?: number; stdout?: string; stderr?: string };
          return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
        }
      },
      destroy,
    };
  } catch (error) {
    await destroy();
    throw error;
  }
}
