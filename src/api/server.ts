import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ClusterKeys } from '../cluster/keys.js';
import { OperationError, requestFailover, requestSwitchover, setPaused } from '../cluster/operations.js';
import type { MemberStatus, SyncRecord } from '../cluster/types.js';
import type { OperatorRequest } from '../agent/observation.js';
import type { Store } from '../store/store.js';
import { authorized, type ApiCredentials } from './auth.js';

export interface ApiSource {
  currentStatus(): MemberStatus | undefined;
  /** The synchronous set as last read from the store. */
  currentSync(): SyncRecord | undefined;
  request(operatorRequest: OperatorRequest): void;
}

export interface ApiOptions {
  source: ApiSource;
  store: Store;
  keys: ClusterKeys;
  credentials: ApiCredentials | undefined;
  authReadOnly: boolean;
  /** More routes (metrics, events, dashboard), given the same authentication hooks. */
  extensions?: ApiExtension[];
}

export type AuthHook = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;
export type ApiExtension = (app: FastifyInstance, auth: { read: AuthHook; write: AuthHook }) => void;

/** "1048576", "16MB", "1 GB" → bytes; null when malformed. */
export function parseSize(text: string): number | null {
  const match = /^\s*(\d+)\s*(b|kb|mb|gb|tb)?\s*$/i.exec(text);
  if (!match) return null;
  const factor = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3, tb: 1024 ** 4 }[(match[2] ?? 'b').toLowerCase() as 'b'];
  return Number(match[1]) * factor;
}

type Check = (status: MemberStatus, sync: SyncRecord | undefined, query: Record<string, string | undefined>) => boolean | string;

const isPrimary: Check = (s) => s.role === 'primary' && s.state === 'primary';
const isStreamingReplica: Check = (s) => s.role === 'replica' && s.state === 'replica' && s.streaming;
const withinLag: Check = (s, _sync, query) => {
  if (!isStreamingReplica(s, undefined, query)) return false;
  if (query.lag === undefined) return true;
  const limit = parseSize(query.lag);
  if (limit === null) return `lag: got "${query.lag}", expected bytes like 1048576, 16MB or 1GB`;
  return s.lagBytes !== null && s.lagBytes <= limit;
};
const inSyncSet = (s: MemberStatus, sync: SyncRecord | undefined) => sync !== undefined && sync.members.includes(s.name);

/**
 * Health checks answer 200 or 503 with the member status as body, for GET,
 * HEAD and OPTIONS, as HAProxy's httpchk and other load balancers expect.
 */
const HEALTH_CHECKS: Record<string, Check> = {
  '/primary': isPrimary,
  '/read-write': isPrimary,
  '/replica': withinLag,
  '/read-only': (s, sync, q) => isPrimary(s, sync, q) === true || withinLag(s, sync, q),
  '/sync': (s, sync, q) => isStreamingReplica(s, sync, q) === true && inSyncSet(s, sync),
  '/async': (s, sync, q) => isStreamingReplica(s, sync, q) === true && !inSyncSet(s, sync),
  '/health': (s) => s.state === 'primary' || s.state === 'replica',
  '/readiness': (s, sync, q) => isPrimary(s, sync, q) === true || isStreamingReplica(s, sync, q) === true,
};

export function buildApi(options: ApiOptions): FastifyInstance {
  const { source, store, keys } = options;
  const app = Fastify({ logger: false });
  const unavailable = { error: 'agent has not observed PostgreSQL yet' };

  const requireAuth = async (request: FastifyRequest, reply: FastifyReply) => {
    if (!options.credentials) {
      return reply.code(403).send({ error: 'state-changing API disabled: configure api.auth in the member file' });
    }
    if (!authorized(request.headers.authorization, options.credentials)) {
      return reply.code(401).header('www-authenticate', 'Basic realm="relevo"').send({ error: 'authentication required' });
    }
  };
  const readAuth = async (request: FastifyRequest, reply: FastifyReply) => {
    if (options.authReadOnly) return requireAuth(request, reply);
  };

  for (const [path, check] of Object.entries(HEALTH_CHECKS)) {
    app.route({
      method: ['GET', 'HEAD', 'OPTIONS'],
      url: path,
      preHandler: readAuth,
      handler: async (request, reply) => {
        const status = source.currentStatus();
        if (!status) return reply.code(503).send(unavailable);
        const verdict = check(status, source.currentSync(), request.query as Record<string, string | undefined>);
        if (typeof verdict === 'string') return reply.code(400).send({ error: verdict });
        return reply.code(verdict ? 200 : 503).send(status);
      },
    });
  }
  app.get('/liveness', async (_request, reply) => reply.code(200).send({ alive: true }));
  app.get('/status', { preHandler: readAuth }, async (_request, reply) => {
    const status = source.currentStatus();
    return reply.code(status ? 200 : 503).send(status ?? unavailable);
  });

  const operation = async (reply: FastifyReply, work: () => Promise<unknown>) => {
    try {
      return reply.code(202).send(await work());
    } catch (error) {
      const refused = error instanceof OperationError;
      return reply.code(refused ? 409 : 503).send({ error: (error as Error).message });
    }
  };
  app.post<{ Body: { to?: string; at?: string } | undefined }>('/switchover', { preHandler: requireAuth }, async (request, reply) =>
    operation(reply, () => requestSwitchover(store, keys, { to: request.body?.to, at: request.body?.at })),
  );
  app.post<{ Body: { to?: string; force?: boolean } | undefined }>('/failover', { preHandler: requireAuth }, async (request, reply) => {
    const to = request.body?.to;
    if (typeof to !== 'string') return reply.code(400).send({ error: 'body: expected {"to": "<member>", "force": false}' });
    return operation(reply, () => requestFailover(store, keys, to, request.body?.force === true));
  });
  app.post('/pause', { preHandler: requireAuth }, async (_request, reply) => operation(reply, async () => (await setPaused(store, keys, true), { paused: true })));
  app.post('/resume', { preHandler: requireAuth }, async (_request, reply) => operation(reply, async () => (await setPaused(store, keys, false), { paused: false })));
  for (const kind of ['restart', 'reinit'] as const) {
    app.post(`/${kind}`, { preHandler: requireAuth }, async (_request, reply) => {
      const status = source.currentStatus();
      if (kind === 'reinit' && status?.role === 'primary') return reply.code(409).send({ error: `member ${status.name} is the primary: reinit would destroy the only copy; switch over first` });
      source.request({ kind });
      return reply.code(202).send({ accepted: kind });
    });
  }
  for (const extend of options.extensions ?? []) extend(app, { read: readAuth, write: requireAuth });
  return app;
}
