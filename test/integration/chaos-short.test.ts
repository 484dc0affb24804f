/**
 * The short chaos schedule of the default suite: three namespaced hosts (each
 * with etcd, PostgreSQL and an agent), the router on a client host, writers
 * through the router and with a multi-host list, a reader through the
 * read-only listener; a fixed sequence of faults in synchronous mode, each
 * healed and followed by convergence. Fails on any checker violation: a lost
 * acknowledged commit, two members acknowledging writes in overlapping
 * intervals, a stale read, no convergence, a pg_amcheck failure.
 * The long, seeded run of every fault kind in both modes is `npm run chaos:long`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FaultKind } from '../chaos/faults.js';
import { labUnavailable } from '../chaos/lab.js';
import { verdictMarkdown } from '../chaos/report.js';
import { runChaos } from '../chaos/run.js';

const SEQUENCE: FaultKind[] = ['isolate-primary', 'freeze-agent-postmaster', 'partition-replica-minority', 'etcd-quorum-loss', 'host-restart', 'stop-postgres'];

describe('chaos, short schedule (sync mode)', { timeout: 300_000, skip: labUnavailable() ?? false }, () => {
  it(`survives ${SEQUENCE.join(', ')} with no violation`, async () => {
    const run = await runChaos({ seed: 1, durationMs: 0, sequence: SEQUENCE, mode: 'sync', holdMs: [4_000, 4_500], convergeTimeoutMs: 90_000, retryConvergence: false });
    const verdict = verdictMarkdown(run, 'short schedule of the default suite');
    console.log(verdict.split('\n').map((l) => `# ${l}`).join('\n'));
    assert.equal(run.aborted, undefined, run.aborted);
    assert.equal(run.faults.length, SEQUENCE.length);
    const total = run.check.totals.sync;
    assert.ok((total['multi-host']?.acked ?? 0) > 100 && (total.router?.acked ?? 0) > 100, 'both writers made progress');
    assert.ok(run.check.reads > 10, 'the reader read through the read-only listener');
    assert.deepEqual(run.check.violations, []);
  });
});
