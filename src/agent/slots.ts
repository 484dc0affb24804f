import type { SlotRegistry } from '../cluster/types.js';
import { unknownMembers, unreadableOf } from '../cluster/view.js';
import { slotNameFor } from '../postgres/inspect.js';
import type { Action } from './actions.js';
import type { Observation } from './observation.js';
import { isArchiveFed } from './delayed.js';

type Reachable = Extract<Observation['store'], { reachable: true }>;

/**
 * Slots the primary keeps: one per member present in the store, and for a
 * member that vanished, until slotGraceSeconds have passed since it was last
 * seen — so a removed member cannot make pg_wal grow without bound.
 */
export function planSlots(
  o: Observation,
  store: Reachable,
  existing: { name: string; active: boolean }[],
): Extract<Action, { type: 'syncSlots' }> | undefined {
  // A member whose record is unreadable is unknown, not gone: its slot is kept.
  // A replica running from the WAL archive (a delayed replica, docs/undo.md) needs no slot: keeping one
  // would hold WAL on the primary for as long as its replay is paused.
  const archiveFed = new Set(store.members.filter(isArchiveFed).map((m) => m.name));
  const present = [...store.members.map((m) => m.name), ...unknownMembers(store)].filter((name) => name !== o.member.name && !archiveFed.has(name));
  const registry: SlotRegistry = {};
  // An unreadable registry reads as empty (so nothing is dropped from it) and is replaced at its own revision.
  const badRegistry = unreadableOf(store, 'slots');
  let registryChanged = badRegistry !== undefined;
  for (const name of present) {
    registry[name] = { lastSeenAt: null };
    if (store.slotRegistry[name]?.lastSeenAt !== null) registryChanged = true;
  }
  const drop: { slot: string; reason: string }[] = [];
  for (const [name, entry] of Object.entries(store.slotRegistry)) {
    if (name === o.member.name) {
      registryChanged = true;
      continue;
    }
    if (registry[name]) continue;
    if (archiveFed.has(name)) {
      drop.push({ slot: slotNameFor(name), reason: `member ${name} replays from the WAL archive (delay.feed: archive)` });
      registryChanged = true;
      continue;
    }
    const goneSince = entry.lastSeenAt ?? new Date(o.now).toISOString();
    if (entry.lastSeenAt === null) registryChanged = true;
    if (o.now - Date.parse(goneSince) > o.settings.slotGraceSeconds * 1000) {
      drop.push({ slot: slotNameFor(name), reason: `member ${name} gone since ${goneSince}, longer than slotGraceSeconds=${o.settings.slotGraceSeconds}` });
      registryChanged = true;
    } else {
      registry[name] = { lastSeenAt: goneSince };
    }
  }
  const existingNames = new Set(existing.map((s) => s.name));
  const create = present.map(slotNameFor).filter((slot) => !existingNames.has(slot));
  const dropExisting = drop.filter((d) => existingNames.has(d.slot));
  if (create.length === 0 && dropExisting.length === 0 && !registryChanged) return undefined;
  return { type: 'syncSlots', create, drop: dropExisting, registry: registryChanged ? registry : undefined, registryRevision: store.revisions.slots };
}
