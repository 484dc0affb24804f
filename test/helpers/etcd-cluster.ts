/**
 * A real multi-member etcd: one Debian /usr/bin/etcd per "host", each started
 * through the host's launcher (its network namespace) on the host's own
 * address, forming one Raft cluster. Members can be killed and started again
 * on the same data directory, as when a host or its etcd process dies.
 *
 * Callers must register `stop()` (t.after / a SIGINT handler); an exit hook
 * kills what is left as a last resort.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { healthy, readLogTail } from './etcd.js';
import { waitFor } from './wait.js';

export interface EtcdHost {
  name: string;
  address: string;
  /** argv prefix that runs a program on this host (e.g. NetworkLab.wrap). */
  launcher: (argv: string[]) => string[];
}

export interface EtcdClusterOptions {
  /** Parent directory: each member keeps its data and log in <dir>/etcd-<name>. */
  dir: string;
  clientPort?: number;
  peerPort?: number;
  heartbeatMs?: number;
  electionTimeoutMs?: number;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

export class EtcdCluster {
  private readonly children = new Map<string, ChildProcess>();

  private constructor(
    readonly hosts: EtcdHost[],
    private readonly options: Required<EtcdClusterOptions>,
  ) {}

  /** Client URLs of every member. */
  get endpoints(): string[] {
    return this.hosts.map((h) => this.clientUrl(h));
  }

  clientUrl(host: EtcdHost): string {
    return `http://${host.address}:${this.options.clientPort}`;
  }

  private peerUrl(host: EtcdHost): string {
    return `http://${host.address}:${this.options.peerPort}`;
  }

  static async start(hosts: EtcdHost[], options: EtcdClusterOptions): Promise<EtcdCluster> {
    const cluster = new EtcdCluster(hosts, { clientPort: 2379, peerPort: 2380, heartbeatMs: 100, electionTimeoutMs: 1_000, ...options });
    try {
      for (const host of hosts) cluster.startMember(host.name);
      await cluster.waitHealthy(hosts.map((h) => h.name), 60_000);
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  private host(name: string): EtcdHost {
    const host = this.hosts.find((h) => h.name === name);
    if (!host) throw new Error(`no etcd member on ${name}`);
    return host;
  }

  private memberDir(name: string): string {
    return join(this.options.dir, `etcd-${name}`);
  }

  running(name: string): boolean {
    const child = this.children.get(name);
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  pid(name: string): number | undefined {
    return this.running(name) ? this.children.get(name)!.pid : undefined;
  }

  /** Starts the member (again): on an existing data directory etcd rejoins with its old identity. */
  startMember(name: string): void {
    if (this.running(name)) return;
    const host = this.host(name);
    const dir = this.memberDir(name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const log = openSync(join(dir, 'etcd.log'), 'a', 0o600);
    const argv = [
      '/usr/bin/etcd',
      '--name', name,
      '--data-dir', join(dir, 'data'),
      '--listen-client-urls', this.clientUrl(host),
      '--advertise-client-urls', this.clientUrl(host),
      '--listen-peer-urls', this.peerUrl(host),
      '--initial-advertise-peer-urls', this.peerUrl(host),
      '--initial-cluster', this.hosts.map((h) => `${h.name}=${this.peerUrl(h)}`).join(','),
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', 'relevo-test',
      '--heartbeat-interval', String(this.options.heartbeatMs),
      '--election-timeout', String(this.options.electionTimeoutMs),
      '--logger', 'zap',
      '--log-level', 'warn',
    ];
    const [program, ...args] = host.launcher(argv);
    const child = spawn(program!, args, { stdio: ['ignore', log, log] });
    closeSync(log);
    live.add(child);
    child.once('exit', () => live.delete(child));
    this.children.set(name, child);
  }

  /** SIGKILL (after SIGCONT, should it be stopped) and wait for the exit. */
  async killMember(name: string): Promise<void> {
    const child = this.children.get(name);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    await exited;
  }

  /** Waits until each named member answers /health (it has a leader and serves requests). */
  async waitHealthy(names: string[], timeoutMs: number): Promise<void> {
    await waitFor(
      `etcd members ${names.join(', ')} healthy`,
      async () => {
        for (const name of names) if (!(await healthy(this.clientUrl(this.host(name))))) return false;
        return true;
      },
      timeoutMs,
      250,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n${names.map((n) => `--- etcd ${n}:\n${readLogTail(join(this.memberDir(n), 'etcd.log'))}`).join('\n')}`);
    });
  }

  async stop(): Promise<void> {
    for (const name of this.children.keys()) await this.killMember(name);
  }
}
