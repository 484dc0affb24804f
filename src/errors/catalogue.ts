/**
 * The error catalogue: every stable code relevo reports to an operator, a
 * script or an API client, in one place. A code names what failed; the
 * message (built where the error is raised) says on which member and with
 * which values; the hint says what to do. The class gives the CLI's exit code.
 *
 * docs/errors.md is generated from this file (npm run docs), and
 * test/unit/errors-catalogue.test.ts checks that every code raised in src/ is
 * here and documented. Backup codes live in src/backup/errors.ts (their own
 * exit codes) and are merged in below; the router's refusals to PostgreSQL
 * clients are SQLSTATE messages listed in docs/router.md.
 */
import { REPLAY_ERROR_CODES } from '../agent/replay-errors.js';
import { BACKUP_ERRORS } from '../backup/errors.js';
import { LOGICAL_CODES } from '../logical/errors.js';
import { UPGRADE_ERRORS } from '../upgrade/errors.js';

/** usage: the request is wrong; refused: valid, but not possible in the cluster's current state; failure: something failed at run time; damage: data is damaged. */
export type ErrorClass = 'usage' | 'refused' | 'failure' | 'damage';

/** Exit codes scripts can rely on, by class (docs/operations.md). */
export const EXIT_BY_CLASS: Record<ErrorClass, number> = { usage: 2, refused: 2, failure: 1, damage: 3 };

export interface CatalogueEntry {
  class: ErrorClass;
  /** Where it comes from: operations, cli, api, agent, config, store, postgres, tls, backup, router. */
  area: string;
  /** What failed, in a line (the message adds the member and values). */
  summary: string;
  /** What to do. */
  hint: string;
}

const entries = {
  // Operations (src/cluster/operations.ts, rolling-restart.ts): refusals of switchover, failover, pause, restart.
  UNKNOWN_MEMBER: { class: 'usage', area: 'operations', summary: 'no member of that name in the cluster', hint: 'run `relevo list` for the member names' },
  ALREADY_PRIMARY: { class: 'refused', area: 'operations', summary: 'the member named is already the primary', hint: 'name a replica, or leave --to out' },
  NOT_A_RUNNING_REPLICA: { class: 'refused', area: 'operations', summary: 'the member named is not a running replica', hint: 'check its state in `relevo list` and its agent log; wait until it is a replica' },
  NOT_STREAMING: { class: 'refused', area: 'operations', summary: 'the member named does not stream from the primary', hint: 'wait until it streams (`relevo list`), or pick another member' },
  CANDIDATE_LAGGING: { class: 'refused', area: 'operations', summary: 'the member named is further behind the primary than maximumLagOnFailover', hint: 'wait for it to catch up, pick another member, or raise maximumLagOnFailover' },
  CANDIDATE_NOFAILOVER: { class: 'refused', area: 'operations', summary: 'the member named is tagged nofailover', hint: 'pick another member, or remove tags.nofailover from its member file' },
  CANDIDATE_NOT_ELIGIBLE: { class: 'refused', area: 'operations', summary: 'promoting the member named could lose acknowledged commits', hint: 'pick the member the message names as up to date, or add --force to accept the loss' },
  MAJOR_VERSION_MISMATCH: { class: 'refused', area: 'operations', summary: 'the member named runs another PostgreSQL major version than the primary', hint: 'a major upgrade is not a switchover: put every member on the same major version first' },
  NO_PRIMARY: { class: 'refused', area: 'operations', summary: 'no primary holds the leader lease', hint: 'check `relevo list`; without a primary use `relevo failover --to M`' },
  NO_HEALTHY_CANDIDATE: { class: 'refused', area: 'operations', summary: 'no streaming replica can take over from the primary', hint: 'bring a replica back to streaming (`relevo list`, its agent log) first' },
  OPERATION_IN_PROGRESS: { class: 'refused', area: 'operations', summary: 'a switchover or failover is already in progress', hint: 'wait for it to finish (`relevo list`, `relevo events`), then try again' },
  CONCURRENT_CHANGE: { class: 'failure', area: 'operations', summary: 'a record changed under this command (compare-and-swap lost); nothing was written', hint: 'run the command again' },
  CLUSTER_PAUSED: { class: 'refused', area: 'operations', summary: 'the cluster is paused (automatic failover off)', hint: 'run `relevo resume` first' },
  ALREADY_PAUSED: { class: 'refused', area: 'operations', summary: 'the cluster is already paused', hint: 'nothing to do' },
  NOT_PAUSED: { class: 'refused', area: 'operations', summary: 'the cluster is not paused', hint: 'nothing to do' },
  NOTHING_TO_ROLL: { class: 'refused', area: 'operations', summary: 'no member needs the restart asked for', hint: '`relevo list` shows pending restarts; use --all to restart every member anyway' },
  BAD_TIME: { class: 'usage', area: 'operations', summary: '--at is not a time, or is in the past', hint: 'give a future ISO time such as 2026-11-21T22:00:00Z, or leave --at out' },
  OPERATION_NOT_DONE: { class: 'failure', area: 'operations', summary: 'the switchover or failover did not happen or did not finish in time', hint: 'see `relevo list`, `relevo events` and the agent logs of both members' },
  DELAYED_REPLICA: { class: 'refused', area: 'operations', summary: 'the member named is a delayed replica: never promoted, not even with --force', hint: 'remove `delay` from its member file and restart its agent first, or pick another member' },
  ROLL_STOPPED: { class: 'failure', area: 'operations', summary: 'a rolling restart stopped at a failed step; the primary was left as it was', hint: 'fix the member named (its agent log), then run the roll again' },
  PRIMARY_REINIT: { class: 'refused', area: 'operations', summary: 'reinit of the primary would destroy the only copy', hint: 'switch over first, then reinit the former primary' },
  OPERATION_REFUSED: { class: 'refused', area: 'operations', summary: 'an operation was refused (code not known to this CLI version)', hint: 'read the message' },

  // CLI input (src/cli).
  BAD_ARGUMENT: { class: 'usage', area: 'cli', summary: 'a command-line argument or option value is not valid', hint: 'see `relevo help <command>`' },
  NO_CONFIG: { class: 'usage', area: 'cli', summary: 'no member configuration given', hint: 'pass -c FILE or set RELEVO_CONFIG' },
  INVALID_SETTINGS: { class: 'usage', area: 'cli', summary: 'cluster settings fail validation; nothing changed', hint: 'fix the values listed (docs/configuration.md)' },
  RECORD_READABLE: { class: 'refused', area: 'cli', summary: '`store repair` changes only unreadable records', hint: 'use the command meant for that record (config set, switchover, ...)' },
  NO_RECORD: { class: 'usage', area: 'cli', summary: 'no record at the key given', hint: '`relevo store repair` without arguments lists the damaged records' },
  NOT_BOOTSTRAPPED: { class: 'failure', area: 'cli', summary: 'the cluster has no credentials or no members yet', hint: 'start the agents and wait for the bootstrap (`relevo list`)' },
  STORE_UNREACHABLE: { class: 'failure', area: 'cli', summary: 'the coordination store could not be read', hint: 'check that the store runs and is reachable from this host (store.endpoints in the member file)' },
  AGENT_UNREACHABLE: { class: 'failure', area: 'cli', summary: "a member's agent API could not be reached", hint: 'check that its agent runs and that api.listen is reachable from this host' },
  AGENT_REFUSED: { class: 'refused', area: 'cli', summary: "a member's agent refused the request", hint: 'read the reason; for 401/403 set api.auth (or use a client certificate of the cluster CA)' },
  PLAIN_HTTP_REFUSED: { class: 'failure', area: 'cli', summary: 'an agent publishes a plain-HTTP API while TLS is on here; credentials are not sent', hint: 'enable TLS on that member (tls.enabled) or fix its published apiUrl' },
  SECRET_MANAGED_ELSEWHERE: { class: 'refused', area: 'cli', summary: 'that password comes from an environment variable or file relevo does not manage', hint: 'change it there and in PostgreSQL, or remove the setting to let relevo manage it' },
  ROTATION_FAILED: { class: 'failure', area: 'cli', summary: 'a password or certificate rotation did not complete', hint: 'read the message: nothing was changed, or the members named still wait (see their agent logs)' },
  TLS_OFF: { class: 'refused', area: 'cli', summary: 'TLS is off for this member, or its CA file is missing', hint: 'set tls.enabled in the member file; `relevo init` writes a CA' },
  DEMO_DIR_UNUSABLE: { class: 'usage', area: 'cli', summary: 'the demo directory cannot be used', hint: 'omit --dir for a fresh one, or give a path that does not exist' },
  DEMO_NOT_READY: { class: 'failure', area: 'cli', summary: 'the demo cluster did not become ready in time', hint: 'see the agent logs in the demo directory' },
  INIT_EXISTS: { class: 'refused', area: 'cli', summary: '`relevo init` would overwrite a file that exists', hint: 'choose another --dir, or remove the files yourself if they are not in use' },

  // The REST API (src/api): errors of the request itself; operation refusals carry their own codes.
  API_AUTH_REQUIRED: { class: 'usage', area: 'api', summary: 'the request needs credentials (Basic or a client certificate of the cluster CA)', hint: 'set api.auth and pass its user and password, or present a cluster certificate' },
  API_DISABLED: { class: 'refused', area: 'api', summary: 'state-changing API calls are disabled on this agent', hint: 'configure api.auth in the member file, or use a client certificate from the cluster CA' },
  API_FORBIDDEN_ADDRESS: { class: 'refused', area: 'api', summary: 'the client address is not in api.allowlist', hint: 'add the address to api.allowlist in the member file' },
  API_BAD_REQUEST: { class: 'usage', area: 'api', summary: 'the request body or query is not valid', hint: 'see docs/api.md for the endpoint' },
  API_NOT_FOUND: { class: 'usage', area: 'api', summary: 'no such path on the API', hint: 'see docs/api.md' },
  API_NOT_READY: { class: 'failure', area: 'api', summary: 'the agent has no status yet (starting)', hint: 'retry in a few seconds' },
  FAILSAFE_REFUSED: { class: 'refused', area: 'api', summary: 'this member does not vouch for the primary that asked (failsafe)', hint: 'read the reason; the primary stops taking writes when too few members vouch for it' },
  FAILSAFE_NOT_TAKING_PART: { class: 'refused', area: 'api', summary: 'this agent does not take part in failsafe', hint: 'enable failsafe in the cluster settings' },

  // The agent's log (src/agent): defects of the state machine. A failed action logs E_<ACTION>_FAILED
  // (e.g. E_PROMOTE_FAILED) unless its error carries one of the codes above.
  E_STATE_ILLEGAL_EDGE: { class: 'failure', area: 'agent', summary: 'a decision asked for a state change the transition table does not allow (a defect)', hint: 'report it with the agent log; the agent stays in its state' },
  E_STATE_ACTION_NOT_ALLOWED: { class: 'failure', area: 'agent', summary: 'a decision asked for an action its state does not allow (a defect)', hint: 'report it with the agent log; the action is not carried out' },

  // Configuration and secrets (src/config, src/store/config).
  CONFIG_INVALID: { class: 'usage', area: 'config', summary: 'the member file is not valid', hint: 'fix the problems listed (docs/configuration.md); `relevo init` writes a valid one' },
  SECRET_UNAVAILABLE: { class: 'usage', area: 'config', summary: 'a secret (password) could not be read from its environment variable or file', hint: 'set the variable or create the file the message names' },

  // The coordination store (src/store).
  STORE_UNAVAILABLE: { class: 'failure', area: 'store', summary: 'the coordination store could not be reached or did not answer in time', hint: 'check that the store is running and reachable from this host; safe to retry' },
  STORE_ERROR: { class: 'failure', area: 'store', summary: 'the coordination store refused the request', hint: 'read the message (authentication, permissions, a damaged embedded database)' },
  STORE_CONFIG_INVALID: { class: 'usage', area: 'store', summary: "the member file's store section cannot be used (credentials, password file)", hint: 'fix store.* in the member file as the message says' },
  RECORD_UNREADABLE: { class: 'damage', area: 'store', summary: 'a record in the store does not parse; it is never taken as absent', hint: '`relevo store repair` shows and replaces it' },

  // PostgreSQL and the data directory (src/postgres).
  POSTGRES_COMMAND_FAILED: { class: 'failure', area: 'postgres', summary: 'a PostgreSQL program (pg_ctl, initdb, pg_basebackup, pg_rewind, ...) failed', hint: 'the end of its output is in the message; the PostgreSQL log has the rest' },
  REWIND_START_FAILED: { class: 'failure', area: 'postgres', summary: 'pg_rewind succeeded but PostgreSQL did not start as a standby afterwards', hint: "the member retries the start; if it keeps failing, read the member's PostgreSQL log" },
  DISK_FULL: { class: 'failure', area: 'postgres', summary: 'a step failed because the disk of the data directory is full (ENOSPC); the data is not at fault', hint: 'free space on that disk (moved-aside copies `<dataDir>.moved-*` are named in CLONE_NO_SPACE); the member retries and never moves its data aside for this' },
  BASE_BACKUP_FAILED: { class: 'failure', area: 'postgres', summary: "relevo's own base backup (the clone of a member whose binDir has no pg_basebackup of the server's major) failed: the server's error, a malformed stream or archive, or a data directory that was not empty; reported inside POSTGRES_COMMAND_FAILED for `relevo base backup`", hint: 'read the message (the server\'s error, e.g. WAL removed before the end of the backup); the partial copy is removed and the member retries with the clone back-off; see docs/upgrade.md#replicas-on-the-new-major' },
  CLONE_NO_SPACE: { class: 'refused', area: 'postgres', summary: 'a clone (pg_basebackup) cannot fit on the data directory\'s disk; the message names each moved-aside copy of the data directory on it and its size', hint: 'remove the moved-aside copies you no longer need (relevo never deletes them), or grow the disk; the member retries' },
  REWIND_SOURCE_UNAVAILABLE: { class: 'failure', area: 'postgres', summary: 'pg_rewind found no source to rewind from', hint: 'the member retries once a primary is reachable; else `relevo reinit M`' },
  UNSAFE_PATH: { class: 'refused', area: 'postgres', summary: 'a path relevo writes is not safe to write', hint: 'see the message (link, owner, mode) and fix that path' },
  UNSAFE_PATH_SYMLINK: { class: 'refused', area: 'postgres', summary: 'a path relevo writes is a symbolic link', hint: 'remove the link; relevo writes its own file there' },
  UNSAFE_PATH_TYPE: { class: 'refused', area: 'postgres', summary: 'a path relevo writes is not a regular file (or has several hard links)', hint: 'remove it; relevo writes its own file there' },
  UNSAFE_PATH_OWNER: { class: 'refused', area: 'postgres', summary: 'a path relevo writes belongs to another user', hint: 'chown it to the PostgreSQL OS user, or remove it' },
  UNSAFE_PATH_MODE: { class: 'refused', area: 'postgres', summary: 'a path relevo writes is writable by others', hint: 'chmod it as the message says' },
  PG_VERSION: { class: 'refused', area: 'postgres', summary: 'the data directory and the binaries are of different major versions', hint: 'point postgresql.binDir at binaries of the data directory major version' },

  // TLS (src/tls).
  TLS_CA_MISSING: { class: 'usage', area: 'tls', summary: 'the cluster CA certificate is missing', hint: 'copy the cluster CA (ca.crt) to the path in tls.ca; `relevo init` writes one for a new cluster' },
  TLS_CA_MISMATCH: { class: 'refused', area: 'tls', summary: 'the certificate is not signed by the cluster CA', hint: 'replace tls.cert/tls.key, or remove them to let the agent issue new ones' },
  TLS_CA_KEY_MISSING: { class: 'refused', area: 'tls', summary: 'a certificate must be issued but the CA key is not on this host', hint: 'copy ca.key to this host, or install a certificate signed by the cluster CA' },
  TLS_CERT_INVALID: { class: 'refused', area: 'tls', summary: 'a certificate or key does not parse, has expired, or does not match', hint: 'replace tls.cert/tls.key, or remove them to let the agent issue new ones' },
  TLS_OPENSSL_FAILED: { class: 'failure', area: 'tls', summary: 'openssl failed while issuing a certificate', hint: 'check that openssl is installed; its output is in the message' },

  // CA rotation (src/tls/ca-rotation.ts, `relevo certs rotate --ca`, docs/security.md#ca-rotation).
  CA_ROTATION_RECORD_INVALID: { class: 'damage', area: 'tls', summary: 'the CA rotation record in the store is malformed, or its bundle is not the one its phase calls for', hint: 'agents refuse it; check who writes tls/ca-rotation, then rerun `relevo certs rotate --ca` from the host holding the CA key' },
  CA_ROTATION_UNTRUSTED_SIGNER: { class: 'refused', area: 'tls', summary: 'a CA rotation record is not signed by a CA this member trusts', hint: 'agents never apply it; a store writer tried to introduce a CA, or the member missed earlier phases (copy the current ca.crt to its CA directory)' },
  CA_ROTATION_BAD_EDGE: { class: 'refused', area: 'tls', summary: 'a CA rotation was asked to move between phases the phase table does not link', hint: 'phases go trust, reissue, drop, done; rerun `relevo certs rotate --ca` to resume' },
  CA_ROTATION_NO_CA_KEY: { class: 'refused', area: 'tls', summary: 'this host has no key of the current (or, when resuming, the new) cluster CA to sign the rotation with', hint: 'run `relevo certs rotate --ca` on the host whose tls.caDir holds ca.key (and ca.next.key when resuming)' },
  CA_ROTATION_NEW_CA_INVALID: { class: 'usage', area: 'tls', summary: 'the new CA given with --new-ca-cert/--new-ca-key is not a CA certificate, its key does not match, or the key file is readable by others', hint: 'give a CA certificate (basicConstraints CA:TRUE) and its own key, chmod 600' },
  CA_ROTATION_TIMEOUT: { class: 'failure', area: 'tls', summary: 'not every member applied the current phase of the CA rotation in time', hint: 'the message names the members and what they report; fix that, then rerun `relevo certs rotate --ca`: it resumes at the same phase' },
  CA_ROTATION_CONCURRENT: { class: 'failure', area: 'tls', summary: 'the CA rotation record changed under this command (another rotation command runs)', hint: 'let the other command finish, or rerun to resume' },

  // Fencing (src/fence, docs/architecture.md#fencing): reported in logs, `relevo list` and the event log.
  E_FENCER_MISSING: { class: 'failure', area: 'fence', summary: "a member's fencer process does not run, so it may not lead", hint: 'the agent restarts it; with fence.spawn=false start the relevo-fence unit; its log is <dataDir>.fencer.log' },
  E_FENCE_FIRED: { class: 'failure', area: 'fence', summary: "the fencer stopped PostgreSQL because the agent stopped renewing the primary's lease", hint: 'find why the agent froze (its log, the host); it rejoins as a replica by itself' },
  E_WATCHDOG_UNAVAILABLE: { class: 'failure', area: 'fence', summary: 'no usable Linux watchdog device', hint: 'load softdog and make /dev/watchdog usable, or set fence.watchdog: off' },
  E_WATCHDOG_REQUIRED: { class: 'refused', area: 'fence', summary: 'fence.watchdog is required but the device failed', hint: 'fix /dev/watchdog (its timeout must be below ttlMs - fenceMarginMs) or set fence.watchdog: auto' },

  // Sites: standby clusters and moving the primary between sites (src/cli/site.ts, docs/sites.md).
  SITE_NOT_STANDBY_CLUSTER: { class: 'refused', area: 'site', summary: 'the cluster is not a standby cluster', hint: 'run the command against the standby cluster, or `relevo site follow` first' },
  SITE_ALREADY_STANDBY_CLUSTER: { class: 'refused', area: 'site', summary: 'the cluster already follows a source', hint: '`relevo list` shows its source; `relevo site promote` ends the link' },
  SITE_SOURCE_IS_SELF: { class: 'usage', area: 'site', summary: 'a standby cluster was pointed at itself', hint: 'name another cluster with --source or --source-config' },
  SITE_UNKNOWN_SOURCE: { class: 'usage', area: 'site', summary: 'the source cluster is not in the store', hint: 'check the cluster name and --source-config (its store)' },
  SITE_SOURCE_UNREACHABLE: { class: 'failure', area: 'site', summary: "the source cluster's store cannot be read", hint: 'fix the store link; for an unplanned move use `relevo site promote`' },
  SITE_NO_SOURCE_PRIMARY: { class: 'refused', area: 'site', summary: 'the source cluster has no primary', hint: 'wait for its failover, or `relevo site promote` if the site is lost' },
  SITE_SOURCE_PRIMARY_RUNNING: { class: 'refused', area: 'site', summary: "the source's primary still runs, so a promotion would make two primaries", hint: 'use `relevo site switchover`, or stop the source and pass --force' },
  SITE_FOREIGN_SOURCE: { class: 'refused', area: 'site', summary: 'the standby cluster follows another source', hint: '`relevo list` shows its source' },
  SITE_NO_STANDBY_LEADER: { class: 'refused', area: 'site', summary: 'the standby cluster has no standby leader', hint: 'wait until `relevo list` shows one' },
  SITE_TARGET_NOT_STREAMING: { class: 'refused', area: 'site', summary: "the standby leader does not stream from the source's primary", hint: '`relevo list` shows the link and its problem' },
  SITE_LAG_TOO_LARGE: { class: 'refused', area: 'site', summary: 'the standby cluster lags the source by more than allowed', hint: 'wait for it to catch up, or raise --max-lag' },
  SITE_NAME_CLASH: { class: 'refused', area: 'site', summary: 'a member name exists in both clusters', hint: 'give every member of both sites its own name' },
  SITE_SOURCE_IS_STANDBY: { class: 'refused', area: 'site', summary: 'the source is itself a standby cluster (no chains)', hint: 'follow the cluster that has the primary' },
  SITE_WOULD_DEMOTE: { class: 'refused', area: 'site', summary: 'following would shut down and rewind a running primary', hint: 'use `relevo site switchover` from the source side, or pass --demote' },
  SITE_TIMEOUT: { class: 'failure', area: 'site', summary: 'a site switchover step did not finish in time and was undone', hint: 'the message says which step; run the command again once `relevo list` is healthy on both sides' },

  // Router start-up (src/router): refusals to clients are SQLSTATE messages (docs/router.md).
  ROUTER_VERIFIER_FILE: { class: 'usage', area: 'router', summary: 'the router cannot read its SCRAM verifier file', hint: 'run `relevo router export-verifiers` and point the router at the file' },
  ROUTER_SCRAM: { class: 'refused', area: 'router', summary: 'SCRAM authentication through the router failed', hint: 'check the user, the password and the verifier file' },
  ROUTER_PROTOCOL_ERROR: { class: 'usage', area: 'router', summary: 'a client sent a message the router does not accept', hint: 'use a PostgreSQL client library' },
} satisfies Record<string, CatalogueEntry>;

const backupEntries = Object.fromEntries(
  Object.entries(BACKUP_ERRORS).map(([code, e]) => [code, { class: (e.exit === 3 ? 'damage' : e.exit === 2 ? 'usage' : 'failure') as ErrorClass, area: 'backup', summary: code.toLowerCase().replace(/_/g, ' '), hint: e.hint }]),
) as Record<keyof typeof BACKUP_ERRORS, CatalogueEntry>;

/** Delayed-replica replay and recover-table codes (src/agent/replay.ts, docs/undo.md); a code already listed above keeps its entry. */
const replayEntries = Object.fromEntries(
  Object.entries(REPLAY_ERROR_CODES)
    .filter(([code]) => !Object.hasOwn(entries, code))
    .map(([code, summary]) => [
      code,
      { class: (code === 'BAD_REQUEST' ? 'usage' : code === 'REPLAY_FAILED' || code === 'TARGET_NOT_REACHED' ? 'failure' : 'refused') as ErrorClass, area: 'undo', summary, hint: 'see docs/undo.md for the replay and recover-table commands' },
    ]),
) as Record<keyof typeof REPLAY_ERROR_CODES, CatalogueEntry>;

/** Logical replication codes (src/logical/errors.ts, docs/logical.md): the remedy there is the hint. */
const LOGICAL_USAGE = new Set(['LOGICAL_UNKNOWN_DATABASE', 'LOGICAL_UNKNOWN_TABLE', 'LOGICAL_UNKNOWN_SCHEMA', 'LOGICAL_NO_REPLICA_IDENTITY', 'LOGICAL_PASSWORD_IN_CLEAR', 'LOGICAL_UNKNOWN_PUBLICATION', 'LOGICAL_TARGET_TABLE_MISSING']);
const LOGICAL_REFUSED = new Set(['LOGICAL_WAL_LEVEL', 'LOGICAL_NOT_LEADER', 'LOGICAL_DRIFT']);
const logicalEntries = Object.fromEntries(
  Object.entries(LOGICAL_CODES).map(([code, remedy]) => {
    const [summary, ...hint] = remedy.split(': ');
    const cls: ErrorClass = LOGICAL_USAGE.has(code) ? 'usage' : LOGICAL_REFUSED.has(code) ? 'refused' : 'failure';
    return [code, { class: cls, area: 'logical', summary: summary!, hint: hint.join(': ') || remedy }];
  }),
) as Record<keyof typeof LOGICAL_CODES, CatalogueEntry>;

/** Major-version upgrade codes (src/upgrade/errors.ts, docs/upgrade.md): exit 2 is a refusal that changed nothing. */
const upgradeEntries = Object.fromEntries(
  Object.entries(UPGRADE_ERRORS).map(([code, e]) => {
    const cls: ErrorClass = e.exit === 2 ? 'refused' : 'failure';
    return [code, { class: cls, area: 'upgrade', summary: e.summary, hint: e.hint }];
  }),
) as Record<keyof typeof UPGRADE_ERRORS, CatalogueEntry>;

export type ErrorCode = keyof typeof entries | keyof typeof BACKUP_ERRORS | keyof typeof REPLAY_ERROR_CODES | keyof typeof LOGICAL_CODES | keyof typeof UPGRADE_ERRORS;

export const CATALOGUE: Record<ErrorCode, CatalogueEntry> = { ...replayEntries, ...logicalEntries, ...upgradeEntries, ...entries, ...backupEntries };

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(CATALOGUE, value);
}

export function exitCodeOf(code: ErrorCode): number {
  return EXIT_BY_CLASS[CATALOGUE[code].class];
}

export function hintOf(code: ErrorCode): string {
  return CATALOGUE[code].hint;
}

/** The body an API error answers with: the stable code, the message, and what to do. */
export function errorBody(code: ErrorCode, message: string): { code: ErrorCode; message: string; hint: string; error: string } {
  // `error` repeats the message for clients written before the catalogue.
  return { code, message, hint: hintOf(code), error: message };
}

/** docs/errors.md, generated. */
export function renderErrorsDoc(): string {
  const areas = [...new Set(Object.values(CATALOGUE).map((e) => e.area))];
  const lines = [
    '# Error codes',
    '',
    '<!-- Generated from src/errors/catalogue.ts by `npm run docs`; test/unit/errors-catalogue.test.ts keeps it in step. -->',
    '',
    'Every refusal and error relevo reports carries a stable code. The CLI prints it at the end of the message',
    '(`relevo: … [CODE]`) with a hint line, and exits with the code of its class; the REST API answers',
    '`{"code", "message", "hint"}`. Scripts and tests match the code, never the message text.',
    '',
    '| class | exit code | meaning |',
    '| --- | --- | --- |',
    '| usage | 2 | the request itself is wrong (bad argument, bad configuration, unknown member) |',
    '| refused | 2 | the request is valid but not possible in the cluster\'s current state |',
    '| failure | 1 | something failed at run time (store, PostgreSQL, network); often worth retrying |',
    '| damage | 3 | data is damaged (a record, a backup file) |',
    '',
    'A failed agent action is logged with `E_<ACTION>_FAILED` (for example `E_PROMOTE_FAILED`) unless its error carries a code listed here.',
    '',
    "The router's answers to PostgreSQL clients are SQLSTATE errors with their own catalogue (docs/router.md).",
  ];
  for (const area of areas) {
    lines.push('', `## ${area}`, '', '| code | class | what failed | what to do |', '| --- | --- | --- | --- |');
    for (const [code, e] of Object.entries(CATALOGUE).filter(([, e]) => e.area === area)) {
      lines.push(`| \`${code}\` | ${e.class} | ${e.summary.replace(/\|/g, '\\|')} | ${e.hint.replace(/\|/g, '\\|')} |`);
    }
  }
  return `${lines.join('\n')}\n`;
}
