/**
 * The relay loop for one client session: bytes go through unaltered in both
 * directions. Each chunk is handed from one socket's 'data' event straight to
 * the other socket's write() — no copy, no concatenation, no allocation of our
 * own. Plaintext sessions are framed (headers only, see protocol.ts) so the
 * router knows when a session is idle between transactions and where it may
 * inject a final ErrorResponse; TLS/GSS sessions are opaque and never framed.
 */
import { connect, type Socket } from 'node:net';
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

/** Read buffer of one backend socket: PostgreSQL sends at most 8 kB per write. */
const READ_BUFFER_BYTES = 32 * 1024;

/**
 * Where a backend socket's reads go. Backend sockets read into one reusable
 * buffer of their own (net's `onread`), so the heavy direction allocates
 * nothing per read; a fresh buffer is taken only while a write of the old one
 * is still queued (the client is slower than the backend).
 */
export interface BackendSocket {
  socket: Socket;
  /** Set once the relay exists; reads before that cannot happen (the backend waits for us). */
  relay: Relay | undefined;
  buffer: Buffer;
  /** The current buffer is referenced by a queued write: do not read into it again. */
  busy: boolean;
}

export function connectBackend(target: Backend): BackendSocket {
  const b: BackendSocket = { socket: undefined as unknown as Socket, relay: undefined, buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES), busy: false };
  b.socket = connect({
    host: target.host,
    port: target.port,
    noDelay: true,
    onread: {
      buffer: () => {
        if (b.busy) {
          b.buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
          b.busy = false;
        }
        return b.buffer;
      },
      callback: (n: number, buf: Uint8Array) => (b.relay === undefined ? true : b.relay.onBackendRead(n, buf as Buffer)),
    },
  });
  return b;
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

  readonly backend: Socket;

  constructor(
    readonly client: Socket,
    private readonly source: BackendSocket,
    readonly target: Backend,
    /** Routed to the primary (read-write, or read-only fallback). */
    readonly primary: boolean,
    private readonly hooks: RelayHooks,
    opening: OpeningKind,
  ) {
    this.backend = source.socket;
    this.awaitingAnswer = opening !== 'startup';
    // A StartupMessage has no type byte; after an SSL 'N' the client sends one next.
    this.fromClient?.expectUntypedPacket();
    if (this.awaitingAnswer) this.fromBackend?.expectEncryptionAnswer();
  }

  /** Starts relaying; `initial` is what the client sent before the backend was connected. */
  start(initial: Buffer, openingLength: number): void {
    const { client, backend } = this;
    client.on('data', this.onClientData);
    this.source.relay = this;
    // Backpressure: stop reading one side while the other cannot take more.
    client.on('drain', () => backend.resume());
    backend.on('drain', () => client.resume());
    client.on('end', () => this.teardown());
    backend.on('end', () => this.teardown());
    // Errors end the session like EOF does; 'close' follows and is idempotent.
    client.on('error', () => this.teardown());
    backend.on('error', () => this.teardown());
    client.on('close', () => this.teardown());
    backend.on('close', () => this.teardown());

    if (this.awaitingAnswer) {
      // The SSLRequest/GSSENCRequest itself is not a framed message: send it as is.
      backend.write(initial.subarray(0, openingLength));
      if (initial.length > openingLength) this.onClientData(initial.subarray(openingLength));
    } else {
      this.onClientData(initial);
    }
    client.resume();
    backend.resume();
  }

  private readonly onClientData = (chunk: Buffer): void => {
    const f = this.fromClient;
    if (f !== null) {
      try {
        f.push(chunk);
      } catch {
        this.teardown();
        return;
      }
    }
    if (!this.backend.write(chunk)) this.client.pause();
  };

  /** onread callback of the backend socket; returning false pauses reading (backpressure). */
  onBackendRead(n: number, buf: Buffer): boolean {
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
    const client = this.client;
    const ok = client.write(n === buf.length ? buf : buf.subarray(0, n));
    // Still queued: the bytes live in our read buffer, so the next read needs another.
    if (client.writableLength > 0) this.source.busy = true;
    if (this.drainFields !== undefined) this.closeIfIdle();
    return ok;
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
    client.removeListener('data', this.onClientData);
    this.source.relay = undefined;
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
