/**
 * sha256 of big files off the main thread. A backup's main thread reads
 * pg_basebackup's tar stream and hands blocks to zlib on the thread pool; a
 * restore's main thread reads members and writes blocks. The content sha256 of
 * every byte, taken in order, was the main thread's largest single cost (about
 * 0.7 CPU s per GB), and the main thread is what bounds the wall time. Blocks
 * are moved (transferred, not copied) to one worker thread that keeps a hash
 * per stream; node's crypto has no asynchronous incremental hash.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort, Worker, workerData } from 'node:worker_threads';

type Request = { op: 'update'; id: number; data: Uint8Array; moved: boolean } | { op: 'digest'; id: number };
type Reply = { op: 'ack'; data: Uint8Array } | { op: 'digest'; id: number; hex: string };

/** Bytes handed over but not hashed yet, past which `update` waits: memory stays bounded. */
const MAX_OUTSTANDING_BYTES = 64 * 1024 * 1024;
/** Blocks in flight at once (being compressed, queued for hashing): reused rather than allocated and collected. */
const MAX_SPARE_BUFFERS = 24;
/** Never node's shared pool for small buffers (Buffer.poolSize, 8 kB), whatever a caller says. */
const MIN_MOVED_BYTES = 1024 * 1024;

/** Marks the worker this module starts, so importing the module in any other worker does nothing. */
const ROLE = 'relevo-hash-worker';

if (parentPort && (workerData as { role?: string } | null)?.role === ROLE) {
  const port = parentPort;
  const hashes = new Map<number, Hash>();
  port.on('message', (request: Request) => {
    if (request.op === 'update') {
      let hash = hashes.get(request.id);
      if (!hash) hashes.set(request.id, (hash = createHash('sha256')));
      hash.update(request.data);
      // A moved block goes back for reuse (see take()).
      port.postMessage({ op: 'ack', data: request.data } satisfies Reply, request.moved ? [request.data.buffer as ArrayBuffer] : []);
    } else {
      const hash = hashes.get(request.id) ?? createHash('sha256');
      hashes.delete(request.id);
      port.postMessage({ op: 'digest', id: request.id, hex: hash.digest('hex') } satisfies Reply);
    }
  });
}

export class HashWorker {
  private readonly worker = new Worker(new URL(import.meta.url), { workerData: { role: ROLE } });
  private nextId = 1;
  private outstanding = 0;
  private waiting: (() => void)[] = [];
  private digests = new Map<number, { resolve: (hex: string) => void; reject: (error: Error) => void }>();
  private failure: Error | undefined;
  /** Blocks back from the worker: reused, so a GB is not a GB of fresh pages to fault in and collect. */
  private spare: ArrayBuffer[] = [];

  constructor() {
    this.worker.on('message', (reply: Reply) => {
      if (reply.op === 'ack') {
        this.outstanding -= reply.data.byteLength;
        if (reply.data.buffer.byteLength >= MIN_MOVED_BYTES && this.spare.length < MAX_SPARE_BUFFERS) this.spare.push(reply.data.buffer as ArrayBuffer);
        if (this.outstanding < MAX_OUTSTANDING_BYTES) for (const wake of this.waiting.splice(0)) wake();
      } else {
        this.digests.get(reply.id)?.resolve(reply.hex);
        this.digests.delete(reply.id);
      }
    });
    const fail = (error: Error) => {
      this.failure ??= error;
      for (const { reject } of this.digests.values()) reject(error);
      this.digests.clear();
      for (const wake of this.waiting.splice(0)) wake();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`hash worker exited (${code})`)));
  }

  /** A buffer of `size` bytes (contents undefined), a returned block when one fits. */
  take(size: number): Buffer {
    const index = this.spare.findIndex((buffer) => buffer.byteLength === size);
    if (index === -1) return Buffer.allocUnsafeSlow(size);
    return Buffer.from(this.spare.splice(index, 1)[0]!, 0, size);
  }

  /** A new stream to hash. */
  open(): number {
    return this.nextId++;
  }

  /**
   * Adds `data` to stream `id`, in call order. With `disposable`, the caller
   * declares that nothing else uses the memory under `data` (a block zlib
   * returned, or one from take()): that whole buffer is moved to the worker,
   * not copied, and `data` is empty afterwards. Otherwise, and for small
   * buffers (which may live in node's shared pool), the bytes are copied.
   */
  async update(id: number, data: Buffer, disposable = false): Promise<void> {
    if (this.failure) throw this.failure;
    const moved = disposable && data.buffer instanceof ArrayBuffer && data.buffer.byteLength >= MIN_MOVED_BYTES;
    this.outstanding += data.byteLength;
    const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.worker.postMessage({ op: 'update', id, data: view, moved } satisfies Request, moved ? [data.buffer as ArrayBuffer] : []);
    while (this.outstanding >= MAX_OUTSTANDING_BYTES && !this.failure) await new Promise<void>((resolve) => this.waiting.push(resolve));
    if (this.failure) throw this.failure;
  }

  /** The hex sha256 of everything given to stream `id`. */
  digest(id: number): Promise<string> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.digests.set(id, { resolve, reject });
      this.worker.postMessage({ op: 'digest', id } satisfies Request);
    });
  }

  /**
   * Stops the worker without waiting for its teardown (measured at up to a
   * second on a loaded machine at the end of a backup, after every digest was in).
   */
  async close(): Promise<void> {
    this.failure ??= new Error('hash worker closed');
    this.worker.unref();
    void this.worker.terminate().catch(() => undefined);
  }
}
