/**
 * The relevo router in a process of its own, so the benchmark can read its
 * CPU time from /proc/<pid>/stat. Argument: JSON {storePath, cluster, listen,
 * extra} (extra: further router settings, e.g. a session mode).
 * Prints one JSON line with the bound addresses once listening.
 */
import { startRouter } from '../../src/router/index.js';

const arg = JSON.parse(process.argv[2] ?? '{}') as { storePath: string; cluster: string; listen: string; extra?: Record<string, unknown> };
const router = await startRouter({
  name: 'bench',
  cluster: arg.cluster,
  store: { backend: 'embedded', path: arg.storePath, timeoutMs: 2_000 },
  listen: { readWrite: arg.listen, readOnly: null },
  ...(arg.extra ?? {}),
});
process.stdout.write(`${JSON.stringify(router.addresses)}\n`);
const stop = (): void => {
  void router.stop().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
