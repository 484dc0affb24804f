/**
 * Store errors carry a stable code and a `retryable` marker; callers branch on
 * the class or code, never on message text.
 */
export class StoreError extends Error {
  readonly code: string = 'STORE_ERROR';
  readonly retryable: boolean = false;
}

/** The store could not be reached or did not answer in time. Safe to retry. */
export class StoreUnavailableError extends StoreError {
  override readonly code = 'STORE_UNAVAILABLE';
  override readonly retryable = true;
  constructor(backend: string, detail: string, options?: { cause?: unknown }) {
    super(
      `coordination store (${backend}) unavailable: ${detail}. ` +
        'Check that the store is running and reachable from this host.',
      options,
    );
    this.name = 'StoreUnavailableError';
  }
}

export function isStoreUnavailable(error: unknown): error is StoreUnavailableError {
  return error instanceof StoreUnavailableError;
}

/** The member file's store section cannot be used (credentials, files): a configuration error, exit code 2. */
export class StoreConfigError extends StoreError {
  override readonly code = 'STORE_CONFIG_INVALID';
}
