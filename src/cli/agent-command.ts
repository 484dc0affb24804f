import { agentUpgradeContext, upgradeRoutes, upgradeSqlRefusal } from '../api/upgrade-route.js';
import { LatestRead } from '../agent/latest-read.js';
import { Agent } from '../agent/agent.js';
import { readFileSync } from 'node:fs';
import { AgentMetrics } from '../agent/metrics.js';
import { EventPublisher } from '../agent/event-publisher.js';
import { replayRoutes } from '../api/replay-route.js';
import { eventsRoute } from '../api/events-route.js';
import { dashboardRoutes } from '../api/dashboard-route.js';
import { LagHistory } from '../agent/lag-history.js';
import { metricsRoute } from '../api/metrics-route.js';
import { RELEVO_VERSION } from '../util/version.js';
import { apiCredentials } from '../api/auth.js';
import { buildApi, reloadApiTls, type ApiTls } from '../api/server.js';
import { ensureClusterCa, ensureMemberCert, type TlsFiles } from '../tls/member.js';
import { localPostgres } from '../postgres/local.js';
import { clusterKeys } from '../cluster/keys.js';
import { loadMemberConfigChecked } from '../config/load.js';
import { splitHostPort } from '../postgres/conf.js';
import { openStore } from '../store/open.js';
import { createLogger } from '../util/log.js';
import { configPath } from './context.js';
import { startEmbeddedRouter } from './router-command.js';

function apiTlsOf(files: TlsFiles): ApiTls {
  return { key: readFileSync(files.key, 'utf8'), cert: readFileSync(files.cert, 'utf8'), ca: readFileSync(files.caCert, 'utf8') };
}

export interface AgentCommandOptions {
  config?: string;
  /** On SIGTERM/SIGINT leave PostgreSQL running (e.g. to upgrade the agent). */
  keepPostgres?: boolean;
}

/** `relevo agent`: runs until SIGTERM/SIGINT. Validates everything before touching any data directory. */
export async function runAgent(options: AgentCommandOptions): Promise<void> {
  const config = loadMemberConfigChecked(configPath(options.config));
  const log = createLogger(config.log.level, { cluster: config.cluster, member: config.name });
  const metrics = new AgentMetrics({ cluster: config.cluster, member: config.name, version: RELEVO_VERSION });
  const store = metrics.timedStore(await openStore(config.store));
  const keys = clusterKeys(config.cluster);
  // TLS material first: PostgreSQL and the API never start without it when TLS is on.
  const tlsFiles = localPostgres(config).tls;
  if (tlsFiles) {
    await ensureClusterCa(config, store, keys, log);
    const certificate = await ensureMemberCert(config, localPostgres(config).user, { force: false, now: new Date() });
    log.info({ fingerprint: certificate.fingerprint, dir: tlsFiles.dir }, `member certificate: ${certificate.reason}`);
  }
  apiCredentials(config); // a missing or too-open API password file stops the agent here, not at the first request
  const events = new EventPublisher(store, keys.events, config.name, log);
  const lagHistory = new LagHistory();
  const latestRead = new LatestRead();
  let api: ReturnType<typeof buildApi> | undefined;
  const agent = new Agent({
    config,
    store,
    log,
    observers: [metrics, events, lagHistory, latestRead],
    backupObserver: metrics,
    onCertificateChanged: () => {
      if (api && tlsFiles) reloadApiTls(api, apiTlsOf(tlsFiles));
    },
  });
  api = buildApi({
    source: agent,
    store,
    keys,
    credentials: () => apiCredentials(config),
    authReadOnly: config.api.authReadOnly,
    allowlist: config.api.allowlist,
    ...(tlsFiles ? { tls: apiTlsOf(tlsFiles) } : {}),
    extensions: [
      metricsRoute(metrics.registry),
      eventsRoute(store, keys),
      replayRoutes(agent.replay),
      upgradeRoutes({ status: () => agent.currentStatus(), context: agentUpgradeContext(config), sqlRefusal: upgradeSqlRefusal(store, config.cluster) }),
      dashboardRoutes({ store, keys, cluster: config.cluster, member: config.name, lagHistory: () => lagHistory.recent(), latest: () => latestRead.get() }),
    ],
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
