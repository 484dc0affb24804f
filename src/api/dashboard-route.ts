/**
 * The web dashboard: plain ES modules, HTML and CSS from src/api/dashboard/
 * (no build step), and GET /cluster, the one JSON document the page polls.
 */
import { errorBody } from '../errors/catalogue.js';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCluster, type ClusterRead } from '../agent/observe.js';
import { STATE_TONES, TONE_COLOURS } from '../agent/state-tones.js';
import type { LagSample } from '../agent/lag-history.js';
import type { ClusterKeys } from '../cluster/keys.js';
import { RouterStatusSchema } from '../router/status.js';
import type { Store } from '../store/store.js';
import type { ApiExtension } from './server.js';

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml' };

/** The assets sit in src/api/dashboard/, next to this file's source, whether it runs from src/ or dist/src/. */
function assetDir(): string {
  for (const relative of ['./dashboard/', '../../../src/api/dashboard/']) {
    const dir = fileURLToPath(new URL(relative, import.meta.url));
    if (existsSync(`${dir}index.html`)) return dir;
  }
  throw new Error('dashboard assets not found (expected src/api/dashboard/index.html in the installation)');
}

export interface DashboardOptions {
  store: Store;
  keys: ClusterKeys;
  cluster: string;
  /** The member serving the page. */
  member: string;
  lagHistory: () => LagSample[];
  /** The serving agent's own last read of the cluster, when recent: spares a store read per poll. */
  latest?: () => ClusterRead | undefined;
}

export function dashboardRoutes(options: DashboardOptions): ApiExtension {
  const dir = assetDir();
  // Only files present at start are served: no path from a request ever reaches the file system.
  const assets = new Map(readdirSync(dir).filter((f) => TYPES[extname(f)]).map((f) => [f, { body: readFileSync(`${dir}${f}`), type: TYPES[extname(f)]! }]));
  return (app, auth) => {
    const send = (file: string) => async (_request: unknown, reply: import('fastify').FastifyReply) => {
      const asset = assets.get(file);
      if (!asset) return reply.code(404).send(errorBody('API_NOT_FOUND', `no dashboard file ${file}`));
      return reply.code(200).header('content-type', asset.type).header('cache-control', 'no-cache').send(asset.body);
    };
    app.get('/', { preHandler: auth.read }, send('index.html'));
    app.get('/dashboard', { preHandler: auth.read }, send('index.html'));
    app.get<{ Params: { file: string } }>('/dashboard/:file', { preHandler: auth.read }, async (request, reply) => send(request.params.file)(request, reply));
    app.get('/cluster', { preHandler: auth.read }, async (_request, reply) => {
      const read = options.latest?.() ?? (await readCluster(options.store, options.keys));
      const { view, settings } = read;
      if (!view.reachable) return reply.code(503).send(errorBody('STORE_UNAVAILABLE', `cannot read the store: ${view.error}`));
      // The routers' records are in the cluster subtree: the same read has them.
      const routerKvs = 'others' in read && read.others ? [...read.others.values()].filter((kv) => kv.key.startsWith(options.keys.routersPrefix)) : await options.store.list(options.keys.routersPrefix).catch(() => []);
      const routers = routerKvs
        .map((kv) => RouterStatusSchema.safeParse(JSON.parse(kv.value)))
        .flatMap((parsed) => (parsed.success ? [parsed.data] : []));
      return reply.code(200).send({
        cluster: options.cluster,
        servedBy: options.member,
        now: new Date().toISOString(),
        leader: view.leader ? { member: view.leader.member, acquiredAt: view.leader.acquiredAt, ttlMs: view.leader.ttlMs } : null,
        paused: settings.paused,
        synchronousMode: settings.synchronousMode,
        sync: view.sync ?? null,
        failover: view.failover ?? null,
        members: [...view.members].sort((a, b) => a.name.localeCompare(b.name)),
        history: view.history,
        routers,
        lagHistory: options.lagHistory(),
        tones: { states: STATE_TONES, colours: Object.fromEntries(Object.entries(TONE_COLOURS).map(([tone, c]) => [tone, c.css])) },
      });
    });
  };
}
