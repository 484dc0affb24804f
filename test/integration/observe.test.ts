/**
 * Metrics and the event log on a real 3-member cluster (embedded store):
 * every catalogued metric is served; the lag metric grows while a replica's
 * replay is paused under writes and returns to about 0 after; a failover's
 * reasons are in the event log, in order, and `relevo events` shows them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AGENT_METRICS } from '../../src/agent/metrics.js';
import type { ClusterEvent } from '../../src/cluster/events.js';
import { TestCluster, FAULT_TEST_MEMBERS, FAULT_TEST_SETTINGS } from '../helpers/cluster.js';
import { sleep, waitFor } from '../helpers/wait.js';

const NAMES = FAULT_TEST_MEMBERS;
/** Series that only appear once something happened (an action failed), or with a backup repository (test/integration/backup.test.ts scrapes those). */
const EVENT_DRIVEN = new Set(['relevo_action_failures_total', ...AGENT_METRICS.map((m) => m.name).filter((n) => /^relevo_(archive|backup)/.test(n))]);

async function scrape(cluster: TestCluster, name: string): Promise<string> {
  const response = await cluster.api(name, '/metrics');
  assert.equal(response.status, 200);
  return response.body;
}

/** The value of the first sample of `metric` whose labels include `labels`. */
function value(text: string, metric: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${metric}{`) && l.includes(labels));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('metrics and event log on a real cluster', () => {
  let cluster: TestCluster;
  let primary: string;
  let replicas: string[];

  before(async () => {
    cluster = await TestCluster.create({ store: 'embedded', settings: FAULT_TEST_SETTINGS });
    for (const name of NAMES) await cluster.defineMember(name);
    for (const name of NAMES) cluster.startAgent(name);
    const members = await cluster.waitHealthy(NAMES);
    primary = members.find((m) => m.role === 'primary')!.name;
    replicas = NAMES.filter((n) => n !== primary);
    await cluster.sql(primary, 'CREATE TABLE IF NOT EXISTS filler (id bigserial PRIMARY KEY, pad text)');
  });
  after(async () => cluster?.destroy());

  it('every catalogued metric is served by the agents, with samples', async () => {
    // Wait for a round that saw the slots and the walsenders of both replicas.
    const texts = await waitFor('per-replica series on the primary', async () => {
      const all = await Promise.all(NAMES.map((n) => scrape(cluster, n)));
      const primaryText = all[NAMES.indexOf(primary)]!;
      return replicas.every((r) => value(primaryText, 'relevo_replication_lag_bytes', `replica="${r}"`) !== undefined) ? all : undefined;
    });
    for (const [i, text] of texts.entries()) {
      for (const m of AGENT_METRICS) assert.match(text, new RegExp(`^# TYPE ${m.name} ${m.type}$`, 'm'), `${m.name} on ${NAMES[i]}`);
    }
    const union = texts.join('\n');
    for (const m of AGENT_METRICS.filter((m) => !EVENT_DRIVEN.has(m.name))) {
      assert.match(union, new RegExp(`^${m.name}(_bucket|_count|_sum)?\\{`, 'm'), `a sample of ${m.name}`);
    }
    assert.equal(value(texts[NAMES.indexOf(primary)]!, 'relevo_leader'), 1);
    assert.equal(value(texts[NAMES.indexOf(primary)]!, 'relevo_role', 'role="primary"'), 1);
  });

  it('the lag metric grows while replay is paused under writes, and returns to about 0 after', async () => {
    const held = replicas[0]!;
    await cluster.sql(held, 'SELECT pg_wal_replay_pause()');
    let writing = true;
    const writer = (async () => {
      while (writing) {
        await cluster.sql(primary, "INSERT INTO filler (pad) SELECT repeat('x', 500) FROM generate_series(1, 2000)");
        await sleep(100);
      }
    })();
    try {
      const first = await waitFor('lag above 1 MB on the paused replica', async () => {
        const v = value(await scrape(cluster, held), 'relevo_lag_bytes');
        return v !== undefined && v > 1_000_000 ? v : undefined;
      });
      const second = await waitFor('lag growing further', async () => {
        const v = value(await scrape(cluster, held), 'relevo_lag_bytes');
        return v !== undefined && v > first + 1_000_000 ? v : undefined;
      });
      const text = await scrape(cluster, held);
      assert.equal(value(text, 'relevo_replay_paused'), 1);
      assert.ok(value(text, 'relevo_lag_seconds')! > 0, 'lag in seconds is positive while paused');
      const fromPrimary = value(await scrape(cluster, primary), 'relevo_replication_lag_bytes', `replica="${held}"`);
      assert.ok(fromPrimary !== undefined && fromPrimary > 1_000_000, `the primary sees the lag too (${fromPrimary})`);
      assert.ok(second > first);
    } finally {
      writing = false;
      await writer;
      await cluster.sql(held, 'SELECT pg_wal_replay_resume()');
    }
    await waitFor('lag back to about 0 after resume', async () => {
      const text = await scrape(cluster, held);
      const bytes = value(text, 'relevo_lag_bytes');
      return bytes !== undefined && bytes < 64 * 1024 && value(text, 'relevo_replay_paused') === 0 && value(text, 'relevo_lag_seconds') === 0;
    });
  });

  it('after a failover the event log holds the reasons, in order, on every interface', async () => {
    const startedAt = new Date().toISOString();
    await cluster.signalAgent(primary, 'SIGKILL');
    const pid = cluster.postmasterPid(primary);
    if (pid) process.kill(pid, 'SIGKILL');
    const promoted = await waitFor('a new primary', async () => (await cluster.memberStatuses()).find((m) => m.name !== primary && m.state === 'primary')?.name);
    const events = await waitFor('the promotion in the event log', async () => {
      const all = JSON.parse((await cluster.api(promoted, `/events?member=${promoted}`)).body) as ClusterEvent[];
      const recent = all.filter((e) => e.at >= startedAt.slice(0, 19));
      return recent.some((e) => e.to === 'primary') ? recent : undefined;
    });
    const promoting = events.findIndex((e) => e.to === 'promoting' || e.actions.includes('promote'));
    const becamePrimary = events.findIndex((e, i) => i >= promoting && e.to === 'primary');
    assert.ok(promoting >= 0 && becamePrimary >= promoting, `promoting then primary, in order: ${JSON.stringify(events, null, 1)}`);
    const promotion = events[promoting]!;
    assert.ok(promotion.actions.includes('promote'), 'the promotion event lists the promote action');
    assert.match(promotion.reason, /leader|primary/i, 'the reason says why');
    assert.equal(promotion.outcome, 'ok');
    const times = events.map((e) => e.at);
    assert.deepEqual(times, [...times].sort(), 'events are in time order');

    const cli = await cluster.cli(['events', '--member', promoted, '--json'], promoted);
    assert.equal(cli.code, 0, cli.stderr);
    assert.ok((JSON.parse(cli.stdout) as ClusterEvent[]).some((e) => e.id === promotion.id), 'relevo events --json shows the same event');
    const text = await cluster.cli(['events', '--member', promoted], promoted);
    assert.match(text.stdout, new RegExp(`${promoted}  \\S+ -> promoting|${promoted}  .*\\[.*promote`));
    const metrics = await scrape(cluster, promoted);
    assert.equal(value(metrics, 'relevo_failovers_total'), 1);
    assert.equal(value(metrics, 'relevo_leader'), 1);

    const bad = await cluster.api(promoted, '/events?limit=zero');
    assert.equal(bad.status, 400);
  });
});
