/**
 * Routers of both sites follow the site that runs the primary (docs/sites.md):
 * `relevo site follow|switchover|promote` write each cluster's route record
 * (src/cluster/route.ts) by compare-and-swap. A standby cluster's record names
 * its source (and the source's store when it is another one), so its routers
 * send writes there; a primary cluster's record names itself. During a site
 * switchover both records hold writes first, as a switchover inside a cluster
 * does, so clients through a router wait instead of failing.
 */
import type { StoreConfig } from '../store/config.js';
import type { Store } from '../store/store.js';
import { awaitRouters, writeRoute } from '../upgrade/route.js';

export interface RouteSite {
  cluster: string;
  store: Store;
}

/** Routers configured for `site` send clients to `active` (kept in `activeStore`, when that is another store than the site's). */
export async function routeTo(site: RouteSite, active: string, activeStore: StoreConfig | undefined, hold: boolean, reason: string): Promise<number> {
  return writeRoute(site.store, site.cluster, { cluster: active, hold, reason, ...(activeStore ? { store: activeStore } : {}) });
}

/**
 * Best effort: waits (at most `timeoutMs`) for the routers listed under `site`
 * to apply revision `revision`, so their sessions are drained before the
 * primary goes. Returns how many answered; silent routers only cost the wait
 * (a dead router's entry expires with its lease).
 */
export async function routersHolding(site: RouteSite, revision: number, following: string, timeoutMs: number): Promise<number | undefined> {
  return awaitRouters(site.store, site.cluster, revision, { following, hold: true }, timeoutMs).catch(() => undefined);
}
