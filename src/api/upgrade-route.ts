/**
 * POST /upgrade/<operation>: the steps of `relevo upgrade` that need relevo's
 * superuser, run by this agent on its own PostgreSQL through the local socket
 * (src/upgrade/operations.ts). Authenticated and address-checked like
 * switchover (the write hook); parameters checked by each operation's zod
 * schema; refused unless this member is the primary of its cluster at that
 * moment, so an operation never lands on a replica or a demoted primary.
 */
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import type { MemberStatus } from '../cluster/types.js';
import type { MemberConfig } from '../config/member.js';
import { loadCredentials, ROLE_NAMES } from '../config/secrets.js';
import { errorBody, isErrorCode } from '../errors/catalogue.js';
import { localPostgres } from '../postgres/local.js';
import { UpgradeError } from '../upgrade/errors.js';
import { localContext, parseOperation, runOperation, sqlOperationRefusal, SQL_OPERATIONS, type OpContext } from '../upgrade/operations.js';
import { readState } from '../upgrade/state.js';
import { clusterKeys } from '../cluster/keys.js';
import type { Store } from '../store/store.js';
import { API_LIMITS, type ApiExtension } from './server.js';

/** Dumps restored on the new primary arrive as a request body: the route's own limit, far above the API's 4 kB. */
export const UPGRADE_BODY_LIMIT = 64 * 1024 * 1024 + 4096;

export interface UpgradeRouteOptions {
  status(): MemberStatus | undefined;
  context(): OpContext;
  /** For the operations that run SQL text: why the store's upgrade record of `source` does not allow it now (undefined: allowed). */
  sqlRefusal(source: string): Promise<string | undefined>;
}

/** Decides what a request gets before anything runs: the validated operation, or the refusal to answer. */
export function admitUpgradeRequest(
  status: MemberStatus | undefined,
  name: string,
  body: unknown,
): { ok: true; op: ReturnType<typeof parseOperation> & { ok: true } } | { ok: false; status: number; body: ReturnType<typeof errorBody> } {
  const parsed = parseOperation(name, body);
  if (!parsed.ok) return { ok: false, status: 400, body: errorBody('API_BAD_REQUEST', `upgrade ${name}: ${parsed.error}`) };
  if (!status) return { ok: false, status: 503, body: errorBody('API_NOT_READY', 'agent has not observed PostgreSQL yet') };
  if (status.role !== 'primary' || status.state !== 'primary') {
    return { ok: false, status: 409, body: errorBody('UPGRADE_NOT_PRIMARY', `member ${status.name} is not the primary of its cluster (role ${status.role}, state ${status.state})`) };
  }
  return { ok: true, op: parsed };
}

export function upgradeRoutes(options: UpgradeRouteOptions): ApiExtension {
  return (app: FastifyInstance, auth) => {
    app.post<{ Params: { op: string } }>('/upgrade/:op', { onRequest: auth.write, bodyLimit: UPGRADE_BODY_LIMIT }, async (request, reply) => {
      const admitted = admitUpgradeRequest(options.status(), request.params.op, request.body);
      if (!admitted.ok) return reply.code(admitted.status).send(admitted.body);
      // The API closes sockets idle for 30 s; an operation may work longer than that (a schema dump, row counts, the wait for the last LSN) with nothing on the wire.
      const socket = request.raw.socket;
      socket.setTimeout?.(0);
      try {
        // Inside the try: a store that cannot be read answers with the upgrade's code, like any failed operation.
        if (SQL_OPERATIONS.has(admitted.op.op)) {
          const refusal = await options.sqlRefusal((admitted.op.params as { source: string }).source);
          if (refusal) return reply.code(409).send(errorBody('UPGRADE_WRONG_STEP', `upgrade ${admitted.op.op}: ${refusal}`));
        }
        return reply.code(200).send(await runOperation(options.context(), admitted.op.op, admitted.op.params));
      } catch (error) {
        const code = error instanceof UpgradeError ? error.code : (error as { code?: unknown }).code;
        const message = (error as Error).message;
        return reply.code(error instanceof UpgradeError ? 409 : 500).send(errorBody(isErrorCode(code) ? code : 'UPGRADE_OPERATION_FAILED', message));
      } finally {
        socket.setTimeout?.(API_LIMITS.connectionTimeoutMs);
      }
    });
  };
}

/** The agent's context: its member file's socket, binDir, OS user and secrets. */
export function agentUpgradeContext(config: MemberConfig): () => OpContext {
  return () => {
    const local = localPostgres(config);
    const password = () => {
      const credentials = loadCredentials(config);
      if (!credentials) throw new UpgradeError('UPGRADE_OPERATION_FAILED', `member ${config.name}: no credentials in its secrets file`);
      return credentials.agentPassword;
    };
    return localContext({
      cluster: config.cluster,
      member: config.name,
      binDir: local.binDir,
      dataDir: local.dataDir,
      user: local.user,
      socketDir: local.socketDir,
      port: local.port,
      password,
      client: (database) =>
        new pg.Client({ host: local.socketDir, port: local.port, user: ROLE_NAMES.agent, password: password(), database, connectionTimeoutMillis: 10_000, application_name: 'relevo-upgrade' }),
    });
  };
}

/** The agent's gate for SQL-text operations: the old cluster's upgrade record in the shared store. */
export function upgradeSqlRefusal(store: Store, cluster: string): (source: string) => Promise<string | undefined> {
  return async (source) => {
    const stored = await readState(store, clusterKeys(source)).catch((error: Error) => {
      throw new UpgradeError('UPGRADE_OPERATION_FAILED', `cannot read the upgrade record of ${source}: ${error.message}`);
    });
    return sqlOperationRefusal(stored?.state, source, cluster);
  };
}
