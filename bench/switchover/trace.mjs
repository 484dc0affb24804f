// Timeline of one switchover (issue 13): store events, both agents' and PostgreSQL's logs, writer gaps, the CLI's output, in ms from the command's start.
// Run from the worktree after a build, under the heavy lock: node bench/switchover/trace.mjs (RUNS=2, FAST=1 for the fast settings; DIST=path to another build).
// Trace one switchover at default settings (etcd, 3 members): store events, agent logs, PG logs, writer gaps, CLI output.
import { readFileSync } from 'node:fs';
const D = process.env.DIST ?? new URL('../../dist', import.meta.url).pathname;
const { TestCluster } = await import(`${D}/test/helpers/cluster.js`);
const { startEtcd } = await import(`${D}/test/helpers/etcd.js`);
const { Writer } = await import(`${D}/test/helpers/writer.js`);
const { localPostgres } = await import(`${D}/src/postgres/local.js`);
const NAMES = ['node1', 'node2', 'node3'];
const settings = process.env.FAST ? { ttlMs: 2000, loopWaitMs: 250, fenceMarginMs: 800 } : { loopWaitMs: 1000, ttlMs: 6000, fenceMarginMs: 2000 };
const runs = Number(process.env.RUNS ?? 2);
const etcd = await startEtcd();
let cluster;
try {
  cluster = await TestCluster.create({ store: { endpoints: etcd.endpoints }, settings, name: 'trace' });
  for (const n of NAMES) await cluster.defineMember(n, { log: { level: 'info' } });
  for (const n of NAMES) cluster.startAgent(n);
  await cluster.waitHealthy(NAMES, 120_000);
  const events = [];
  const w = await cluster.store.watch('/relevo/', (e) => {
    let v = '';
    if (e.type === 'put') { try { const j = JSON.parse(e.value); v = j.state ? `state=${j.state} role=${j.role}` : j.member ? `member=${j.member}` : j.shutdownLsn !== undefined ? `shutdownLsn=${j.shutdownLsn}` : ''; } catch {} }
    events.push({ t: Date.now(), line: `STORE ${e.type} ${e.key.replace(/^.*\/trace\//, '')} ${v}` });
  }, () => {});
  const writer = Writer.forCluster(cluster, 'trace_w', { intervalMs: 0, connectTimeoutMs: 1000 });
  await writer.start();
  await new Promise((r) => setTimeout(r, 3000));
  for (let run = 1; run <= runs; run++) {
    const members = await cluster.waitHealthy(NAMES, 120_000);
    const primary = members.find((m) => m.state === 'primary').name;
    const to = NAMES.filter((n) => n !== primary)[run % 2];
    await new Promise((r) => setTimeout(r, 1500));
    events.length = 0;
    const t0 = Date.now();
    const res = await cluster.cli(['switchover', '--to', to]);
    const t1 = Date.now();
    await new Promise((r) => setTimeout(r, 2500));
    const lines = [...events, { t: t0, line: 'CLI start' }, { t: t1, line: `CLI done: ${res.stdout.trim()} ${res.stderr.trim()}` }];
    for (const n of [primary, to]) {
      for (const l of readFileSync(cluster.member(n).logFile, 'utf8').split('\n')) {
        try { const j = JSON.parse(l); const t = Date.parse(j.time); if (t >= t0 - 200 && t <= t1 + 2000) lines.push({ t, line: `${n} AGENT ${j.msg}`.slice(0, 220) }); } catch {}
      }
      const pglog = localPostgres(cluster.member(n).config).postmaster.logFile;
      for (const l of readFileSync(pglog, 'utf8').split('\n')) {
        const m = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d\d\d \w+) \[\d+\] (.*)$/.exec(l);
        if (m) { const t = Date.parse(m[1].replace(' UTC', 'Z').replace(' ', 'T')); if (t >= t0 - 200 && t <= t1 + 2000 && !/relevo_test_app|connection received|FATAL:  the database system is (shutting|starting)|cannot execute INSERT|read-only/.test(m[2])) lines.push({ t, line: `${n} PG ${m[2]}`.slice(0, 200) }); }
      }
    }
    // writer gaps > 50 ms
    const acks = writer.acks.filter((a) => a.ackedAt >= t0 - 500 && a.ackedAt <= t1 + 2000);
    for (let i = 1; i < acks.length; i++) { const g = acks[i].ackedAt - acks[i - 1].ackedAt; if (g > 50) lines.push({ t: acks[i].ackedAt, line: `WRITER gap ${g} ms (${acks[i - 1].server} -> ${acks[i].server})` }); }
    lines.sort((a, b) => a.t - b.t);
    console.log(`=== run ${run}: ${primary} -> ${to}; writer longest gap ${writer.longestGap(t0 - 500, t1 + 2000)} ms`);
    for (const l of lines) console.log(`${String(l.t - t0).padStart(6)} ${l.line}`);
  }
  await writer.stop();
  await w.close();
} finally {
  await cluster?.destroy();
  await etcd.stop();
}
