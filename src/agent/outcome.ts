import type { ActionType } from './actions.js';

/**
 * What became of one action of the previous cycle, handed to the next
 * decide() in its observation: the decision learns from results, never from
 * flags set behind its back.
 */
export type ActionOutcome =
  | { type: ActionType; result: 'ok'; detail?: string }
  /** `code` is stable (the error's own code, else `E_<ACTION>_FAILED`); `retryable`: the failure says nothing about our data. */
  | { type: ActionType; result: 'failed'; code: string; error: string; retryable: boolean }
  /** A compare-and-swap or atomic create on `key` found the record changed by someone else. */
  | { type: ActionType; result: 'lost_cas'; key: string; error: string };

/** Thrown by an effect whose conditional store write lost to a concurrent writer. */
export class LostCasError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message);
  }
}

/** The stable code of a failed action when its error carries none. */
export function failureCode(type: ActionType): string {
  return `E_${type.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}_FAILED`;
}

/**
 * PostgreSQL's and the kernel's words for a full disk. A full disk says
 * nothing about the data on it: the step is tried again once space is freed,
 * never answered by moving the data directory aside, which frees nothing
 * (chaos seed 4242, wal-disk-full: pg_rewind's crash recovery failed on the
 * full disk, the data was moved aside on the same disk and every reclone then
 * failed with ENOSPC).
 */
const DISK_FULL_TEXT = /No space left on device|\bENOSPC\b|could not extend file .*: (?:wrote only|No space)/i;

export function isDiskFull(message: string): boolean {
  return DISK_FULL_TEXT.test(message);
}

export function outcomeOf(type: ActionType, error: unknown): ActionOutcome {
  const e = error as { message?: unknown; code?: unknown; retryable?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(error);
  if (error instanceof LostCasError) return { type, result: 'lost_cas', key: error.key, error: message };
  if (e?.code === 'ENOSPC' || e?.code === 'CLONE_NO_SPACE' || isDiskFull(message)) {
    return { type, result: 'failed', code: e?.code === 'CLONE_NO_SPACE' ? 'CLONE_NO_SPACE' : 'DISK_FULL', error: message, retryable: true };
  }
  const code = typeof e?.code === 'string' && /^[A-Z][A-Z0-9_]+$/.test(e.code) ? e.code : failureCode(type);
  return { type, result: 'failed', code, error: message, retryable: e?.retryable === true };
}
