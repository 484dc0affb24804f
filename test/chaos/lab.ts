/**
 * The chaos lab: N simulated hosts on one machine. Each host is a network
 * namespace joined to a bridge by a veth pair, with its own address in a
 * private /24 (10.213.x.0/24, only inside our namespaces), its own etcd
 * member (so etcd is a real N-member Raft cluster), its own PostgreSQL and
 * agent, and its member directory on a tmpfs of its own (so its disk can
 * fill up). relevo's router runs on a separate client host. The test process
 * itself (root namespace, on the bridge) runs the writers and readers.
 *
 * Every resource carries the owner's PID in its name; `ChaosLab.removeStale()`
 * removes what a crashed earlier run left (processes in its namespaces,
 * namespaces, links, tmpfs mounts). `teardown()` is idempotent.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { ClusterSettings } from '../../src/cluster/settings.js';
import { loadCredentials } from '../../src/config/secrets.js';
import { FAULT_TEST_SETTINGS, TestCluster } from '../helpers/cluster.js';
import { EtcdCluster } from '../helpers/etcd-cluster.js';
import { Faults } from '../helpers/faults.js';
import { NetworkLab } from '../helpers/netns.js';
import { RouterProcess } from '../helpers/router-process.js';
import { waitFor } from '../helpers/wait.js';

export const PREFIX = 'rlvc';
const TMPFS_SOURCE = `relevo-chaos-`;
export const CLIENT_HOST = 'client';
export const ROUTER_MAX_LAG_BYTES = 256 * 1024;
/** Size of each host's disk (a tmpfs holding its data directory, pg_wal included). */
export const HOST_DISK = '1g';

export type Mode = 'sync' | 'async';

/** What synchronous replication means in sync mode: FIRST n (`on`) or ANY n (`quorum`). */
export type Synchronous = 'on' | 'quorum';

export interface LabOptions {
  hosts: number;
  mode: Mode;
  /** synchronousMode in sync mode (default 'on'); quorum runs with synchronousCount 1. */
  synchronous?: Synchronous;
  /** Store failsafe (cluster setting `failsafe`); every member then gets api.auth, which failsafe needs. */
  failsafe?: boolean;
  settings?: Partial<ClusterSettings>;
  log: (line: string) => void;
}

/** Why this machine cannot run the lab, or undefined. */
export function labUnavailable(): string | undefined {
  const net = NetworkLab.available();
  if (net) return net;
  try {
    execFileSync('nft', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'nftables (nft) is not installed';
  }
  try {
    execFileSync('/usr/bin/etcd', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'etcd (Debian etcd-server) is not installed';
  }
  return undefined;
}

export class ChaosLab {
  readonly faults: Faults;
  private tornDown = false;

  private constructor(
    readonly net: NetworkLab,
    readonly etcd: EtcdCluster,
    readonly cluster: TestCluster,
    readonly router: RouterProcess,
    readonly names: string[],
    readonly dir: string,
    readonly mounts: string[],
    readonly rw: { host: string; port: number },
    readonly ro: { host: string; port: number },
    /** Member address → member name, to name the server that acknowledged a commit. */
    readonly serverNames: Record<string, string>,
    readonly password: string,
    readonly synchronous: Synchronous,
    readonly failsafe: boolean,
  ) {
    this.faults = new Faults(cluster);
  }

  /**
   * Removes what an earlier run that died left behind: processes inside its
   * namespaces (agents, PostgreSQL, etcd, router), the namespaces, the links,
   * and its tmpfs mounts. Only runs whose owner PID is gone.
   */
  static removeStale(includeOwn = false): string[] {
    const removed = NetworkLab.removeStale(PREFIX, includeOwn);
    const alive = (tag: string) => {
      const pid = parseInt(tag, 36);
      return Number.isFinite(pid) && (pid === process.pid ? !includeOwn : readable(`/proc/${pid}`));
    };
    const mounts = readFileSync('/proc/mounts', 'utf8').split('\n');
    const parents = new Set<string>();
    for (const line of mounts) {
      const [source, target] = line.split(' ');
      if (!source?.startsWith(TMPFS_SOURCE) || !target || alive(source.slice(TMPFS_SOURCE.length))) continue;
      try {
        execFileSync('umount', ['-l', target], { stdio: 'ignore' });
        removed.push(target);
      } catch {
        // already gone
      }
      // The mount point's parent is the run's cluster directory (agents' files, logs).
      parents.add(dirname(target));
    }
    for (const parent of parents) rmSync(parent, { recursive: true, force: true });
    for (const entry of readdirSync(tmpdir())) {
      const match = /^relevo-chaos-([0-9a-z]+)-/.exec(entry);
      if (!match || alive(match[1]!)) continue;
      rmSync(join(tmpdir(), entry), { recursive: true, force: true });
      removed.push(join(tmpdir(), entry));
    }
    return removed;
  }

  static async create(options: LabOptions): Promise<ChaosLab> {
    const stale = ChaosLab.removeStale();
    if (stale.length > 0) options.log(`removed leftovers of an earlier run: ${stale.join(', ')}`);
    const postgresUid = { uid: execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim(), gid: execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim() };
    const names = Array.from({ length: options.hosts }, (_, i) => `node${i + 1}`);
    const dir = mkdtempSync(join(tmpdir(), `relevo-chaos-${process.pid.toString(36)}-`));
    chmodSync(dir, 0o755);
    const synchronous = options.synchronous ?? 'on';
    const failsafe = options.failsafe ?? false;
    // Failsafe asks the peers over the authenticated API (and the router asks the primary's agent): a password file, 0600.
    const apiPasswordFile = join(dir, 'api-password');
    if (failsafe) writeFileSync(apiPasswordFile, 'chaos-api-password\n', { mode: 0o600 });
    const api = failsafe ? { api: { auth: { username: 'relevo', password: { file: apiPasswordFile } } } } : {};
    const net = NetworkLab.create({ prefix: PREFIX, subnet: `10.213.${process.pid % 250}` });
    const parts: { etcd?: EtcdCluster; cluster?: TestCluster; router?: RouterProcess; mounts: string[] } = { mounts: [] };
    try {
      const addresses = new Map<string, string>();
      for (const name of names) addresses.set(name, net.addHost(name));
      const clientAddress = net.addHost(CLIENT_HOST);
      const etcd = (parts.etcd = await EtcdCluster.start(
        names.map((name) => ({ name, address: addresses.get(name)!, launcher: (argv: string[]) => net.wrap(name, argv) })),
        { dir },
      ));
      options.log(`etcd: ${names.length} members healthy (${etcd.endpoints.join(', ')})`);
      const cluster = (parts.cluster = await TestCluster.create({
        store: { endpoints: etcd.endpoints },
        settings: {
          ...FAULT_TEST_SETTINGS,
          synchronousMode: options.mode === 'sync' ? synchronous : 'off',
          synchronousCount: 1,
          failsafe,
          // As an operator sizes WAL for a small disk: PostgreSQL's default max_wal_size (1 GB) alone would fill it,
          // and with a failover every few seconds a standby keeps several timelines' segments until its next restartpoint.
          postgresql: { max_wal_size: '128MB', min_wal_size: '32MB', checkpoint_timeout: '1min' },
          ...options.settings,
        },
        name: 'chaos',
        // Clients speak plain TCP through the router's relay; TLS through it is tls.test.ts's case.
        tls: false,
      }));
      const rw = { host: clientAddress, port: 5440 };
      const ro = { host: clientAddress, port: 5441 };
      const metrics = `${clientAddress}:9187`;
      for (const name of names) {
        // The member's directory (data directory, pg_wal) on a disk of its own that can fill up.
        const disk = join(cluster.dir, name);
        mkdirSync(disk, { mode: 0o755 });
        // Owned by postgres, as an operator would prepare a data disk (the agent refuses a root-owned parent).
        execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${HOST_DISK},mode=0700,uid=${postgresUid.uid},gid=${postgresUid.gid}`, `${TMPFS_SOURCE}${process.pid.toString(36)}`, disk]);
        parts.mounts.push(disk);
        const extra =
          name === names[0]
            ? {
                router: {
                  name: 'chaos-router',
                  listen: { readWrite: `${rw.host}:${rw.port}`, readOnly: `${ro.host}:${ro.port}` },
                  metrics,
                  maxLagBytes: ROUTER_MAX_LAG_BYTES,
                  // Seconds of lag jump on an idle cluster: bytes only.
                  maxLagSeconds: null,
                  fallbackToPrimary: false,
                  requireStreaming: true,
                  timeouts: { connectMs: 1_000, refreshMs: 200, defaultTtlMs: FAULT_TEST_SETTINGS.ttlMs },
                },
              }
            : {};
        await cluster.defineMember(name, { ...api, ...extra }, { address: addresses.get(name)!, launcher: (argv) => net.wrap(name, argv) });
      }
      for (const name of names) cluster.startAgent(name);
      const members = await cluster.waitHealthy(names, 180_000);
      const primary = members.find((m) => m.state === 'primary')!.name;
      await cluster.sql(primary, 'CREATE EXTENSION IF NOT EXISTS amcheck');
      const router = (parts.router = RouterProcess.start(cluster.member(names[0]!).file, join(cluster.dir, 'router.log'), metrics, (argv) => net.wrap(CLIENT_HOST, argv)));
      await waitFor('the router to route to the primary', async () => (await router.stats().catch(() => undefined))?.primary === primary, 30_000, 250);
      const credentials = loadCredentials(cluster.member(names[0]!).config);
      if (!credentials) throw new Error('no credentials after bootstrap');
      const serverNames = Object.fromEntries(names.map((n) => [addresses.get(n)!, n]));
      options.log(`cluster: ${names.join(', ')} healthy, primary ${primary} (sync mode means synchronousMode ${synchronous}, failsafe ${failsafe ? 'on' : 'off'}); router on ${CLIENT_HOST} (${clientAddress})`);
      return new ChaosLab(net, etcd, cluster, router, names, dir, parts.mounts, rw, ro, serverNames, credentials.agentPassword, synchronous, failsafe);
    } catch (error) {
      await parts.router?.stop().catch(() => undefined);
      await parts.cluster?.destroy().catch(() => undefined);
      await parts.etcd?.stop().catch(() => undefined);
      unmount(parts.mounts);
      net.destroy();
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** The member directory's tmpfs of a host. */
  disk(name: string): string {
    return join(this.cluster.dir, name);
  }

  freeBytes(name: string): number {
    const s = statfsSync(this.disk(name));
    return s.bavail * s.bsize;
  }

  /** Stops everything by PID, removes filters, namespaces, links, mounts and directories. Safe to call twice. */
  async teardown(): Promise<void> {
    if (this.tornDown) return;
    this.tornDown = true;
    await this.faults.cleanup().catch(() => undefined);
    await this.router.stop().catch(() => undefined);
    const keep = process.env.RELEVO_KEEP_TEST_DIRS;
    await this.cluster.destroy().catch(() => undefined);
    await this.etcd.stop().catch(() => undefined);
    unmount(this.mounts);
    this.net.destroy();
    if (!keep) {
      // destroy() could not remove the mount points while they were mounted.
      rmSync(this.cluster.dir, { recursive: true, force: true });
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

function readable(path: string): boolean {
  try {
    readFileSync(join(path, 'stat'));
    return true;
  } catch {
    return false;
  }
}

function unmount(mounts: string[]): void {
  for (const target of mounts) {
    try {
      execFileSync('umount', ['-l', target], { stdio: 'ignore' });
    } catch {
      // not mounted
    }
  }
}
