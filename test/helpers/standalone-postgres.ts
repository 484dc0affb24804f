/**
 * Standalone PostgreSQL 15 servers for tests and benchmarks: initdb as the
 * `postgres` OS user (we run as root), start on a free 127.0.0.1 port, stop by
 * PID. One initdb per process is copied for every further server (initdb costs
 * about a second, a copy a few milliseconds).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chownSync, cpSync, existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { lookupOsUser, runningAsRoot, spawnIdentity, type OsUser } from '../../src/util/os-user.js';
import { freePort } from './ports.js';

export const PG_BIN = process.env.RELEVO_PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface StandaloneOptions {
  /** Require scram-sha-256 for TCP connections and give the `postgres` role this password. */
  password?: string;
  /** Serve TLS with a self-signed certificate (clients may still choose plaintext). */
  ssl?: boolean;
  /** Extra postgresql.conf settings. */
  settings?: Record<string, string | number>;
  /** pg_hba.conf as given, instead of local trust plus one `host` rule for 127.0.0.1 (keep a `local … trust` line: readiness is checked over the socket). */
  hba?: string;
}

export interface StandaloneServer {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly pid: number;
  readonly password: string | undefined;
  /** "127.0.0.1:port", as a member publishes it. */
  readonly address: string;
  /** A pg client connected directly (not through any router) as postgres. */
  connect(database?: string): Promise<pg.Client>;
  /** Fast shutdown by PID, SIGKILL after 10 s; removes the directory. Idempotent. */
  stop(): Promise<void>;
}

let template: string | undefined;
let osUser: OsUser | undefined;

function user(): OsUser {
  osUser ??= lookupOsUser('postgres');
  return osUser;
}

function chownTree(path: string): void {
  if (runningAsRoot()) execFileSync('chown', ['-R', `${user().uid}:${user().gid}`, path]);
}

/** initdb once per process into a template data directory. */
function templateDir(): string {
  if (template && existsSync(template)) return template;
  const base = mkdtempSync(join(tmpdir(), 'relevo-pg-template-'));
  if (runningAsRoot()) chownSync(base, user().uid, user().gid);
  const data = join(base, 'data');
  execFileSync(join(PG_BIN, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--no-instructions'], {
    ...spawnIdentity(user()),
    stdio: ['ignore', 'ignore', 'pipe'],
    cwd: base,
  });
  template = base;
  process.once('exit', () => rmSync(base, { recursive: true, force: true }));
  return base;
}

function selfSignedCert(dir: string): void {
  execFileSync(
    'openssl',
    ['req', '-new', '-x509', '-days', '2', '-nodes', '-subj', '/CN=localhost', '-newkey', 'rsa:2048',
      '-keyout', join(dir, 'server.key'), '-out', join(dir, 'server.crt')],
    { stdio: 'ignore' },
  );
}

export async function startStandalone(options: StandaloneOptions = {}): Promise<StandaloneServer> {
  const base = mkdtempSync(join(tmpdir(), 'relevo-pg-'));
  if (runningAsRoot()) chownSync(base, user().uid, user().gid);
  const data = join(base, 'data');
  cpSync(join(templateDir(), 'data'), data, { recursive: true });
  const port = await freePort();
  const conf: Record<string, string | number> = {
    port,
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: `'${base}'`,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: 100,
    shared_buffers: "'32MB'",
    password_encryption: "'scram-sha-256'",
    log_min_messages: 'warning',
    ...(options.ssl ? { ssl: 'on', ssl_cert_file: "'server.crt'", ssl_key_file: "'server.key'" } : {}),
    ...options.settings,
  };
  appendFileSync(join(data, 'postgresql.conf'), Object.entries(conf).map(([k, v]) => `${k} = ${v}\n`).join(''));
  const method = options.password === undefined ? 'trust' : 'scram-sha-256';
  writeFileSync(join(data, 'pg_hba.conf'), options.hba ?? `local all all trust\nhost all all 127.0.0.1/32 ${method}\n`);
  if (options.ssl) selfSignedCert(data);
  chownTree(base);

  const logPath = join(base, 'postgres.log');
  const logFd = openSync(logPath, 'a');
  if (runningAsRoot()) chownSync(logPath, user().uid, user().gid);
  const child: ChildProcess = spawn(join(PG_BIN, 'postgres'), ['-D', data], {
    ...spawnIdentity(user()),
    stdio: ['ignore', logFd, logFd],
  });
  closeSync(logFd);
  const pid = child.pid;
  if (pid === undefined) throw new Error('postgres did not start');
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT');
      const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(kill);
    }
    rmSync(base, { recursive: true, force: true });
  };

  const server: StandaloneServer = {
    host: '127.0.0.1',
    port,
    dataDir: data,
    pid,
    password: options.password,
    address: `127.0.0.1:${port}`,
    connect: async (database = 'postgres') => {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database, password: options.password });
      await c.connect();
      return c;
    },
    stop,
  };

  try {
    // Ready once a Unix-socket connection (always trust) succeeds.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const c = new pg.Client({ host: base, port, user: 'postgres', database: 'postgres' });
      try {
        await c.connect();
        if (options.password !== undefined) {
          await c.query(`ALTER ROLE postgres PASSWORD '${options.password.replace(/'/g, "''")}'`);
        }
        await c.end();
        break;
      } catch (error) {
        await c.end().catch(() => undefined);
        if (child.exitCode !== null || Date.now() > deadline) {
          throw new Error(`postgres on port ${port} did not start: ${(error as Error).message}\n${readLog(logPath)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return server;
}

function readLog(path: string): string {
  try {
    return readFileSync(path, 'utf8').slice(-2000);
  } catch {
    return '';
  }
}
