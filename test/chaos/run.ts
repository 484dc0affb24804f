/**
 * One chaos run: set up the lab, start the workload (a writer through the
 * router, a writer with a libpq-style multi-host list, a reader through the
 * read-only listener), apply the seeded schedule of faults (inject, hold,
 * heal, wait for convergence), then verify every acknowledged commit on the
 * final primary, run pg_amcheck on every member and check the invariants.
 * Teardown always runs, also on failure and on SIGINT/SIGTERM.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TEST_APP_ROLE } from '../helpers/cluster.js';
import { waitFor } from '../helpers/wait.js';
import { Writer } from '../helpers/writer.js';
import { check, lsnToNumber, pickReadBack, type CheckResult, type FaultRecord, type ReadBackCandidate, type Mode, type WriterLog } from './checker.js';
import { FAULT_KINDS, healAll, injectFault, rng, type FaultKind, type Roles } from './faults.js';
import { ChaosLab, ROUTER_MAX_LAG_BYTES, type Synchronous } from './lab.js';
import { Reader } from './reader.js';

const execFileAsync = promisify(execFile);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface RunOptions {
  seed: number;
  /** Stop starting faults after this long (the fault in progress finishes). */
  durationMs: number;
  /** At most this many faults. */
  maxFaults?: number;
  /** 'both' alternates sync and async from one fault to the next (or every `modeEvery` faults). */
  mode: Mode | 'both';
  /** With mode 'both': switch every this many faults (default 1). A switch costs a config change and a reload wait. */
  modeEvery?: number;
  /** What sync mode means: synchronousMode `on` (FIRST 1, default) or `quorum` (ANY 1). */
  synchronous?: Synchronous;
  /** The store failsafe setting for the whole run (default off). */
  failsafe?: boolean;
  hosts?: number;
  /** Faults to draw from (default: all); `sequence` instead runs exactly these in order. */
  kinds?: readonly FaultKind[];
  sequence?: readonly FaultKind[];
  /** How long a fault stays in place: drawn between these bounds (ms). */
  holdMs?: [number, number];
  /** Convergence bound after healing. */
  convergeTimeoutMs?: number;
  /** After a fault that did not converge, heal once more and wait twice the bound (default) or stop the run at once (false). */
  retryConvergence?: boolean;
  /** Report async-mode overlapping primaries as known issues rather than violations. */
  tolerateAsyncOverlap?: boolean;
  log?: (line: string) => void;
}

export interface RunResult {
  options: RunOptions;
  startedAt: number;
  endedAt: number;
  faults: FaultRecord[];
  check: CheckResult;
  reads: number;
  readFailures: number;
  /** Why the run ended early, if it did. */
  aborted?: string;
  /** Where the acknowledged commits were looked up. */
  readBack?: ReadBack;
}

export interface ReadBack {
  member: string;
  /** false: the cluster had not converged; the member is the best one found (see `how`). */
  converged: boolean;
  how: string;
}

/** Grace for stale reads: the router's view of a replica's lag may be this old (agent loop + router refresh + publish). */
export const READ_GRACE_MS = 3_000;

export async function runChaos(options: RunOptions): Promise<RunResult> {
  const log = options.log ?? ((line: string) => console.log(`# ${line}`));
  const random = rng(options.seed);
  const startMode: Mode = options.mode === 'async' ? 'async' : 'sync';
  let lab: ChaosLab | undefined;
  let interrupted: string | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = `interrupted by ${signal}`;
    log(`${signal}: tearing down`);
    // During setup there is no lab object yet: remove this run's namespaces, processes and mounts by name.
    const done = lab ? lab.teardown() : Promise.resolve(ChaosLab.removeStale(true));
    void done.finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // A crash must not leave hosts behind either: tear down, then die as the crash would have.
  const onCrash = (error: unknown) => {
    log(`crashed: ${(error as Error)?.stack ?? String(error)}`);
    const done = lab ? lab.teardown() : Promise.resolve(ChaosLab.removeStale(true));
    void done.finally(() => process.exit(70));
  };
  process.once('uncaughtException', onCrash);
  try {
    lab = await ChaosLab.create({ hosts: options.hosts ?? 3, mode: startMode, synchronous: options.synchronous ?? 'on', failsafe: options.failsafe ?? false, log });
  } catch (error) {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    throw error;
  }
  return await workload(lab, options, log, random, startMode, onSignal, () => interrupted);
}

async function workload(lab: ChaosLab, options: RunOptions, log: (line: string) => void, random: ReturnType<typeof rng>, startMode: Mode, onSignal: (s: NodeJS.Signals) => void, interruptedBy: () => string | undefined): Promise<RunResult> {
  const startedAt = Date.now();
  const faults: FaultRecord[] = [];
  const serverNames = lab.serverNames;
  const writers = {
    'multi-host': new Writer({
      targets: lab.names.map((n) => ({ name: n, host: lab.net.host(n).address, port: lab.cluster.member(n).config.postgres.port })),
      // An application role: relevo's own roles do not log in over TCP.
      user: TEST_APP_ROLE.user,
      password: TEST_APP_ROLE.password,
      table: 'chaos_multihost',
      serverNames,
      intervalMs: 10,
    }),
    router: new Writer({ targets: [{ name: 'router', host: lab.rw.host, port: lab.rw.port }], user: TEST_APP_ROLE.user, password: TEST_APP_ROLE.password, table: 'chaos_router', serverNames, intervalMs: 10, connectTimeoutMs: 3_000 }),
  };
  const reader = new Reader({ host: lab.ro.host, port: lab.ro.port, user: TEST_APP_ROLE.user, password: TEST_APP_ROLE.password, serverNames });
  let aborted: string | undefined;
  let result: CheckResult | undefined;
  let readBack: ReadBack | undefined;
  const bound = options.convergeTimeoutMs ?? 120_000;
  try {
    for (const w of Object.values(writers)) await w.start();
    reader.start();
    await writers['multi-host'].waitForAcks(20);
    await writers.router.waitForAcks(20);
    let mode = startMode;
    const modeProblems: string[] = [];
    const kinds = options.kinds ?? FAULT_KINDS;
    const [holdMin, holdMax] = options.holdMs ?? [5_000, 12_000];
    for (let index = 0; ; index++) {
      if (interruptedBy()) break;
      if (options.sequence ? index >= options.sequence.length : Date.now() - startedAt >= options.durationMs) break;
      if (options.maxFaults !== undefined && index >= options.maxFaults) break;
      const kind = options.sequence ? options.sequence[index]! : random.pick(kinds);
      const wantMode: Mode = options.mode === 'both' ? (Math.floor(index / Math.max(1, options.modeEvery ?? 1)) % 2 === 0 ? 'sync' : 'async') : options.mode;
      if (wantMode !== mode) {
        try {
          await setMode(lab, wantMode);
          mode = wantMode;
        } catch (error) {
          // Reported as a finding; the run goes on in the mode the cluster is in.
          modeProblems.push(`before fault ${index}: ${(error as Error).message}`);
          log(`mode switch to ${wantMode} failed: ${(error as Error).message}`);
        }
      }
      const roles = await currentRoles(lab);
      const hold = random.int(holdMin, holdMax);
      const at = Date.now();
      const record: FaultRecord = { index, kind, mode, target: '?', detail: '', primaryBefore: roles.primary, at, healedAt: at, convergedAt: null, primaryAfter: null };
      faults.push(record);
      let holdFrom = at;
      try {
        const injected = await injectFault(lab, kind, roles, random, mode);
        record.target = injected.target;
        record.detail = injected.detail;
        holdFrom = injected.holdFrom ?? at;
      } catch (error) {
        record.error = `inject: ${(error as Error).message}`;
      }
      await sleep(Math.max(0, holdFrom + hold - Date.now()));
      await healAll(lab);
      record.healedAt = Date.now();
      try {
        const primary = await converge(lab, bound);
        record.convergedAt = Date.now();
        record.primaryAfter = primary;
      } catch (error) {
        record.error = `${record.error ? `${record.error}; ` : ''}${(error as Error).message.slice(0, 300)}`;
      }
      log(
        `fault ${index} ${kind} (${mode}) on ${record.target}: held ${hold} ms; ${record.convergedAt ? `converged ${record.convergedAt - record.healedAt} ms after heal, primary ${record.primaryBefore} → ${record.primaryAfter}` : `NOT converged: ${record.error}`}`,
      );
      if (record.convergedAt === null) await saveDiagnostics(lab, record, startedAt, log);
      if (record.convergedAt === null && options.retryConvergence === false) {
        aborted = `fault ${index} (${kind}): the cluster did not converge after healing: ${record.error ?? ''}`;
        break;
      }
      if (record.convergedAt === null) {
        // One more full heal and a longer wait; if the cluster still does not converge the run cannot go on.
        await healAll(lab);
        try {
          await converge(lab, bound * 2);
          log('converged after a second heal');
        } catch (error) {
          aborted = `fault ${index} (${kind}): the cluster did not converge after healing: ${(error as Error).message.slice(0, 300)}`;
          break;
        }
      }
      // Writes resume before the next fault, so each fault's window starts from a working cluster.
      await writers['multi-host'].waitForAcks(5, 30_000).catch(() => undefined);
      await writers.router.waitForAcks(5, 30_000).catch(() => undefined);
    }
    const endedFaults = Date.now();
    await sleep(1_000);
    for (const w of Object.values(writers)) await w.stop();
    await reader.stop();
    const logs: WriterLog[] = [];
    const finalProblems: string[] = modeProblems.map((p) => `synchronous mode switch not applied ${p}`);
    // Lost commits are verified also when the run ended by a non-convergence: read back from the member that
    // holds the cluster's newest data (readBackMember), and say so in the verdict.
    try {
      readBack = await readBackMember(lab, aborted ? 30_000 : bound);
      if (!readBack.converged) log(`read-back without convergence: ${readBack.how}`);
    } catch (error) {
      finalProblems.push(`no member to read the writers' tables from: ${(error as Error).message}`);
    }
    for (const [name, w] of Object.entries(writers)) {
      try {
        if (!readBack) throw new Error('no member to read from');
        logs.push({ name, acks: w.acks, present: await presentIds(lab, readBack.member, w.options.table) });
      } catch (error) {
        finalProblems.push(`${name}: could not read its table${readBack ? ` on ${readBack.member}` : ''}: ${(error as Error).message}`);
        logs.push({ name, acks: w.acks, present: null });
      }
    }
    const amcheck = await runAmcheck(lab);
    result = check({ faults, writers: logs, reads: reader.reads, maxLagBytes: ROUTER_MAX_LAG_BYTES, graceMs: READ_GRACE_MS, amcheck, finalProblems, tolerateAsyncOverlap: options.tolerateAsyncOverlap ?? false });
    log(`faults done in ${Math.round((endedFaults - startedAt) / 1000)} s; ${result.violations.length} violations`);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await writers['multi-host'].stop().catch(() => undefined);
    await writers.router.stop().catch(() => undefined);
    await reader.stop().catch(() => undefined);
    await lab.teardown();
  }
  return { options, startedAt, endedAt: Date.now(), faults, check: result, reads: reader.reads.length, readFailures: reader.failures, ...(readBack ? { readBack } : {}), ...(aborted ? { aborted } : {}) };
}

async function currentRoles(lab: ChaosLab): Promise<Roles> {
  const members = await lab.cluster.waitHealthy(lab.names, 60_000);
  const primary = members.find((m) => m.state === 'primary')!.name;
  return { primary, replicas: lab.names.filter((n) => n !== primary) };
}

/** One primary, every other member streaming, every etcd member healthy, the router routing to that primary. */
async function converge(lab: ChaosLab, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  await lab.etcd.waitHealthy(lab.names, timeoutMs);
  const members = await lab.cluster.waitHealthy(lab.names, Math.max(1_000, deadline - Date.now()));
  const primary = members.find((m) => m.state === 'primary')!.name;
  await waitFor(
    `the router to route to ${primary}`,
    async () => (await lab.router.stats()).primary === primary,
    Math.max(1_000, deadline - Date.now()),
    250,
  );
  return primary;
}

async function setMode(lab: ChaosLab, mode: Mode): Promise<void> {
  const value = mode === 'sync' ? lab.synchronous : 'off';
  const result = await lab.cluster.cli(['config', 'set', `synchronousMode=${value}`]);
  if (result.code !== 0) throw new Error(`relevo config set synchronousMode=${value}: ${result.stderr || result.stdout}`);
  // Applied once the primary's synchronous_standby_names says so.
  await waitFor(
    `synchronous mode ${value} applied`,
    async () => {
      const { primary } = await currentRoles(lab);
      const rows = await lab.cluster.sql<{ s: string }>(primary, "SELECT current_setting('synchronous_standby_names') AS s");
      const names = rows[0]?.s ?? '';
      return mode === 'sync' ? names !== '' : names === '';
    },
    60_000,
    250,
  );
}

async function presentIds(lab: ChaosLab, member: string, table: string): Promise<Set<number>> {
  const rows = await lab.cluster.sql<{ id: string }>(member, `SELECT id FROM ${table}`);
  return new Set(rows.map((r) => Number(r.id)));
}

/**
 * The member to verify acknowledged commits on. Normally the converged
 * primary. When the cluster does not converge (the run ended early, or the
 * last fault left a member behind), heal once more and pick, among the
 * members that answer, the one running as primary on the newest timeline
 * (then the furthest WAL position); with no primary, the standby that
 * replayed furthest. An id missing there is counted as lost: a lower bound of
 * what survived is better than no verdict at all (chaos-2026-12-01T06-12-43
 * ended with its losses unverified).
 */
async function readBackMember(lab: ChaosLab, timeoutMs: number): Promise<ReadBack> {
  try {
    return { member: await converge(lab, timeoutMs), converged: true, how: 'converged primary' };
  } catch (error) {
    await healAll(lab).catch(() => undefined);
    const reason = (error as Error).message.slice(0, 200);
    const seen: ReadBackCandidate[] = [];
    for (const name of lab.names) {
      try {
        const rows = await lab.cluster.sql<{ recovery: boolean; timeline: string; lsn: string }>(
          name,
          `SELECT pg_is_in_recovery() AS recovery,
                  CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver UNION ALL SELECT timeline_id FROM pg_control_checkpoint() LIMIT 1)
                       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END::text AS timeline,
                  CASE WHEN pg_is_in_recovery() THEN COALESCE(pg_last_wal_replay_lsn(), '0/0') ELSE pg_current_wal_lsn() END::text AS lsn`,
        );
        const row = rows[0]!;
        seen.push({ name, recovery: row.recovery, timeline: Number(row.timeline), lsn: lsnToNumber(row.lsn) });
      } catch {
        // Not answering: not a candidate.
      }
    }
    const best = pickReadBack(seen);
    if (!best) throw new Error(`no member answers (${reason})`);
    return {
      member: best.name,
      converged: false,
      how: `not converged (${reason}); read back on ${best.name}, ${best.recovery ? 'a standby (no member runs as primary)' : 'running as primary'} on timeline ${best.timeline} at WAL position ${best.lsn.toString(16)} (answered: ${seen.map((s) => s.name).join(', ')})`,
    };
  }
}

/** pg_amcheck (Debian 15) on every member: the database the writers use, heap and btree indexes (heapallindexed), over the member's Unix socket. */
async function runAmcheck(lab: ChaosLab): Promise<Record<string, { ok: boolean; output: string }>> {
  const out: Record<string, { ok: boolean; output: string }> = {};
  for (const name of lab.names) {
    const config = lab.cluster.member(name).config.postgres;
    try {
      const { stdout, stderr } = await execFileAsync(
        '/usr/lib/postgresql/15/bin/pg_amcheck',
        ['-h', config.socketDir!, '-p', String(config.port), '-U', 'relevo', '--heapallindexed', 'postgres'],
        { env: { ...process.env, PGPASSWORD: lab.password }, timeout: 300_000 },
      );
      out[name] = { ok: true, output: `${stdout}${stderr}`.trim() };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string; message: string };
      out[name] = { ok: false, output: `exit ${e.code}: ${e.stdout ?? ''}${e.stderr ?? e.message}`.trim() };
    }
  }
  return out;
}

/**
 * A fault after which the cluster did not converge: each member's state and
 * reason go to the run's log, and the tails of its agent and PostgreSQL logs
 * to RELEVO_CHAOS_DIAG_DIR (default <tmp>/relevo-chaos-diag/<run start>/),
 * before the second heal or the teardown erases them.
 */
async function saveDiagnostics(lab: ChaosLab, record: FaultRecord, startedAt: number, log: (line: string) => void): Promise<void> {
  try {
    const dir = join(process.env.RELEVO_CHAOS_DIAG_DIR ?? join(tmpdir(), 'relevo-chaos-diag'), new Date(startedAt).toISOString().replace(/[:.]/g, '-'), `fault-${record.index}-${record.kind}`);
    mkdirSync(dir, { recursive: true });
    const statuses = await lab.cluster.memberStatuses().catch((error: Error) => { log(`diagnostics: member statuses unreadable: ${error.message}`); return []; });
    for (const m of statuses) log(`  ${m.name}: ${m.state} (${m.role}): ${m.reason.slice(0, 300)}`);
    writeFileSync(join(dir, 'statuses.json'), `${JSON.stringify(statuses, null, 2)}\n`);
    for (const name of lab.names) {
      writeFileSync(join(dir, `${name}.agent.log`), lab.cluster.logTail(name, 400));
      const pgLog = `${lab.cluster.member(name).config.postgres.dataDir}.log`;
      try {
        writeFileSync(join(dir, `${name}.postgres.log`), readFileSync(pgLog, 'utf8').split('\n').slice(-300).join('\n'));
      } catch (error) {
        writeFileSync(join(dir, `${name}.postgres.log`), `(unreadable: ${(error as Error).message})`);
      }
    }
    log(`diagnostics of fault ${record.index} saved in ${dir}`);
  } catch (error) {
    log(`diagnostics not saved: ${(error as Error).message}`);
  }
}
