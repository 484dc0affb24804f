import { errorBody } from '../errors/catalogue.js';
import type { ClusterKeys } from '../cluster/keys.js';
import { filterEvents, readEvents } from '../cluster/events.js';
import type { Store } from '../store/store.js';
import type { ApiExtension } from './server.js';

/** GET /events?member=M&limit=N: the cluster's event log, oldest first. */
export function eventsRoute(store: Store, keys: ClusterKeys): ApiExtension {
  return (app, auth) => {
    app.get<{ Querystring: { member?: string; limit?: string } }>('/events', { preHandler: auth.read }, async (request, reply) => {
      const { member, limit } = request.query;
      const max = limit === undefined ? undefined : Number(limit);
      if (max !== undefined && !(Number.isInteger(max) && max > 0)) return reply.code(400).send(errorBody('API_BAD_REQUEST', `limit: got "${limit}", expected a positive integer`));
      try {
        return reply.code(200).send(filterEvents(await readEvents(store, keys.events), { member, limit: max }));
      } catch (error) {
        return reply.code(503).send(errorBody('STORE_UNAVAILABLE', `cannot read the event log: ${(error as Error).message}`));
      }
    });
  };
}
