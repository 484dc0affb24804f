/**
 * The route record (`/relevo/<cluster>/route`): where routers configured for
 * <cluster> send clients. Absent means "this cluster". Written only by
 * compare-and-swap (`relevo upgrade`); read by every router.
 *
 * - `cluster`: the cluster whose leader and members the routers follow (the
 *   cluster itself, or the new cluster of a blue/green upgrade);
 * - `hold`: while true, routers hold new read-write connections and move or
 *   close read-write sessions as they become idle, exactly as during a
 *   switchover. Routers report the record revision they applied in their
 *   published status (`route.revision`), so the writer knows when every
 *   router holds;
 * - `store`: the followed cluster's keys live in another store (a standby
 *   cluster's source in another site, docs/sites.md): the routers open it and
 *   follow that cluster there. Written by `relevo site follow|switchover|promote`,
 *   so routers of both sites send writes to the site that runs the primary.
 */
import { z } from 'zod';
import { StoreConfigSchema } from '../store/config.js';

export const RouteRecordSchema = z.object({
  cluster: z.string().min(1),
  hold: z.boolean(),
  /** Why (shown in router logs and statuses). */
  reason: z.string(),
  updatedAt: z.string(),
  store: StoreConfigSchema.optional(),
});
export type RouteRecord = z.infer<typeof RouteRecordSchema>;
