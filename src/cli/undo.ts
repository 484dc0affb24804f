import { apiCredentials, basicAuthHeader } from '../api/auth.js';
import { applyDelayOf, type RecoveryTarget } from '../agent/delayed.js';
import { NEW_TABLE_NAME, type RecoverCopyResult } from '../agent/recover-copy.js';
import { REPLAY_ERROR_CODES, type FindResult, type ReplayErrorCode } from '../agent/replay.js';
import { readCluster } from '../agent/observe.js';
import type { MemberStatus } from '../cluster/types.js';
import { loadCredentials, ROLE_NAMES } from '../config/secrets.js';
import { splitHostPort } from '../postgres/conf.js';
import { withConnection, type SqlTarget } from '../postgres/sql.js';
import { apiCall } from '../tls/client.js';
import { clusterCaFile, clusterCaPem } from '../tls/member.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';

/** A refusal or failure of replay/recover-table: its stable code first (docs/undo.md). */
export class UndoError extends CliError {
  constructor(
    override readonly code: ReplayErrorCode,
    message: string,
    exitCode: number = EXIT.usage,
  ) {
    super(code, `${code}: ${message}`, exitCode);
  }
}

async function readView(handle: ClusterHandle) {
  const { view } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) throw new CliError('STORE_UNREACHABLE', `store unreachable: ${view.error}`, EXIT.failure);
  return view;
}

function memberOf(members: MemberStatus[], name: string): MemberStatus {
  const member = members.find((m) => m.name === name);
  if (!member) throw new UndoError('UNKNOWN_MEMBER', `unknown member "${name}": known members are ${members.map((m) => m.name).join(', ') || 'none'}`);
  return member;
}

/** A POST to a member's agent with a JSON body; the answer's {code, error} becomes an UndoError. */
async function agentPost<T>(handle: ClusterHandle, member: MemberStatus, path: string, body: unknown, timeoutMs = 15_000): Promise<T> {
  // Credentials go only to a server that proves it holds a certificate from the cluster CA.
  if (handle.config.tls.enabled && !member.apiUrl.startsWith('https:')) {
    throw new CliError('PLAIN_HTTP_REFUSED', `the agent of ${member.name} publishes a plain-HTTP API (${member.apiUrl}) while TLS is on here: refusing to send credentials`, EXIT.failure);
  }
  const credentials = apiCredentials(handle.config);
  const ca = clusterCaPem(handle.config);
  const response = await apiCall(`${member.apiUrl}${path}`, {
    method: 'POST',
    timeoutMs,
    body: JSON.stringify(body ?? {}),
    headers: { 'content-type': 'application/json', ...(credentials ? { authorization: basicAuthHeader(credentials) } : {}) },
    ...(ca ? { tls: { ca } } : {}),
  }).catch((error: Error) => {
    throw new UndoError('REPLAY_FAILED', `cannot reach the agent of ${member.name} at ${member.apiUrl}: ${error.message}`, EXIT.failure);
  });
  let parsed: { code?: string; error?: string } & Record<string, unknown> = {};
  try {
    parsed = JSON.parse(response.body) as typeof parsed;
  } catch {
    parsed = {};
  }
  if (response.status === 401 || response.status === 403) throw new CliError('API_AUTH_REQUIRED', `agent of ${member.name} refused: ${parsed.error ?? response.status}; set api.auth in ${handle.config.name}'s member file`);
  if (response.status >= 300) {
    const code = (parsed.code && parsed.code in REPLAY_ERROR_CODES ? parsed.code : 'REPLAY_FAILED') as ReplayErrorCode;
    const message = (parsed.error ?? `HTTP ${response.status}`).replace(`${code}: `, '');
    throw new UndoError(code, message, response.status === 409 ? EXIT.usage : EXIT.failure);
  }
  return parsed as T;
}

/** `relevo replay pause|resume MEMBER`. */
export async function replayCommand(handle: ClusterHandle, action: 'pause' | 'resume', name: string): Promise<string> {
  const member = memberOf((await readView(handle)).members, name);
  if (member.role !== 'replica') throw new UndoError('NOT_A_REPLICA', `member ${name} is ${member.role}: only a replica replays WAL`);
  const answer = await agentPost<{ restarted?: boolean }>(handle, member, `/replay/${action}`, {});
  if (action === 'pause') return `replay paused on ${name}: WAL still arrives${member.delay?.feed === 'archive' ? '' : ' (and is kept on the primary by its slot)'}; \`relevo replay resume ${name}\` resumes it`;
  return answer.restarted ? `recovery target removed on ${name}: PostgreSQL restarts and replays with its delay again` : `replay resumed on ${name}`;
}

/**
 * SQL over the network to a member for reads only (the delay window, the
 * replica's progress), as relevo's network role `relevo_remote` (never a
 * superuser on TCP), TLS verified against the cluster CA.
 */
function sqlTarget(handle: ClusterHandle, member: MemberStatus, database: string): SqlTarget {
  const credentials = loadCredentials(handle.config);
  if (!credentials) throw new CliError('NOT_BOOTSTRAPPED', `no agent credentials in ${handle.config.secrets.file} or the configured environment variables: recover-table connects as ${ROLE_NAMES.network}`, EXIT.failure);
  const [host, port] = splitHostPort(member.connectAddress);
  const caFile = clusterCaFile(handle.config);
  return { host, port, user: ROLE_NAMES.network, password: credentials.agentPassword, database, ...(caFile ? { tlsCaFile: caFile } : {}) };
}

export interface RecoverOptions {
  table: string;
  from: string;
  into: string;
  database: string;
  xid?: string;
  time?: string;
  find?: boolean;
  /** Stop after checking (and, with --find, proposing): nothing is changed. */
  dryRun?: boolean;
  /** How long the replica may take to reach the target. */
  timeoutMs?: number;
  print: (line: string) => void;
}

export interface RecoverReport {
  table: string;
  into: string;
  member: string;
  /** What the replica was held at: the destructive transaction's first record (lsn), or a time. */
  target: RecoveryTarget;
  /** The transaction undone (from --xid or --find). */
  xid?: string;
  found?: FindResult;
  rowsAtTarget: number;
  rowsCopied: number;
  primaryRowsNow: number | null;
  /** Who owns the new table (the original table's owner at the target). */
  owner?: string;
  delayRestored: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `relevo recover-table`: the rows of TABLE as they were just before a
 * target, copied from the delayed replica into a new table on the primary.
 * Every refusal comes before anything changes (docs/undo.md).
 */
export async function recoverTable(handle: ClusterHandle, options: RecoverOptions): Promise<RecoverReport> {
  const view = await readView(handle);
  const member = memberOf(view.members, options.from);
  if (applyDelayOf(member) === undefined) throw new UndoError('NOT_DELAYED', `member ${member.name} is not a delayed replica (no \`delay\` in its member file): it has replayed the mistake already`);
  if (member.role !== 'replica' || member.postmasterPid === null) throw new UndoError('NOT_A_REPLICA', `member ${member.name} is ${member.role} in state ${member.state}`);
  if (member.delay?.recoveryTarget) throw new UndoError('TARGET_ACTIVE', `member ${member.name} is held at ${JSON.stringify(member.delay.recoveryTarget)} by another run: \`relevo replay resume ${member.name}\` ends it`);
  if (!NEW_TABLE_NAME.test(options.into)) {
    throw new UndoError('BAD_REQUEST', `--into: got "${options.into}", expected a table name, optionally schema-qualified (letters, digits, _)`);
  }
  const targets = [options.xid !== undefined, options.time !== undefined, options.find === true].filter(Boolean).length;
  if (targets !== 1) throw new UndoError('BAD_REQUEST', 'give exactly one of --xid, --time or --find');
  const leaderName = view.leader?.member;
  const primary = leaderName ? view.members.find((m) => m.name === leaderName && m.role === 'primary') : undefined;
  if (!primary) throw new CliError('NO_PRIMARY', 'no running primary holds the leader lease: the rows are copied into the primary', EXIT.failure);
  const primaryDb = sqlTarget(handle, primary, options.database);
  const replicaDb = sqlTarget(handle, member, options.database);

  const intoTaken = await withConnection(primaryDb, async (c) => (await c.query<{ taken: boolean }>('SELECT to_regclass($1) IS NOT NULL AS taken', [options.into])).rows[0]!.taken);
  if (intoTaken) throw new UndoError('TARGET_TABLE_EXISTS', `${options.into} already exists in database ${options.database} on the primary ${primary.name}: choose another name`);

  // relevo_remote reads the replica and has no BYPASSRLS: a table under row-level security is refused before anything changes.
  const rowSecurity = await withConnection(replicaDb, async (c) => (await c.query<{ rls: boolean }>('SELECT relrowsecurity AS rls FROM pg_class WHERE oid = to_regclass($1)', [options.table])).rows[0]?.rls === true);
  if (rowSecurity) throw new UndoError('TABLE_ROW_SECURITY', `${options.table} has row-level security on ${member.name}: ${ROLE_NAMES.network}, which reads it there, has no BYPASSRLS and would not see every row; copy it by hand as its owner`);

  let found: FindResult | undefined;
  let target: RecoveryTarget;
  let xid: string | undefined;
  const scan = (extra: Record<string, unknown> = {}) => agentPost<FindResult>(handle, member, '/replay/find', { table: options.table, database: options.database, ...extra }, 180_000);
  if (options.find) {
    found = await scan();
    for (const t of found.found) options.print(`  ${t.kind === 'drop-storage' ? 'TRUNCATE/DROP' : `DELETE of ${t.deletedRows} rows`} in transaction ${t.xid}, from ${t.firstLsn}, committed ${t.commitTime} at ${t.commitLsn}`);
    if (!found.proposed) throw new UndoError('NOTHING_FOUND', `no TRUNCATE, DROP or mass DELETE of ${options.table} in the WAL ${member.name} has not replayed (from ${found.scannedFrom}, ${found.records} records)`);
    options.print(`proposed target: just before transaction ${found.proposed.xid} (its first record ${found.proposed.firstLsn}; committed ${found.proposed.commitTime})`);
    xid = found.proposed.xid;
    await checkWindow(primaryDb, replicaDb, member.name, { xid });
    target = { lsn: found.proposed.firstLsn };
  } else if (options.xid !== undefined) {
    if (!/^\d{1,10}$/.test(options.xid)) throw new UndoError('BAD_REQUEST', `--xid: got "${options.xid}", expected a transaction id (a number)`);
    xid = options.xid;
    await checkWindow(primaryDb, replicaDb, member.name, { xid });
    // Stop before the transaction's first record, not its commit: see DestructiveTransaction.firstLsn.
    const start = (await scan({ xid })).xidFirstLsn;
    if (!start) throw new UndoError('TARGET_OUTSIDE_WINDOW', `transaction ${xid} has no record in the WAL ${member.name} has not replayed yet`);
    target = { lsn: start };
  } else {
    const time = Date.parse(options.time!);
    if (Number.isNaN(time)) throw new UndoError('BAD_REQUEST', `--time: got "${options.time}", expected an ISO time such as 2026-12-01T04:50:00Z`);
    target = { time: new Date(time).toISOString() };
    await checkWindow(primaryDb, replicaDb, member.name, target);
  }
  if (options.dryRun) {
    return { table: options.table, into: options.into, member: member.name, target, ...(found ? { found } : {}), rowsAtTarget: 0, rowsCopied: 0, primaryRowsNow: null, delayRestored: true };
  }

  // From here the replica is changed: whatever happens, its target is removed and its delay restored.
  const startedBefore = await replicaStartTime(replicaDb);
  options.print(`restarting ${member.name} to replay without delay up to just before ${describeTarget(target)}`);
  await agentPost(handle, member, '/replay/target', target);
  const restartAsked = Date.now();
  let delayRestored = false;
  try {
    await waitForTarget(replicaDb, startedBefore, options.timeoutMs ?? 180_000, member.name);
    options.print(`${member.name} paused at the target after ${((Date.now() - restartAsked) / 1000).toFixed(1)} s; copying`);
    // The primary's agent writes (locally, as the superuser) and pulls the rows from the replica as relevo_remote.
    options.print(`  asking the agent of the primary ${primary.name} to create ${options.into} and copy the rows`);
    const copied = await agentPost<RecoverCopyResult>(handle, primary, '/recover-table/copy', { from: member.name, table: options.table, into: options.into, database: options.database }, 600_000);
    options.print(`copied ${copied.rowsCopied} rows in ${((Date.now() - restartAsked) / 1000).toFixed(1)} s since the restart; restoring the delay`);
    const startedAtTarget = await replicaStartTime(replicaDb);
    await agentPost(handle, member, '/replay/target/clear', {});
    delayRestored = await waitForRestart(replicaDb, startedAtTarget, 120_000);
    return { table: options.table, into: options.into, member: member.name, target, ...(xid ? { xid } : {}), ...(found ? { found } : {}), ...copied, delayRestored };
  } finally {
    if (!delayRestored) await agentPost(handle, member, '/replay/target/clear', {}).catch(() => undefined);
  }
}

/**
 * The target must lie in the delay window: committed on the primary (else
 * it is in the future) and not yet replayed on the delayed replica.
 */
async function checkWindow(primary: SqlTarget, replica: SqlTarget, name: string, target: { xid: string } | { time: string }): Promise<void> {
  if ('time' in target) {
    const at = Date.parse(target.time);
    if (at > Date.now()) throw new UndoError('TARGET_OUTSIDE_WINDOW', `${target.time} is in the future`);
    const replayed = await withConnection(replica, async (c) => (await c.query<{ at: Date | null }>('SELECT pg_last_xact_replay_timestamp() AS at')).rows[0]!.at);
    if (replayed && replayed.getTime() >= at) throw new UndoError('TARGET_OUTSIDE_WINDOW', `${name} already replayed past ${target.time} (its last replayed commit is from ${replayed.toISOString()}): the data before it is gone there too`);
    return;
  }
  // pg_xact_status wants a full (epoch-qualified) id: the epoch is taken from the primary's next id.
  const full = `((pg_snapshot_xmax(pg_current_snapshot())::text::bigint >> 32) << 32 | $1::bigint)::text::xid8`;
  const onPrimary = await withConnection(primary, async (c) => (await c.query<{ s: string | null }>(`SELECT pg_xact_status(${full}) AS s`, [target.xid])).rows[0]!.s).catch((error: Error) => {
    if (/in the future/.test(error.message)) return 'future';
    throw error;
  });
  if (onPrimary !== 'committed' && onPrimary !== 'aborted') throw new UndoError('TARGET_OUTSIDE_WINDOW', `transaction ${target.xid} is ${onPrimary ?? 'unknown (too old)'} on the primary, not committed`);
  const onReplica = await withConnection(replica, async (c) => (await c.query<{ s: string | null }>(`SELECT pg_xact_status(${full}) AS s`, [target.xid])).rows[0]!.s).catch((error: Error) => {
    if (/in the future/.test(error.message)) return 'pending';
    throw error;
  });
  if (onReplica === 'committed' || onReplica === 'aborted' || onReplica === null) {
    throw new UndoError('TARGET_OUTSIDE_WINDOW', `${name} already replayed transaction ${target.xid} (${onReplica ?? 'too old'}): the data before it is gone there too`);
  }
}

async function replicaStartTime(replica: SqlTarget): Promise<number> {
  return withConnection(replica, async (c) => (await c.query<{ t: Date }>('SELECT pg_postmaster_start_time() AS t')).rows[0]!.t.getTime());
}

/** The replica restarted (after `since`) and paused: recovery reached the target. */
async function waitForTarget(replica: SqlTarget, since: number, timeoutMs: number, name: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'not restarted yet';
  while (Date.now() < deadline) {
    try {
      const row = await withConnection(replica, async (c) => (await c.query<{ t: Date; state: string; lsn: string }>(`SELECT pg_postmaster_start_time() AS t, pg_get_wal_replay_pause_state() AS state, pg_last_wal_replay_lsn()::text AS lsn`)).rows[0]!);
      if (row.t.getTime() > since) {
        if (row.state === 'paused') return;
        last = `replaying, at ${row.lsn}`;
      }
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(250);
  }
  throw new UndoError('TARGET_NOT_REACHED', `${name} did not pause at the target within ${timeoutMs / 1000} s (${last}); its target is removed and its delay restored`, EXIT.failure);
}

async function waitForRestart(replica: SqlTarget, since: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const restarted = await withConnection(replica, async (c) => (await c.query<{ t: Date; state: string }>(`SELECT pg_postmaster_start_time() AS t, pg_get_wal_replay_pause_state() AS state`)).rows[0]!)
      .then((row) => row.t.getTime() > since && row.state === 'not paused')
      .catch(() => false);
    if (restarted) return true;
    await sleep(250);
  }
  return false;
}

export function renderRecoverReport(report: RecoverReport): string {
  const t = report.target;
  const target = report.xid ? `just before transaction ${report.xid}${'lsn' in t ? ` (WAL ${t.lsn})` : ''}` : `just before ${describeTarget(t)}`;
  return [
    `recovered ${report.table} as of ${target} from ${report.member} into ${report.into} on the primary${report.owner ? ` (owner ${report.owner})` : ''}`,
    `  rows at the target: ${report.rowsAtTarget}; copied: ${report.rowsCopied}; in ${report.table} on the primary now: ${report.primaryRowsNow ?? 'table gone'}`,
    `  delay on ${report.member}: ${report.delayRestored ? 'restored' : 'NOT confirmed restored: check `relevo list`'}`,
  ].join('\n');
}

function describeTarget(target: RecoveryTarget): string {
  return 'time' in target ? target.time : 'lsn' in target ? `WAL position ${target.lsn}` : `transaction ${target.xid}`;
}
