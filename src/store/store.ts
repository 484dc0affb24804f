/**
 * The coordination store: the only place members agree on who is primary.
 *
 * Every backend (etcd v3, embedded single-host) implements this interface and
 * passes the same conformance suite (test/integration/store-conformance.test.ts).
 *
 * Contract, common to all methods:
 * - Keys are plain strings; relevo keeps everything under `/relevo/<cluster>/`.
 * - Every successful write advances one store-wide revision counter; a key's
 *   `revision` is the store revision of its last write (etcd's mod_revision).
 * - When the store cannot be reached or does not answer within the backend's
 *   operation timeout, the method rejects with `StoreUnavailableError`. It never
 *   returns a guess: a caller that gets an error must act as if it knows
 *   nothing (a primary then fences itself, a router fails closed).
 * - Conditional writes either happen entirely or not at all.
 */

export type LeaseId = string;

export interface KeyValue {
  key: string;
  value: string;
  /** Store revision of the key's last write (> 0). */
  revision: number;
  /** Lease the key is attached to, if any: the key disappears when the lease expires. */
  lease?: LeaseId;
}

export interface WriteOptions {
  /** Attach the key to this lease; it is deleted when the lease expires or is revoked. */
  lease?: LeaseId;
}

export type WatchEvent =
  | { type: 'put'; key: string; value: string; revision: number }
  | { type: 'delete'; key: string; revision: number };

export interface Watch {
  /** Stops delivering events. Idempotent. */
  close(): Promise<void>;
}

export interface Store {
  /** 'etcd' or 'embedded'. */
  readonly backend: string;

  /** The key's current value, or undefined when absent. */
  get(key: string): Promise<KeyValue | undefined>;

  /** Every key that starts with `prefix`, sorted by key. */
  list(prefix: string): Promise<KeyValue[]>;

  /**
   * Atomically creates `key` only if it does not exist.
   * Returns the new revision, or undefined when the key already existed
   * (in which case nothing was written).
   */
  create(key: string, value: string, options?: WriteOptions): Promise<number | undefined>;

  /**
   * Atomically replaces `key` only if its current revision is `expectedRevision`.
   * Returns the new revision, or undefined when the key is absent or its revision
   * differs (nothing written). The lease of the key is replaced by `options.lease`
   * (no lease when omitted).
   */
  compareAndSwap(
    key: string,
    value: string,
    expectedRevision: number,
    options?: WriteOptions,
  ): Promise<number | undefined>;

  /** Unconditional write. Returns the new revision. */
  put(key: string, value: string, options?: WriteOptions): Promise<number>;

  /**
   * Deletes `key`. With `expectedRevision`, deletes only if the key's revision
   * matches. Returns true when a key was deleted.
   */
  delete(key: string, expectedRevision?: number): Promise<boolean>;

  /**
   * Grants a lease that expires `ttlMs` after its last grant or refresh unless
   * refreshed with `keepAlive`. Backends may round the TTL up (etcd counts whole
   * seconds), never down: the lease lives at least `ttlMs`.
   */
  grantLease(ttlMs: number): Promise<LeaseId>;

  /**
   * Refreshes the lease's TTL. Returns false when the lease no longer exists
   * (it expired or was revoked): the keys attached to it are gone.
   */
  keepAlive(lease: LeaseId): Promise<boolean>;

  /** Revokes the lease and deletes its keys at once. Revoking an unknown lease is not an error. */
  revokeLease(lease: LeaseId): Promise<void>;

  /**
   * Calls `onEvent` for every change to a key under `prefix`, in revision order,
   * starting after the store's current revision. Lease expiry shows up as a
   * 'delete'. `onError` is called when the watch breaks for good (the caller
   * should re-read and watch again).
   */
  watch(
    prefix: string,
    onEvent: (event: WatchEvent) => void,
    onError?: (error: Error) => void,
  ): Promise<Watch>;

  /** Releases connections and timers. Leases are not revoked. */
  close(): Promise<void>;
}

/**
 * The conditional write every shared record goes through: a compare-and-swap
 * on the revision the writer read, or an atomic create when it read no key.
 * Returns the new revision, or undefined when the record changed meanwhile
 * (nothing written): the caller re-reads and decides again.
 */
export function writeIfUnchanged(store: Store, key: string, value: string, revision: number | undefined, options?: WriteOptions): Promise<number | undefined> {
  return revision === undefined ? store.create(key, value, options) : store.compareAndSwap(key, value, revision, options);
}
