/**
 * Site switchover benchmark (issue 11): two 2-member relevo clusters with
 * separate stores (src: a1, a2; dr: b1, b2), dr a standby cluster of src.
 * Each round runs `relevo site switchover` from the current standby cluster
 * (directions alternate: dr takes over, then src, ...) while one writer
 * inserts back to back over all four members (a libpq-style multi-host
 * client, target_session_attrs=read-write). Per round: the longest write
 * pause (longest stretch without an acknowledgement around the command), the
 * command's duration, client errors, and acknowledged commits missing on the
 * new primary (must be 0); then the old source must stream as a standby
 * cluster before the next round.
 *
 * There is no anchor tool to compare with in the same run: none moves the
 * primary between sites in one command (Patroni: edit standby_cluster on both
 * sides and promote by hand; CloudNativePG: demote, copy the demotion token
 * into the replica cluster, promote). The output says so.
 *
 *   node dist/bench/site/run.js [--rounds 4]
 *
 * Writes bench/results/site-<timestamp>.json and .md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createSites, primaryOf, SITE_SETTINGS, siteWriter, waitStandbyCluster, type Sites } from '../../test/helpers/sites.js';
import { waitFor } from '../../test/helpers/wait.js';

interface Round {
  round: number;
  from: string;
  to: string;
  pauseMs: number;
  commandMs: number;
  errors: number;
  acknowledged: number;
  lost: number;
  rejoinMs: number;
}

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '4' } } });
const rounds = Number(values.rounds);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const NO_ANCHOR =
  'No anchor tool moves the primary between sites in one command (Patroni: edit standby_cluster on both sides and promote by hand; CloudNativePG: demote the source, copy its demotion token into the replica cluster, promote; Stolon cannot demote): nothing to run side by side.';

async function round(sites: Sites, n: number, source: Sites['src'], target: Sites['src']): Promise<Round> {
  const writer = siteWriter(sites, `site_bench_${n}`);
  await writer.start();
  let startedAt = 0;
  let commandMs = 0;
  let newPrimary = '';
  let rejoined: Promise<number> | undefined;
  try {
    await writer.waitForAcks(200);
    startedAt = Date.now();
    const result = await target.cli(['site', 'switchover'], [...target.members.keys()][0]);
    commandMs = Date.now() - startedAt;
    if (result.code !== 0) throw new Error(`round ${n}: site switchover failed: ${result.stderr}`);
    // Watched from the command's end, alongside the writes.
    rejoined = waitStandbyCluster(source, target, 120_000).then(() => Date.now() - startedAt - commandMs);
    rejoined.catch(() => undefined); // awaited below; a failure before that must not go unhandled
    newPrimary = await primaryOf(target);
    await writer.waitForAcks(200, 60_000, newPrimary);
  } finally {
    await writer.stop();
  }
  const pauseMs = writer.longestGap(startedAt, Date.now());
  const errors = writer.failures.filter((f) => f.at >= startedAt).length;
  const verdict = await writer.verify(target);
  const rejoinMs = await rejoined!;
  return { round: n, from: source.clusterName, to: target.clusterName, pauseMs, commandMs, errors, acknowledged: verdict.acknowledged, lost: verdict.lost.length, rejoinMs };
}

async function main(): Promise<void> {
  process.stdout.write(`${NO_ANCHOR}\n`);
  const sites = await createSites();
  const results: Round[] = [];
  try {
    const follow = await sites.dr.cli(['site', 'follow', '--source-config', sites.src.member('a1').file], 'b1');
    if (follow.code !== 0) throw new Error(follow.stderr);
    sites.dr.startAgent('b1');
    await waitFor('b1 standby leader', async () => (await sites.dr.status('b1'))?.state === 'standby_leader', 120_000);
    sites.dr.startAgent('b2');
    await waitStandbyCluster(sites.dr, sites.src, 120_000);
    for (let n = 1; n <= rounds; n++) {
      const [source, target] = n % 2 === 1 ? [sites.src, sites.dr] : [sites.dr, sites.src];
      const r = await round(sites, n, source, target);
      results.push(r);
      process.stdout.write(`round ${n}: ${r.from} -> ${r.to}: pause ${r.pauseMs} ms, command ${r.commandMs} ms, ${r.errors} client errors, ${r.acknowledged} acknowledged, ${r.lost} lost; old source streaming again after ${r.rejoinMs} ms\n`);
    }
  } finally {
    await sites.destroy();
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const outDir = join(dirname(fileURLToPath(import.meta.url)), '../../../bench/results');
  mkdirSync(outDir, { recursive: true });
  const meta = { date: new Date().toISOString(), cpus: cpus().length, loadavg: loadavg(), rounds, settings: SITE_SETTINGS, label: 'measured under load (other helpers share the machine)' };
  writeFileSync(join(outDir, `site-${stamp}.json`), `${JSON.stringify({ meta, results }, null, 2)}\n`);
  const pauses = results.map((r) => r.pauseMs);
  const md = [
    `# Site switchover benchmark ${meta.date} — measured under load`,
    '',
    `${meta.cpus} CPUs shared with other work (load average ${meta.loadavg.map((l) => l.toFixed(2)).join(' ')} at the end); two 2-member clusters, separate embedded stores, ttlMs ${SITE_SETTINGS.ttlMs}, loopWaitMs ${SITE_SETTINGS.loopWaitMs}, asynchronous inside each site.`,
    'One writer, one autocommit INSERT per transaction back to back, over all four members in order (multi-host, read-write); `relevo site switchover` each round, directions alternating.',
    '',
    '| round | from → to | write pause | command | client errors | acknowledged | lost | old source streaming again, after the command |',
    '|---|---|---|---|---|---|---|---|',
    ...results.map((r) => `| ${r.round} | ${r.from} → ${r.to} | ${(r.pauseMs / 1000).toFixed(2)} s | ${(r.commandMs / 1000).toFixed(2)} s | ${r.errors} | ${r.acknowledged} | ${r.lost} | ${(r.rejoinMs / 1000).toFixed(1)} s |`),
    '',
    results.length > 0 ? `Median write pause ${(median(pauses) / 1000).toFixed(2)} s (max ${(Math.max(...pauses) / 1000).toFixed(2)} s); lost commits in total: ${results.reduce((n, r) => n + r.lost, 0)}.` : 'No round completed.',
    '',
    NO_ANCHOR,
    '',
  ].join('\n');
  writeFileSync(join(outDir, `site-${stamp}.md`), md);
  process.stdout.write(`${md}\nwritten: bench/results/site-${stamp}.{json,md}\n`);
}

await main();
