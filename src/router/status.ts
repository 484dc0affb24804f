/**
 * What a router reports about itself: returned by handle.stats(), served as
 * JSON on GET /stats, and published under routers/<name> (with a lease, so a
 * stopped router disappears) for `relevo list` / `relevo router status`.
 */
import { z } from 'zod';

export const ListenerStatsSchema = z.object({
  /** "rw" or "ro". */
  role: z.enum(['rw', 'ro']),
  address: z.string(),
  /** Relayed sessions open now (including ones still connecting to their backend). */
  open: z.number(),
  /** Open sessions per member name. */
  backends: z.record(z.string(), z.number()),
  /** Connections held now, waiting for a switchover to finish. */
  held: z.number(),
  heldTotal: z.number(),
  accepted: z.number(),
  /** New connections refused, by reason code (see docs/router.md). */
  refused: z.record(z.string(), z.number()),
  /** Relayed sessions the router closed, by reason code. */
  closed: z.record(z.string(), z.number()),
  bytesFromClients: z.number(),
  bytesToClients: z.number(),
});
export type ListenerStats = z.infer<typeof ListenerStatsSchema>;

export const RouterStatusSchema = z.object({
  name: z.string(),
  cluster: z.string(),
  pid: z.number(),
  startedAt: z.string(),
  updatedAt: z.string(),
  metricsUrl: z.string().nullable(),
  store: z.object({
    readable: z.boolean(),
    /** Milliseconds since the last successful read began; null = never read. */
    ageMs: z.number().nullable(),
    ttlMs: z.number(),
  }),
  /** Member that read-write connections go to now, or null. */
  primary: z.string().nullable(),
  switchover: z.boolean(),
  replicas: z.object({
    eligible: z.array(z.string()),
    excluded: z.array(z.object({ member: z.string(), reason: z.string() })),
  }),
  listeners: z.array(ListenerStatsSchema),
  /**
   * The route record this router applied (src/cluster/route.ts): the cluster it
   * follows, whether it holds writes, and the record's store revision (0 = no
   * record). `relevo upgrade` waits for every router to report its revision.
   */
  route: z.object({ following: z.string(), hold: z.boolean(), revision: z.number() }).optional(),
  /** Writes go on to this primary without the store, on its agent's failsafe grant, for remainingMs more (docs/router.md); null = not now. */
  failsafe: z.object({ member: z.string(), remainingMs: z.number() }).nullable().optional(),
});
export type RouterStatus = z.infer<typeof RouterStatusSchema>;
