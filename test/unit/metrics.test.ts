import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { Action } from '../../src/agent/actions.js';
import { AGENT_METRICS, AgentMetrics, renderMetricsDoc, serverVersionNumber } from '../../src/agent/metrics.js';
import { member, observation, primaryInspection, storeView } from './observations.js';

const sampleValue = (text: string, name: string, labels = ''): number | undefined => {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
};

describe('agent metrics', () => {
  it('docs/metrics.md is generated from the catalogue (run `npm run docs`)', () => {
    assert.equal(readFileSync(new URL('../../../docs/metrics.md', import.meta.url), 'utf8'), renderMetricsDoc());
  });

  it('follow Prometheus naming: relevo_ prefix, base units, _total only on counters', () => {
    for (const m of AGENT_METRICS) {
      assert.match(m.name, /^relevo_[a-z_]+$/, m.name);
      assert.equal(m.name.endsWith('_total'), m.type === 'counter', m.name);
      assert.doesNotMatch(m.name, /_(ms|milliseconds|kb|mb|percent)(_|$)/, m.name);
    }
  });

  it('the registry exports exactly the catalogue', async () => {
    const metrics = new AgentMetrics({ cluster: 'c', member: 'b', version: '1' });
    const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name).sort();
    assert.deepEqual(names, AGENT_METRICS.map((m) => m.name).sort());
  });

  it('a replica round sets lag, positions, state and counters', async () => {
    const metrics = new AgentMetrics({ cluster: 'c', member: 'b', version: '1' });
    const status = member('b', { lagBytes: 4096, lagSeconds: 2.5 });
    const o = observation();
    metrics.onCycle({ observation: o, decision: { state: 'replica', actions: [], reason: 'x', memory: o.memory }, from: 'replica', outcomes: [], status, durationMs: 12 });
    const text = await metrics.registry.metrics();
    assert.equal(sampleValue(text, 'relevo_lag_bytes'), 4096);
    assert.equal(sampleValue(text, 'relevo_lag_seconds'), 2.5);
    assert.equal(sampleValue(text, 'relevo_state', 'state="replica"'), 1);
    assert.equal(sampleValue(text, 'relevo_state', 'state="primary"'), 0);
    assert.equal(sampleValue(text, 'relevo_sync_standby'), 1);
    assert.equal(sampleValue(text, 'relevo_wal_replayed_lsn_bytes'), 0x5000000);
    assert.equal(sampleValue(text, 'relevo_decisions_total', 'state="replica"'), 1);
    assert.equal(sampleValue(text, 'relevo_leader'), 0);
    assert.equal(sampleValue(text, 'relevo_leader_lease_remaining_seconds'), undefined);
  });

  it('a primary round sets per-replica lag, slots, lease remaining; a promotion counts as failover or switchover', async () => {
    const metrics = new AgentMetrics({ cluster: 'c', member: 'a', version: '1' });
    const inspection = primaryInspection({
      receivedLsn: '0/6000000',
      replication: [{ member: 'b', state: 'streaming', syncState: 'sync', sentLsn: '0/6000000', flushLsn: '0/6000000', replayLsn: '0/5000000', replayLagSeconds: 3 }],
      slots: [{ name: 'b', active: true, restartLsn: '0/5000000', retainedBytes: 0x1000000 }],
    });
    const status = member('a', { role: 'primary', state: 'primary', replication: inspection.replication, slots: inspection.slots, receivedLsn: '0/6000000' });
    const o = observation(
      { server: { kind: 'running', postmasterPid: 2, inspection }, leaseRenewedAt: 99_000, store: storeView({ failover: undefined }) },
      'a',
    );
    const promote: Action = { type: 'promote', acquire: true, from: null, reason: 'no leader', timeline: 2, forkLsn: null, slots: [], synchronousStandbyNames: '' };
    metrics.onCycle({ observation: o, decision: { state: 'primary', actions: [promote], reason: 'x', memory: o.memory }, from: 'replica', outcomes: [{ type: 'promote', result: 'ok' }], status, durationMs: 5 });
    const text = await metrics.registry.metrics();
    assert.equal(sampleValue(text, 'relevo_replication_lag_bytes', 'replica="b"'), 0x1000000);
    assert.equal(sampleValue(text, 'relevo_replication_lag_seconds', 'replica="b"'), 3);
    assert.equal(sampleValue(text, 'relevo_replication_sync', 'replica="b"'), 1);
    assert.equal(sampleValue(text, 'relevo_slot_retained_bytes', 'slot="b"'), 0x1000000);
    assert.equal(sampleValue(text, 'relevo_leader_lease_remaining_seconds'), 5);
    assert.equal(sampleValue(text, 'relevo_failovers_total'), 1);
    assert.equal(sampleValue(text, 'relevo_switchovers_total'), 0);
  });

  it('backup series: archive backlog per member, catalogue summary; absent when unknown', async () => {
    const metrics = new AgentMetrics({ cluster: 'c', member: 'a', version: '1' });
    metrics.onArchiveStatus({ member: 'a', at: '2026-12-02T00:00:00Z', readyFiles: 3, backlogBytes: 3 * 16 * 1024 * 1024, oldest: '000000010000000000000007', freeBytes: 1e9, level: 'warn', dropped: ['000000010000000000000001'] });
    metrics.onBackupSummary({
      repository: '/r',
      error: null,
      backups: 2,
      newest: { id: '20261202-000000I', finishedAt: '2026-12-02T00:00:10Z' },
      lastVerified: { id: '20261201-000000F', at: '2026-12-01T00:05:00Z', restoreMs: 4_250 },
      lastVerifyFailed: null,
    });
    let text = await metrics.registry.metrics();
    assert.equal(sampleValue(text, 'relevo_archive_backlog_files'), 3);
    assert.equal(sampleValue(text, 'relevo_archive_backlog_bytes'), 3 * 16 * 1024 * 1024);
    assert.equal(sampleValue(text, 'relevo_archive_backlog_level', 'level="warn"'), 1);
    assert.equal(sampleValue(text, 'relevo_archive_backlog_level', 'level="ok"'), 0);
    assert.equal(sampleValue(text, 'relevo_archive_pg_wal_free_bytes'), 1e9);
    assert.equal(sampleValue(text, 'relevo_archive_dropped_segments'), 1);
    assert.equal(sampleValue(text, 'relevo_backups'), 2);
    assert.equal(sampleValue(text, 'relevo_backup_last_finished_timestamp_seconds'), Date.parse('2026-12-02T00:00:10Z') / 1000);
    assert.equal(sampleValue(text, 'relevo_backup_last_verified_timestamp_seconds'), Date.parse('2026-12-01T00:05:00Z') / 1000);
    assert.equal(sampleValue(text, 'relevo_backup_verified_restore_duration_seconds'), 4.25);
    assert.equal(sampleValue(text, 'relevo_backup_verify_failed'), 0);
    metrics.onArchiveStatus(undefined);
    metrics.onBackupSummary({ repository: '/r', error: 'unreachable', backups: 0, newest: null, lastVerified: null, lastVerifyFailed: null });
    text = await metrics.registry.metrics();
    for (const name of ['relevo_archive_backlog_files', 'relevo_archive_backlog_level', 'relevo_backups', 'relevo_backup_last_verified_timestamp_seconds', 'relevo_backup_verify_failed']) {
      assert.equal(sampleValue(text, name), undefined, `${name} is absent when unknown`);
    }
  });

  it('reads server versions as numbers', () => {
    assert.equal(serverVersionNumber('15.4 (Debian 15.4-1.pgdg120+1)'), 150004);
    assert.equal(serverVersionNumber(null), undefined);
  });
});
