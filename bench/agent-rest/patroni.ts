/**
 * A 3-member Patroni cluster (Debian's patroni package) on a given etcd, for
 * benchmarks that compare relevo with Patroni in the same run (bench/agent-rest,
 * bench/rolling). PostgreSQL 15 from Debian, synchronous mode, Patroni's default timing.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as stringifyYaml } from 'yaml';
import { lookupOsUser } from '../../src/util/os-user.js';
import type { EtcdProcess } from '../../test/helpers/etcd.js';
import { freePorts } from '../../test/helpers/ports.js';
import { waitFor } from '../../test/helpers/wait.js';

export interface PatroniMember {
  tool: 'patroni';
  member: string;
  pid: number;
  loopSeconds: number;
  pgPort: number;
  apiPort: number;
}

export interface PatroniCluster {
  members: PatroniMember[];
  stop: () => Promise<void>;
  dir: string;
  /** patronictl with the first member's configuration. */
  ctl(args: string[], timeoutMs?: number): string;
  superuser: { user: string; password: string };
}

export function patroniInstalled(): boolean {
  try {
    execFileSync('patroni', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A 3-member Patroni cluster on the given etcd (over TLS with `tls`'s client certificate), PostgreSQL 15, synchronous mode, Patroni's default timing. */
export async function startPatroni(etcd: EtcdProcess, tls?: { ca: string; cert: string; key: string }): Promise<PatroniCluster> {
  const postgres = lookupOsUser('postgres');
  const dir = mkdtempSync(join(tmpdir(), 'relevo-bench-patroni-'));
  chownSync(dir, postgres.uid, postgres.gid);
  mkdirSync(join(dir, 'run'), { mode: 0o700 });
  chownSync(join(dir, 'run'), postgres.uid, postgres.gid);
  const children: ChildProcess[] = [];
  const members: PatroniMember[] = [];
  const etcdHost = etcd.endpoints[0]!.replace(/^https?:\/\//, '');
  for (const name of ['p1', 'p2', 'p3']) {
    const [pgPort, apiPort] = await freePorts(2);
    const config = {
      scope: 'bench',
      namespace: '/patroni-bench/',
      name,
      restapi: { listen: `127.0.0.1:${apiPort}`, connect_address: `127.0.0.1:${apiPort}` },
      etcd3: { hosts: etcdHost, ...(tls ? { protocol: 'https', cacert: tls.ca, cert: tls.cert, key: tls.key } : {}) },
      bootstrap: {
        dcs: { ttl: 30, loop_wait: 10, retry_timeout: 10, synchronous_mode: true, postgresql: { use_pg_rewind: true } },
        initdb: [{ encoding: 'UTF8' }, 'data-checksums'],
      },
      postgresql: {
        listen: `127.0.0.1:${pgPort}`,
        connect_address: `127.0.0.1:${pgPort}`,
        data_dir: join(dir, name),
        bin_dir: '/usr/lib/postgresql/15/bin',
        pgpass: join(dir, `${name}.pgpass`),
        authentication: { replication: { username: 'replicator', password: 'bench-replication' }, superuser: { username: 'postgres', password: 'bench-superuser' } },
        parameters: { unix_socket_directories: join(dir, 'run') },
        pg_hba: ['local all all trust', 'host replication replicator 127.0.0.1/32 scram-sha-256', 'host all all 127.0.0.1/32 scram-sha-256'],
      },
    };
    const file = join(dir, `${name}.yml`);
    writeFileSync(file, stringifyYaml(config), { mode: 0o600 });
    chownSync(file, postgres.uid, postgres.gid);
    const log = join(dir, `${name}.log`);
    writeFileSync(log, '');
    chownSync(log, postgres.uid, postgres.gid);
    const fd = openSync(log, 'a');
    const child = spawn('patroni', [file], { uid: postgres.uid, gid: postgres.gid, stdio: ['ignore', fd, fd], cwd: dir });
    children.push(child);
    members.push({ tool: 'patroni', member: name, pid: child.pid!, loopSeconds: 10, pgPort: pgPort!, apiPort: apiPort! });
    // One at a time: the first bootstraps, the others clone from it.
    if (name === 'p1') await waitForPatroni(apiPort!, 'primary', 120_000);
  }
  const stop = async () => {
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((resolve) => (c.exitCode !== null ? resolve(undefined) : c.once('exit', resolve)))));
    // Backstop: any postmaster left behind.
    for (const name of ['p1', 'p2', 'p3']) {
      try {
        const pid = Number(readFileSync(join(dir, name, 'postmaster.pid'), 'utf8').split('\n')[0]);
        if (pid > 0) process.kill(pid, 'SIGQUIT');
      } catch {
        // not running
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const ctl = (args: string[], timeoutMs = 120_000) =>
    execFileSync('patronictl', ['-c', join(dir, 'p1.yml'), ...args], { encoding: 'utf8', timeout: timeoutMs, uid: postgres.uid, gid: postgres.gid, cwd: dir });
  return { members, stop, dir, ctl, superuser: { user: 'postgres', password: 'bench-superuser' } };
}

async function waitForPatroni(apiPort: number, role: string, timeoutMs: number): Promise<void> {
  await waitFor(
    `patroni on ${apiPort} as ${role}`,
    async () => {
      const response = await fetch(`http://127.0.0.1:${apiPort}/${role}`).catch(() => undefined);
      return response?.status === 200;
    },
    timeoutMs,
    1000,
  );
}

export async function patroniHealthy(members: PatroniMember[], dir: string): Promise<void> {
  await waitFor(
    'patroni: 1 leader and 2 streaming replicas',
    async () => {
      const configs = members.map((m) => readFileSync(join(dir, `${m.member}.yml`), 'utf8'));
      const port = /listen: 127\.0\.0\.1:(\d+)/.exec(configs[0]!)![1];
      const response = await fetch(`http://127.0.0.1:${port}/cluster`).catch(() => undefined);
      if (!response?.ok) return false;
      const cluster = (await response.json()) as { members: { role: string; state: string }[] };
      const leaders = cluster.members.filter((m) => m.role === 'leader').length;
      const streaming = cluster.members.filter((m) => m.role !== 'leader' && (m.state === 'streaming' || m.state === 'running')).length;
      return leaders === 1 && streaming === 2;
    },
    180_000,
    1000,
  );
}

