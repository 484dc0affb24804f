import { readCluster } from '../agent/observe.js';
import { memberStatusOf, OperationError, readHistory, requestFailover, requestSwitchover, setPaused } from '../cluster/operations.js';
import { planRoll, RollError, rollingRestart, type RollDriver, type RollMode, type RollOptions } from '../cluster/rolling-restart.js';
import type { FailoverRequest } from '../cluster/types.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';
import { renderTable } from './table.js';
import { agentApiCall } from './agent-api.js';
import { longestPause, WriteProbe } from './write-probe.js';
import { loadCredentials, ROLE_NAMES } from '../config/secrets.js';
import { clusterCaFile } from '../tls/member.js';
import { splitHostPort } from '../postgres/conf.js';

/** Turns an OperationError into the CLI's "impossible request" exit code. */
async function refusalsAsUsage<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof OperationError) throw new CliError(error.code, error.message);
    throw error;
  }
}

/** Waits until the request is gone and a primary other than `from` holds the lease. */
async function awaitNewPrimary(handle: ClusterHandle, request: FailoverRequest, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs + (request.at ? Math.max(0, Date.parse(request.at) - Date.now()) : 0);
  while (Date.now() < deadline) {
    const { view } = await readCluster(handle.store, handle.keys);
    if (view.reachable && !view.failover && view.leader) {
      const leader = view.members.find((m) => m.name === view.leader!.member);
      if (leader?.state === 'primary') {
        if (view.leader.member === request.from) throw new CliError('OPERATION_NOT_DONE', `${request.kind} did not happen: ${request.from} is still the primary (see its agent log)`);
        return view.leader.member;
      }
    }
    // Often: the command returns as soon as the new primary runs (a few store reads more during a switchover).
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new CliError('OPERATION_NOT_DONE', `${request.kind} not finished after ${timeoutMs / 1000} s; check \`relevo list\``);
}

export async function switchover(handle: ClusterHandle, options: { to?: string; at?: string; wait: boolean; measurePause?: boolean }): Promise<string> {
  const warn = (message: string) => console.error(`relevo: warning: ${message}`);
  // Started before the request, so that it has commits on the old primary to measure from.
  const probe = options.wait && options.measurePause !== false ? await startWriteProbe(handle) : undefined;
  try {
    const request = await refusalsAsUsage(() => requestSwitchover(handle.store, handle.keys, { ...options, warn }));
    if (!options.wait) return `switchover from ${request.from} requested${request.at ? ` for ${request.at}` : ''}`;
    const started = Date.now();
    const leader = await awaitNewPrimary(handle, request, 90_000);
    const done = `switchover done: ${leader} is the primary (${((Date.now() - started) / 1000).toFixed(1)} s)`;
    if (!probe) return done;
    if ('reason' in probe) return `${done}; write pause not measured: ${probe.reason}`;
    await probe.ackedBy(leader, 10_000);
    const pause = longestPause(probe.acks, request.from!, leader);
    return pause.measured
      ? `${done}; longest write pause ${(pause.pauseMs / 1000).toFixed(2)} s (a probe committing every ${PROBE_INTERVAL_MS} ms, reconnecting at once)`
      : `${done}; write pause not measured: ${pause.reason}`;
  } finally {
    if (probe && !('reason' in probe)) await probe.stop();
  }
}

const PROBE_INTERVAL_MS = 20;

/** A write probe over every member's address as relevo's network role, once it has a first commit; or why there is none. */
async function startWriteProbe(handle: ClusterHandle): Promise<WriteProbe | { reason: string }> {
  const credentials = loadCredentials(handle.config);
  if (!credentials) return { reason: `no agent credentials in ${handle.config.secrets.file} on this host` };
  const { view } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) return { reason: `store unreachable: ${view.error}` };
  const leader = view.leader?.member;
  if (!leader) return { reason: 'no primary to measure from' };
  const tlsCaFile = clusterCaFile(handle.config);
  // The primary first: the probe starts on it and moves only when it stops taking commits.
  const members = [...view.members].sort((a, b) => Number(b.name === leader) - Number(a.name === leader));
  const probe = new WriteProbe(
    members.map((m) => {
      const [host, port] = splitHostPort(m.connectAddress);
      return { member: m.name, target: { host, port, user: ROLE_NAMES.network, password: credentials.agentPassword, database: 'postgres', tlsCaFile } };
    }),
    PROBE_INTERVAL_MS,
  );
  if (await probe.ackedBy(leader, 5_000)) return probe;
  await probe.stop();
  return { reason: `the primary ${leader} did not acknowledge a probe commit within 5 s` };
}

export async function failover(handle: ClusterHandle, options: { to: string; force: boolean; wait: boolean }): Promise<string> {
  const request = await refusalsAsUsage(() => requestFailover(handle.store, handle.keys, options.to, options.force));
  if (!options.wait) return `${request.kind} to ${options.to} requested`;
  const leader = await awaitNewPrimary(handle, request, 90_000);
  return `${request.kind} done: ${leader} is the primary`;
}

export async function pause(handle: ClusterHandle, paused: boolean): Promise<string> {
  await refusalsAsUsage(() => setPaused(handle.store, handle.keys, paused));
  return paused ? 'cluster paused: agents take no automatic action until `relevo resume`' : 'cluster resumed: automatic failover is active again';
}

export async function history(handle: ClusterHandle, json: boolean): Promise<string> {
  const entries = await readHistory(handle.store, handle.keys);
  if (json) return JSON.stringify(entries, null, 2);
  return renderTable(
    ['TL', 'At', 'From', 'To', 'Fork LSN', 'Reason'],
    entries.map((e) => [String(e.timeline), e.at, e.from ?? '-', e.to, e.lsn ?? '-', e.reason]),
  );
}

/** restart/reinit go to the member's own agent over its REST API, authenticated with the member file's api.auth. */
export async function memberCommand(handle: ClusterHandle, kind: 'restart' | 'reinit', member: string): Promise<string> {
  const status = await refusalsAsUsage(() => memberStatusOf(handle.store, handle.keys, member));
  if (kind === 'reinit') {
    const { view } = await readCluster(handle.store, handle.keys);
    if (view.reachable && view.leader?.member === member) throw new CliError('PRIMARY_REINIT', `member ${member} is the primary: reinit would destroy the only copy; switch over first`);
  }
  // Credentials go only to a server that proves it holds a certificate from the cluster CA.
  if (handle.config.tls.enabled && !status.apiUrl.startsWith('https:')) {
    throw new CliError('PLAIN_HTTP_REFUSED', `the agent of ${member} publishes a plain-HTTP API (${status.apiUrl}) while TLS is on here: refusing to send credentials`);
  }
  const response = await agentApiCall(handle.config, `${status.apiUrl}/${kind}`, { method: 'POST', timeoutMs: 10_000 }).catch((error: Error) => {
    throw new CliError('AGENT_UNREACHABLE', `cannot reach the agent of ${member} at ${status.apiUrl}: ${error.message}`);
  });
  const body = (() => {
    try {
      return JSON.parse(response.body) as { error?: string };
    } catch {
      return {};
    }
  })();
  const ok = response.status >= 200 && response.status < 300;
  if (response.status === 401 || response.status === 403) throw new CliError('API_AUTH_REQUIRED', `agent of ${member} refused: ${body.error ?? response.status}; set api.auth in ${handle.config.name}'s member file`);
  if (!ok) throw new CliError('AGENT_REFUSED', `agent of ${member} refused ${kind}: ${body.error ?? response.status}`, response.status === 409 ? EXIT.usage : EXIT.failure);
  return `${kind} of ${member} accepted; follow it with \`relevo list --watch\``;
}

/** Parses --at for a scheduled roll: an ISO time in the future, else a usage error. */
export function futureTime(at: string, now = Date.now()): number {
  const time = Date.parse(at);
  if (Number.isNaN(time)) throw new CliError('BAD_TIME', `--at: got "${at}", expected an ISO time such as 2026-11-21T22:00:00Z`);
  if (time <= now) throw new CliError('BAD_TIME', `--at: ${new Date(time).toISOString()} is in the past (now ${new Date(now).toISOString()}); give a future time or leave --at out`);
  return time;
}

/**
 * `relevo restart --pending|--all [members...]`: the rolling restart of
 * src/cluster/rolling-restart.ts, driving the agents' restart and relevo's
 * switchover exactly as `relevo restart M` and `relevo switchover` do.
 */
export async function rollingRestartCommand(
  handle: ClusterHandle,
  options: { mode: RollMode; members: string[]; at?: string; stepTimeoutMs?: number; print: (line: string) => void },
): Promise<string> {
  const roll: RollOptions = { mode: options.mode, members: options.members.length > 0 ? options.members : undefined, stepTimeoutMs: options.stepTimeoutMs };
  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
  const driver: RollDriver = {
    read: () => readCluster(handle.store, handle.keys),
    restart: async (member) => void (await memberCommand(handle, 'restart', member)),
    switchover: async (to) => void (await switchover(handle, { to, wait: true, measurePause: false })),
    report: options.print,
    sleep,
    now: Date.now,
  };
  // Refuse an impossible request now, not at the scheduled time.
  const first = await driver.read();
  const plan = await refusalsAsUsage(async () => planRoll(first.view, first.settings, roll));
  if (options.at !== undefined) {
    const at = futureTime(options.at);
    options.print(`rolling restart of ${[...plan.reasons.keys()].join(', ')} scheduled for ${new Date(at).toISOString()}; keep this command running`);
    await sleep(at - Date.now());
  }
  const started = Date.now();
  try {
    const result = await refusalsAsUsage(() => rollingRestart(driver, roll));
    const moved = result.switchedTo ? `; primary moved from ${result.formerPrimary} to ${result.switchedTo} by switchover` : '';
    return `rolling restart done: ${result.restarted.join(', ')} restarted in ${((Date.now() - started) / 1000).toFixed(1)} s${moved}`;
  } catch (error) {
    if (error instanceof RollError) throw new CliError('ROLL_STOPPED', `rolling restart stopped: ${error.message}`);
    throw error;
  }
}
