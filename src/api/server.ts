import Fastify, { type FastifyInstance } from 'fastify';
import type { MemberStatus } from '../cluster/types.js';

export interface ApiSource {
  currentStatus(): MemberStatus | undefined;
}

function isStreamingReplica(status: MemberStatus | undefined): status is MemberStatus {
  return status?.role === 'replica' && status.state === 'replica' && status.streaming;
}

/**
 * The member's REST API. Read-only endpoints answer 200/503 the way HAProxy's
 * httpchk expects, so any load balancer can route on them.
 */
export function buildApi(source: ApiSource): FastifyInstance {
  const app = Fastify({ logger: false });
  const unavailable = { error: 'agent has not observed PostgreSQL yet' };

  app.get('/health', async (_request, reply) => {
    const status = source.currentStatus();
    const healthy = status !== undefined && (status.role === 'primary' || status.role === 'replica');
    return reply.code(healthy ? 200 : 503).send(status ?? unavailable);
  });
  app.get('/liveness', async (_request, reply) => reply.code(200).send({ alive: true }));
  app.get('/primary', async (_request, reply) => {
    const status = source.currentStatus();
    return reply.code(status?.role === 'primary' && status.state === 'primary' ? 200 : 503).send(status ?? unavailable);
  });
  app.get<{ Querystring: { lag?: string } }>('/replica', async (request, reply) => {
    const status = source.currentStatus();
    const limit = request.query.lag === undefined ? undefined : parseSize(request.query.lag);
    if (limit === null) return reply.code(400).send({ error: `lag: got "${request.query.lag}", expected bytes like 1048576, 16MB or 1GB` });
    let ok = isStreamingReplica(status);
    if (ok && limit !== undefined) ok = status!.lagBytes !== null && status!.lagBytes <= limit;
    return reply.code(ok ? 200 : 503).send(status ?? unavailable);
  });
  app.get('/status', async (_request, reply) => {
    const status = source.currentStatus();
    return reply.code(status ? 200 : 503).send(status ?? unavailable);
  });
  return app;
}

/** "1048576", "16MB", "1 GB" → bytes; null when malformed. */
export function parseSize(text: string): number | null {
  const match = /^\s*(\d+)\s*(b|kb|mb|gb|tb)?\s*$/i.exec(text);
  if (!match) return null;
  const factor = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3, tb: 1024 ** 4 }[(match[2] ?? 'b').toLowerCase() as 'b'];
  return Number(match[1]) * factor;
}
