import { BlockList, isIP } from 'node:net';
import { errorBody, isErrorCode } from '../errors/catalogue.js';
import type { Server as HttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
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
  /** Store failsafe: confirm that `leader` is the primary we follow and that we have not promoted. */
  confirmFailsafe?(leader: string): { ok: true; member: string } | { ok: false; reason: string };
  /** Store failsafe: whether this member is primary under an active hold, and how long it has left (GET /failsafe, asked by routers). */
  failsafeGrant?(): { member: string; active: boolean; remainingMs: number; reason: string };
}

export interface ApiOptions {
  source: ApiSource;
  store: Store;
  keys: ClusterKeys;
  /** Basic credentials; a function is asked on every request, so a rotated password file takes effect at once. */
  credentials: ApiCredentials | undefined | (() => ApiCredentials | undefined);
  authReadOnly: boolean;
  /** Serve HTTPS with this key and certificate; client certificates signed by `ca` authenticate too. */
  tls?: ApiTls;
  /** Client addresses (CIDR or address) allowed on the state-changing endpoints; empty: any. */
  allowlist?: string[];
  /** More routes (metrics, events, dashboard), given the same authentication hooks. */
  extensions?: ApiExtension[];
}

export interface ApiTls {
  key: string;
  cert: string;
  ca: string;
}

/** Parses api.allowlist into a BlockList; a malformed entry is a configuration error. */
export function parseAllowlist(entries: string[]): BlockList | undefined {
  if (entries.length === 0) return undefined;
  const list = new BlockList();
  for (const entry of entries) {
    const [address, bits, extra] = entry.split('/');
    const family = isIP(address ?? '') === 6 ? 'ipv6' : 'ipv4';
    const prefix = Number(bits);
    if (!isIP(address ?? '') || extra !== undefined || (bits !== undefined && !(Number.isInteger(prefix) && prefix >= 0 && prefix <= (family === 'ipv6' ? 128 : 32)))) {
      throw new Error(`api.allowlist: got "${entry}"; expected an IP address or CIDR like 10.0.0.0/8`);
    }
    if (bits === undefined) list.addAddress(address!, family);
    else list.addSubnet(address!, prefix, family);
  }
  return list;
}

function allowed(list: BlockList | undefined, remote: string | undefined): boolean {
  if (!list) return true;
  if (!remote) return false;
  const address = remote.startsWith('::ffff:') ? remote.slice(7) : remote;
  return list.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4');
}

/** The TLS layer already refused certificates from another CA: a certificate here is the cluster CA's. */
function clientCertificateOk(request: FastifyRequest): boolean {
  const socket = request.raw.socket as Partial<TLSSocket>;
  return socket.encrypted === true && socket.authorized === true && Object.keys(socket.getPeerCertificate?.() ?? {}).length > 0;
}

/** Swaps the API's key and certificate in place (certificate rotation): open connections keep theirs. */
export function reloadApiTls(app: FastifyInstance, tls: ApiTls): void {
  (app.server as unknown as HttpsServer).setSecureContext({ key: tls.key, cert: tls.cert, ca: tls.ca });
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

/**
 * Limits of the REST API: a request body is small JSON; a client that sends
 * slowly or holds an idle connection is cut off, so a handful of sockets
 * cannot tie up the agent.
 */
export const API_LIMITS = {
  bodyBytes: 4_096,
  /** The whole request (headers and body) must arrive within this. */
  requestTimeoutMs: 10_000,
  /** An idle socket is closed after this. */
  connectionTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
} as const;

const memberName = z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'expected a member name');
/** Request bodies, checked before anything is done with them (unknown keys refused). */
const SwitchoverBody = z.object({ to: memberName.optional(), at: z.string().min(1).max(64).optional() }).strict();
const FailoverBody = z.object({ to: memberName, force: z.boolean().optional() }).strict();
const FailsafeBody = z.object({ leader: memberName }).strict();

function parseBody<T>(schema: z.ZodType<T>, body: unknown, example: string): { ok: true; value: T } | { ok: false; error: string } {
  const result = schema.safeParse(body ?? {});
  if (result.success) return { ok: true, value: result.data };
  const problems = result.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
  return { ok: false, error: `body: ${problems}; expected ${example}` };
}

export function buildApi(options: ApiOptions): FastifyInstance {
  const { source, store, keys } = options;
  const allowlist = parseAllowlist(options.allowlist ?? []);
  const credentialsNow = () => (typeof options.credentials === 'function' ? options.credentials() : options.credentials);
  const limits = {
    logger: false,
    bodyLimit: API_LIMITS.bodyBytes,
    requestTimeout: API_LIMITS.requestTimeoutMs,
    connectionTimeout: API_LIMITS.connectionTimeoutMs,
    keepAliveTimeout: API_LIMITS.keepAliveTimeoutMs,
  } as const;
  const app = (
    options.tls
      ? // Client certificates are optional (Basic works too), but one from another CA is refused during the handshake below.
        Fastify({ ...limits, https: { key: options.tls.key, cert: options.tls.cert, ca: options.tls.ca, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' } })
      : Fastify(limits)
  ) as unknown as FastifyInstance;
  if (options.tls) {
    app.server.on('secureConnection', (socket: TLSSocket) => {
      if (!socket.authorized && Object.keys(socket.getPeerCertificate() ?? {}).length > 0) socket.destroy();
    });
  }
  const unavailable = errorBody('API_NOT_READY', 'agent has not observed PostgreSQL yet');

  const authenticate = async (request: FastifyRequest, reply: FastifyReply) => {
    if (clientCertificateOk(request)) return;
    const credentials = credentialsNow();
    if (!credentials) {
      return reply.code(403).send(errorBody('API_DISABLED', 'state-changing API disabled: configure api.auth in the member file, or use a client certificate from the cluster CA'));
    }
    if (!authorized(request.headers.authorization, credentials)) {
      return reply.code(401).header('www-authenticate', 'Basic realm="relevo"').send(errorBody('API_AUTH_REQUIRED', 'authentication required'));
    }
  };
  const requireAuth = async (request: FastifyRequest, reply: FastifyReply) => {
    if (!allowed(allowlist, request.raw.socket.remoteAddress)) {
      return reply.code(403).send(errorBody('API_FORBIDDEN_ADDRESS', `client address ${request.raw.socket.remoteAddress} is not in api.allowlist`));
    }
    return authenticate(request, reply);
  };
  const readAuth = async (request: FastifyRequest, reply: FastifyReply) => {
    if (options.authReadOnly) return authenticate(request, reply);
  };

  for (const [path, check] of Object.entries(HEALTH_CHECKS)) {
    app.route({
      method: ['GET', 'HEAD', 'OPTIONS'],
      url: path,
      onRequest: readAuth,
      handler: async (request, reply) => {
        const status = source.currentStatus();
        if (!status) return reply.code(503).send(unavailable);
        const verdict = check(status, source.currentSync(), request.query as Record<string, string | undefined>);
        if (typeof verdict === 'string') return reply.code(400).send(errorBody('API_BAD_REQUEST', verdict));
        return reply.code(verdict ? 200 : 503).send(status);
      },
    });
  }
  app.get('/liveness', async (_request, reply) => reply.code(200).send({ alive: true }));
  app.get('/status', { onRequest: readAuth }, async (_request, reply) => {
    const status = source.currentStatus();
    return reply.code(status ? 200 : 503).send(status ?? unavailable);
  });

  const operation = async (reply: FastifyReply, work: () => Promise<unknown>) => {
    try {
      return reply.code(202).send(await work());
    } catch (error) {
      const refused = error instanceof OperationError;
      const code = (error as { code?: unknown }).code;
      return reply.code(refused ? 409 : 503).send(errorBody(isErrorCode(code) ? code : 'STORE_UNAVAILABLE', (error as Error).message));
    }
  };
  // Authentication runs on onRequest, before fastify reads or parses the body.
  app.post('/switchover', { onRequest: requireAuth }, async (request, reply) => {
    const body = parseBody(SwitchoverBody, request.body, '{"to": "<member>", "at": "<ISO time>"} (both optional)');
    if (!body.ok) return reply.code(400).send(errorBody('API_BAD_REQUEST', body.error));
    return operation(reply, () => requestSwitchover(store, keys, body.value));
  });
  app.post('/failover', { onRequest: requireAuth }, async (request, reply) => {
    const body = parseBody(FailoverBody, request.body, '{"to": "<member>", "force": false}');
    if (!body.ok) return reply.code(400).send(errorBody('API_BAD_REQUEST', body.error));
    return operation(reply, () => requestFailover(store, keys, body.value.to, body.value.force === true));
  });
  app.post('/pause', { onRequest: requireAuth }, async (_request, reply) => operation(reply, async () => (await setPaused(store, keys, true), { paused: true })));
  app.post('/resume', { onRequest: requireAuth }, async (_request, reply) => operation(reply, async () => (await setPaused(store, keys, false), { paused: false })));
  // Store failsafe (docs/architecture.md): a primary without the store asks every member to vouch for it.
  app.post('/failsafe', { onRequest: requireAuth }, async (request, reply) => {
    const body = parseBody(FailsafeBody, request.body, '{"leader": "<member>"}');
    if (!body.ok) return reply.code(400).send(errorBody('API_BAD_REQUEST', body.error));
    const leader = body.value.leader;
    if (!source.confirmFailsafe) return reply.code(409).send({ confirmed: false, ...errorBody('FAILSAFE_NOT_TAKING_PART', 'this agent does not take part in failsafe') });
    const answer = source.confirmFailsafe(leader);
    return answer.ok ? reply.code(200).send({ confirmed: true, member: answer.member, leader }) : reply.code(409).send({ confirmed: false, ...errorBody('FAILSAFE_REFUSED', answer.reason) });
  });
  // A router that cannot read the store keeps routing writes here only while this answers active (src/router/failsafe.ts).
  app.get('/failsafe', { onRequest: readAuth }, async (_request, reply) => {
    const answer = source.failsafeGrant?.() ?? { member: source.currentStatus()?.name ?? '', active: false, remainingMs: 0, reason: 'this agent does not take part in failsafe' };
    return reply.code(200).header('cache-control', 'no-store').send(answer);
  });
  for (const kind of ['restart', 'reinit'] as const) {
    app.post(`/${kind}`, { onRequest: requireAuth }, async (_request, reply) => {
      const status = source.currentStatus();
      if (kind === 'reinit' && status?.role === 'primary') return reply.code(409).send(errorBody('PRIMARY_REINIT', `member ${status.name} is the primary: reinit would destroy the only copy; switch over first`));
      source.request({ kind });
      return reply.code(202).send({ accepted: kind });
    });
  }
  for (const extend of options.extensions ?? []) extend(app, { read: readAuth, write: requireAuth });
  return app;
}
