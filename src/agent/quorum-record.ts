import type { ClusterKeys } from '../cluster/keys.js';
import type { Store } from '../store/store.js';

/**
 * Writes the quorum record by compare-and-swap against the revision the
 * decision saw (atomic create when there was none): a record changed
 * meanwhile fails the cycle, and the reload that was to follow is not done.
 */
export async function writeQuorumRecord(
  store: Store,
  keys: ClusterKeys,
  leader: string,
  change: { members: string[]; quorum: number; revision: number | null },
): Promise<string> {
  const value = JSON.stringify({ leader, members: change.members, quorum: change.quorum, updatedAt: new Date().toISOString() });
  const written = change.revision === null ? await store.create(keys.quorum, value) : await store.compareAndSwap(keys.quorum, value, change.revision);
  if (written === undefined) {
    throw new Error(`member ${leader}: the quorum record changed since it was read (expected revision ${change.revision ?? 'none'}); retrying next cycle`);
  }
  return `quorum record is now [${change.members.join(', ')}], quorum ${change.quorum}`;
}
