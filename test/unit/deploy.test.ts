import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { AGENT_METRICS } from '../../src/agent/metrics.js';
import { createRegistry } from '../../src/router/metrics.js';
import type { RouterStatus } from '../../src/router/status.js';

const read = (path: string) => readFileSync(new URL(`../../../${path}`, import.meta.url), 'utf8');

/** Every relevo_ series name an expression uses, histogram suffixes removed. */
function seriesIn(text: string): string[] {
  return [...new Set([...text.matchAll(/\brelevo_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')))];
}

async function catalogue(): Promise<Set<string>> {
  const router = createRegistry(() => ({ listeners: [], store: { readable: true, ageMs: 0, ttlMs: 1 }, switchover: false }) as unknown as RouterStatus);
  const routerNames = (await router.getMetricsAsJSON()).map((m) => m.name);
  return new Set([...AGENT_METRICS.map((m) => m.name), ...routerNames]);
}

describe('deploy/: Grafana dashboard and Prometheus alert rules', () => {
  it('alert rules use only catalogued metrics and cover lag, no leader, paused too long, slot retention', async () => {
    const known = await catalogue();
    const rules = parseYaml(read('deploy/prometheus/relevo-alerts.yml')) as { groups: { rules: { alert: string; expr: string }[] }[] };
    const all = rules.groups.flatMap((g) => g.rules);
    for (const rule of all) for (const name of seriesIn(rule.expr)) assert.ok(known.has(name), `${rule.alert} uses ${name}, which no agent or router exports`);
    const names = all.map((r) => r.alert);
    for (const wanted of ['RelevoReplicaLagBytes', 'RelevoNoLeader', 'RelevoPausedTooLong', 'RelevoSlotRetentionGrowing']) assert.ok(names.includes(wanted), wanted);
  });

  it('the Grafana dashboard uses only catalogued metrics', async () => {
    const known = await catalogue();
    const dashboard = JSON.parse(read('deploy/grafana/relevo-dashboard.json')) as { panels: { title: string; targets: { expr: string }[] }[] };
    const used = dashboard.panels.flatMap((p) => p.targets.flatMap((t) => seriesIn(t.expr).map((name) => [p.title, name] as const)));
    assert.ok(used.length > 10);
    for (const [panel, name] of used) assert.ok(known.has(name), `panel "${panel}" uses ${name}, which no agent or router exports`);
  });

  it('the test would catch a misspelt metric', () => {
    assert.deepEqual(seriesIn('rate(relevo_loop_duration_seconds_bucket[5m]) + relevo_lagg_bytes'), ['relevo_loop_duration_seconds', 'relevo_lagg_bytes']);
  });
});
