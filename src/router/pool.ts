/**
 * Session pooling for session mode: server sessions outlive the client
 * sessions that used them. When a client leaves while its server session is
 * idle, the router resets it (`DISCARD ALL`: settings, prepared statements,
 * temporary tables, advisory locks, LISTEN all go) and keeps it for the next
 * client with the same role, database and startup parameters on the same
 * member. So a client that connects per transaction costs the server neither
 * a fork nor a SCRAM exchange, and a burst of clients does not become a burst
 * of backends: at most `size` server sessions per (member, role, database,
 * parameters); further clients wait (at most holdMs) for one to be free.
 */
import type { Socket } from 'node:net';

export interface PooledServer {
  socket: Socket;
  key: string;
  member: string;
  params: Map<string, string>;
  pid: number;
  secret: number;
  idleTimer?: NodeJS.Timeout;
}

export class ServerPool {
  /** Server sessions per key: in use, idle, or being opened. */
  private readonly counts = new Map<string, number>();
  private readonly idle = new Map<string, PooledServer[]>();
  private readonly waiters = new Map<string, Array<() => void>>();

  constructor(
    readonly size: number,
    private readonly idleMs: number,
  ) {}

  /**
   * An idle server session for `key`, or 'open' when the caller may open a
   * new one (its slot is counted now), or undefined when the key is at its
   * limit: call wait().
   */
  acquire(key: string): PooledServer | 'open' | undefined {
    const list = this.idle.get(key);
    const server = list?.pop();
    if (server) {
      clearTimeout(server.idleTimer);
      server.socket.removeAllListeners('data');
      server.socket.removeAllListeners('close');
      server.socket.removeAllListeners('error');
      return server;
    }
    const n = this.counts.get(key) ?? 0;
    if (n >= this.size) return undefined;
    this.counts.set(key, n + 1);
    return 'open';
  }

  /** Calls `wake` once a server session of `key` is released or closed; returns a cancel function. */
  wait(key: string, wake: () => void): () => void {
    const list = this.waiters.get(key) ?? [];
    list.push(wake);
    this.waiters.set(key, list);
    return () => {
      const l = this.waiters.get(key);
      const i = l?.indexOf(wake) ?? -1;
      if (l && i >= 0) l.splice(i, 1);
    };
  }

  private wakeOne(key: string): void {
    const wake = this.waiters.get(key)?.shift();
    if (wake) setImmediate(wake);
  }

  /** A reset, idle server session goes back to the pool. */
  release(server: PooledServer): void {
    const { socket, key } = server;
    const drop = (): void => this.remove(server);
    socket.on('close', drop);
    socket.on('error', drop);
    socket.on('data', drop); // an idle server has nothing to say; if it does (shutdown notice), it is gone
    server.idleTimer = setTimeout(() => this.remove(server), this.idleMs);
    server.idleTimer.unref();
    const list = this.idle.get(key) ?? [];
    list.push(server);
    this.idle.set(key, list);
    this.wakeOne(key);
  }

  /** A counted server session ended (closed, failed to open, or not returned). */
  closed(key: string): void {
    const n = (this.counts.get(key) ?? 1) - 1;
    if (n <= 0) this.counts.delete(key);
    else this.counts.set(key, n);
    this.wakeOne(key);
  }

  private remove(server: PooledServer): void {
    const list = this.idle.get(server.key);
    const i = list?.indexOf(server) ?? -1;
    if (!list || i < 0) return;
    list.splice(i, 1);
    clearTimeout(server.idleTimer);
    server.socket.removeAllListeners('data');
    server.socket.on('error', () => undefined);
    server.socket.destroy();
    this.closed(server.key);
  }

  /** Closes the idle server sessions on `member` (it stopped being the right server); all when undefined. */
  drop(member?: string): void {
    for (const list of this.idle.values()) {
      for (const s of [...list]) if (member === undefined || s.member === member) this.remove(s);
    }
  }

  get stats(): { idle: number; open: number } {
    let idle = 0;
    for (const l of this.idle.values()) idle += l.length;
    let open = 0;
    for (const n of this.counts.values()) open += n;
    return { idle, open };
  }
}
