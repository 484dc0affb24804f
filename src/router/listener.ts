/**
 * One listening port (read-write or read-only): accepts clients, reads the
 * first packet, asks the router where to go, then holds, refuses or relays.
 *
 * Each client is handled on its own: a client that sends garbage or nothing
 * only ever costs its own socket and timer, never another client's progress.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { refusal, type ClosureCode, type Refusal, type RefusalCode } from './errors.js';
import { ENCRYPTION_REFUSED, ProtocolError, errorResponse, parseStartupPacket, type ErrorFields, type StartupPacket } from './protocol.js';
import { Relay, adoptClient, connectBackend, type Endpoint, type OpeningKind } from './relay.js';
import { Session, type SessionContext } from './session.js';
import type { ScramVerifier } from './scram.js';
import type { ServerPool } from './pool.js';
import type { SecureContext } from 'node:tls';
import type { CaFile } from './server-tls.js';
import type { Backend, Decision } from './view.js';

export type ListenerRole = 'rw' | 'ro';

export interface ListenerTimeouts {
  /** A client must send its first packet within this time. */
  startupMs: number;
  /** Connecting to a backend may take this long before the client is refused. */
  connectMs: number;
  /** New connections are held at most this long during a switchover. */
  holdMs: number;
}

/** What a listener needs from the router. */
export interface ListenerContext {
  decide(role: ListenerRole, acceptPromoting?: boolean): Decision;
  /** Backends a CancelRequest should go to (the session's backend when its key is known). */
  cancelTargets(role: ListenerRole, pid: number, secret: number): Backend[];
  registerKey(relay: Relay, pid: number, secret: number): void;
  unregisterKey(relay: Relay): void;
  timeouts: ListenerTimeouts;
  limits: ListenerLimits;
  now(): number;
  /** Present when this listener runs in session mode. */
  session?: {
    verifier(user: string): ScramVerifier | undefined;
    tls: { get(): SecureContext } | undefined;
    serverCa: CaFile | undefined;
    /** CancelRequest with a key the router issued to one of its sessions. */
    cancel(pid: number, secret: number): void;
    pool: ServerPool | undefined;
  };
}

export interface ListenerLimits {
  /** Client sockets open at once on this listener, in any phase. */
  maxConnections: number;
  /** Clients held during a switchover. */
  maxHeld: number;
}

/** Bytes a client may send before it gets any answer; PostgreSQL clients send one packet. */
const MAX_EARLY_BYTES = 64 * 1024;
const REFUSE_GRACE_MS = 1_000;

interface Pending {
  client: Endpoint;
  socket: Socket;
  buf: Buffer;
  first?: StartupPacket;
  gone: boolean;
  heldSince?: number;
  holdReason?: string;
  timer?: NodeJS.Timeout;
  /** Consumer of the client's bytes until the relay takes over. */
  reader: (chunk: Buffer) => void;
  onGone: () => void;
  backend?: Socket;
  target?: Backend;
}

export interface ListenerCounters {
  accepted: number;
  heldTotal: number;
  refused: Map<RefusalCode, number>;
  closed: Map<ClosureCode | string, number>;
  /** Bytes of sessions already closed; live ones are read from their sockets. */
  closedBytesFromClients: number;
  closedBytesToClients: number;
}

export class Listener {
  private server: Server | undefined;
  readonly relays = new Set<Relay>();
  /** Session-mode sessions (session mode only). */
  readonly sessions = new Set<Session>();
  /** Members a session is trying before they published their promotion. */
  private readonly scouts = new Set<string>();
  private readonly held = new Set<Pending>();
  private readonly connecting = new Set<Pending>();
  private readonly starting = new Set<Pending>();
  /** Every client socket still open, whatever its phase: what limits.maxConnections counts. */
  private readonly clients = new Set<Socket>();
  /** Open and connecting sessions per member: the least-connections input. */
  readonly perMember = new Map<string, number>();
  readonly counters: ListenerCounters = {
    accepted: 0,
    heldTotal: 0,
    refused: new Map(),
    closed: new Map(),
    closedBytesFromClients: 0,
    closedBytesToClients: 0,
  };
  address = '';

  constructor(
    readonly role: ListenerRole,
    private readonly ctx: ListenerContext,
  ) {}

  listen(host: string, port: number): Promise<void> {
    // pauseOnConnect: nothing is read before adoptClient() re-wraps the socket.
    const server = this.ctx.session
      ? createServer({ noDelay: true }, (socket) => {
          this.counters.accepted += 1;
          new Session(socket, this.sessionContext());
        })
      : createServer({ noDelay: true, pauseOnConnect: true }, (socket) => this.accept(adoptClient(socket)));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.removeListener('error', reject);
        const a = server.address();
        this.address = a && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : '';
        resolve();
      });
    });
  }

  get heldCount(): number {
    let n = this.held.size;
    for (const s of this.sessions) if (s.waitingForServer) n += 1;
    return n;
  }

  get openCount(): number {
    return this.relays.size + this.connecting.size + this.sessions.size;
  }

  get bytesFromClients(): number {
    let n = this.counters.closedBytesFromClients;
    for (const r of this.relays) n += r.bytesFromClient;
    for (const s of this.sessions) n += s.bytesFromClient;
    return n;
  }

  get bytesToClients(): number {
    let n = this.counters.closedBytesToClients;
    for (const r of this.relays) n += r.bytesToClient;
    for (const s of this.sessions) n += s.bytesToClient;
    return n;
  }

  private sessionContext(): SessionContext {
    const support = this.ctx.session!;
    return {
      decide: () => this.ctx.decide(this.role, true),
      verifier: (user) => support.verifier(user),
      tls: support.tls,
      serverCa: support.serverCa,
      timeouts: this.ctx.timeouts,
      now: () => this.ctx.now(),
      cancel: (pid, secret) => support.cancel(pid, secret),
      register: (s) => this.sessions.add(s),
      unregister: (s) => {
        if (!this.sessions.delete(s)) return;
        this.counters.closedBytesFromClients += s.bytesFromClient;
        this.counters.closedBytesToClients += s.bytesToClient;
        if (s.closedBy && !s.closedBy.startsWith('client-') && s.closedBy !== 'cancel') {
          this.counters.closed.set(s.closedBy, (this.counters.closed.get(s.closedBy) ?? 0) + 1);
        }
      },
      attached: (_s, member, delta) => this.bump(member, delta),
      refused: (code) => this.counters.refused.set(code, (this.counters.refused.get(code) ?? 0) + 1),
      held: () => {
        this.counters.heldTotal += 1;
      },
      pool: support.pool,
      scouting: (member) => this.scouts.has(member),
      scout: (member, active, through) => {
        if (active) this.scouts.add(member);
        else this.scouts.delete(member);
        // The scout got through: the others may follow now (else the scout tries again itself).
        if (through) setImmediate(() => this.reevaluateHeld());
      },
    };
  }

  private accept(client: Endpoint): void {
    this.counters.accepted += 1;
    const socket = client.socket;
    if (this.clients.size >= this.ctx.limits.maxConnections) {
      // Over the cap: one FATAL without reading anything, and the socket is gone within the grace period.
      const r = refusal('too-many-connections', { limit: this.ctx.limits.maxConnections });
      this.counters.refused.set(r.code, (this.counters.refused.get(r.code) ?? 0) + 1);
      socket.on('error', () => undefined);
      socket.end(errorResponse(r.fields));
      setTimeout(() => socket.destroy(), REFUSE_GRACE_MS).unref();
      return;
    }
    this.clients.add(socket);
    socket.once('close', () => this.clients.delete(socket));
    const p: Pending = {
      client,
      socket,
      buf: Buffer.alloc(0),
      gone: false,
      reader: (chunk) => this.onStartupData(p, chunk),
      onGone: () => this.onGone(p),
    };
    this.starting.add(p);
    // Until the relay takes over, reads are copied out of the reusable buffer.
    client.onRead = (n, buf) => {
      if (!p.gone) p.reader(Buffer.from(buf.subarray(0, n)));
      return true;
    };
    socket.on('error', p.onGone);
    socket.on('close', p.onGone);
    socket.on('end', p.onGone);
    socket.resume();
    p.timer = setTimeout(() => this.startupTimeout(p), this.ctx.timeouts.startupMs);
  }

  private onStartupData(p: Pending, chunk: Buffer): void {
    p.buf = p.buf.length === 0 ? chunk : Buffer.concat([p.buf, chunk]);
    if (p.first) {
      // Bytes after the first packet, before any answer: keep them for the backend, bounded.
      if (p.buf.length > MAX_EARLY_BYTES) this.refuse(p, refusal('bad-startup', { error: 'too much data before the server answered' }));
      return;
    }
    let packet: StartupPacket | undefined;
    try {
      packet = parseStartupPacket(p.buf);
    } catch (error) {
      this.refuse(p, refusal('bad-startup', { error: (error as ProtocolError).message }));
      return;
    }
    if (!packet) return;
    p.first = packet;
    clearTimeout(p.timer);
    p.timer = undefined;
    this.starting.delete(p);
    if (packet.kind === 'cancel') this.cancel(p, packet.pid, packet.secret);
    else this.proceed(p);
  }

  private startupTimeout(p: Pending): void {
    // Nothing to tell a silent client, but a PostgreSQL-shaped goodbye helps a confused one.
    this.refuse(p, refusal('startup-timeout', { timeoutMs: this.ctx.timeouts.startupMs }));
  }

  /** Decides for a client whose first packet is in: relay, hold or refuse. */
  private proceed(p: Pending): void {
    if (p.gone) return;
    const d = this.ctx.decide(this.role);
    if (d.action === 'route') {
      this.unhold(p);
      this.connectBackend(p, d.backend, d.primary);
    } else if (d.action === 'refuse') {
      this.refuse(p, d.refusal);
    } else if (p.heldSince === undefined && this.held.size >= this.ctx.limits.maxHeld) {
      this.refuse(p, refusal('too-many-held', { limit: this.ctx.limits.maxHeld }));
    } else if (p.heldSince === undefined) {
      p.heldSince = this.ctx.now();
      p.holdReason = d.reason;
      this.held.add(p);
      this.counters.heldTotal += 1;
      p.timer = setTimeout(() => {
        const heldMs = this.ctx.now() - (p.heldSince ?? 0);
        this.refuse(p, refusal('hold-timeout', { heldMs, reason: p.holdReason ?? 'waiting' }));
      }, this.ctx.timeouts.holdMs);
    } else {
      p.holdReason = d.reason;
    }
  }

  /** The view changed: held clients may go now, or must be refused. */
  reevaluateHeld(): void {
    for (const p of [...this.held]) this.proceed(p);
    for (const s of [...this.sessions]) if (s.waitingForServer) s.tryAttach();
  }

  private unhold(p: Pending): void {
    if (p.heldSince === undefined) return;
    this.held.delete(p);
    clearTimeout(p.timer);
    p.timer = undefined;
  }

  private connectBackend(p: Pending, target: Backend, primary: boolean): void {
    const first = p.first;
    if (!first || first.kind === 'cancel') return;
    this.bump(target.member, 1);
    this.connecting.add(p);
    p.target = target;
    const source = connectBackend(target);
    const backend = source.socket;
    p.backend = backend;
    const timer = setTimeout(
      () => backend.destroy(new Error(`timed out after ${this.ctx.timeouts.connectMs} ms`)),
      this.ctx.timeouts.connectMs,
    );
    const onError = (error: Error): void => {
      clearTimeout(timer);
      if (!this.connecting.delete(p)) return;
      this.bump(target.member, -1);
      p.backend = undefined;
      this.refuse(p, refusal('backend-unreachable', { member: target.member, address: target.address, error: error.message }));
    };
    backend.once('error', onError);
    backend.once('connect', () => {
      clearTimeout(timer);
      backend.removeListener('error', onError);
      if (!this.connecting.delete(p)) return;
      p.backend = undefined;
      if (p.gone) {
        this.bump(target.member, -1);
        backend.destroy();
        return;
      }
      this.handOver(p, source, target, primary, first.kind, first.length);
    });
  }

  private handOver(p: Pending, backend: Endpoint, target: Backend, primary: boolean, kind: OpeningKind, length: number): void {
    const { socket } = p;
    socket.removeListener('error', p.onGone);
    socket.removeListener('close', p.onGone);
    socket.removeListener('end', p.onGone);
    const relay = new Relay(p.client, backend, target, primary, {
      onClose: (r) => this.relayClosed(r),
      onBackendKey: (r, pid, secret) => this.ctx.registerKey(r, pid, secret),
    }, kind);
    this.relays.add(relay);
    relay.start(p.buf, length);
  }

  private relayClosed(r: Relay): void {
    if (!this.relays.delete(r)) return;
    this.bump(r.target.member, -1);
    this.ctx.unregisterKey(r);
    this.counters.closedBytesFromClients += r.bytesFromClient;
    this.counters.closedBytesToClients += r.bytesToClient;
    if (r.closedBy) this.counters.closed.set(r.closedBy, (this.counters.closed.get(r.closedBy) ?? 0) + 1);
  }

  /**
   * A client still connecting to `member` would land on a server that is no
   * longer right for it: drop that backend socket and decide again. The
   * client has received nothing yet, so this is invisible to it.
   */
  rerouteConnecting(member: string): void {
    for (const p of [...this.connecting]) {
      if (p.target?.member !== member) continue;
      this.connecting.delete(p);
      this.bump(member, -1);
      p.backend?.destroy();
      p.backend = undefined;
      this.proceed(p);
    }
  }

  private bump(member: string, delta: number): void {
    const n = (this.perMember.get(member) ?? 0) + delta;
    if (n <= 0) this.perMember.delete(member);
    else this.perMember.set(member, n);
  }

  /** Answers the client with a FATAL ErrorResponse and closes, as PostgreSQL would. */
  refuse(p: Pending, r: Refusal): void {
    if (p.gone) return;
    this.unhold(p);
    this.starting.delete(p);
    clearTimeout(p.timer);
    p.timer = undefined;
    this.counters.refused.set(r.code, (this.counters.refused.get(r.code) ?? 0) + 1);
    const { socket } = p;
    const first = p.first;
    if (first && (first.kind === 'ssl' || first.kind === 'gssenc')) {
      // The client waits for a one-byte answer; say "no encryption", then read
      // its plaintext StartupMessage so the error arrives where libpq expects it.
      socket.write(ENCRYPTION_REFUSED);
      const rest = p.buf.subarray(first.length);
      p.first = undefined;
      p.buf = Buffer.alloc(0);
      const finish = (): void => this.sendFatal(p, r.fields);
      const onData = (chunk: Buffer): void => {
        p.buf = p.buf.length === 0 ? chunk : Buffer.concat([p.buf, chunk]);
        try {
          if (parseStartupPacket(p.buf) === undefined) return;
        } catch {
          // Malformed or another SSLRequest: the answer is the same.
        }
        finish();
      };
      p.reader = onData;
      p.timer = setTimeout(finish, this.ctx.timeouts.startupMs);
      if (rest.length > 0) onData(rest);
      return;
    }
    this.sendFatal(p, r.fields);
  }

  private sendFatal(p: Pending, fields: ErrorFields): void {
    if (p.gone) return;
    clearTimeout(p.timer);
    p.gone = true;
    this.starting.delete(p);
    p.reader = () => undefined; // read on, so the client's own close is noticed
    p.socket.on('error', () => undefined);
    p.socket.end(errorResponse(fields));
    setTimeout(() => p.socket.destroy(), REFUSE_GRACE_MS).unref();
  }

  private onGone(p: Pending): void {
    if (p.gone) return;
    p.gone = true;
    clearTimeout(p.timer);
    this.unhold(p);
    this.starting.delete(p);
    if (this.connecting.delete(p) && p.target) {
      this.bump(p.target.member, -1);
      p.backend?.destroy();
    }
    p.socket.destroy();
  }

  /** CancelRequest: forward the 16 bytes to the backend(s) that may own the key, then hang up. */
  private cancel(p: Pending, pid: number, secret: number): void {
    const packet = p.buf.subarray(0, 16);
    for (const t of this.ctx.cancelTargets(this.role, pid, secret)) {
      const s = connect({ host: t.host, port: t.port }, () => s.end(packet));
      s.on('error', () => undefined);
      s.setTimeout(this.ctx.timeouts.connectMs, () => s.destroy());
    }
    p.gone = true;
    p.socket.on('error', () => undefined);
    p.socket.end();
  }

  /** Closes every relayed session matching `pick`, with `fields` as the last word. */
  closeWhere(pick: (r: Relay) => boolean, fields: ErrorFields, reason: ClosureCode): number {
    let n = 0;
    for (const r of [...this.relays]) {
      if (!pick(r)) continue;
      r.close(fields, reason);
      n += 1;
    }
    return n;
  }

  /** Stops accepting, refuses held and starting clients, closes every session. */
  async close(fields: ErrorFields): Promise<void> {
    const server = this.server;
    this.server = undefined;
    const stopped = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const p of [...this.held, ...this.starting]) this.refuse(p, refusal('router-stopping'));
    for (const p of [...this.connecting]) this.onGone(p);
    this.closeWhere(() => true, fields, 'router-stopping');
    for (const s of [...this.sessions]) s.close(fields, 'router-stopping');
    await stopped;
  }
}
