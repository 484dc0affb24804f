/**
 * A real, single-member etcd for tests: Debian's /usr/bin/etcd on free
 * loopback ports with its own temporary data directory.
 *
 * Callers must register `stop()` with `after`/`t.after` so the process is
 * killed also when a test fails; as a last resort a process 'exit' hook kills
 * it too, so an aborted test run leaves no etcd behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts } from './ports.js';

export interface EtcdProcess {
  /** Client URLs, e.g. ['http://127.0.0.1:40123']. */
  endpoints: string[];
  pid: number;
  dataDir: string;
  /** SIGKILLs the process (continuing it first if suspended) and removes the data dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGSTOP: etcd keeps its sockets open but answers nothing — a hung server. */
  suspend(): void;
  /** SIGCONT after suspend(). */
  resume(): void;
}

export interface EtcdOptions {
  /** Raft heartbeat; fast by default so the single member elects itself quickly. */
  heartbeatMs?: number;
  electionTimeoutMs?: number;
  etcdBinary?: string;
  startTimeoutMs?: number;
  /** Address to listen on (default 127.0.0.1), e.g. a NetworkLab's gateway. */
  host?: string;
  /** Serve clients over TLS (https:// endpoints) with these files, and require client certificates from `caFile`. */
  tls?: { certFile: string; keyFile: string; caFile: string; client: { ca: string; cert: string; key: string } };
}

/** Running etcd processes and their data dirs, for the last-resort exit hook. */
const live = new Map<ChildProcess, string>();
process.on('exit', () => {
  for (const [child, dataDir] of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
});

export async function startEtcd(options: EtcdOptions = {}): Promise<EtcdProcess> {
  // A port picked free can be taken before etcd binds it; retry with new ports.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(options);
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

async function startOnce(options: EtcdOptions): Promise<EtcdProcess> {
  const heartbeat = options.heartbeatMs ?? 50;
  const election = options.electionTimeoutMs ?? 500;
  const host = options.host ?? '127.0.0.1';
  const [clientPort, peerPort] = await freePorts(2, host);
  const dataDir = mkdtempSync(join(tmpdir(), 'relevo-etcd-'));
  const clientUrl = `${options.tls ? 'https' : 'http'}://${host}:${clientPort}`;
  const peerUrl = `http://${host}:${peerPort}`;
  const logPath = join(dataDir, 'etcd.log');
  const logFd = openSync(logPath, 'a', 0o600);
  const child = spawn(
    options.etcdBinary ?? '/usr/bin/etcd',
    [
      '--name', 'test',
      '--data-dir', join(dataDir, 'data'),
      '--listen-client-urls', clientUrl,
      '--advertise-client-urls', clientUrl,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `test=${peerUrl}`,
      '--initial-cluster-state', 'new',
      '--heartbeat-interval', String(heartbeat),
      '--election-timeout', String(election),
      '--logger', 'zap',
      '--log-level', 'warn',
      ...(options.tls
        ? ['--cert-file', options.tls.certFile, '--key-file', options.tls.keyFile, '--trusted-ca-file', options.tls.caFile, '--client-cert-auth']
        : []),
    ],
    { stdio: ['ignore', logFd, logFd] },
  );
  closeSync(logFd);
  live.set(child, dataDir);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let exitedEarly = false;
  void exited.then(() => {
    exitedEarly = true;
    live.delete(child);
  });

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return exited;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    await exited;
    rmSync(dataDir, { recursive: true, force: true });
  };

  const pid = child.pid;
  if (pid === undefined) {
    await stop();
    throw new Error('could not start etcd');
  }

  const deadline = Date.now() + (options.startTimeoutMs ?? 15_000);
  for (;;) {
    if (exitedEarly) {
      const log = readLogTail(logPath);
      await stop();
      throw new Error(`etcd exited during startup:\n${log}`);
    }
    if (await healthy(clientUrl, options.tls?.client)) break;
    if (Date.now() > deadline) {
      const log = readLogTail(logPath);
      await stop();
      throw new Error(`etcd did not become healthy within the start timeout:\n${log}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  return {
    endpoints: [clientUrl],
    pid,
    dataDir,
    stop,
    suspend: () => process.kill(pid, 'SIGSTOP'),
    resume: () => process.kill(pid, 'SIGCONT'),
  };
}

export function readLogTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').slice(-4000);
  } catch {
    return '(no log)';
  }
}

/** GET /health answers {"health":"true"} once the member has a leader and serves requests. */
export function healthy(clientUrl: string, tls?: { ca: string; cert: string; key: string }): Promise<boolean> {
  return new Promise((resolve) => {
    // agent: false: no keep-alive socket outlives the check.
    const get = tls ? httpsGet : httpGet;
    const request = get(`${clientUrl}/health`, { agent: false, timeout: 1000, ...(tls ?? {}) }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        try {
          resolve(response.statusCode === 200 && (JSON.parse(body) as { health?: unknown }).health === 'true');
        } catch {
          resolve(false);
        }
      });
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(false));
  });
}
