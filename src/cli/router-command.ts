import { loadMemberConfig } from '../config/load.js';
import type { MemberConfig } from '../config/member.js';
import { startRouter, type RouterHandle } from '../router/index.js';
import type { Store } from '../store/store.js';
import { createLogger } from '../util/log.js';
import { configPath } from './context.js';

/** Router settings from a member file's `router:` section, named after the member unless set. */
export function routerOptionsOf(config: MemberConfig) {
  const { embedded: _embedded, name, ...settings } = config.router ?? { embedded: false };
  return { ...settings, name: name ?? `${config.name}-router`, cluster: config.cluster };
}

export async function startEmbeddedRouter(config: MemberConfig, store: Store): Promise<RouterHandle | undefined> {
  if (!config.router?.embedded) return undefined;
  const logger = createLogger(config.log.level, { cluster: config.cluster, member: config.name, component: 'router' });
  return startRouter({ ...routerOptionsOf(config), store, logger });
}

/** `relevo router`: the router as its own process, until SIGTERM/SIGINT. */
export async function runRouter(options: { config?: string }): Promise<void> {
  const config = loadMemberConfig(configPath(options.config));
  const logger = createLogger(config.log.level, { cluster: config.cluster, component: 'router' });
  const router = await startRouter({ ...routerOptionsOf(config), store: config.store, logger });
  logger.info({ ...router.addresses }, 'relevo router started');
  await new Promise<void>((resolve) => {
    const stop = () => void router.stop().then(resolve);
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
