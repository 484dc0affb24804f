import type { Logger } from 'pino';
import { clusterKeys } from '../cluster/keys.js';
import { feedOf, type StandbyCluster, type SiteLink } from '../cluster/site.js';
import { readCluster } from '../cluster/view.js';
import type { MemberConfig } from '../config/member.js';
import { lsnDistance } from '../postgres/lsn.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import type { Observation } from './observation.js';
import { RepublishGate } from '../util/republish.js';

/** The source cluster of a standby cluster, as read from the source's store this cycle. */
export type SourceView =
  | { reachable: false; cluster: string; error: string }
  | {
      reachable: true;
      cluster: string;
      /** The source's recorded system identifier (undefined: the source is not initialised). */
      systemIdentifier: string | undefined;
      /** The source's running primary holding its leader lease, if any. */
      primary: { member: string; address: string; timeline: number | null; lsn: string | null } | undefined;
      /** The source's last known primary position (its optime record), kept after the primary is gone. */
      optime: { member: string; lsn: string; timeline: number; at: string } | undefined;
      /** The source is itself a standby cluster (chains are not followed). */
      standby: boolean;
    };

/**
 * Reads the source cluster for a standby cluster's agents, keeping one store
 * client open (or none when the source lives in our own store).
 */
export class SourceReader {
  private opened: { key: string; store: Store } | undefined;
  /** Like member statuses, an unchanged link is rewritten only every few seconds. */
  private readonly linkGate = new RepublishGate(5_000);

  constructor(
    private readonly config: MemberConfig,
    private readonly ownStore: Store,
    private readonly log: Logger,
  ) {}

  private async storeFor(link: StandbyCluster): Promise<Store> {
    if (!link.sourceStore) return this.ownStore;
    const key = JSON.stringify(link.sourceStore);
    if (this.opened?.key === key) return this.opened.store;
    await this.close();
    const store = await openStore(link.sourceStore);
    this.opened = { key, store };
    return store;
  }

  async read(link: StandbyCluster | null): Promise<SourceView | undefined> {
    if (!link) {
      await this.close();
      return undefined;
    }
    let store: Store;
    try {
      store = await this.storeFor(link);
    } catch (error) {
      return { reachable: false, cluster: link.sourceCluster, error: `cannot open the source's store: ${(error as Error).message}` };
    }
    const { view, settings } = await readCluster(store, clusterKeys(link.sourceCluster));
    if (!view.reachable) return { reachable: false, cluster: link.sourceCluster, error: view.error };
    const leader = view.leader && view.members.find((m) => m.name === view.leader!.member);
    const runs = leader && leader.role === 'primary' && leader.state === 'primary';
    return {
      reachable: true,
      cluster: link.sourceCluster,
      systemIdentifier: view.init?.systemIdentifier,
      primary: runs ? { member: leader.name, address: leader.connectAddress, timeline: leader.timeline, lsn: leader.receivedLsn } : undefined,
      optime: view.optime && { member: view.optime.member, lsn: view.optime.lsn, timeline: view.optime.timeline, at: view.optime.at },
      standby: settings.standbyCluster !== null,
    };
  }

  /**
   * The standby leader publishes the link in its own store (for `relevo list`
   * and `relevo site promote`) and registers it in the source's store (so the
   * source's `relevo list` shows who follows it). Best effort: a failed write is logged.
   */
  async publishLink(link: StandbyCluster, record: SiteLink, ownKey: string): Promise<void> {
    const text = JSON.stringify(record);
    const { at: _at, ...content } = record;
    const fingerprint = JSON.stringify(content);
    if (!this.linkGate.due(fingerprint)) return;
    await this.ownStore.put(ownKey, text).then(
      () => this.linkGate.written(fingerprint),
      (error: Error) => this.log.warn({ err: error.message }, `could not write the site link ${ownKey}`),
    );
    try {
      const store = await this.storeFor(link);
      await store.put(clusterKeys(link.sourceCluster).standbyCluster(this.config.cluster), text);
    } catch (error) {
      this.log.debug({ err: (error as Error).message }, `could not register standby cluster ${this.config.cluster} in the source's store`);
    }
  }

  async close(): Promise<void> {
    const opened = this.opened;
    this.opened = undefined;
    await opened?.store.close().catch(() => undefined);
  }
}

/** The link record of a standby leader, from what this cycle observed (pure). */
export function siteLinkOf(o: Observation, cluster: string): SiteLink | undefined {
  const link = o.settings.standbyCluster;
  const store = o.store;
  if (!link || !store.reachable || store.leader?.member !== o.member.name) return undefined;
  const server = o.server.kind === 'running' && o.server.inspection.inRecovery ? o.server.inspection : undefined;
  const source = o.source;
  const primary = source?.reachable ? source.primary : undefined;
  // The source's last known position: its primary's published one, else its optime record.
  const sourceLsn = primary?.lsn ?? (source?.reachable ? source.optime?.lsn : undefined) ?? null;
  const distance = lsnDistance(sourceLsn, server?.replayedLsn);
  const lagBytes = distance === null ? null : Math.max(0, distance);
  // Fed from the archive, nothing is "received" ahead of replay (lagSeconds reads 0): the age of the last replayed commit is the lag.
  const lagSeconds = server && lagBytes !== null && lagBytes > 0 && !server.streaming ? (server.replayAgeSeconds ?? server.lagSeconds) : (server?.lagSeconds ?? null);
  return {
    cluster,
    standbyLeader: o.member.name,
    sourceCluster: link.sourceCluster,
    upstream: primary?.member ?? null,
    upstreamAddress: primary?.address ?? null,
    streaming: server?.streaming ?? false,
    feed: feedOf(link),
    sourceLsn,
    sourceTimeline: primary?.timeline ?? (source?.reachable ? source.optime?.timeline : undefined) ?? null,
    receivedLsn: server?.receivedLsn ?? null,
    replayedLsn: server?.replayedLsn ?? null,
    lagBytes,
    lagSeconds,
    problem: sourceProblem(source) ?? null,
    at: new Date(o.now).toISOString(),
  };
}

/** Why the source's primary cannot be followed now, or undefined when it can. */
export function sourceProblem(source: SourceView | undefined): string | undefined {
  if (!source) return 'the source has not been read yet';
  if (!source.reachable) return `source cluster ${source.cluster} unreachable: ${source.error}`;
  if (source.systemIdentifier === undefined) return `source cluster ${source.cluster} is not initialised in its store`;
  if (source.standby) return `source cluster ${source.cluster} is itself a standby cluster`;
  if (!source.primary) return `source cluster ${source.cluster} has no running primary`;
  return undefined;
}
