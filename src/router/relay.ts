/**
 * The relay loop for one client session: bytes go through unaltered in both
 * directions. Both sockets read into a reusable buffer of their own (net's
 * `onread`), and each read is handed straight to the other socket's write():
 * no copy, no concatenation, no allocation per read. Plaintext sessions are
 * framed (headers only, see protocol.ts) so the router knows when a session
 * is idle between transactions and where it may inject a final
 * ErrorResponse; TLS/GSS sessions are opaque and never framed.
 */
import { connect, Socket, type OnReadOpts, type SocketConstructorOpts } from 'node:net';
import { DirectWriter, Written } from './direct-write.js';
import { ENCRYPTION_REFUSED, Framer, TERMINATE, errorResponse, sessionIdle, type ErrorFields } from './protocol.js';
import type { Backend } from './view.js';

/** How the client opened the session: decides what the first backend byte means. */
export type OpeningKind = 'startup' | 'ssl' | 'gssenc';

export interface RelayHooks {
  /** Called once when both sockets are gone. */
  onClose(relay: Relay): void;
  /** Called once the backend sent BackendKeyData (plaintext sessions only). */
  onBackendKey?(relay: Relay, pid: number, secret: number): void;
}

/** Grace for a client to read our final error before its socket is destroyed. */
const CLOSE_GRACE_MS = 1_000;

/** Read buffer per socket: PostgreSQL writes at most 8 kB at a time. */
const READ_BUFFER_BYTES = 16 * 1024;

/**
 * One socket that reads into its own reusable buffer. A fresh buffer is taken
 * only while a write of the current one is still queued on the other socket
 * (that socket is slower than this one): the queued write references it.
 */
export interface Endpoint {
  socket: Socket;
  buffer: Buffer;
  /** The current buffer is referenced by a queued write: do not read into it again. */
  busy: boolean;
  /** Where reads go (the startup reader, then the relay). Returning false pauses reading. */
  onRead: (n: number, buf: Buffer) => boolean;
}

function newEndpoint(): Endpoint {
  return { socket: undefined as unknown as Socket, buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES), busy: false, onRead: () => true };
}

function readInto(e: Endpoint): OnReadOpts {
  return {
    buffer: () => {
      if (e.busy) {
        e.buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
        e.busy = false;
      }
      return e.buffer;
    },
    callback: (n: number, buf: Uint8Array) => e.onRead(n, buf as Buffer),
  };
}

export function connectBackend(target: Backend): Endpoint {
  const e = newEndpoint();
  e.socket = connect({ host: target.host, port: target.port, noDelay: true, onread: readInto(e) });
  return e;
}

/**
 * Re-wraps an accepted socket (from a server with pauseOnConnect, so it has
 * not read anything) around the same handle, reading into its own buffer:
 * net.Server offers no `onread` for the sockets it accepts.
 */
export function adoptClient(accepted: Socket): Endpoint {
  const e = newEndpoint();
  const holder = accepted as unknown as { _handle: unknown };
  const handle = holder._handle;
  if (!handle) throw new Error('accepted socket has no handle');
  holder._handle = null;
  accepted.destroy(); // only the JS wrapper: keeps net.Server's connection count right
  e.socket = new Socket({ handle, readable: true, writable: true, onread: readInto(e) } as SocketConstructorOpts);
  e.socket.setNoDelay(true);
  return e;
}

export class Relay {
  /** Framers are null for opaque (encrypted) sessions. */
  private fromClient: Framer | null = new Framer();
  private fromBackend: Framer | null = new Framer();
  /** First backend byte is the answer to SSLRequest/GSSENCRequest. */
  private awaitingAnswer: boolean;
  private keyReported = false;
  private drainFields: ErrorFields | undefined;
  private drainReason = '';
  private drainTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Why the router closed this session, if it did. */
  closedBy: string | undefined;
  readonly openedAt = Date.now();

  readonly client: Socket;
  readonly backend: Socket;
  /** Writes to each socket, around its Writable stream (direct-write.ts). */
  private readonly toClient: DirectWriter;
  private readonly toBackend: DirectWriter;

  constructor(
    private readonly clientEnd: Endpoint,
    private readonly backendEnd: Endpoint,
    readonly target: Backend,
    /** Routed to the primary (read-write, or read-only fallback). */
    readonly primary: boolean,
    private readonly hooks: RelayHooks,
    opening: OpeningKind,
  ) {
    this.client = clientEnd.socket;
    this.backend = backendEnd.socket;
    // A queued write to one side pauses reading the other side until it completes.
    this.toClient = new DirectWriter(this.client, (ok) => this.written(ok, this.backendEnd));
    this.toBackend = new DirectWriter(this.backend, (ok) => this.written(ok, this.clientEnd));
    this.awaitingAnswer = opening !== 'startup';
    // A StartupMessage has no type byte; after an SSL 'N' the client sends one next.
    this.fromClient?.expectUntypedPacket();
    if (this.awaitingAnswer) this.fromBackend?.expectEncryptionAnswer();
  }

  /** Starts relaying; `initial` is what the client sent before the backend was connected. */
  start(initial: Buffer, openingLength: number): void {
    const { client, backend } = this;
    this.clientEnd.onRead = (n, buf) => this.onClientRead(n, buf);
    this.backendEnd.onRead = (n, buf) => this.onBackendRead(n, buf);
    client.on('end', () => this.teardown());
    backend.on('end', () => this.teardown());
    // Errors end the session like EOF does; 'close' follows and is idempotent.
    client.on('error', () => this.teardown());
    backend.on('error', () => this.teardown());
    client.on('close', () => this.teardown());
    backend.on('close', () => this.teardown());

    if (this.awaitingAnswer) {
      // The SSLRequest/GSSENCRequest itself is not a framed message: send it as is.
      if (this.toBackend.write(initial.subarray(0, openingLength)) === Written.Failed) return this.teardown();
      if (initial.length > openingLength) this.onClientData(initial.subarray(openingLength));
    } else {
      this.onClientData(initial);
    }
    client.resume();
    backend.resume();
  }

  /** What the client sent before the relay existed (a copy, not a read buffer). */
  private onClientData(chunk: Buffer): void {
    if (this.fromClient !== null) {
      try {
        this.fromClient.push(chunk);
      } catch {
        this.teardown();
        return;
      }
    }
    const w = this.toBackend.write(chunk);
    if (w === Written.Failed) this.teardown();
    else if (w === Written.Queued) this.client.pause();
  }

  /**
   * A queued write completed: the read buffer it referenced is free again
   * and `source` (the side it came from) may read again.
   */
  private written(ok: boolean, source: Endpoint): void {
    if (this.closed) return;
    if (!ok) return this.teardown();
    source.busy = false;
    source.socket.resume();
  }

  /** Read callback of the client socket; returning false pauses reading (backpressure). */
  private onClientRead(n: number, buf: Buffer): boolean {
    if (this.closed) return false;
    const f = this.fromClient;
    if (f !== null) {
      try {
        f.push(buf, 0, n);
      } catch {
        this.teardown();
        return false;
      }
    }
    const w = this.toBackend.write(n === buf.length ? buf : buf.subarray(0, n));
    if (w === Written.Done) return true;
    if (w === Written.Failed) {
      this.teardown();
      return false;
    }
    // Queued: the bytes live in our read buffer; read nothing more until they are written.
    this.clientEnd.busy = true;
    return false;
  }

  /** Read callback of the backend socket; returning false pauses reading (backpressure). */
  private onBackendRead(n: number, buf: Buffer): boolean {
    if (this.closed) return false;
    if (this.awaitingAnswer) this.onAnswer(buf[0] as number);
    const f = this.fromBackend;
    if (f !== null) {
      try {
        f.push(buf, 0, n);
      } catch {
        this.teardown();
        return false;
      }
      if (!this.keyReported && f.backendPid !== 0) this.reportKey(f);
    }
    const w = this.toClient.write(n === buf.length ? buf : buf.subarray(0, n));
    if (w === Written.Failed) {
      this.teardown();
      return false;
    }
    if (this.drainFields !== undefined) this.closeIfIdle();
    if (w === Written.Done) return true;
    // Queued: the bytes live in our read buffer; read nothing more until they are written.
    this.backendEnd.busy = true;
    return false;
  }

  private onAnswer(answer: number): void {
    this.awaitingAnswer = false;
    if (answer !== ENCRYPTION_REFUSED[0]) {
      // 'S' or 'G': the rest of the session is encrypted end to end.
      this.fromClient = null;
      this.fromBackend = null;
    }
  }

  private reportKey(f: Framer): void {
    this.keyReported = true;
    this.hooks.onBackendKey?.(this, f.backendPid, f.backendSecret);
  }

  /** Plaintext and idle between transactions. */
  get idle(): boolean {
    return this.fromClient !== null && this.fromBackend !== null && sessionIdle(this.fromClient, this.fromBackend);
  }

  get encrypted(): boolean {
    return this.fromBackend === null;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Closes the session at its next idle point (now if idle), or at `timeoutMs`
   * with `timeoutFields` whatever it is doing. Encrypted sessions can only
   * wait for the timeout: their state cannot be seen.
   */
  closeWhenIdle(fields: ErrorFields, reason: string, timeoutMs: number, timeoutFields: ErrorFields, timeoutReason: string): void {
    if (this.closed || this.drainFields !== undefined) return;
    this.drainFields = fields;
    this.drainReason = reason;
    this.drainTimer = setTimeout(() => this.close(timeoutFields, timeoutReason), timeoutMs);
    this.drainTimer.unref();
    this.closeIfIdle();
  }

  /** Forgets a pending closeWhenIdle (the switchover was abandoned). */
  cancelDrain(): void {
    this.drainFields = undefined;
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = undefined;
  }

  get draining(): boolean {
    return this.drainFields !== undefined;
  }

  private closeIfIdle(): void {
    if (this.drainFields !== undefined && this.idle) this.close(this.drainFields, this.drainReason);
  }

  /**
   * Closes both sides now. The backend connection goes at once (Terminate
   * first when the client stream is between messages, so the server logs a
   * clean exit); the client gets `fields` as a FATAL ErrorResponse when its
   * stream is between messages and plaintext, then EOF.
   */
  close(fields: ErrorFields | undefined, reason: string): void {
    if (this.closed) return;
    this.closedBy = reason;
    const { client, backend } = this;
    this.clientEnd.onRead = () => false;
    this.backendEnd.onRead = () => false;
    if (this.fromClient?.atBoundary && !backend.destroyed) backend.end(TERMINATE);
    backend.destroy();
    if (fields && this.fromBackend?.atBoundary && !client.destroyed) client.end(errorResponse(fields));
    else client.destroy();
    this.finish();
  }

  /** One side ended or failed: end the other, letting it flush what it already has. */
  private teardown(): void {
    if (this.closed) return;
    if (!this.client.destroyed) this.client.end();
    if (!this.backend.destroyed) this.backend.end();
    this.finish();
  }

  private finish(): void {
    this.closed = true;
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = undefined;
    // A peer that never reads must not keep a socket alive.
    setTimeout(() => {
      this.client.destroy();
      this.backend.destroy();
    }, CLOSE_GRACE_MS).unref();
    this.hooks.onClose(this);
  }

  /** Bytes relayed so far, from the sockets' own counters (nothing counted per chunk). */
  get bytesFromClient(): number {
    return this.client.bytesRead;
  }

  get bytesToClient(): number {
    return this.client.bytesWritten;
  }
}
