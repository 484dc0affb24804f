import type { SlotRegistry } from '../cluster/types.js';

/** Where a standby streams from. */
export interface Upstream {
  member: string;
  address: string;
  slot: string;
}

/** Effects decide() asks for; src/agent/effects.ts carries them out, in order. */
export type Action =
  | { type: 'claimInitialize'; systemIdentifier?: string }
  | { type: 'completeInitialize'; systemIdentifier: string }
  | { type: 'bootstrap' }
  | { type: 'clone'; upstream: Upstream }
  | { type: 'startPostgres'; as: 'primary' }
  | { type: 'startPostgres'; as: 'replica'; upstream: Upstream | undefined }
  | { type: 'stopPostgres'; mode: 'fast' | 'immediate' }
  | { type: 'acquireLeader' }
  /** Rewrite relevo.conf/pg_hba/standby.signal if they differ from what this role needs, and reload. */
  | { type: 'configure'; as: 'primary' }
  | { type: 'configure'; as: 'replica'; upstream: Upstream }
  | { type: 'syncSlots'; create: string[]; drop: { slot: string; reason: string }[]; registry: SlotRegistry | undefined };

export type ActionType = Action['type'];
