import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as stringifyYaml } from 'yaml';
import { clusterKeys } from '../cluster/keys.js';
import { loadMemberConfig } from '../config/load.js';
import { loadCredentials, writePrivateFile } from '../config/secrets.js';
import { clusterCaFile } from '../tls/member.js';
import { agentSqlTarget, localPostgres } from '../postgres/local.js';
import { scramVerifier } from '../postgres/scram.js';
import { quoteLiteral, withConnection } from '../postgres/sql.js';
import { runningPostmasterPid } from '../postgres/datadir.js';
import { openStore } from '../store/open.js';
import { CliError } from './context.js';
import { clusterListing, renderListing } from './list.js';

export interface DemoOptions {
  /** Absent: a fresh directory is created under the system's temporary directory. */
  dir?: string;
  members: number;
  port: number;
  apiPort: number;
  /** Router listeners: read-write on this port, read-only on the next. */
  routerPort?: number;
}

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

/** Marks a directory as created by `relevo demo` (for this user): only such a directory is ever reused. */
const MARKER = '.relevo-demo';

/**
 * The demo's working directory. Without --dir, a fresh one (mkdtemp). With
 * --dir, a directory the demo creates now, or one an earlier demo of this user
 * created: a real directory (not a link), owned by us, writable by nobody
 * else, holding our marker. Anything else is refused: run as root, the demo
 * must not adopt what another user prepared in a shared place like /tmp.
 */
export function prepareDemoDir(requested: string | undefined): string {
  const uid = process.getuid!();
  if (requested === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'relevo-demo-'));
    return claim(dir);
  }
  const dir = resolve(requested);
  try {
    mkdirSync(dir, { mode: 0o700 });
    return claim(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw new CliError('DEMO_DIR_UNUSABLE', `demo directory ${dir}: cannot create it (${(error as NodeJS.ErrnoException).code})`);
  }
  const refuse = (why: string) => {
    throw new CliError('DEMO_DIR_UNUSABLE', `demo directory ${dir} ${why}: the demo only reuses a directory it created; omit --dir for a fresh one, or give a path that does not exist`);
  };
  const stats = lstatSync(dir);
  if (!stats.isDirectory()) refuse('is not a directory (or is a symbolic link)');
  if (stats.uid !== uid) refuse(`belongs to uid ${stats.uid}, not to you`);
  if ((stats.mode & 0o022) !== 0) refuse(`is writable by group or others (mode ${(stats.mode & 0o777).toString(8)})`);
  let marker;
  try {
    marker = lstatSync(join(dir, MARKER));
  } catch {
    return refuse('was not created by relevo demo');
  }
  if (!marker.isFile() || marker.uid !== uid) refuse('was not created by relevo demo');
  return dir;
}

function claim(dir: string): string {
  // PostgreSQL (run as postgres when we are root) must reach the data directories inside.
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, MARKER), `created by relevo demo at ${new Date().toISOString()}\n`, { mode: 0o600, flag: 'wx' });
  return dir;
}

/** Member files for a local cluster on the embedded store: the same files an operator would write. */
export function writeDemoConfigs(options: DemoOptions & { dir: string }): string[] {
  const files: string[] = [];
  for (let i = 0; i < options.members; i++) {
    const name = `node${i + 1}`;
    const file = join(options.dir, `${name}.yaml`);
    const config = {
      cluster: 'demo',
      name,
      store: { backend: 'embedded', path: join(options.dir, 'store', 'relevo.db') },
      postgres: { dataDir: join(options.dir, name, 'data'), listen: '127.0.0.1', port: options.port + i, socketDir: join(options.dir, 'run') },
      api: { listen: `127.0.0.1:${options.apiPort + i}` },
      secrets: { file: join(options.dir, 'secrets.yaml') },
      // `relevo router -c node1.yaml` runs relevo's router beside the cluster.
      ...(i === 0 ? { router: demoRouter(options) } : {}),
    };
    writeFileSync(file, stringifyYaml(config), { mode: 0o600 });
    files.push(file);
  }
  return files;
}

function demoRouter(options: DemoOptions) {
  const port = options.routerPort ?? 15440;
  return { name: 'demo-router', listen: { readWrite: `127.0.0.1:${port}`, readOnly: `127.0.0.1:${port + 1}` }, publishIntervalMs: 1_000 };
}

async function waitUntilReady(configFile: string, members: number, timeoutMs: number): Promise<string> {
  const config = loadMemberConfig(configFile);
  const store = await openStore(config.store);
  const handle = { config, store, keys: clusterKeys(config.cluster) };
  const deadline = Date.now() + timeoutMs;
  let text = '';
  try {
    while (Date.now() < deadline) {
      const listing = await clusterListing(handle).catch(() => undefined);
      if (listing) {
        text = renderListing(listing);
        const primaries = listing.members.filter((m) => m.state === 'primary').length;
        const streaming = listing.members.filter((m) => m.state === 'replica' && m.streaming).length;
        if (primaries === 1 && streaming === members - 1) return text;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  } finally {
    await store.close();
  }
  throw new CliError('DEMO_NOT_READY', `cluster not ready after ${timeoutMs / 1000} s; last view:\n${text}\nsee the agent logs in the demo directory`);
}

/** `relevo demo`: three agents as separate processes; Ctrl-C or SIGTERM stops all of them and their PostgreSQL. */
export async function runDemo(requested: DemoOptions): Promise<void> {
  const options = { ...requested, dir: prepareDemoDir(requested.dir) };
  console.log(`relevo demo: working directory ${options.dir}`);
  const files = writeDemoConfigs(options);
  const agents: ChildProcess[] = files.map((file, i) => {
    const log = openSync(join(options.dir, `node${i + 1}.agent.log`), 'a');
    return spawn(process.execPath, [MAIN, 'agent', '-c', file], { stdio: ['ignore', log, log] });
  });
  const routerLog = openSync(join(options.dir, 'router.log'), 'a');
  agents.push(spawn(process.execPath, [MAIN, 'router', '-c', files[0]!], { stdio: ['ignore', routerLog, routerLog] }));
  console.log(`relevo demo: started ${agents.length - 1} agents and a router (pids ${agents.map((a) => a.pid).join(', ')}); logs in ${options.dir}/node*.agent.log`);

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      console.log('\nrelevo demo: stopping agents and PostgreSQL...');
      await Promise.all(agents.map((agent) => stopChild(agent, 60_000)));
      // Backstop: nothing we started may outlive the demo.
      for (const file of files) {
        const pid = runningPostmasterPid(loadMemberConfig(file).postgres.dataDir);
        if (pid !== undefined) process.kill(pid, 'SIGQUIT');
      }
      console.log('relevo demo: stopped; data kept in', options.dir);
    })());
  process.on('SIGINT', () => void stop().then(() => process.exit(0)));
  process.on('SIGTERM', () => void stop().then(() => process.exit(0)));

  try {
    const listing = await waitUntilReady(files[0]!, options.members, 180_000);
    console.log(`\n${listing}\n`);
    await createDemoRole(files);
    printConnectionHelp(options, files[0]!);
  } catch (error) {
    console.error(`relevo demo: ${(error as Error).message}`);
    await stop();
    process.exit(1);
  }
  console.log('\nPress Ctrl-C to stop the cluster.');
  await new Promise(() => undefined);
}

/** The demo's application role: relevo's own roles are no network logins for applications (docs/security.md#roles). */
const DEMO_ROLE = 'demo';

/** Creates the `demo` role (password: the agent password, so the one pgpass file serves) on the primary, through its socket. */
async function createDemoRole(files: string[]): Promise<void> {
  for (const file of files) {
    const config = loadMemberConfig(file);
    const credentials = loadCredentials(config);
    if (!credentials) continue;
    const done = await withConnection(agentSqlTarget(localPostgres(config), credentials), async (c) => {
      if ((await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r) return false;
      const verifier = quoteLiteral(scramVerifier(credentials.agentPassword));
      await c.query(`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${DEMO_ROLE}') THEN CREATE ROLE ${DEMO_ROLE} LOGIN PASSWORD ${verifier}; END IF; END $$`);
      await c.query(`GRANT CREATE ON SCHEMA public TO ${DEMO_ROLE}`);
      return true;
    }).catch(() => false);
    if (done) return;
  }
  throw new Error('could not create the demo role on the primary');
}

function printConnectionHelp(options: DemoOptions & { dir: string }, firstConfig: string): void {
  const config = loadMemberConfig(firstConfig);
  const credentials = loadCredentials(config);
  const passfile = join(options.dir, 'client.pgpass');
  if (credentials && !existsSync(passfile)) writePrivateFile(passfile, `*:*:*:${DEMO_ROLE}:${credentials.agentPassword.replace(/[\\:]/g, '\\$&')}\n`);
  const hosts = Array.from({ length: options.members }, () => '127.0.0.1').join(',');
  const ports = Array.from({ length: options.members }, (_, i) => options.port + i).join(',');
  const caFile = clusterCaFile(config);
  const tls = caFile ? ` sslmode=verify-full sslrootcert=${caFile}` : '';
  const apiBase = (port: string | number) => (caFile ? `https://127.0.0.1:${port}` : `http://127.0.0.1:${port}`);
  const curl = caFile ? `curl -sf --cacert ${caFile}` : 'curl -sf';
  const router = demoRouter(options).listen;
  const [rw, ro] = [router.readWrite.split(':')[1], router.readOnly.split(':')[1]];
  const apiPorts = Array.from({ length: options.members }, (_, i) => options.apiPort + i).join(' ');
  console.log("Connect through relevo's router (TLS end to end; the password is in a 0600 pgpass file, never on the command line):");
  console.log(`  read-write (the primary):  PGPASSFILE=${passfile} psql "host=127.0.0.1 port=${rw} user=${DEMO_ROLE} dbname=postgres${tls}"`);
  console.log(`  read-only (the replicas):  PGPASSFILE=${passfile} psql "host=127.0.0.1 port=${ro} user=${DEMO_ROLE} dbname=postgres${tls}"`);
  console.log(`  without the router (libpq multi-host): PGPASSFILE=${passfile} psql "host=${hosts} port=${ports} user=${DEMO_ROLE} dbname=postgres target_session_attrs=read-write${tls}"`);
  console.log(`Dashboard: ${apiBase(options.apiPort)}/   (any member's API port${caFile ? `; the cluster CA is ${caFile}` : ''})`);
  console.log(`Status:    ./bin/relevo list -c ${firstConfig}    events: ./bin/relevo events -f -c ${firstConfig}`);
  console.log(`REST:      ${curl} ${apiBase(options.apiPort)}/status`);
  console.log('Watch a failover: keep the dashboard open and kill the primary (agent and PostgreSQL):');
  console.log(`  kill -9 $(for p in ${apiPorts}; do ${curl} ${caFile ? 'https' : 'http'}://127.0.0.1:$p/primary; done | grep -o '"\\(agent\\|postmaster\\)Pid":[0-9]*' | cut -d: -f2)`);
}

function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

