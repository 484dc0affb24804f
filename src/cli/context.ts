import { exitCodeOf, hintOf, type ErrorCode } from '../errors/catalogue.js';
import { clusterKeys, type ClusterKeys } from '../cluster/keys.js';
import { loadMemberConfig } from '../config/load.js';
import type { MemberConfig } from '../config/member.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';

/** Exit codes scripts can rely on. */
export const EXIT = {
  ok: 0,
  /** Something failed at run time (store, PostgreSQL). */
  failure: 1,
  /** The request itself is wrong: bad config, unknown member, impossible operation. */
  usage: 2,
} as const;

/**
 * An error the CLI reports as one line with its stable code and a hint, plus an
 * exit code (by default the code's class: src/errors/catalogue.ts), without a stack trace.
 */
export class CliError extends Error {
  readonly exitCode: number;
  readonly hint: string;
  constructor(
    readonly code: ErrorCode,
    message: string,
    exitCode?: number,
  ) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode ?? exitCodeOf(code);
    this.hint = hintOf(code);
  }
}

export function configPath(option: string | undefined): string {
  const path = option ?? process.env.RELEVO_CONFIG;
  if (!path) throw new CliError('NO_CONFIG', 'no member configuration: pass -c FILE or set RELEVO_CONFIG');
  return path;
}

export interface ClusterHandle {
  config: MemberConfig;
  store: Store;
  keys: ClusterKeys;
}

/** Opens the store named by a member file, runs `work`, and closes the store. */
export async function withCluster<T>(configOption: string | undefined, work: (handle: ClusterHandle) => Promise<T>): Promise<T> {
  const config = loadMemberConfig(configPath(configOption));
  const store = await openStore(config.store);
  try {
    return await work({ config, store, keys: clusterKeys(config.cluster) });
  } finally {
    await store.close();
  }
}
