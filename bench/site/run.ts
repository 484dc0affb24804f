/**
 * Site switchover benchmark (issue 11): two 2-member relevo clusters with
 * separate stores (src: a1, a2; dr: b1, b2), dr a standby cluster of src.
 * Each round runs `relevo site switchover` from the current standby cluster
 * (directions alternate: dr takes over, then src, ...) while one writer
 * inserts back to back over all four members (a libpq-style multi-host
 * client, target_session_attrs=read-write), and one writer through a relevo
 * router at each site (router `ra` configured for src, `rb` for dr: both
 * follow the route records `relevo site ...` writes). Per round and writer:
 * the longest write pause (longest stretch without an acknowledgement around
 * the command), client errors, and acknowledged commits missing on the new
 * primary (must be 0); the command's duration; then the old source must
 * stream as a standby cluster before the next round.
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
import type { RouterHandle } from '../../src/router/index.js';
import { createSites, primaryOf, routerWriter, SITE_SETTINGS, siteRouter, siteWriter, waitStandbyCluster, type Sites } from '../../test/helpers/sites.js';
import type { Writer } from '../../test/helpers/writer.js';
import { waitFor } from '../../test/helpers/wait.js';

interface Measured {
  pauseMs: number;
  errors: number;
  acknowledged: number;
  lost: number;
}

interface Round extends Measured {
  round: number;
  from: string;
  to: string;
  commandMs: number;
  rejoinMs: number;
  /** What the command printed (its own step timings). */
  output: string;
  /** The writers through the routers of src (ra) and dr (rb). */
  viaRa: Measured;
  viaRb: Measured;
}

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '4' } } });
const rounds = Number(values.rounds);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const NO_ANCHOR =
  'No anchor tool moves the primary between sites in one command (Patroni: edit standby_cluster on both sides and promote by hand; CloudNativePG: demote the source, copy its demotion token into the replica cluster, promote; Stolon cannot demote): nothing to run side by side.';

async function round(sites: Sites, routers: [RouterHandle, RouterHandle], n: number, source: Sites['src'], target: Sites['src']): Promise<Round> {
  const writer = siteWriter(sites, `site_bench_${n}`);
  const viaRouters = [routerWriter(routers[0], sites.src, `site_bench_${n}_ra`), routerWriter(routers[1], sites.dr, `site_bench_${n}_rb`)] as const;
  const all: Writer[] = [writer, ...viaRouters];
  for (const w of all) await w.start();
  let startedAt = 0;
  let commandMs = 0;
  let newPrimary = '';
  let output = '';
  let rejoined: Promise<number> | undefined;
  try {
    for (const w of all) await w.waitForAcks(200);
    startedAt = Date.now();
    // Longer than the command's own step timeout (60 s): a stuck step reports itself instead of being killed.
    const result = await target.cli(['site', 'switchover'], [...target.members.keys()][0], 200_000);
    commandMs = Date.now() - startedAt;
    if (result.code !== 0) throw new Error(`round ${n}: site switchover failed (exit ${result.code} after ${commandMs} ms): ${result.stderr}${result.stdout}`);
    output = result.stdout.trim();
    // Watched from the command's end, alongside the writes.
    rejoined = waitStandbyCluster(source, target, 120_000).then(() => Date.now() - startedAt - commandMs);
    rejoined.catch(() => undefined); // awaited below; a failure before that must not go unhandled
    newPrimary = await primaryOf(target);
    await writer.waitForAcks(200, 60_000, newPrimary);
    for (const w of viaRouters) await w.waitForAcks(200, 60_000);
  } finally {
    for (const w of all) await w.stop();
  }
  const end = Date.now();
  const measure = async (w: Writer): Promise<Measured> => {
    const verdict = await w.verify(target);
    return { pauseMs: w.longestGap(startedAt, end), errors: w.failures.filter((f) => f.at >= startedAt).length, acknowledged: verdict.acknowledged, lost: verdict.lost.length };
  };
  const direct = await measure(writer);
  const [viaRa, viaRb] = [await measure(viaRouters[0]), await measure(viaRouters[1])];
  const rejoinMs = await rejoined!;
  // Between rounds, as every bench here: VACUUM and CHECKPOINT on the new primary.
  await target.sql(newPrimary, 'VACUUM');
  await target.sql(newPrimary, 'CHECKPOINT');
  return { round: n, from: source.clusterName, to: target.clusterName, ...direct, commandMs, rejoinMs, viaRa, viaRb, output };
}

async function main(): Promise<void> {
  process.stdout.write(`${NO_ANCHOR}\n`);
  const sites = await createSites();
  const results: Round[] = [];
  const routers: RouterHandle[] = [];
  let failure: string | undefined;
  try {
    const follow = await sites.dr.cli(['site', 'follow', '--source-config', sites.src.member('a1').file], 'b1');
    if (follow.code !== 0) throw new Error(follow.stderr);
    sites.dr.startAgent('b1');
    await waitFor('b1 standby leader', async () => (await sites.dr.status('b1'))?.state === 'standby_leader', 120_000);
    sites.dr.startAgent('b2');
    await waitStandbyCluster(sites.dr, sites.src, 120_000);
    routers.push(await siteRouter(sites.src, 'ra'), await siteRouter(sites.dr, 'rb'));
    await waitFor("dr's router following src", () => routers[1]!.stats().route?.following === 'src' && routers[1]!.stats().primary !== null, 30_000, 50);
    for (let n = 1; n <= rounds; n++) {
      const [source, target] = n % 2 === 1 ? [sites.src, sites.dr] : [sites.dr, sites.src];
      const r = await round(sites, routers as [RouterHandle, RouterHandle], n, source, target).catch((error: Error) => {
        // The rounds done so far are still written.
        failure = `round ${n} failed: ${error.message}`;
        process.stderr.write(`${failure}\n`);
        return undefined;
      });
      if (!r) break;
      results.push(r);
      process.stdout.write(`round ${n}: ${r.from} -> ${r.to}: pause ${r.pauseMs} ms (via ra ${r.viaRa.pauseMs} ms, via rb ${r.viaRb.pauseMs} ms), command ${r.commandMs} ms, ${r.errors}/${r.viaRa.errors}/${r.viaRb.errors} client errors, ${r.acknowledged}/${r.viaRa.acknowledged}/${r.viaRb.acknowledged} acknowledged, ${r.lost}/${r.viaRa.lost}/${r.viaRb.lost} lost; old source streaming again after ${r.rejoinMs} ms\n`);
    }
  } finally {
    for (const r of routers) await r.stop().catch(() => undefined);
    await sites.destroy();
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const outDir = join(dirname(fileURLToPath(import.meta.url)), '../../../bench/results');
  mkdirSync(outDir, { recursive: true });
  const meta = { date: new Date().toISOString(), cpus: cpus().length, loadavg: loadavg(), rounds, settings: SITE_SETTINGS, label: 'measured under load (other helpers share the machine)' };
  writeFileSync(join(outDir, `site-${stamp}.json`), `${JSON.stringify({ meta, results, failure: failure ?? null }, null, 2)}\n`);
  const pauses = results.map((r) => r.pauseMs);
  const routed = results.flatMap((r) => [r.viaRa.pauseMs, r.viaRb.pauseMs]);
  const lostTotal = results.reduce((n, r) => n + r.lost + r.viaRa.lost + r.viaRb.lost, 0);
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const md = [
    `# Site switchover benchmark ${meta.date} — measured under load`,
    '',
    `${meta.cpus} CPUs shared with other work (load average ${meta.loadavg.map((l) => l.toFixed(2)).join(' ')} at the end); two 2-member clusters, separate embedded stores, ttlMs ${SITE_SETTINGS.ttlMs}, loopWaitMs ${SITE_SETTINGS.loopWaitMs}, asynchronous inside each site.`,
    'Three writers at once, one autocommit INSERT per transaction back to back each: one over all four members in order (multi-host, read-write), one through a relevo router configured for src (`ra`), one through a router configured for dr (`rb`); the routers follow the route records `relevo site` writes (no restart). `relevo site switchover` each round, directions alternating.',
    '',
    '| round | from → to | write pause: multi-host / via ra / via rb | command | client errors | acknowledged | lost | old source streaming again, after the command |',
    '|---|---|---|---|---|---|---|---|',
    ...results.map((r) => `| ${r.round} | ${r.from} → ${r.to} | ${s(r.pauseMs)} / ${s(r.viaRa.pauseMs)} / ${s(r.viaRb.pauseMs)} | ${s(r.commandMs)} | ${r.errors} / ${r.viaRa.errors} / ${r.viaRb.errors} | ${r.acknowledged} / ${r.viaRa.acknowledged} / ${r.viaRb.acknowledged} | ${r.lost} / ${r.viaRa.lost} / ${r.viaRb.lost} | ${(r.rejoinMs / 1000).toFixed(1)} s |`),
    '',
    results.length > 0
      ? `Median write pause: multi-host ${s(median(pauses))} (max ${s(Math.max(...pauses))}); through the routers ${s(median(routed))} (max ${s(Math.max(...routed))}); lost commits in total: ${lostTotal}.`
      : 'No round completed.',
    ...(failure ? ['', `**${failure}**`] : []),
    '',
    NO_ANCHOR,
    '',
  ].join('\n');
  writeFileSync(join(outDir, `site-${stamp}.md`), md);
  process.stdout.write(`${md}\nwritten: bench/results/site-${stamp}.{json,md}\n`);
}

await main();
