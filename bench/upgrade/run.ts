/**
 * Benchmark of `relevo upgrade` (PostgreSQL 15 -> 17, blue/green through a
 * logical copy): the write pause clients see through relevo's router, and
 * the catch-up time of the copy for a database of --size-mb (default ~1 GB).
 *
 * Two single-member clusters in one embedded store (the new one on the
 * fetched 17 server build), a session-mode router, --clients writers
 * inserting one row per autocommit transaction back to back through it.
 * Per round: `relevo upgrade start`, then rollback --force and forget, and
 * the new database is dropped for the next round.
 *
 * There is no anchor tool that does this in one command: CloudNativePG
 * documents a blue/green major upgrade as manual steps (publication,
 * subscription, sequences, switching the application), Patroni has no
 * upgrade command; so nothing runs interleaved here.
 *
 *   node dist/bench/upgrade/run.js [--size-mb 1024] [--rounds 1] [--clients 4]
 * Writes bench/results/upgrade-<timestamp>.json and .md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { clusterKeys } from '../../src/cluster/keys.js';
import { UpgradeStateSchema } from '../../src/upgrade/state.js';
import { newVersionBinDir, RouterWriters, sqlIn, startBlueGreen } from '../../test/helpers/upgrade.js';
import { sleep } from '../../test/helpers/wait.js';

const { values } = parseArgs({ options: { 'size-mb': { type: 'string', default: '1024' }, rounds: { type: 'string', default: '1' }, clients: { type: 'string', default: '4' } } });
const sizeMb = Number(values['size-mb']);
const rounds = Number(values.rounds);
const clients = Number(values.clients);

interface Round {
  round: number;
  databaseMb: number;
  /** From the subscription's creation to every table 'r' and lag < 1 MB. */
  catchUpS: number;
  /** From `relevo upgrade start` to the switch. */
  totalS: number;
  /** Hold to release at the routers, as relevo measured it. */
  holdS: number;
  /** Longest gap between two acknowledged writes, any client, as the clients saw it. */
  clientPauseS: number;
  clientErrors: number;
  acknowledged: number;
  missingOnNew: number;
}

const fetched = newVersionBinDir('17');
if ('skip' in fetched) {
  console.error(fetched.skip);
  process.exit(2);
}
const env = await startBlueGreen(fetched.binDir);
const results: Round[] = [];
let failure: string | undefined;
try {
  const { blue, green } = env;
  await sqlIn(blue, 'blue1', 'app', `SET ROLE app;
    CREATE TABLE items (id bigserial PRIMARY KEY, writer int NOT NULL, n int NOT NULL, at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL);`);
  const started = Date.now();
  for (let from = 1; ; from += 500_000) {
    const [{ mb }] = (await sqlIn<{ mb: number }>(blue, 'blue1', 'app', "SELECT (pg_database_size('app') / 1048576)::int AS mb")) as [{ mb: number }];
    if (mb >= sizeMb) break;
    await sqlIn(blue, 'blue1', 'app', `INSERT INTO big SELECT g, repeat(md5(g::text), 5) FROM generate_series(${from}, ${from + 499_999}) g`);
  }
  await sqlIn(blue, 'blue1', 'app', 'VACUUM ANALYZE');
  await sqlIn(blue, 'blue1', 'app', 'CHECKPOINT');
  console.error(`loaded in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  for (let round = 1; round <= rounds && failure === undefined; round++) {
    try {
    const [{ mb }] = (await sqlIn<{ mb: number }>(blue, 'blue1', 'app', "SELECT (pg_database_size('app') / 1048576)::int AS mb")) as [{ mb: number }];
    const writers = new RouterWriters(env.client, 'items', clients);
    await sleep(2_000);
    const t0 = Date.now();
    const r = await env.upgrade(['start', '-d', 'app']);
    const totalS = (Date.now() - t0) / 1000;
    process.stderr.write(r.stdout);
    if (r.code !== 0) throw new Error(`relevo upgrade start failed: ${r.stderr}`);
    await sleep(2_000);
    await writers.stop();
    const kv = await blue.store.get(clusterKeys('blue').upgrade);
    const state = UpgradeStateSchema.parse(JSON.parse(kv!.value));
    const at = (step: string) => Date.parse(state.history.filter((h) => h.step === step).pop()!.at);
    const ids = new Set((await sqlIn<{ id: string }>(green, 'green1', 'app', 'SELECT id::text FROM items')).map((x) => Number(x.id)));
    results.push({
      round,
      databaseMb: mb,
      catchUpS: (at('caught-up') - at('subscribed')) / 1000,
      totalS,
      holdS: (state.pauseMs ?? 0) / 1000,
      clientPauseS: writers.longestGap() / 1000,
      clientErrors: writers.errors.length,
      acknowledged: writers.acks.length,
      missingOnNew: writers.acks.filter((a) => !ids.has(a.id)).length,
    });
    console.error(JSON.stringify(results.at(-1)));
    // Back to the start for the next round.
    for (const args of [['rollback', '-d', 'app', '--force'], ['forget', '-d', 'app']]) {
      const x = await env.upgrade(args);
      if (x.code !== 0) throw new Error(`relevo upgrade ${args[0]} failed: ${x.stderr}`);
    }
    await sqlIn(green, 'green1', 'postgres', 'DROP DATABASE app WITH (FORCE)');
    } catch (error) {
      // Keep the rounds measured so far.
      failure = `round ${round}: ${(error as Error).message}`;
      console.error(failure);
    }
  }
} finally {
  await env.destroy();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;
const load = loadavg()[0]!.toFixed(2);
const lines = [
  `# relevo upgrade 15 -> 17: write pause and catch-up (measured under load: other work shared the ${cpus().length}-core machine, load average ${load} at the end)`,
  '',
  `${clients} writers through a session-mode relevo router, one autocommit INSERT at a time each; single-member clusters, one embedded store.`,
  'No anchor tool runs in the same benchmark: none does a blue/green major upgrade in one command (CloudNativePG documents manual steps; Patroni has no upgrade command).',
  '',
  '| round | database | catch-up (copy) | start -> switched | writes held (relevo) | longest client pause | client errors | acknowledged | missing on new |',
  '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ...results.map((r) => `| ${r.round} | ${r.databaseMb} MB | ${r.catchUpS.toFixed(1)} s | ${r.totalS.toFixed(1)} s | ${r.holdS.toFixed(2)} s | ${r.clientPauseS.toFixed(2)} s | ${r.clientErrors} | ${r.acknowledged} | ${r.missingOnNew} |`),
  '',
  ...(failure ? [`stopped early: ${failure}`, ''] : []),
  `median: catch-up ${median(results.map((r) => r.catchUpS)).toFixed(1)} s, writes held ${median(results.map((r) => r.holdS)).toFixed(2)} s, longest client pause ${median(results.map((r) => r.clientPauseS)).toFixed(2)} s`,
];
const md = lines.join('\n');
const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
const outDir = join(dirname(fileURLToPath(import.meta.url)), '../../../bench/results');
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, `upgrade-${stamp}.json`), JSON.stringify({ sizeMb, rounds, clients, results, failure: failure ?? null }, null, 2));
writeFileSync(join(outDir, `upgrade-${stamp}.md`), `${md}\n`);
process.stdout.write(`${md}\nwritten: bench/results/upgrade-${stamp}.{json,md}\n`);
process.exit(0);
