// node bench/backup/offline-harness.mjs WT backup|restore [dest]: relevo's side of bench/backup without PostgreSQL, from the
// worktree WT's dist, with a fake pg_basebackup (/tmp/backup10/fakebin/pg_basebackup: cat of a tar pg_basebackup wrote once).
// Env: SYSID (the repository's system id), LEVEL, PAR, DELTA=1. Prints the main thread's CPU seconds at exit.
const [wt, command, arg] = process.argv.slice(2);
const d = (p) => import(`${wt}/dist/src/${p}`);
const { BackupSettingsSchema } = await d('cluster/backup-settings.js');
const { openClusterRepository } = await d('backup/catalog.js');
const { planRestore, restoreBackup } = await d('backup/restore.js');
const { takeBackup } = await d('backup/take.js');
const { lookupOsUser } = await d('util/os-user.js');
const sysid = process.env.SYSID;
const repo = '/tmp/backup10/h/repo';
const ctx = {
  cluster: 'bench', systemIdentifier: sysid,
  settings: BackupSettingsSchema.parse({ repository: repo, compressLevel: Number(process.env.LEVEL ?? 1), parallel: Number(process.env.PAR ?? 4) }),
  repository: openClusterRepository(repo, 'bench', sysid),
  credentials: { agentPassword: 'bench', replicationPassword: 'bench' },
  binDir: '/tmp/backup10/fakebin', osUser: lookupOsUser('postgres'),
  members: [{ name: 'pg', role: 'primary', state: 'primary', streaming: false, connectAddress: '127.0.0.1:27311', systemIdentifier: sysid }],
  leader: 'pg', note: () => undefined,
};
if (command === 'backup') {
  const r = await takeBackup(ctx, { type: 'full', fromPrimary: true });
  console.log(JSON.stringify({ id: r.id, storedBytes: r.storedBytes, durationMs: r.durationMs }));
} else {
  const plan = await planRestore(ctx, { kind: 'immediate' });
  console.log(JSON.stringify(await restoreBackup(ctx, plan, arg, { delta: process.env.DELTA === '1' })));
}

{
  const { readFileSync, readdirSync } = await import('node:fs');
  const ticks = (tid) => { const f = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
  const main = ticks(process.pid);
  let all = 0; for (const t of readdirSync('/proc/self/task')) all += ticks(t);
  console.error(`CPU main thread ${main.toFixed(2)} s, all live threads ${all.toFixed(2)} s`);
}
