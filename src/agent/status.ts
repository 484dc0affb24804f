import type { MemberStatus } from '../cluster/types.js';
import { unreadableOf } from '../cluster/view.js';
import { apiUrlOf, connectAddressOf, type MemberConfig } from '../config/member.js';
import { lsnDistance } from '../postgres/lsn.js';
import type { Decision } from './decide.js';
import type { Observation } from './observation.js';
import { siteLinkOf } from './source.js';
import { archiveFeedUsable, effectiveTags, type RecoveryTarget } from './delayed.js';

/** Builds the status this agent publishes under `members/<name>`. */
export function memberStatus(
  config: MemberConfig,
  observation: Observation,
  decision: Decision,
  paused: boolean,
  settingsGeneration: number | null = null,
  previous?: MemberStatus,
  recoveryTarget?: RecoveryTarget,
): MemberStatus {
  const server = observation.server;
  const inspection = server.kind === 'running' ? server.inspection : undefined;
  const store = observation.store;
  const leaderName = store.reachable ? store.leader?.member : undefined;
  const leader = store.reachable && leaderName ? store.members.find((m) => m.name === leaderName) : undefined;
  const role = inspection ? (inspection.inRecovery ? 'replica' : 'primary') : 'unknown';
  let lagBytes: number | null = null;
  if (inspection && role === 'primary') lagBytes = 0;
  else if (inspection && leader && leader.name !== config.name) lagBytes = lsnDistance(leader.receivedLsn, inspection.replayedLsn);
  // A standby leader: its upstream and lag are the source's primary's (docs/sites.md).
  const link = siteLinkOf(observation, config.cluster);
  if (link) lagBytes = link.lagBytes;
  return {
    name: config.name,
    state: decision.state,
    role,
    reason: decision.reason,
    timeline: inspection?.timeline ?? null,
    receivedLsn: inspection?.receivedLsn ?? null,
    receivedTimeline: inspection?.receivedTimeline ?? null,
    replayedLsn: inspection?.replayedLsn ?? null,
    lagBytes,
    lagSeconds: inspection?.lagSeconds ?? null,
    replayPaused: inspection?.replayPaused ?? false,
    streaming: inspection?.streaming ?? false,
    upstream: role === 'replica' && leader && leader.name !== config.name ? leader.name : (link?.upstream ? `${link.sourceCluster}/${link.upstream}` : keptUpstream(observation, previous)),
    slots: inspection?.slots ?? [],
    replication: inspection?.replication ?? [],
    postgresVersion: inspection?.version ?? null,
    pendingRestart: inspection?.pendingRestart ?? [],
    systemIdentifier: observation.systemIdentifier ?? null,
    agentPid: process.pid,
    postmasterPid: server.kind === 'stopped' ? null : server.postmasterPid,
    dataDir: config.postgres.dataDir,
    apiUrl: apiUrlOf(config),
    connectAddress: connectAddressOf(config),
    tags: effectiveTags(config, observation.settings),
    delay: config.delay
      ? {
          applyDelayMs: config.delay.apply,
          measuredSeconds: inspection?.inRecovery ? (inspection.replayAgeSeconds ?? null) : null,
          replayPaused: inspection?.replayPaused ?? false,
          feed: archiveFeedUsable(config, observation.settings) ? 'archive' : 'stream',
          recoveryTarget: recoveryTarget ?? null,
        }
      : null,
    paused,
    settingsGeneration,
    updatedAt: new Date(observation.now).toISOString(),
  };
}

/**
 * While the leader record is unreadable we cannot tell who leads, but a
 * standby that still streams still streams from whom it did: the primary
 * keeps counting it as its synchronous standby rather than fall back.
 */
function keptUpstream(observation: Observation, previous: MemberStatus | undefined): string | null {
  const store = observation.store;
  const server = observation.server;
  const streaming = server.kind === 'running' && server.inspection.inRecovery && server.inspection.streaming;
  return streaming && store.reachable && store.leader === undefined && unreadableOf(store, 'leader') ? (previous?.upstream ?? null) : null;
}
