/**
 * Writes a relayed chunk straight to a socket's libuv handle, the way
 * net.Socket's own write path ends (`handle.writeBuffer`), without the
 * Writable stream machinery around it. Why: the relay writes one chunk per
 * read, tens of thousands of times a second, and a socket write through the
 * stream costs a WriteWrap allocation, the Writable state bookkeeping, and
 * a `process.nextTick` after every write (the write callback is deferred even
 * when the kernel took the bytes at once) — so every wake-up of the router
 * ran a tick queue. Here a write that the kernel takes at once (almost all of
 * them on loopback and LAN sockets) costs one call into C++ and nothing after
 * it; only a write the kernel could not take at once (the peer reads slowly)
 * is queued by libuv and completes later, and the caller then stops reading
 * the other side until it has (backpressure: at most one chunk queued).
 *
 * Ordering: libuv writes a handle's requests in order, and the stream's own
 * writes (the first packet, the final ErrorResponse, end()) go to the same
 * handle. While the stream still holds bytes of its own (writableLength > 0)
 * a chunk goes through the stream too, so it cannot overtake them.
 *
 * Byte counts stay right: a socket's bytesWritten is the handle's own count,
 * which sees these writes too.
 *
 * Without the binding (a future Node that drops `process.binding`), or with
 * RELEVO_ROUTER_STREAM_WRITES=1, every chunk goes through `socket.write`,
 * with the same results.
 */
import type { Socket } from 'node:net';

interface WriteReq {
  handle: unknown;
  /** The socket a queued write belongs to (writeDirect): destroyed when the write fails. */
  owner?: Socket;
  oncomplete: (status: number) => void;
  async: boolean;
  bytes: number;
  buffer: unknown;
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteReq;
  streamBaseState: Int32Array;
  kLastWriteWasAsync: number;
}

interface StreamHandle {
  writeBuffer(req: WriteReq, data: Uint8Array): number;
}

function loadBinding(): StreamWrapBinding | null {
  if (process.env.RELEVO_ROUTER_STREAM_WRITES === '1') return null;
  try {
    const b = (process as unknown as { binding(name: string): Partial<StreamWrapBinding> }).binding('stream_wrap');
    if (typeof b.WriteWrap !== 'function' || !(b.streamBaseState instanceof Int32Array) || typeof b.kLastWriteWasAsync !== 'number') return null;
    return b as StreamWrapBinding;
  } catch {
    return null;
  }
}

const binding = loadBinding();

/** Whether chunks bypass the Writable stream (false: the fallback, every write through socket.write). */
export const directWrites = binding !== null;

/** A WriteWrap for writeDirect's next write: shared, since only a queued write keeps one. */
let spare: WriteReq | null = null;

function onSpareComplete(this: WriteReq, status: number): void {
  const owner = this.owner;
  this.owner = undefined;
  this.buffer = null;
  // Like net.Socket's own write path: a failed write destroys the socket ('error', then 'close').
  if (status < 0 && owner && !owner.destroyed) owner.destroy(new Error(`write failed (${status})`));
}

/**
 * One write, with no backpressure (session mode's writes: whole messages in
 * buffers of their own, so a queued write needs nothing kept). TLS sockets always use socket.write: their
 * handle encrypts, and the TLS layer keeps state of its own in JavaScript.
 */
export function writeDirect(socket: Socket, data: Uint8Array): void {
  const handle = (socket as unknown as { _handle: StreamHandle | null })._handle;
  if (binding === null || handle === null || socket.writableLength > 0 || socket.destroyed || (socket as { encrypted?: boolean }).encrypted === true) {
    socket.write(data);
    return;
  }
  let req = spare;
  if (req === null) {
    req = spare = new binding.WriteWrap();
    req.async = false;
    req.bytes = 0;
    req.buffer = null;
    req.oncomplete = onSpareComplete;
  }
  req.handle = handle;
  const err = handle.writeBuffer(req, data);
  if (err !== 0) {
    socket.destroy(new Error(`write failed (${err})`));
    return;
  }
  if (binding.streamBaseState[binding.kLastWriteWasAsync] !== 0) {
    req.owner = socket;
    req.buffer = data;
    spare = null;
  }
}

/** What became of one write. */
export const enum Written {
  /** The kernel took every byte: the buffer is free again. */
  Done = 0,
  /** Queued: the buffer is referenced until `onDone`; stop reading the other side until then. */
  Queued = 1,
  /** The socket is gone or failed: end the session. */
  Failed = 2,
}

export class DirectWriter {
  /** A WriteWrap for the next write: reused until libuv keeps one (a queued write). */
  private req: WriteReq | null = null;
  /** A queued write has not completed yet. */
  pending = false;

  constructor(
    private readonly socket: Socket,
    /** Called once a Queued write completed (ok) or failed. */
    private readonly onDone: (ok: boolean) => void,
  ) {}

  write(data: Uint8Array): Written {
    const socket = this.socket;
    const handle = (socket as unknown as { _handle: StreamHandle | null })._handle;
    if (binding === null || handle === null || socket.writableLength > 0 || socket.destroyed || (socket as { encrypted?: boolean }).encrypted === true) {
      return this.viaStream(data);
    }
    let req = this.req;
    if (req === null) req = this.req = this.newReq(handle);
    const err = handle.writeBuffer(req, data);
    if (err !== 0) return Written.Failed;
    if (binding.streamBaseState[binding.kLastWriteWasAsync] === 0) return Written.Done;
    // libuv holds this request (and the bytes) until it completes: the next write needs another.
    req.buffer = data;
    this.req = null;
    this.pending = true;
    return Written.Queued;
  }

  private newReq(handle: StreamHandle): WriteReq {
    const req = new binding!.WriteWrap();
    req.handle = handle;
    req.async = false;
    req.bytes = 0;
    req.buffer = null;
    req.oncomplete = (status: number) => {
      req.buffer = null;
      this.pending = false;
      this.onDone(status >= 0);
    };
    return req;
  }

  /** The stream's own path: used while it holds bytes, and as the fallback. */
  private viaStream(data: Uint8Array): Written {
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) return Written.Failed;
    socket.write(data, (error?: Error | null) => {
      // Callbacks come for every write; only the one we reported Queued is awaited.
      if (!this.pending) return;
      if (socket.writableLength > 0 && !error) return;
      this.pending = false;
      this.onDone(!error);
    });
    if (socket.writableLength === 0) return Written.Done;
    this.pending = true;
    return Written.Queued;
  }
}
