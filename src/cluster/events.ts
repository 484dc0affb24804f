/**
 * The event log: every agent's state transitions and actions with their
 * reasons, kept in the store as one bounded JSON list under keys.events and
 * appended by compare-and-swap, so concurrent writers never lose an entry.
 * `relevo events`, GET /events and the dashboard read it.
 */
import { z } from 'zod';
import type { Store } from '../store/store.js';

export const ClusterEventSchema = z.object({
  /** Unique and ordered within one member: `<at>/<member>/<seq>`. */
  id: z.string(),
  at: z.string(),
  member: z.string(),
  from: z.string(),
  to: z.string(),
  actions: z.array(z.string()),
  reason: z.string(),
  /** "ok", or "failed: <action>: <error>". */
  outcome: z.string(),
});
export type ClusterEvent = z.infer<typeof ClusterEventSchema>;

/** Entries kept; the oldest go first. About 300 bytes each. */
export const EVENT_LOG_LIMIT = 500;
const CAS_ATTEMPTS = 10;

export function parseEvents(value: string | undefined): ClusterEvent[] {
  if (value === undefined) return [];
  const parsed = z.array(ClusterEventSchema).safeParse(JSON.parse(value));
  return parsed.success ? parsed.data : [];
}

/** The last parse of each event log key: a dashboard reads the log every second, and it changes far less often. */
const parsedLogs = new Map<string, { revision: number; events: ClusterEvent[] }>();

export async function readEvents(store: Store, key: string): Promise<ClusterEvent[]> {
  const kv = await store.get(key);
  if (!kv) return parseEvents(undefined);
  const cached = parsedLogs.get(key);
  if (cached?.revision === kv.revision) return cached.events;
  const events = parseEvents(kv.value);
  parsedLogs.set(key, { revision: kv.revision, events });
  return events;
}

/** Appends `events` (in order), dropping the oldest beyond `limit`. Throws when the store is unreachable or stays contended. */
export async function appendEvents(store: Store, key: string, events: ClusterEvent[], limit = EVENT_LOG_LIMIT): Promise<void> {
  if (events.length === 0) return;
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const current = await store.get(key);
    const next = JSON.stringify([...parseEvents(current?.value), ...events].slice(-limit));
    const written = current ? await store.compareAndSwap(key, next, current.revision) : await store.create(key, next);
    if (written !== undefined) return;
  }
  throw new Error(`event log ${key}: ${CAS_ATTEMPTS} concurrent writers in a row; will retry`);
}

export interface EventFilter {
  member?: string;
  /** Only events after this id (for following). */
  after?: Set<string>;
  limit?: number;
}

/** Events by time (members append in batches, so store order can lag a little), then filtered. */
export function filterEvents(events: ClusterEvent[], filter: EventFilter): ClusterEvent[] {
  const kept = [...events]
    .sort((a, b) => a.at.localeCompare(b.at))
    .filter((e) => (filter.member === undefined || e.member === filter.member) && !filter.after?.has(e.id));
  return filter.limit === undefined ? kept : kept.slice(-filter.limit);
}

/** One line per event, for the CLI. */
export function renderEvent(e: ClusterEvent): string {
  const move = e.from === e.to ? e.to : `${e.from} -> ${e.to}`;
  const actions = e.actions.length > 0 ? ` [${e.actions.join(', ')}]` : '';
  const outcome = e.outcome === 'ok' ? '' : ` (${e.outcome})`;
  return `${e.at}  ${e.member}  ${move}${actions}: ${e.reason}${outcome}`;
}
