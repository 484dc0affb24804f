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
import { existsSync } from 'node:fs';

interface Host {
  netns: string;
  veth: string;
  address: string;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export interface LabOptions {
  /**
   * Names start with this prefix followed by the owner's PID in base 36, so
   * `NetworkLab.removeStale(prefix)` can find what a crashed run left behind.
   * Interface names are limited to 15 characters: keep it to 4.
   */
  prefix?: string;
  /** First three octets of the lab's /24, e.g. '10.213.7' (default: 10.231.x by PID). */
  subnet?: string;
}

/** nftables table the lab's filters live in, one per host namespace (gone with the namespace). */
const NFT_TABLE = 'relevo_lab';

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
    private readonly nsPrefix: string,
    private readonly linkPrefix: string,
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

  static create(options: LabOptions = {}): NetworkLab {
    // With a prefix the full PID is in the names (base 36 fits 15 characters), so stale ones can be told from live ones.
    const tag = options.prefix ? process.pid.toString(36) : (process.pid % 46_000).toString(36);
    // A /24 per test process, so two runs on one machine do not share a subnet.
    const subnet = options.subnet ?? `10.231.${16 + (process.pid % 200)}`;
    const links = options.prefix ?? 'rlv';
    const nsPrefix = options.prefix ? `relevo-${options.prefix}-${tag}-` : `relevo-${tag}-`;
    const lab = new NetworkLab(tag, `${links}${tag}b`, `${subnet}.1`, subnet, nsPrefix, `${links}${tag}`);
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
    const host: Host = { netns: `${this.nsPrefix}${name}`, veth: `${this.linkPrefix}h${index}`, address: `${this.subnet}.${10 + index}` };
    this.hosts.set(name, host);
    const inside = `${this.linkPrefix}n${index}`;
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

  names(): string[] {
    return [...this.hosts.keys()];
  }

  /**
   * Replaces the host's packet filter (an nftables table inside its
   * namespace) with these rules; `{}` (no rules) removes it. Rules are nft
   * statements for the 'input' and 'output' chains, e.g. 'iifname != "lo" drop'.
   */
  filter(name: string, rules: { input?: string[]; output?: string[] }): void {
    const netns = this.host(name).netns;
    const lines = [`table inet ${NFT_TABLE}`, `delete table inet ${NFT_TABLE}`];
    if ((rules.input?.length ?? 0) + (rules.output?.length ?? 0) > 0) {
      lines.push(`table inet ${NFT_TABLE} {`);
      for (const [chain, list] of [['input', rules.input ?? []], ['output', rules.output ?? []]] as const) {
        lines.push(`  chain ${chain} {`, `    type filter hook ${chain} priority 0; policy accept;`, ...list.map((r) => `    ${r}`), '  }');
      }
      lines.push('}');
    }
    // "table X" then "delete table X" in one transaction: it works whether or not the table existed.
    execFileSync('ip', ['netns', 'exec', netns, 'nft', '-f', '-'], { input: `${lines.join('\n')}\n`, stdio: ['pipe', 'ignore', 'pipe'] });
  }

  /**
   * Throttles the host's link both ways with a token bucket (tc tbf): packets
   * queue up to `latencyMs`, so a busy link delays them by up to that much and
   * drops what would wait longer. (This kernel has no netem for a fixed delay.)
   * `undefined` removes the throttle.
   */
  shape(name: string, rate?: { kbit: number; latencyMs: number }): void {
    const host = this.host(name);
    const index = [...this.hosts.keys()].indexOf(name) + 1;
    // Egress of each end of the veth: the host's side shapes what it sends, the bridge's side what it receives.
    const ends: [string[], string][] = [[['-n', host.netns], `${this.linkPrefix}n${index}`], [[], host.veth]];
    for (const [where, dev] of ends) {
      try {
        execFileSync('tc', [...where, 'qdisc', 'del', 'dev', dev, 'root'], { stdio: 'ignore' });
      } catch {
        // no throttle yet
      }
      if (!rate) continue;
      execFileSync('tc', [...where, 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${rate.kbit}kbit`, 'burst', '8kb', 'latency', `${rate.latencyMs}ms`], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
    }
  }

  /** Lists the host's current filter (for reports). */
  filterText(name: string): string {
    try {
      return execFileSync('ip', ['netns', 'exec', this.host(name).netns, 'nft', 'list', 'table', 'inet', NFT_TABLE], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      return '';
    }
  }

  /**
   * Removes namespaces (and the processes in them) and links a run with this
   * prefix left behind when its process died (a crash, SIGKILL): those whose
   * owner PID is gone, and this process's own with includeOwn (an interrupted
   * setup). Returns what it removed.
   */
  static removeStale(prefix: string, includeOwn = false): string[] {
    const removed: string[] = [];
    const dead = (tag: string) => {
      const pid = parseInt(tag, 36);
      return !Number.isFinite(pid) || (pid === process.pid ? includeOwn : !existsSync(`/proc/${pid}`));
    };
    let namespaces = '';
    try {
      namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    } catch {
      return removed;
    }
    const nsPattern = new RegExp(`^relevo-${prefix}-([0-9a-z]+)-\\S+`);
    for (const line of namespaces.split('\n')) {
      const match = nsPattern.exec(line.trim());
      if (!match || !dead(match[1]!)) continue;
      const netns = match[0];
      try {
        // Its processes (agents, PostgreSQL, etcd...) outlived their owner: kill them by PID first.
        const pids = execFileSync('ip', ['netns', 'pids', netns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).map(Number);
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGCONT');
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone meanwhile
          }
        }
        if (pids.length > 0) removed.push(`${pids.length} processes in ${netns}`);
        ip('netns', 'del', netns);
        removed.push(netns);
      } catch {
        // raced with its owner
      }
    }
    const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    const linkPattern = new RegExp(`^\\d+: (${prefix}([0-9a-z]+?)(?:b|h\\d+))[@:]`);
    for (const line of links.split('\n')) {
      const match = linkPattern.exec(line);
      if (!match || !dead(match[2]!)) continue;
      try {
        ip('link', 'del', match[1]!);
        removed.push(match[1]!);
      } catch {
        // gone with its namespace's peer
      }
    }
    return removed;
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
