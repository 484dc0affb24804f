import { loadMemberConfig } from '../config/load.js';
import type { MemberConfig } from '../config/member.js';
import { clusterCaFile, memberTlsFiles } from '../tls/member.js';
import { peerAuthorization } from '../api/auth.js';
import { memberApiClientTls, type PeerAccess } from '../tls/client.js';
import type { RouterSettings } from '../router/options.js';
import { startRouter, type RouterHandle } from '../router/index.js';
import { reportReady, superviseWorkers, workerIndex, workerSettings } from '../router/workers.js';
import type { Store } from '../store/store.js';
import { createLogger } from '../util/log.js';
import { configPath } from './context.js';

/** Router settings from a member file's `router:` section, named after the member unless set. */
export function routerOptionsOf(config: MemberConfig) {
  const { embedded: _embedded, name, ...settings } = config.router ?? { embedded: false };
  return {
    ...settings,
    ...sessionTlsOf(config, 'session' in settings ? settings.session : null),
    name: name ?? `${config.name}-router`,
    cluster: config.cluster,
    agentAccess: () => agentAccessOf(config),
  };
}

/**
 * How the router asks an agent for its failsafe grant (GET /failsafe): as a
 * peer does, with the member's API credentials and, over HTTPS, the cluster
 * CA and the member certificate. Read on each use (rotated files apply).
 */
export function agentAccessOf(config: MemberConfig): PeerAccess {
  let authorization: string | undefined;
  try {
    authorization = peerAuthorization(config);
  } catch {
    // An unreadable password file: the certificate may still do.
  }
  const tls = memberApiClientTls(memberTlsFiles(config), true);
  return { ...(authorization ? { authorization } : {}), ...(tls ? { tls } : {}) };
}

/**
 * With TLS on, session mode verifies the servers against the cluster CA and,
 * unless the operator gave the router its own certificate, presents this
 * member's certificate (issued by the cluster CA) to clients that ask for TLS.
 */
function sessionTlsOf(config: MemberConfig, session: RouterSettings['session']) {
  const files = memberTlsFiles(config);
  if (!session || !files) return {};
  return {
    session: {
      ...session,
      serverCaFile: session.serverCaFile ?? clusterCaFile(config) ?? null,
      tls: session.tls ?? { certFile: files.cert, keyFile: files.key },
    },
  };
}

export async function startEmbeddedRouter(config: MemberConfig, store: Store): Promise<RouterHandle | undefined> {
  if (!config.router?.embedded) return undefined;
  const logger = createLogger(config.log.level, { cluster: config.cluster, member: config.name, component: 'router' });
  return startRouter({ ...routerOptionsOf(config), store, logger });
}

/** `relevo router`: the router as its own process (or `workers` processes), until SIGTERM/SIGINT. */
export async function runRouter(options: { config?: string }): Promise<void> {
  const config = loadMemberConfig(configPath(options.config));
  const index = workerIndex();
  const logger = createLogger(config.log.level, { cluster: config.cluster, component: 'router', ...(index ? { worker: String(index) } : {}) });
  const settings = routerOptionsOf(config);
  const workers = settings.workers ?? 1;
  let stopRouter: () => Promise<void>;
  if (workers > 1 && index === 0) {
    const supervisor = await superviseWorkers(workers, logger);
    logger.info({ workers, addresses: supervisor.addresses }, 'relevo router started');
    stopRouter = () => supervisor.stop();
  } else {
    const router = await startRouter({ ...workerSettings(settings, index), store: config.store, logger });
    if (index > 0) reportReady(router.addresses);
    else logger.info({ ...router.addresses }, 'relevo router started');
    stopRouter = () => router.stop();
  }
  await new Promise<void>((resolve) => {
    const stop = () => void stopRouter().then(resolve);
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
