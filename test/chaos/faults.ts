/**
 * The chaos faults. Each one is injected on the current roles and left in
 * place for the hold time; `healAll()` then undoes every fault at once (filters
 * removed, stopped processes continued, dead etcd members and agents started
 * again, the disk emptied), so healing never depends on which fault ran.
 *
 * Not possible here, and why (docs/reliability.md repeats it):
 *  - a fixed packet delay: this kernel has no sch_netem ("Specified qdisc kind
 *    is unknown") and nftables cannot delay packets. What is offered instead is
 *    a throttled link (tc tbf, which exists): packets queue behind the token
 *    bucket, so they are delayed by up to the queue's latency, and dropped past it.
 *  - a clock step on one host: CLOCK_REALTIME is not namespaced (time
 *    namespaces offset only CLOCK_MONOTONIC/BOOTTIME, and only before the first
 *    process enters them), and libfaketime is not installed; stepping the real
 *    clock would step every "host" and every other helper's processes at once.
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { clusterKeys } from '../../src/cluster/keys.js';
import { FAULT_TEST_TTL_MS } from '../helpers/cluster.js';
import { waitFor } from '../helpers/wait.js';
import type { Mode } from './checker.js';
import type { ChaosLab } from './lab.js';

export const FAULT_KINDS = [
  'isolate-primary',
  'isolate-primary-inbound',
  'isolate-primary-outbound',
  'isolate-replica',
  'partition-primary-minority',
  'partition-replica-minority',
  'loss-primary',
  'loss-replica',
  'slow-link-primary',
  'slow-link-replica',
  'kill-agent',
  'stop-agent',
  'kill-postgres',
  'stop-postgres',
  'freeze-agent-postmaster',
  'stop-walreceiver',
  'kill-walreceiver',
  'etcd-member-loss',
  'etcd-quorum-loss',
  'etcd-freeze',
  'etcd-freeze-replica-cut',
  'quorum-change-replica-loss',
  'quorum-change-primary-loss',
  'host-restart',
  'wal-disk-full',
] as const;

export type FaultKind = (typeof FAULT_KINDS)[number];

export const FAULT_TEXT: Record<FaultKind, string> = {
  'isolate-primary': "primary's host cut off, both directions (nftables drop on every non-loopback packet)",
  'isolate-primary-inbound': "primary's host receives nothing (it can still send)",
  'isolate-primary-outbound': "primary's host sends nothing (it can still receive)",
  'isolate-replica': "a replica's host cut off, both directions",
  'partition-primary-minority': "primary's host cut off from the other hosts only (clients still reach it)",
  'partition-replica-minority': "a replica's host cut off from the other hosts only",
  'loss-primary': "random packet loss on the primary's host (nftables numgen)",
  'loss-replica': "random packet loss on a replica's host",
  'slow-link-primary': "primary's link throttled (tc tbf): packets queue, so they are delayed up to 1 s and dropped beyond",
  'slow-link-replica': "a replica's link throttled (tc tbf), delays up to 1 s",
  'kill-agent': "SIGKILL the primary's agent (restarted at heal)",
  'stop-agent': "SIGSTOP the primary's agent",
  'kill-postgres': "SIGKILL the primary's whole PostgreSQL tree",
  'stop-postgres': "SIGSTOP the primary's whole PostgreSQL tree",
  'freeze-agent-postmaster': "SIGSTOP the primary's agent and postmaster while its backends keep serving",
  'stop-walreceiver': "SIGSTOP a replica's walreceiver",
  'kill-walreceiver': "SIGKILL a replica's walreceiver",
  'etcd-member-loss': 'SIGKILL one etcd member (on a random host)',
  'etcd-quorum-loss': 'SIGKILL a majority of etcd members',
  'etcd-freeze': 'SIGSTOP every etcd member: the store hangs while every relevo member is up (the failsafe case)',
  'etcd-freeze-replica-cut':
    "every etcd member SIGSTOPped; once the primary rides on failsafe (1.5 × ttlMs later), one replica's host cut off from the primary's host both ways: failsafe must end and the primary stop; held from the cut",
  'quorum-change-replica-loss':
    "a replica killed (agent + PostgreSQL) until the synchronous record drops it, started again, and the other replica killed the moment the record lists it again (quorum record grown, setting not yet or just reloaded); held from that kill",
  'quorum-change-primary-loss': 'as quorum-change-replica-loss, but the primary (agent + PostgreSQL) is killed the moment the record grows back: a failover from a record in the middle of a change',
  'host-restart': "the primary's host dies (agent, PostgreSQL, etcd SIGKILLed) and boots again at heal",
  'wal-disk-full': "the primary's disk (tmpfs holding pg_wal) fills up while WAL is switched",
};

export interface Roles {
  primary: string;
  replicas: string[];
}

export interface Rng {
  next(): number;
  int(min: number, max: number): number;
  pick<T>(list: readonly T[]): T;
}

/** mulberry32: small, seedable, good enough to pick faults reproducibly. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  return {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick: (list) => list[Math.floor(next() * list.length)]!,
  };
}

const NOT_LOOPBACK_IN = 'iifname != "lo"';
const NOT_LOOPBACK_OUT = 'oifname != "lo"';
const BALLAST = 'chaos-ballast';

/** What a fault did; `holdFrom`: the hold counts from then (a fault that takes time to set up), not from its start. */
export interface Injection {
  target: string;
  detail: string;
  holdFrom?: number;
}

/** Injects one fault in the cluster's current mode; returns the member or host it hit and what exactly was done. */
export async function injectFault(lab: ChaosLab, kind: FaultKind, roles: Roles, random: Rng, mode: Mode = 'sync'): Promise<Injection> {
  const { net, faults, cluster, etcd } = lab;
  const replica = random.pick(roles.replicas);
  const p = roles.primary;
  const peersOf = (name: string) => lab.names.filter((n) => n !== name).map((n) => net.host(n).address);
  switch (kind) {
    case 'isolate-primary':
    case 'isolate-replica': {
      const target = kind === 'isolate-primary' ? p : replica;
      net.filter(target, { input: [`${NOT_LOOPBACK_IN} drop`], output: [`${NOT_LOOPBACK_OUT} drop`] });
      return { target, detail: 'all non-loopback traffic dropped both ways' };
    }
    case 'isolate-primary-inbound':
      net.filter(p, { input: [`${NOT_LOOPBACK_IN} drop`] });
      return { target: p, detail: 'inbound dropped' };
    case 'isolate-primary-outbound':
      net.filter(p, { output: [`${NOT_LOOPBACK_OUT} drop`] });
      return { target: p, detail: 'outbound dropped' };
    case 'partition-primary-minority':
    case 'partition-replica-minority': {
      const target = kind === 'partition-primary-minority' ? p : replica;
      const peers = `{ ${peersOf(target).join(', ')} }`;
      net.filter(target, { input: [`ip saddr ${peers} drop`], output: [`ip daddr ${peers} drop`] });
      return { target, detail: `minority {${target}} | majority {${lab.names.filter((n) => n !== target).join(', ')}}` };
    }
    case 'loss-primary':
    case 'loss-replica': {
      const target = kind === 'loss-primary' ? p : replica;
      const percent = random.pick([5, 10, 20, 30, 50]);
      const rule = (dir: string) => `${dir} numgen random mod 100 < ${percent} drop`;
      net.filter(target, { input: [rule(NOT_LOOPBACK_IN)], output: [rule(NOT_LOOPBACK_OUT)] });
      return { target, detail: `${percent}% of packets dropped each way` };
    }
    case 'slow-link-primary':
    case 'slow-link-replica': {
      const target = kind === 'slow-link-primary' ? p : replica;
      const kbit = random.pick([64, 128, 256, 512]);
      net.shape(target, { kbit, latencyMs: 1_000 });
      return { target, detail: `${kbit} kbit/s each way, queue up to 1 s` };
    }
    case 'kill-agent':
      await faults.kill(p, 'agent');
      return { target: p, detail: 'agent SIGKILLed' };
    case 'stop-agent':
      faults.stop(p, 'agent');
      return { target: p, detail: 'agent SIGSTOPped' };
    case 'kill-postgres':
      await faults.kill(p, 'postgres');
      return { target: p, detail: 'postmaster and every child SIGKILLed' };
    case 'stop-postgres':
      faults.stop(p, 'postgres');
      return { target: p, detail: 'postmaster and every child SIGSTOPped' };
    case 'freeze-agent-postmaster': {
      const { pids } = faults.stopAgentAndPostmaster(p);
      return { target: p, detail: `agent and postmaster SIGSTOPped (${pids.length} processes), backends running` };
    }
    case 'stop-walreceiver':
      faults.stopByTitle(replica, /walreceiver/);
      return { target: replica, detail: 'walreceiver SIGSTOPped' };
    case 'kill-walreceiver': {
      const found = faults.postgresTree(replica).filter((x) => /walreceiver/.test(x.title));
      for (const x of found) {
        try {
          process.kill(x.pid, 'SIGKILL');
        } catch {
          // exited meanwhile
        }
      }
      return { target: replica, detail: `walreceiver SIGKILLed (${found.length})` };
    }
    case 'etcd-member-loss': {
      const target = random.pick(lab.names);
      await etcd.killMember(target);
      return { target, detail: `etcd member on ${target} SIGKILLed` };
    }
    case 'etcd-quorum-loss': {
      const majority = Math.floor(lab.names.length / 2) + 1;
      const victims = [...lab.names].sort(() => random.next() - 0.5).slice(0, majority);
      for (const v of victims) await etcd.killMember(v);
      return { target: victims.join('+'), detail: `etcd members on ${victims.join(', ')} SIGKILLed (quorum lost)` };
    }
    case 'etcd-freeze': {
      const pids = lab.names.map((n) => etcd.pid(n)).filter((pid): pid is number => pid !== undefined);
      const { pids: stopped } = faults.stopPids(pids);
      return { target: lab.names.join('+'), detail: `every etcd member SIGSTOPped (${stopped.length} processes)` };
    }
    case 'etcd-freeze-replica-cut': {
      const pids = lab.names.map((n) => etcd.pid(n)).filter((pid): pid is number => pid !== undefined);
      faults.stopPids(pids);
      await new Promise((resolve) => setTimeout(resolve, 1.5 * FAULT_TEST_TTL_MS));
      const primaryAddress = net.host(p).address;
      net.filter(replica, { input: [`ip saddr ${primaryAddress} drop`], output: [`ip daddr ${primaryAddress} drop`] });
      return { target: replica, detail: `etcd frozen, then ${replica} cut off from ${p} after ${1.5 * FAULT_TEST_TTL_MS} ms`, holdFrom: Date.now() };
    }
    case 'quorum-change-replica-loss':
    case 'quorum-change-primary-loss':
      return await lossDuringRecordChange(lab, kind === 'quorum-change-primary-loss' ? p : roles.replicas.find((r) => r !== replica)!, replica, mode);
    case 'host-restart':
      await etcd.killMember(p);
      await faults.kill(p, 'both');
      return { target: p, detail: 'agent, PostgreSQL and etcd SIGKILLed; all started again at heal' };
    case 'wal-disk-full': {
      const free = lab.freeBytes(p);
      const leave = 4 * 1024 * 1024;
      execFileSync('fallocate', ['-l', String(Math.max(0, free - leave)), join(lab.disk(p), BALLAST)]);
      // New WAL segments are needed only when the writers cross a segment: switch segments until one cannot be created.
      let outcome = 'no error';
      for (let i = 0; i < 8; i++) {
        try {
          await cluster.sql(p, 'SELECT pg_switch_wal()');
          await cluster.sql(p, 'CREATE TABLE IF NOT EXISTS chaos_fill (x int); INSERT INTO chaos_fill VALUES (1)');
        } catch (error) {
          outcome = (error as Error).message;
          break;
        }
      }
      return { target: p, detail: `disk filled to ${Math.round(leave / 1024 / 1024)} MB free; PostgreSQL: ${outcome.slice(0, 120)}` };
    }
  }
}

/** Members of the record that guards acknowledged commits in this mode (quorum record, else the `on`-mode sync record), or undefined without one. */
async function guardMembers(lab: ChaosLab, mode: Mode): Promise<string[] | undefined> {
  if (mode === 'async') return undefined;
  const keys = clusterKeys(lab.cluster.clusterName);
  const kv = await lab.cluster.store.get(lab.synchronous === 'quorum' ? keys.quorum : keys.sync).catch(() => undefined);
  if (!kv) return undefined;
  try {
    return (JSON.parse(kv.value) as { members?: string[] }).members ?? [];
  } catch {
    return undefined;
  }
}

/**
 * Member loss in the middle of a synchronous-record change: `leaving` is killed
 * until the record drops it (shrink), started again, and `victim` killed the
 * moment the record lists `leaving` again (grow), before or just as the
 * primary names it in synchronous_standby_names. With no record change to see
 * (async mode, or an `on` record that never named `leaving`), the victim dies
 * as soon as `leaving` streams again.
 */
async function lossDuringRecordChange(lab: ChaosLab, victim: string, leaving: string, mode: Mode): Promise<Injection> {
  const started = Date.now();
  const steps: string[] = [];
  await lab.faults.kill(leaving, 'both');
  const shrunk = await waitFor(`${leaving} out of the synchronous record`, async () => {
    const members = await guardMembers(lab, mode);
    return members === undefined || !members.includes(leaving) ? (members ?? []) : undefined;
  }, 30_000, 50).then(
    (members) => `record [${members.join(', ')}] after ${Date.now() - started} ms`,
    () => 'record still lists it after 30 s',
  );
  steps.push(`${leaving} killed, ${shrunk}`);
  const back = Date.now();
  lab.cluster.startAgent(leaving);
  const grown = await waitFor(`${leaving} back in the synchronous record`, async () => {
    const members = await guardMembers(lab, mode);
    if (members?.includes(leaving)) return `record grew to [${members.join(', ')}] ${Date.now() - back} ms after restart`;
    // No record change to wait for: once it streams again.
    const status = members === undefined || lab.synchronous === 'on' ? await lab.cluster.status(leaving).catch(() => undefined) : undefined;
    // A status published before the kill may still be in the store until its lease lapses.
    const fresh = status !== undefined && Date.parse(status.updatedAt) > back;
    return fresh && status.state === 'replica' && status.streaming ? `streaming ${Date.now() - back} ms after restart, record unchanged` : undefined;
  }, 60_000, 25).catch(() => 'not back within 60 s');
  steps.push(`${leaving} started again, ${grown}`);
  await lab.faults.kill(victim, 'both');
  const holdFrom = Date.now();
  steps.push(`${victim} killed (agent + PostgreSQL)`);
  return { target: victim, detail: steps.join('; '), holdFrom };
}

/** Undoes every fault: filters, stopped processes, dead etcd members and agents, the disk ballast. */
export async function healAll(lab: ChaosLab): Promise<void> {
  for (const name of lab.names) {
    lab.net.filter(name, {});
    lab.net.shape(name);
  }
  await lab.faults.cleanup();
  for (const name of lab.names) {
    rmSync(join(lab.disk(name), BALLAST), { force: true });
    lab.etcd.startMember(name);
  }
  for (const name of lab.names) {
    const agent = lab.cluster.member(name).agent;
    if (!agent || agent.exitCode !== null || agent.signalCode !== null) lab.cluster.startAgent(name);
  }
}
