/**
 * The relevo router in a process of its own, so the benchmark can read its
 * CPU time from /proc/<pid>/stat (with `workers` > 1: this process
 * supervises worker processes, whose CPU the benchmark adds). Argument: JSON
 * {storePath, cluster, listen, extra} (extra: further router settings, e.g.
 * mode, session, workers). Prints one JSON line once listening.
 */
import { startRouter, type RouterSettingsInput } from '../../src/router/index.js';
import { reportReady, superviseWorkers, workerIndex, workerSettings } from '../../src/router/workers.js';

const arg = JSON.parse(process.argv[2] ?? '{}') as { storePath: string; cluster: string; listen: string; extra?: Record<string, unknown> };
const settings: RouterSettingsInput = {
  name: 'bench',
  cluster: arg.cluster,
  listen: { readWrite: arg.listen, readOnly: null },
  ...(arg.extra ?? {}),
};
const silent = { info() {}, warn() {}, error() {}, debug() {} };
const workers = Number(settings.workers ?? 1);
const index = workerIndex();
let stopRouter: () => Promise<void>;
if (workers > 1 && index === 0) {
  const supervisor = await superviseWorkers(workers, silent);
  process.stdout.write(`${JSON.stringify(supervisor.addresses)}\n`);
  stopRouter = () => supervisor.stop();
} else {
  const router = await startRouter({ ...workerSettings({ ...settings, metrics: null }, index), store: { backend: 'embedded', path: arg.storePath, timeoutMs: 2_000 } });
  if (index > 0) reportReady(router.addresses);
  else process.stdout.write(`${JSON.stringify(router.addresses)}\n`);
  stopRouter = () => router.stop();
}
const stop = (): void => {
  void stopRouter().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
