/**
 * Telling routers where clients go: the route record of the cluster the
 * routers are configured for (src/cluster/route.ts), written by
 * compare-and-swap, and the routers' acknowledgements (their published
 * status reports the record revision they applied).
 */
import { clusterKeys } from '../cluster/keys.js';
import { RouteRecordSchema, type RouteRecord } from '../cluster/route.js';
import { RouterStatusSchema } from '../router/status.js';
import { writeIfUnchanged, type Store } from '../store/store.js';
import { UpgradeError } from './errors.js';

export async function readRoute(store: Store, home: string): Promise<{ record: RouteRecord | undefined; revision: number | undefined }> {
  const kv = await store.get(clusterKeys(home).route);
  if (!kv) return { record: undefined, revision: undefined };
  const parsed = RouteRecordSchema.safeParse(JSON.parse(kv.value));
  return { record: parsed.success ? parsed.data : undefined, revision: kv.revision };
}

/** Writes the route record (CAS on what was read); returns the new revision. */
export async function writeRoute(store: Store, home: string, record: Omit<RouteRecord, 'updatedAt'>): Promise<number> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const { revision } = await readRoute(store, home);
    const written = await writeIfUnchanged(store, clusterKeys(home).route, JSON.stringify({ ...record, updatedAt: new Date().toISOString() }), revision);
    if (written !== undefined) return written;
  }
  throw new Error(`the route record of ${home} keeps changing under this command: is another 'relevo upgrade' running?`);
}

export interface RouterAck {
  name: string;
  revision: number;
  following: string;
  hold: boolean;
}

/** Routers configured for `home`, as they last published themselves. */
export async function routers(store: Store, home: string): Promise<RouterAck[]> {
  const keys = clusterKeys(home);
  const out: RouterAck[] = [];
  for (const kv of await store.list(keys.routersPrefix)) {
    const parsed = RouterStatusSchema.safeParse(JSON.parse(kv.value));
    const name = kv.key.slice(keys.routersPrefix.length);
    const route = parsed.success ? parsed.data.route : undefined;
    out.push({ name, revision: route?.revision ?? -1, following: route?.following ?? '?', hold: route?.hold ?? false });
  }
  return out;
}

/**
 * Waits until every router listed under `home` applied revision `revision`
 * (or a later one) and, when given, follows `following`. Returns how many
 * routers acknowledged (0: no router follows this cluster).
 */
export async function awaitRouters(store: Store, home: string, revision: number, expect: { following: string; hold: boolean }, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const list = await routers(store, home);
    const late = list.filter((r) => r.revision < revision || r.following !== expect.following || (expect.hold && !r.hold));
    if (late.length === 0) return list.length;
    if (Date.now() > deadline) {
      throw new UpgradeError('UPGRADE_ROUTERS_SILENT', `router(s) ${late.map((r) => `${r.name} (applied revision ${r.revision}, following ${r.following})`).join(', ')} did not apply route revision ${revision} within ${timeoutMs / 1000} s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
