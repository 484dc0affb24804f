import type { Registry } from 'prom-client';
import type { ApiExtension } from './server.js';

/** GET /metrics: the agent's Prometheus series (read access, like /status). */
export function metricsRoute(registry: Registry): ApiExtension {
  return (app, auth) => {
    app.get('/metrics', { preHandler: auth.read }, async (_request, reply) =>
      reply.code(200).header('content-type', registry.contentType).send(await registry.metrics()),
    );
  };
}
