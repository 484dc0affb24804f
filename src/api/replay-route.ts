import { errorBody } from '../errors/catalogue.js';
import type { FastifyReply } from 'fastify';
import { ReplayError, type ReplayControl } from '../agent/replay.js';
import type { ApiExtension } from './server.js';

/**
 * POST /replay/pause, /replay/resume, /replay/target (body {xid} or {time}),
 * /replay/target/clear and /replay/find (body {table, database}): replay
 * control of this member; POST /recover-table/copy (body {from, table, into,
 * database}): recover-table's write on the primary (docs/undo.md). All need
 * the API credentials.
 */
export function replayRoutes(control: ReplayControl): ApiExtension {
  const answer = async (reply: FastifyReply, work: () => Promise<unknown>) => {
    try {
      return reply.code(200).send(await work());
    } catch (error) {
      if (error instanceof ReplayError) return reply.code(error.refusal ? 409 : 503).send(errorBody(error.code, error.message));
      return reply.code(503).send(errorBody('REPLAY_FAILED', (error as Error).message));
    }
  };
  const body = (raw: unknown): Record<string, unknown> => (raw !== null && typeof raw === 'object' ? (raw as Record<string, unknown>) : {});
  return (app, auth) => {
    app.post('/replay/pause', { onRequest: auth.write }, async (_request, reply) => answer(reply, () => control.pause()));
    app.post('/replay/resume', { onRequest: auth.write }, async (_request, reply) => answer(reply, () => control.resume()));
    app.post('/replay/target', { onRequest: auth.write }, async (request, reply) => answer(reply, () => control.setTarget(body(request.body))));
    app.post('/replay/target/clear', { onRequest: auth.write }, async (_request, reply) => answer(reply, () => control.clearTarget()));
    app.post('/recover-table/copy', { onRequest: auth.write }, async (request, reply) => answer(reply, () => control.copy(request.body)));
    app.post('/replay/find', { onRequest: auth.write }, async (request, reply) => answer(reply, () => control.find(body(request.body))));
  };
}
