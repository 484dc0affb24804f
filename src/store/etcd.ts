/**
 * Store backend on etcd v3, for members on several hosts.
 *
 * Built on the `etcd3` package's generated gRPC clients (`kv`, `leaseClient`,
 * `watchClient`), not its high-level helpers: we need a single keepalive per
 * call (the agent times renewals itself and must see a failed one), watches
 * that report a broken stream instead of silently reconnecting, and our own
 * deadline and endpoint failover.
 *
 * Failover: one etcd3 client per endpoint. Reads and idempotent writes (get,
 * list, put, lease grant/keepalive/revoke, watch setup) move on to the next
 * endpoint when one is unreachable, within the same deadline. Conditional
 * writes (create, compareAndSwap, delete) never do: a lost reply does not say
 * whether the first attempt was applied, and retrying would turn "I won" into
 * "someone else won". They fail with StoreUnavailableError and the next call
 * starts on another endpoint.
 */
import {
  CompareResult,
  CompareTarget,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  Etcd3,
  GRPCUnauthenticatedError,
  SortOrder,
  SortTarget,
  castGrpcError,
  isRecoverableError,
  type IKeyValue,
  type IOptions,
  type IWatchResponse,
  type KVClient,
} from 'etcd3';
import { StoreError, StoreUnavailableError } from './errors.js';
import type { StoreConfig } from './config.js';
import type { KeyValue, LeaseId, Store, Watch, WatchEvent, WriteOptions } from './store.js';

type EtcdConfig = Extract<StoreConfig, { backend: 'etcd' }>;
type CallOptions = NonNullable<Parameters<KVClient['range']>[1]>;
type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

export interface EtcdStoreOptions {
  endpoints: string[];
  timeoutMs: number;
  username?: string;
  /** Read by openStore from passwordEnv/passwordFile; never logged or put in messages. */
  password?: string;
  /** PEM contents, read by openStore: the CA, and an optional client certificate and key. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
}

/** How an attempt is run: its gRPC deadline, and a signal that fires when we give up on it. */
interface Attempt {
  options: CallOptions;
  signal: AbortSignal;
}

/** Our own deadline fired before gRPC answered. */
class DeadlineError extends Error {
  override readonly name = 'DeadlineError';
}

/** A stream ended without the answer we were waiting for. */
class StreamEndedError extends Error {
  override readonly name = 'StreamEndedError';
}

const never = new AbortController().signal;

/**
 * etcd3 wraps every call in a retry policy and a per-host circuit breaker by
 * default. We replace both with a pass-through: retries would stretch an
 * operation past its deadline, and an open breaker keeps failing calls for
 * seconds after etcd is back. Only `execute` is used by etcd3.
 */
const passThrough = {
  execute: async <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> =>
    fn({ signal: never }),
} as unknown as Policy;

function isUnavailable(error: unknown): boolean {
  if (error instanceof DeadlineError || error instanceof StreamEndedError) return true;
  // Marker set by etcd3 on transient gRPC failures: UNAVAILABLE, DEADLINE_EXCEEDED,
  // CANCELLED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED, ABORTED.
  return error instanceof Error && isRecoverableError(error);
}

function isAuthFailure(error: unknown): boolean {
  return (
    error instanceof EtcdAuthenticationFailedError ||
    error instanceof EtcdInvalidAuthTokenError ||
    error instanceof EtcdPermissionDeniedError ||
    error instanceof GRPCUnauthenticatedError
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The range end that selects every key starting with `prefix` (etcd's "prefix end"). */
function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  if (prefix === '') return { key: Buffer.from([0]), range_end: Buffer.from([0]) };
  const key = Buffer.from(prefix);
  const end = Buffer.from(key);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return { key, range_end: end.subarray(0, i + 1) };
    }
  }
  // All bytes 0xff: no upper bound.
  return { key, range_end: Buffer.from([0]) };
}

function leaseField(lease: LeaseId | undefined): string | undefined {
  if (lease === undefined) return undefined;
  // etcd lease ids are positive int64s; anything else is a caller bug, not an outage.
  if (!/^[1-9][0-9]{0,18}$/.test(lease)) throw new StoreError(`invalid etcd lease id "${lease}"`);
  return lease;
}

function toKeyValue(kv: IKeyValue): KeyValue {
  const result: KeyValue = { key: kv.key.toString(), value: kv.value.toString(), revision: Number(kv.mod_revision) };
  if (kv.lease !== undefined && kv.lease !== '0') result.lease = kv.lease;
  return result;
}

export class EtcdStore implements Store {
  readonly backend = 'etcd';
  private readonly timeoutMs: number;
  private readonly hosts: { endpoint: string; client: Etcd3 }[];
  /** Index of the endpoint the next call tries first: the last one that answered. */
  private preferred = 0;
  private closed = false;
  private readonly watches = new Set<EtcdWatch>();
  /** One open LeaseKeepAlive stream per endpoint, opened at the first renewal on it. */
  private readonly keepAliveChannels = new Map<Etcd3, KeepAliveChannel>();
  /** Pending deadline timers, cleared by close() so node can exit. */
  private readonly timers = new Set<{ timer: NodeJS.Timeout; fail: (error: Error) => void }>();

  constructor(options: EtcdStoreOptions) {
    if (options.endpoints.length === 0) throw new StoreError('etcd store needs at least one endpoint');
    this.timeoutMs = options.timeoutMs;
    this.hosts = options.endpoints.map((endpoint) => ({
      endpoint,
      client: new Etcd3({
        hosts: [endpoint],
        ...(options.tls ? { credentials: { rootCertificate: options.tls.ca, ...(options.tls.cert && options.tls.key ? { certChain: options.tls.cert, privateKey: options.tls.key } : {}) } } : {}),
        ...(options.username !== undefined
          ? {
              auth: {
                username: options.username,
                password: options.password ?? '',
                callOptions: () => ({ deadline: Date.now() + options.timeoutMs }),
              },
            }
          : {}),
        faultHandling: { global: passThrough, host: () => passThrough },
        grpcOptions: {
          // Reconnect promptly once etcd is back (gRPC's default backoff grows to 2 minutes).
          'grpc.initial_reconnect_backoff_ms': 100,
          'grpc.max_reconnect_backoff_ms': 1_000,
          // Detect a dead or hung server under an open watch stream. etcd rejects
          // pings more often than every 5 s (--grpc-keepalive-min-time).
          'grpc.keepalive_time_ms': 10_000,
          'grpc.keepalive_timeout_ms': Math.max(options.timeoutMs, 1_000),
        },
      }),
    }));
  }

  static fromConfig(config: EtcdConfig, password?: string, tls?: EtcdStoreOptions['tls']): EtcdStore {
    return new EtcdStore({
      endpoints: config.endpoints,
      timeoutMs: config.timeoutMs,
      ...(config.username !== undefined ? { username: config.username } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(tls ? { tls } : {}),
    });
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const response = await this.run('get', true, (client, { options }) =>
      client.kv.range({ key: Buffer.from(key) }, options),
    );
    const kv = response.kvs[0];
    return kv === undefined ? undefined : toKeyValue(kv);
  }

  async list(prefix: string): Promise<KeyValue[]> {
    const response = await this.run('list', true, (client, { options }) =>
      client.kv.range({ ...prefixRange(prefix), sort_order: SortOrder.Ascend, sort_target: SortTarget.Key }, options),
    );
    return response.kvs.map(toKeyValue);
  }

  async create(key: string, value: string, options?: WriteOptions): Promise<number | undefined> {
    const lease = leaseField(options?.lease);
    const response = await this.run('create', false, (client, { options: call }) =>
      client.kv.txn(
        {
          compare: [
            { key: Buffer.from(key), target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 },
          ],
          success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(value), lease } }],
        },
        call,
      ),
    );
    return response.succeeded ? Number(response.header.revision) : undefined;
  }

  async compareAndSwap(
    key: string,
    value: string,
    expectedRevision: number,
    options?: WriteOptions,
  ): Promise<number | undefined> {
    const lease = leaseField(options?.lease);
    const response = await this.run('compareAndSwap', false, (client, { options: call }) =>
      client.kv.txn(
        {
          compare: [
            // Without the existence check, expectedRevision 0 would match an absent key.
            { key: Buffer.from(key), target: CompareTarget.Create, result: CompareResult.Greater, create_revision: 0 },
            { key: Buffer.from(key), target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: expectedRevision },
          ],
          success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(value), lease } }],
        },
        call,
      ),
    );
    return response.succeeded ? Number(response.header.revision) : undefined;
  }

  async put(key: string, value: string, options?: WriteOptions): Promise<number> {
    const lease = leaseField(options?.lease);
    // Idempotent: writing the same value again on another endpoint is harmless.
    const response = await this.run('put', true, (client, { options: call }) =>
      client.kv.put({ key: Buffer.from(key), value: Buffer.from(value), lease }, call),
    );
    return Number(response.header.revision);
  }

  async delete(key: string, expectedRevision?: number): Promise<boolean> {
    if (expectedRevision === undefined) {
      const response = await this.run('delete', false, (client, { options }) =>
        client.kv.deleteRange({ key: Buffer.from(key) }, options),
      );
      return Number(response.deleted) > 0;
    }
    const response = await this.run('delete', false, (client, { options }) =>
      client.kv.txn(
        {
          compare: [
            { key: Buffer.from(key), target: CompareTarget.Create, result: CompareResult.Greater, create_revision: 0 },
            { key: Buffer.from(key), target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: expectedRevision },
          ],
          success: [{ request_delete_range: { key: Buffer.from(key) } }],
        },
        options,
      ),
    );
    return response.succeeded;
  }

  /**
   * etcd counts TTLs in whole seconds, so ttlMs is rounded up. etcd also raises
   * any TTL below its minimum, ceil(1.5 × election timeout) — 2 s with the
   * default 1 s election timeout — without telling the caller except through
   * the granted TTL. Either way the lease lives at least ttlMs.
   */
  async grantLease(ttlMs: number): Promise<LeaseId> {
    if (!(ttlMs > 0) || !Number.isFinite(ttlMs)) throw new StoreError(`lease TTL must be a positive number of ms, got ${ttlMs}`);
    const ttl = Math.max(1, Math.ceil(ttlMs / 1000));
    // A retried grant at worst leaves an unused lease behind, which expires by itself.
    const response = await this.run('grantLease', true, (client, { options }) =>
      client.leaseClient.leaseGrant({ TTL: ttl, ID: 0 }, options),
    );
    return response.ID;
  }

  /**
   * One renewal on the endpoint's LeaseKeepAlive stream, kept open across calls
   * (KeepAliveChannel below): opening a gRPC stream per renewal was a good
   * part of an idle agent's CPU. etcd answers TTL 0 for a lease it no longer has
   * (expired or revoked); an expired lease that etcd has not yet revoked is held
   * until it is, so a late renewal cannot revive it. A renewal that gets no answer
   * within its deadline closes the stream (the next call opens a new one), so a
   * late answer is never taken for a later renewal's.
   */
  async keepAlive(lease: LeaseId): Promise<boolean> {
    const id = leaseField(lease)!;
    return this.run('keepAlive', true, async (client, attempt) => {
      const channel = this.keepAliveChannels.get(client) ?? new KeepAliveChannel(() => client.leaseClient.leaseKeepAlive());
      this.keepAliveChannels.set(client, channel);
      try {
        return (await channel.renew(id, attempt.signal)) > 0;
      } catch (error) {
        if (error instanceof DeadlineError || error instanceof StreamEndedError) throw error;
        throw castGrpcError(error as Error);
      }
    });
  }

  async revokeLease(lease: LeaseId): Promise<void> {
    const id = leaseField(lease);
    await this.run('revokeLease', true, async (client, { options }) => {
      try {
        await client.leaseClient.leaseRevoke({ ID: id }, options);
      } catch (error) {
        // Unknown (already expired or revoked) is what the caller wanted anyway.
        if (error instanceof EtcdLeaseInvalidError) return;
        throw error;
      }
    });
  }

  async watch(
    prefix: string,
    onEvent: (event: WatchEvent) => void,
    onError?: (error: Error) => void,
  ): Promise<Watch> {
    const watch = await this.run('watch', true, async (client, attempt) => {
      const range = prefixRange(prefix);
      const current = await client.kv.range({ ...range, count_only: true }, attempt.options);
      const stream = await client.watchClient.watch();
      const created = new EtcdWatch(stream, onEvent, onError, (w) => this.watches.delete(w));
      await created.start(
        { ...range, start_revision: String(BigInt(current.header.revision) + 1n) },
        attempt.signal,
      );
      return created;
    });
    if (this.closed) {
      await watch.close();
    } else {
      this.watches.add(watch);
    }
    return watch;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const entry of this.timers) {
      clearTimeout(entry.timer);
      entry.fail(new StoreError('etcd store closed while an operation was pending'));
    }
    this.timers.clear();
    await Promise.all([...this.watches].map((watch) => watch.close()));
    for (const channel of this.keepAliveChannels.values()) channel.close();
    for (const host of this.hosts) host.client.close();
  }

  /**
   * Runs `fn` against the preferred endpoint, then (when `failover`) the others,
   * all within one deadline of timeoutMs. Any connection, timeout or
   * unavailable failure becomes StoreUnavailableError.
   */
  private async run<T>(op: string, failover: boolean, fn: (client: Etcd3, attempt: Attempt) => Promise<T>): Promise<T> {
    if (this.closed) throw new StoreError(`etcd store is closed (${op})`);
    const deadline = Date.now() + this.timeoutMs;
    const count = this.hosts.length;
    const tries = failover ? count : 1;
    const first = this.preferred;
    // Made only when needed: an Error captures a stack trace, and this runs for every store call.
    let lastError: unknown;
    for (let attempt = 0; attempt < tries; attempt++) {
      const index = (first + attempt) % count;
      const host = this.hosts[index]!;
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      // A hung endpoint must not eat the whole deadline while others remain to try.
      const budget = attempt === tries - 1 ? remaining : Math.ceil(remaining / 2);
      try {
        const result = await this.bounded(budget, (signal) =>
          fn(host.client, { options: { deadline: new Date(Date.now() + budget) }, signal }),
        );
        this.preferred = index;
        return result;
      } catch (error) {
        if (this.closed) throw new StoreError(`etcd store closed during ${op}`, { cause: error });
        if (!isUnavailable(error)) throw this.translate(op, error);
        lastError = error;
        // Whatever happens next, the next call starts on another endpoint.
        this.preferred = (index + 1) % count;
      }
    }
    const endpoints = this.hosts.map((h) => h.endpoint).join(', ');
    throw new StoreUnavailableError(
      'etcd',
      `${op} did not succeed on ${endpoints} within ${this.timeoutMs} ms (${lastError === undefined ? 'no time left' : messageOf(lastError)})`,
      { cause: lastError ?? new DeadlineError('no time left') },
    );
  }

  /** Races `fn` against a timer; on timeout, aborts the attempt's signal so it can clean up. */
  private bounded<T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    return new Promise<T>((resolve, reject) => {
      const entry = {
        timer: setTimeout(() => entry.fail(new DeadlineError(`no answer within ${ms} ms`)), ms),
        fail: (error: Error) => {
          this.timers.delete(entry);
          clearTimeout(entry.timer);
          controller.abort();
          reject(error);
        },
      };
      this.timers.add(entry);
      fn(controller.signal).then(
        (value) => {
          this.timers.delete(entry);
          clearTimeout(entry.timer);
          if (controller.signal.aborted) return; // already rejected
          resolve(value);
        },
        (error: unknown) => {
          if (controller.signal.aborted) return;
          entry.fail(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  private translate(op: string, error: unknown): Error {
    if (error instanceof StoreError) return error;
    if (error instanceof EtcdLeaseInvalidError) {
      return new StoreError(`etcd ${op}: the lease does not exist (expired or revoked)`, { cause: error });
    }
    if (isAuthFailure(error)) {
      return new StoreError(
        `etcd ${op}: authentication or permission failure (${messageOf(error)}); check the store username and password`,
        { cause: error },
      );
    }
    return new StoreError(`etcd ${op} failed: ${messageOf(error)}`, { cause: error });
  }
}

type KeepAliveStream = Awaited<ReturnType<Etcd3['leaseClient']['leaseKeepAlive']>>;

/**
 * A LeaseKeepAlive stream kept open for renewals. etcd answers the requests of
 * one stream in order, one answer each, so answers are matched to waiting
 * renewals first in, first out (and checked by lease id). Any failure - an
 * error, the stream's end, a renewal abandoned at its deadline - closes the
 * stream and fails every renewal waiting on it; the next renewal opens a new one.
 */
export class KeepAliveChannel {
  /** The open stream and the renewals waiting for its answers, oldest first. */
  private current: { stream: KeepAliveStream; waiting: { id: string; resolve: (ttl: number) => void; reject: (error: Error) => void }[] } | undefined;
  private opening: Promise<NonNullable<KeepAliveChannel['current']>> | undefined;

  constructor(private readonly open: () => Promise<KeepAliveStream>) {}

  /** The TTL etcd answers for lease `id` (0: the lease is gone). */
  async renew(id: string, signal: AbortSignal): Promise<number> {
    const state = await this.ensure();
    // The stream failed (or was replaced) while it opened, or the deadline passed: not this one.
    if (this.current !== state) throw new StreamEndedError('keepalive stream closed');
    if (signal.aborted) throw new DeadlineError('keepalive abandoned');
    return new Promise<number>((resolve, reject) => {
      const entry = {
        id,
        resolve: (ttl: number) => {
          signal.removeEventListener('abort', onAbort);
          resolve(ttl);
        },
        reject: (error: Error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      // No answer in time: the stream is suspect, and a late answer must not be taken for a later renewal's.
      const onAbort = (): void => this.fail(state, new DeadlineError('keepalive abandoned'));
      signal.addEventListener('abort', onAbort, { once: true });
      state.waiting.push(entry);
      state.stream.write({ ID: id });
    });
  }

  close(): void {
    if (this.current) this.fail(this.current, new StreamEndedError('keepalive stream closed'));
  }

  private async ensure(): Promise<NonNullable<KeepAliveChannel['current']>> {
    if (this.current) return this.current;
    this.opening ??= this.open().then(
      (stream) => {
        this.opening = undefined;
        const state = { stream, waiting: [] as NonNullable<KeepAliveChannel['current']>['waiting'] };
        this.current = state;
        stream.on('data', (response: { ID: string; TTL: string }) => {
          const next = state.waiting[0];
          if (!next || next.id !== String(response.ID)) {
            this.fail(state, new StreamEndedError(`keepalive answer for lease ${response.ID} not expected`));
            return;
          }
          state.waiting.shift();
          next.resolve(Number(response.TTL));
        });
        stream.on('error', (error: Error) => this.fail(state, error));
        stream.on('end', () => this.fail(state, new StreamEndedError('keepalive stream ended without an answer')));
        return state;
      },
      (error: unknown) => {
        this.opening = undefined;
        throw error;
      },
    );
    return this.opening;
  }

  /** Closes the stream (once) and fails every renewal waiting on it. */
  private fail(state: NonNullable<KeepAliveChannel['current']>, error: Error): void {
    if (this.current === state) {
      this.current = undefined;
      // end() first: once the stream is not writable, etcd3 does not treat our own cancel as a host failure.
      state.stream.end();
      state.stream.cancel();
    }
    const waiting = state.waiting.splice(0);
    for (const w of waiting) w.reject(error);
  }
}

type WatchStream = Awaited<ReturnType<Etcd3['watchClient']['watch']>>;

/**
 * One etcd watch on its own gRPC stream. When the stream breaks it reports
 * once through onError and stops; it does not reconnect, because the caller
 * must re-read what it missed anyway (and may want another endpoint).
 */
class EtcdWatch implements Watch {
  private stopped = false;

  constructor(
    private readonly stream: WatchStream,
    private readonly onEvent: (event: WatchEvent) => void,
    private readonly onError: ((error: Error) => void) | undefined,
    private readonly onStop: (watch: EtcdWatch) => void,
  ) {
    this.stream.on('error', () => undefined); // our own cancel() emits CANCELLED
  }

  /** Sends the create request and resolves once etcd confirms the watch. */
  start(request: { key: Buffer; range_end: Buffer; start_revision: string }, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let confirmed = false;
      const onAbort = (): void => {
        if (confirmed) return;
        this.stop();
        reject(new DeadlineError('watch not confirmed in time'));
      };
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      this.stream.on('data', (response: IWatchResponse) => {
        if (!confirmed) {
          if (!response.created) return;
          confirmed = true;
          signal.removeEventListener('abort', onAbort);
          resolve();
        }
        this.handle(response);
      });
      const broken = (error: Error): void => {
        if (this.stopped) return;
        if (!confirmed) {
          confirmed = true;
          signal.removeEventListener('abort', onAbort);
          this.stop();
          reject(error);
          return;
        }
        this.fail(new StoreUnavailableError('etcd', `watch stream broke: ${error.message}`, { cause: error }));
      };
      this.stream.on('error', (error: Error) => broken(castGrpcError(error)));
      this.stream.on('end', () => broken(new StreamEndedError('watch stream ended')));
      this.stream.write({ create_request: request });
    });
  }

  async close(): Promise<void> {
    this.stop();
  }

  private handle(response: IWatchResponse): void {
    if (this.stopped) return;
    if (response.canceled) {
      const reason = response.compact_revision !== '0' ? `compacted at revision ${response.compact_revision}` : response.cancel_reason;
      this.fail(new StoreError(`etcd canceled the watch: ${reason || 'no reason given'}`));
      return;
    }
    for (const event of response.events) {
      if (this.stopped) return;
      const key = event.kv.key.toString();
      const revision = Number(event.kv.mod_revision);
      // proto-loader delivers enum names as in the .proto ('PUT'/'DELETE').
      const type = String(event.type).toUpperCase();
      const mapped: WatchEvent =
        type === 'DELETE' ? { type: 'delete', key, revision } : { type: 'put', key, value: event.kv.value.toString(), revision };
      try {
        this.onEvent(mapped);
      } catch (error) {
        // A throwing handler would otherwise surface inside gRPC's stream machinery.
        this.fail(error instanceof Error ? error : new Error(String(error)));
        return;
      }
    }
  }

  private fail(error: Error): void {
    if (this.stopped) return;
    this.stop();
    this.onError?.(error);
  }

  private stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.onStop(this);
    this.stream.end();
    this.stream.cancel();
  }
}
