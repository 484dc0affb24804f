/**
 * Several "hosts" on one machine: each member gets its own network namespace,
 * joined to a bridge in the root namespace by a veth pair. The bridge's subnet
 * exists only here (no route leads anywhere else), so all traffic stays on
 * this machine. Cutting a member's veth isolates it from the store, its peers
 * and the clients at once, while its processes keep running.
 *
 * Needs root and iproute2; `NetworkLab.available()` says whether this machine
 * can run it. Callers must `destroy()` it (t.after), which removes every
 * namespace, veth and the bridge it created.
 */
import { execFileSync } from 'node:child_process';

interface Host {
  netns: string;
  veth: string;
  address: string;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export class NetworkLab {
  private readonly hosts = new Map<string, Host>();
  private destroyed = false;

  private constructor(
    /** Short unique tag: interface names are limited to 15 characters. */
    private readonly tag: string,
    readonly bridge: string,
    /** The bridge's address: services of the root namespace (etcd, the test's clients) listen or connect here. */
    readonly gateway: string,
    private readonly subnet: string,
  ) {}

  static available(): string | undefined {
    if (process.getuid?.() !== 0) return 'network namespaces need root';
    try {
      execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
      return undefined;
    } catch {
      return 'iproute2 (ip netns) is not available';
    }
  }

  static create(): NetworkLab {
    const tag = (process.pid % 46_000).toString(36);
    // A /24 per test process, so two runs on one machine do not share a subnet.
    const third = 16 + (process.pid % 200);
    const subnet = `10.231.${third}`;
    const lab = new NetworkLab(tag, `rlvb${tag}`, `${subnet}.1`, subnet);
    ip('link', 'add', lab.bridge, 'type', 'bridge');
    try {
      ip('addr', 'add', `${lab.gateway}/24`, 'dev', lab.bridge);
      ip('link', 'set', lab.bridge, 'up');
    } catch (error) {
      lab.destroy();
      throw error;
    }
    return lab;
  }

  /** Creates the namespace of one host; returns its address. */
  addHost(name: string): string {
    const index = this.hosts.size + 1;
    const host: Host = { netns: `relevo-${this.tag}-${name}`, veth: `rlv${this.tag}h${index}`, address: `${this.subnet}.${10 + index}` };
    this.hosts.set(name, host);
    const inside = `rlv${this.tag}n${index}`;
    ip('netns', 'add', host.netns);
    ip('link', 'add', host.veth, 'type', 'veth', 'peer', 'name', inside);
    ip('link', 'set', inside, 'netns', host.netns);
    ip('link', 'set', host.veth, 'master', this.bridge);
    ip('link', 'set', host.veth, 'up');
    const inNs = (...args: string[]) => ip('-n', host.netns, ...args);
    inNs('link', 'set', 'lo', 'up');
    inNs('addr', 'add', `${host.address}/24`, 'dev', inside);
    inNs('link', 'set', inside, 'up');
    return host.address;
  }

  host(name: string): Host {
    const host = this.hosts.get(name);
    if (!host) throw new Error(`no host ${name} in the network lab`);
    return host;
  }

  /** argv that runs a program inside the host's namespace (same PID: `ip netns exec` execs it). */
  wrap(name: string, argv: string[]): string[] {
    return ['ip', 'netns', 'exec', this.host(name).netns, ...argv];
  }

  /** The host loses its only link: no store, no peers, no clients. Its processes keep running. */
  cut(name: string): number {
    ip('link', 'set', this.host(name).veth, 'down');
    return Date.now();
  }

  heal(name: string): number {
    ip('link', 'set', this.host(name).veth, 'up');
    return Date.now();
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const host of this.hosts.values()) {
      try {
        ip('netns', 'del', host.netns);
      } catch {
        // never created
      }
    }
    try {
      ip('link', 'del', this.bridge);
    } catch {
      // never created
    }
  }
}
