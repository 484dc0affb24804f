import { writeIfUnchanged, type Store } from '../store/store.js';
import type { ClusterKeys } from './keys.js';
import { parseRecord, RecordUnreadableError, unreadableRecord } from './records.js';
import { ClusterSettingsSchema, defaultClusterSettings, type ClusterSettings } from './settings.js';

export interface StoredSettings {
  settings: ClusterSettings;
  /** Revision of the config record; undefined when it does not exist yet (defaults apply). */
  revision: number | undefined;
}

/** The settings in the store, for a writer: a damaged record is an error naming it, never the defaults. */
export async function readStoredSettings(store: Store, keys: ClusterKeys): Promise<StoredSettings> {
  const kv = await store.get(keys.config);
  if (!kv) return { settings: defaultClusterSettings(), revision: undefined };
  const parsed = parseRecord(ClusterSettingsSchema, kv.value);
  if (!parsed.ok) throw new RecordUnreadableError(unreadableRecord(keys, kv, parsed.problem));
  return { settings: parsed.value, revision: kv.revision };
}

/**
 * Writes new settings as the next generation, only if the record is still
 * the one read (compare-and-swap, or atomic create). False when it changed meanwhile.
 */
export async function writeStoredSettings(store: Store, keys: ClusterKeys, settings: ClusterSettings, read: StoredSettings): Promise<boolean> {
  const next = { ...settings, generation: read.settings.generation + 1 };
  return (await writeIfUnchanged(store, keys.config, JSON.stringify(next), read.revision)) !== undefined;
}
