import { Agent } from '../agent/agent.js';
import { apiCredentials } from '../api/auth.js';
import { buildApi } from '../api/server.js';
import { clusterKeys } from '../cluster/keys.js';
import { loadMemberConfigChecked } from '../config/load.js';
import { splitHostPort } from '../postgres/conf.js';
import { openStore } from '../store/open.js';
import { createLogger } from '../util/log.js';
import { configPath } from './context.js';
import { startEmbeddedRouter } from './router-command.js';

export interface AgentCommandOptions {
  config?: string;
  /** On SIGTERM/SIGINT leave PostgreSQL running (e.g. to upgrade the agent). */
  keepPostgres?: boolean;
}

/** `relevo agent`: runs until SIGTERM/SIGINT. Validates everything before touching any data directory. */
export async function runAgent(options: AgentCommandOptions): Promise<void> {
  const config = loadMemberConfigChecked(configPath(options.config));
  const log = createLogger(config.log.level, { cluster: config.cluster, member: config.name });
  const store = await openStore(config.store);
  const credentials = apiCredentials(config);
  const agent = new Agent({ config, store, log });
  const api = buildApi({
    source: agent,
    store,
    keys: clusterKeys(config.cluster),
    credentials,
    authReadOnly: config.api.authReadOnly,
  });
  const [host, port] = splitHostPort(config.api.listen);
  await api.listen({ host, port });
  log.info({ api: config.api.listen, dataDir: config.postgres.dataDir }, `relevo agent for member ${config.name} started`);
  await agent.start();
  const router = await startEmbeddedRouter(config, store);

  await new Promise<void>((resolve) => {
    let stopping = false;
    const shutdown = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      void (async () => {
        await router?.stop();
        await agent.stop({ stopPostgres: !options.keepPostgres });
        await api.close();
        await store.close();
        resolve();
      })();
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });
}
