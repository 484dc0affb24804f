/**
 * Shared by the standby-loss, quorum and failsafe integration tests: a
 * 3-member cluster on etcd with a multi-host writer running, torn down by PID
 * in one `after` hook, with every member's log attached to a failure.
 */
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { clusterKeys } from '../../src/cluster/keys.js';
import type { ClusterSettings } from '../../src/cluster/settings.js';
import { FAULT_TEST_MEMBERS, TEST_APP_ROLE, TestCluster } from './cluster.js';
import { startEtcd, type EtcdProcess } from './etcd.js';
import { Faults } from './faults.js';
import { freePorts } from './ports.js';
import { RouterProcess } from './router-process.js';
import { waitFor } from './wait.js';
import { clusterCaFile } from '../../src/tls/member.js';
import { Writer } from './writer.js';

export interface LossCase {
  cluster: TestCluster;
  faults: Faults;
  etcd: EtcdProcess;
  writer: Writer;
  primary: string;
  replicas: string[];
  /** With `router: true`: `relevo router` from the first member's file, and a second writer through its read-write port. */
  router?: RouterProcess;
  routed?: Writer;
}

export const NAMES = FAULT_TEST_MEMBERS;

/** A healthy cluster with `settings` and a writer that has acknowledged 50 commits (and a router with its own writer, on request). */
export async function lossCase(t: TestContext, settings: Partial<ClusterSettings>, table: string, memberExtra: Record<string, unknown> = {}, options: { router?: boolean } = {}): Promise<LossCase> {
  const parts: Partial<LossCase> = {};
  t.after(async () => {
    await parts.writer?.stop().catch(() => undefined);
    await parts.routed?.stop().catch(() => undefined);
    await parts.faults?.cleanup();
    await parts.router?.stop().catch(() => undefined);
    await parts.cluster?.destroy();
    await parts.etcd?.stop();
  });
  parts.etcd = await startEtcd();
  parts.cluster = await TestCluster.create({ store: { endpoints: parts.etcd.endpoints }, settings });
  parts.faults = new Faults(parts.cluster);
  let rwPort: number | undefined;
  let metrics: string | undefined;
  if (options.router) {
    const [rw, metricsPort] = await freePorts(2);
    rwPort = rw;
    metrics = `127.0.0.1:${metricsPort}`;
  }
  for (const name of NAMES) {
    // The router section in the first member's file, as an operator writes it; run as `relevo router -c` (not embedded).
    const router = rwPort !== undefined && name === NAMES[0] ? { router: { listen: { readWrite: `127.0.0.1:${rwPort}`, readOnly: null }, metrics } } : {};
    await parts.cluster.defineMember(name, { ...memberExtra, ...router });
  }
  for (const name of NAMES) parts.cluster.startAgent(name);
  const members = await parts.cluster.waitHealthy(NAMES, 90_000);
  parts.primary = members.find((m) => m.state === 'primary')!.name;
  parts.replicas = members.filter((m) => m.name !== parts.primary).map((m) => m.name);
  parts.writer = Writer.forCluster(parts.cluster, table);
  await parts.writer.start();
  if (rwPort !== undefined && metrics !== undefined) {
    const first = parts.cluster.member(NAMES[0]!);
    const router = (parts.router = RouterProcess.start(first.file, join(parts.cluster.dir, 'router.log'), metrics));
    const primary = parts.primary;
    await waitFor(`the router routing writes to ${primary}`, async () => (await router.stats().catch(() => undefined))?.primary === primary, 30_000, 100);
    // The relay carries TLS end to end: the client verifies the member's certificate against the cluster CA.
    const tlsCaFile = clusterCaFile(first.config);
    parts.routed = new Writer({ targets: [{ name: 'router', host: '127.0.0.1', port: rwPort }], user: TEST_APP_ROLE.user, password: TEST_APP_ROLE.password, ...(tlsCaFile ? { tlsCaFile } : {}), table: `${table}_routed` });
    await parts.routed.start();
    await parts.routed.waitForAcks(50);
  }
  await parts.writer.waitForAcks(50);
  return parts as LossCase;
}

/** The record under `key` (sync or quorum) as JSON, or undefined. */
export async function readRecord<T>(c: LossCase, key: 'sync' | 'quorum'): Promise<(T & { revision: number }) | undefined> {
  const keys = clusterKeys(c.cluster.clusterName);
  const kv = await c.cluster.store.get(keys[key]);
  return kv ? { ...(JSON.parse(kv.value) as T), revision: kv.revision } : undefined;
}

/** Every member's status line and agent log tail, for a failing assertion. */
export async function lossDiagnostics(c: Partial<LossCase>): Promise<string> {
  if (!c.cluster) return '(no cluster)';
  const parts: string[] = [];
  const statuses = await c.cluster.memberStatuses().catch(() => []);
  for (const name of NAMES) {
    const s = statuses.find((m) => m.name === name);
    parts.push(`--- ${name}: ${s ? `state=${s.state} role=${s.role} streaming=${s.streaming} reason=${s.reason}` : 'no status'}`, c.cluster.logTail(name, 30));
  }
  if (c.router) parts.push('--- router:', c.router.tail(30));
  if (c.routed) parts.push(`--- writer through the router: ${c.routed.acknowledged} acknowledged; last failures: ${c.routed.lastFailures()}`);
  if (c.writer) parts.push(`--- writer: ${c.writer.acknowledged} acknowledged, ${c.writer.serverSequence()}; last failures: ${c.writer.lastFailures()}`);
  return parts.join('\n');
}

/** Runs a test body; a failure carries every member's status and log tail. */
export async function withDiagnostics(c: LossCase, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    const text = await lossDiagnostics(c);
    if (error instanceof Error) {
      error.message = `${error.message}\n${text}`;
      throw error;
    }
    throw new Error(`${String(error)}\n${text}`);
  }
}
