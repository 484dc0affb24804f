import { readCluster, type ClusterRead } from '../cluster/view.js';
import { clusterKeys, type ClusterKeys } from '../cluster/keys.js';
import { readStoredSettings, writeStoredSettings } from '../cluster/settings-store.js';
import { parseRecord } from '../cluster/records.js';
import { SITE_CODES, type SiteCode, SiteDemotionSchema, SiteLinkSchema, type SiteLink, type StandbyCluster } from '../cluster/site.js';
import type { MemberStatus } from '../cluster/types.js';
import { loadMemberConfig } from '../config/load.js';
import { compareLsn, lsnDistance } from '../postgres/lsn.js';
import type { StoreConfig } from '../store/config.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';
import { routersHolding, routeTo, type RouteSite } from './site-route.js';

/**
 * `relevo site follow|switchover|promote` (docs/sites.md). Every check runs
 * before the first write: a refusal changes nothing and names its stable code.
 */
export class SiteError extends CliError {
  constructor(
    override readonly code: SiteCode,
    message: string,
    exitCode?: number,
  ) {
    super(code, `${code}: ${message}; nothing was changed`, exitCode);
    this.name = 'SiteError';
  }
}

type Reachable = Extract<ClusterRead['view'], { reachable: true }>;

interface Site {
  cluster: string;
  store: Store;
  storeConfig: StoreConfig;
  keys: ClusterKeys;
  close(): Promise<void>;
}

const sameStore = (a: StoreConfig | undefined, b: StoreConfig) => a === undefined || JSON.stringify(a) === JSON.stringify(b);

async function openSite(handle: ClusterHandle, cluster: string, storeConfig: StoreConfig | undefined): Promise<Site> {
  if (sameStore(storeConfig, handle.config.store)) {
    return { cluster, store: handle.store, storeConfig: handle.config.store, keys: clusterKeys(cluster), close: async () => undefined };
  }
  const store = await openStore(storeConfig!).catch((error: Error) => {
    throw new SiteError(SITE_CODES.sourceUnreachable, `cannot open the store of cluster ${cluster}: ${error.message}`, EXIT.failure);
  });
  return { cluster, store, storeConfig: storeConfig!, keys: clusterKeys(cluster), close: () => store.close() };
}

async function readView(site: Pick<Site, 'store' | 'keys' | 'cluster'>, code: SiteCode): Promise<{ view: Reachable; settings: ClusterRead['settings'] }> {
  const read = await readCluster(site.store, site.keys);
  if (!read.view.reachable) throw new SiteError(code, `the store of cluster ${site.cluster} is unreachable: ${read.view.error}`, EXIT.failure);
  return { view: read.view, settings: read.settings };
}

function leaderOf(view: Reachable): MemberStatus | undefined {
  return view.leader && view.members.find((m) => m.name === view.leader!.member);
}

function runningPrimary(view: Reachable): MemberStatus | undefined {
  const leader = leaderOf(view);
  return leader && leader.role === 'primary' && leader.state === 'primary' ? leader : undefined;
}

async function readLink(site: Pick<Site, 'store' | 'keys'>): Promise<SiteLink | undefined> {
  const kv = await site.store.get(site.keys.siteLink);
  const parsed = kv && parseRecord(SiteLinkSchema, kv.value);
  return parsed && parsed.ok ? parsed.value : undefined;
}

/** Writes `standbyCluster` by compare-and-swap on the settings as read; returns the new generation. */
async function setStandby(site: Pick<Site, 'store' | 'keys' | 'cluster'>, standbyCluster: StandbyCluster | null): Promise<number> {
  const read = await readStoredSettings(site.store, site.keys);
  if (!(await writeStoredSettings(site.store, site.keys, { ...read.settings, standbyCluster }, read))) {
    throw new CliError('CONCURRENT_CHANGE', `the settings of cluster ${site.cluster} changed while being written; run the command again`);
  }
  return read.settings.generation + 1;
}

function checkNames(a: Reachable, b: Reachable, aName: string, bName: string): void {
  const clash = a.members.map((m) => m.name).filter((n) => b.members.some((m) => m.name === n));
  if (clash.length > 0) {
    throw new SiteError(SITE_CODES.nameClash, `member names ${clash.join(', ')} exist in both ${aName} and ${bName}: replication identifies members by name, give every member of both sites its own`);
  }
}

async function poll<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, everyMs = 100): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) return undefined;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** `relevo site follow`: make this cluster a standby cluster of another (before its agents first start, or --demote). */
export async function siteFollow(handle: ClusterHandle, options: { source?: string; sourceConfig?: string; sourceRepository?: string; feed?: string; demote?: boolean }): Promise<string> {
  const feed = options.feed;
  if (feed !== undefined && feed !== 'stream' && feed !== 'archive' && feed !== 'both') throw new CliError('BAD_ARGUMENT', `--feed: got "${feed}", expected stream, archive or both`);
  if ((feed === 'archive' || feed === 'both') && !options.sourceRepository) throw new CliError('BAD_ARGUMENT', `--feed ${feed} restores the source's archived WAL: give its backup repository with --source-repository DIR`);
  const sourceMember = options.sourceConfig ? loadMemberConfig(options.sourceConfig) : undefined;
  const sourceName = options.source ?? sourceMember?.cluster;
  if (!sourceName) throw new CliError('BAD_ARGUMENT', 'name the source cluster with --source NAME, or give one of its member files with --source-config FILE');
  const sourceStore = sourceMember && !sameStore(sourceMember.store, handle.config.store) ? sourceMember.store : undefined;
  if (sourceName === handle.config.cluster && sourceStore === undefined) {
    throw new SiteError(SITE_CODES.self, `cluster ${sourceName} cannot follow itself (same name in the same store)`);
  }
  const own = await readView({ store: handle.store, keys: handle.keys, cluster: handle.config.cluster }, SITE_CODES.sourceUnreachable);
  const source = await openSite(handle, sourceName, sourceStore);
  try {
    const theirs = await readView(source, SITE_CODES.sourceUnreachable);
    if (!theirs.view.init?.systemIdentifier) throw new SiteError(SITE_CODES.unknownSource, `no initialised cluster ${sourceName} in ${sourceStore ? 'its' : 'this'} store`);
    if (theirs.settings.standbyCluster) throw new SiteError(SITE_CODES.sourceIsStandby, `cluster ${sourceName} is itself a standby cluster (of ${theirs.settings.standbyCluster.sourceCluster}); follow a cluster with a primary`);
    const ours = own.view.init?.systemIdentifier;
    if (ours && ours !== theirs.view.init.systemIdentifier) {
      throw new SiteError(SITE_CODES.foreignSource, `this cluster is system ${ours}, ${sourceName} is system ${theirs.view.init.systemIdentifier}: a standby cluster starts empty or from a copy of its source`);
    }
    if (own.settings.standbyCluster) throw new SiteError(SITE_CODES.alreadyStandby, `cluster ${handle.config.cluster} already follows ${own.settings.standbyCluster.sourceCluster}`);
    const primary = runningPrimary(own.view);
    if (primary && !options.demote) {
      throw new SiteError(SITE_CODES.wouldDemote, `cluster ${handle.config.cluster} has a running primary (${primary.name}): following ${sourceName} would shut it down and rewind it; use \`relevo site switchover\` from ${sourceName}'s side, or pass --demote`);
    }
    checkNames(own.view, theirs.view, handle.config.cluster, sourceName);
    const generation = await setStandby({ store: handle.store, keys: handle.keys, cluster: handle.config.cluster }, {
      sourceCluster: sourceName,
      ...(sourceStore ? { sourceStore } : {}),
      ...(options.sourceRepository ? { sourceRepository: options.sourceRepository } : {}),
      ...(feed ? { feed } : {}),
    });
    // Our routers send writes to the source's site from now on.
    const routed = await routeTo({ cluster: handle.config.cluster, store: handle.store }, sourceName, sourceStore, false, `standby cluster of ${sourceName}: writes go to its site`).then(
      () => `; routers configured for ${handle.config.cluster} send writes to ${sourceName}`,
      (error: Error) => `; WARNING: the route record was not written (${error.message}): routers configured for ${handle.config.cluster} hold writes until it is`,
    );
    return `cluster ${handle.config.cluster} is now a standby cluster of ${sourceName} (settings generation ${generation})${routed}`;
  } finally {
    await source.close();
  }
}

/**
 * The route records of both sites around a move (site-route.ts): `hold` before
 * the source's primary goes, `back` when the move is undone, `moved` once the
 * target is no longer a standby cluster. Route writes to the source's store are
 * best effort after `hold` (its site may be gone: its routers then cannot read
 * their store either).
 */
function siteRoutes(handle: ClusterHandle, p: Prepared) {
  const source: RouteSite = { cluster: p.source.cluster, store: p.source.store };
  const target: RouteSite = { cluster: p.target.cluster, store: handle.store };
  // Where each side's routers find the other cluster: its store when it is another one.
  const sourceStoreForTarget = p.link.sourceStore;
  const targetStoreForSource = p.link.sourceStore ? handle.config.store : undefined;
  const move = `site move ${p.source.cluster} -> ${p.target.cluster}`;
  return {
    async hold(): Promise<void> {
      const [s, t] = await Promise.all([
        routeTo(source, p.source.cluster, undefined, true, move),
        routeTo(target, p.source.cluster, sourceStoreForTarget, true, move),
      ]);
      await Promise.all([routersHolding(source, s, p.source.cluster, 2_000), routersHolding(target, t, p.source.cluster, 2_000)]);
    },
    async back(): Promise<void> {
      await Promise.all([
        routeTo(source, p.source.cluster, undefined, false, `${move} undone`).catch(() => undefined),
        routeTo(target, p.source.cluster, sourceStoreForTarget, false, `${move} undone`).catch(() => undefined),
      ]);
    },
    async moved(sourceReachable = true): Promise<void> {
      await Promise.all([
        routeTo(target, p.target.cluster, undefined, false, move).catch(() => undefined),
        sourceReachable ? routeTo(source, p.target.cluster, targetStoreForSource, false, move).catch(() => undefined) : undefined,
      ]);
    },
  };
}

interface Prepared {
  source: Site;
  target: Site;
  link: StandbyCluster;
  standbyLeader: MemberStatus;
}

async function prepare(handle: ClusterHandle): Promise<Prepared & { targetView: Reachable }> {
  const target: Site = { cluster: handle.config.cluster, store: handle.store, storeConfig: handle.config.store, keys: handle.keys, close: async () => undefined };
  const { view, settings } = await readView(target, SITE_CODES.sourceUnreachable);
  const link = settings.standbyCluster;
  if (!link) throw new SiteError(SITE_CODES.notStandby, `cluster ${target.cluster} is not a standby cluster: run this with a member file of the standby cluster that should take over`);
  if (link.sourceCluster === target.cluster && sameStore(link.sourceStore, handle.config.store)) throw new SiteError(SITE_CODES.self, `cluster ${target.cluster} is configured to follow itself; fix standbyCluster`);
  const leader = leaderOf(view);
  if (!leader || leader.state !== 'standby_leader' || leader.role !== 'replica') {
    throw new SiteError(SITE_CODES.noStandbyLeader, `cluster ${target.cluster} has no running standby leader (leader: ${leader ? `${leader.name}, ${leader.state}` : 'none'})`);
  }
  const source = await openSite(handle, link.sourceCluster, link.sourceStore);
  return { source, target, link, standbyLeader: leader, targetView: view };
}

/** `relevo site switchover`: the standby cluster named by the member file becomes the source; the source becomes its standby cluster. */
export async function siteSwitchover(handle: ClusterHandle, options: { maxLagBytes: number; timeoutMs: number }): Promise<string> {
  const p = await prepare(handle);
  try {
    const src = await readView(p.source, SITE_CODES.sourceUnreachable);
    if (!src.view.init?.systemIdentifier) throw new SiteError(SITE_CODES.unknownSource, `no initialised cluster ${p.source.cluster} in its store`);
    if (src.settings.standbyCluster) throw new SiteError(SITE_CODES.sourceIsStandby, `cluster ${p.source.cluster} is itself a standby cluster of ${src.settings.standbyCluster.sourceCluster}`);
    const primary = runningPrimary(src.view);
    if (!primary) throw new SiteError(SITE_CODES.noSourcePrimary, `cluster ${p.source.cluster} has no running primary to hand over from (use \`relevo site promote\` if it is lost)`, EXIT.failure);
    const upstream = `${p.source.cluster}/${primary.name}`;
    if (!p.standbyLeader.streaming || p.standbyLeader.upstream !== upstream) {
      throw new SiteError(SITE_CODES.notStreaming, `standby leader ${p.standbyLeader.name} does not stream from ${upstream} (streaming: ${p.standbyLeader.streaming}, upstream: ${p.standbyLeader.upstream ?? 'none'})`, EXIT.failure);
    }
    const lag = lsnDistance(primary.receivedLsn, p.standbyLeader.replayedLsn);
    if (lag === null || lag > options.maxLagBytes) {
      throw new SiteError(SITE_CODES.lagTooLarge, `standby leader ${p.standbyLeader.name} is ${lag ?? 'an unknown number of'} bytes behind ${upstream} (limit --max-lag-bytes ${options.maxLagBytes})`, EXIT.failure);
    }
    checkNames(src.view, p.targetView, p.source.cluster, p.target.cluster);
    const started = Date.now();
    // 0. Routers of both sites hold new writes and drain their sessions, as in a switchover inside a cluster.
    const routes = siteRoutes(handle, p);
    await routes.hold().catch(async (error: unknown) => {
      await routes.back();
      throw error;
    });
    // 1. The source becomes a standby cluster of the target: its primary shuts down cleanly and records where.
    // The source then reads our store (when it is another one) and, if it restored from an archive before, ours.
    const ourRepository = p.link.sourceRepository ? (await readStoredSettings(handle.store, handle.keys)).settings.backup.repository : undefined;
    const reverse: StandbyCluster = {
      sourceCluster: p.target.cluster,
      ...(p.link.sourceStore ? { sourceStore: handle.config.store } : {}),
      ...(ourRepository ? { sourceRepository: ourRepository } : {}),
    };
    const generation = await setStandby(p.source, reverse).catch(async (error: unknown) => {
      await routes.back();
      throw error;
    });
    const demotion = await poll('the demotion', options.timeoutMs, async () => {
      const kv = await p.source.store.get(p.source.keys.siteDemotion);
      const parsed = kv && parseRecord(SiteDemotionSchema, kv.value);
      return parsed && parsed.ok && parsed.value.generation === generation ? parsed.value : undefined;
    });
    if (!demotion) {
      await setStandby(p.source, null);
      await routes.back();
      throw new CliError('SITE_TIMEOUT', `primary ${primary.name} of ${p.source.cluster} did not record a clean shutdown within ${options.timeoutMs} ms; the change was undone (it runs as primary again)`, EXIT.failure);
    }
    const demotedAt = Date.now();
    // 2. The target's standby leader must replay past the shutdown checkpoint: then it holds every commit.
    const caughtUp = await poll('the catch-up', options.timeoutMs, async () => {
      const { view } = await readView(p.target, SITE_CODES.sourceUnreachable);
      const leader = leaderOf(view);
      return leader?.name === p.standbyLeader.name && leader.replayedLsn && compareLsn(leader.replayedLsn, demotion.shutdownLsn) > 0 ? leader.replayedLsn : undefined;
    }, 50);
    if (!caughtUp) {
      await setStandby(p.source, null);
      await routes.back();
      throw new CliError('SITE_TIMEOUT', `standby leader ${p.standbyLeader.name} did not replay past ${demotion.shutdownLsn} within ${options.timeoutMs} ms; the source was turned back into a primary cluster (${primary.name} restarts as primary)`, EXIT.failure);
    }
    // 3. The target is no longer a standby cluster: its standby leader promotes. Routers of both sites follow
    // it now: they wait until it has published that it is primary, as for any promotion.
    await setStandby(p.target, null);
    await routes.moved();
    await p.source.store.delete(p.source.keys.standbyCluster(p.target.cluster)).catch(() => false);
    const promoted = await poll('the promotion', options.timeoutMs, async () => {
      const { view } = await readView(p.target, SITE_CODES.sourceUnreachable);
      return runningPrimary(view)?.name;
    }, 50);
    const total = ((Date.now() - started) / 1000).toFixed(2);
    if (!promoted) return `site switchover: ${p.source.cluster} demoted at ${demotion.shutdownLsn} and ${p.target.cluster} replayed past it, but no primary runs in ${p.target.cluster} yet after ${options.timeoutMs} ms: watch \`relevo list\``;
    return [
      `site switchover done in ${total} s: ${p.target.cluster} (primary ${promoted}) is the source now; ${p.source.cluster} follows it as a standby cluster.`,
      `  ${primary.name} shut down cleanly at ${demotion.shutdownLsn} (${((demotedAt - started) / 1000).toFixed(2)} s); ${p.standbyLeader.name} replayed to ${caughtUp} and was promoted.`,
      `  ${demotion.member} rejoins as the standby leader of ${p.source.cluster} (pg_rewind when needed): watch \`relevo list\`.`,
    ].join('\n');
  } finally {
    await p.source.close();
  }
}

export interface PromoteReport {
  cluster: string;
  promoted: string | null;
  sourceCluster: string;
  /** The source's last known WAL position and where it was learnt. */
  sourceLastLsn: string | null;
  sourceLastFrom: string;
  replayedLsn: string | null;
  /** Bytes of the source's WAL that may be lost (sourceLastLsn - replayedLsn); null when unknown. */
  lossBoundBytes: number | null;
  sourceMarkedStandby: boolean;
}

/** `relevo site promote`: unplanned; the standby cluster becomes a primary cluster, reporting the possible loss. */
export async function sitePromote(handle: ClusterHandle, options: { force: boolean; timeoutMs: number }): Promise<PromoteReport> {
  const p = await prepare(handle);
  try {
    const link = await readLink(p.target);
    const candidates: { lsn: string; from: string }[] = [];
    if (link?.sourceLsn) candidates.push({ lsn: link.sourceLsn, from: `the standby leader's last observation at ${link.at}` });
    let sourceReachable = false;
    const src = await readCluster(p.source.store, p.source.keys).catch(() => undefined);
    if (src?.view.reachable) {
      sourceReachable = true;
      const primary = runningPrimary(src.view);
      if (primary && !options.force) {
        throw new SiteError(SITE_CODES.sourceAlive, `cluster ${p.source.cluster} still runs primary ${primary.name}: promoting would make two writable sites; use \`relevo site switchover\`, or --force if that primary is cut off for good`);
      }
      if (src.view.optime) candidates.push({ lsn: src.view.optime.lsn, from: `the source's optime record (${src.view.optime.member} at ${src.view.optime.at})` });
      const leader = leaderOf(src.view);
      if (leader?.receivedLsn) candidates.push({ lsn: leader.receivedLsn, from: `the source leader ${leader.name}'s status at ${leader.updatedAt}` });
    }
    const last = candidates.sort((a, b) => compareLsn(b.lsn, a.lsn))[0];
    const replayed = p.standbyLeader.replayedLsn;
    const lossBoundBytes = last && replayed ? lsnDistance(last.lsn, replayed) : null;
    await setStandby(p.target, null);
    const routes = siteRoutes(handle, p);
    await routes.moved(sourceReachable);
    await p.source.store.delete(p.source.keys.standbyCluster(p.target.cluster)).catch(() => false);
    // The source, if its store answers, becomes our standby cluster: its members rejoin by pg_rewind rather than run as a second primary.
    let sourceMarkedStandby = false;
    if (sourceReachable) {
      await setStandby(p.source, { sourceCluster: p.target.cluster, ...(p.link.sourceStore ? { sourceStore: handle.config.store } : {}) }).then(
        () => (sourceMarkedStandby = true),
        () => undefined,
      );
    }
    const promoted = await poll('the promotion', options.timeoutMs, async () => runningPrimary((await readView(p.target, SITE_CODES.sourceUnreachable)).view)?.name, 100);
    return {
      cluster: p.target.cluster,
      promoted: promoted ?? null,
      sourceCluster: p.source.cluster,
      sourceLastLsn: last?.lsn ?? null,
      sourceLastFrom: last?.from ?? 'nothing (no observation of the source)',
      replayedLsn: replayed,
      lossBoundBytes,
      sourceMarkedStandby,
    };
  } finally {
    await p.source.close();
  }
}

export function renderPromote(r: PromoteReport): string {
  const loss =
    r.lossBoundBytes === null
      ? 'possible loss UNKNOWN: no last known position of the source'
      : `possible loss: ${r.lossBoundBytes} bytes of WAL (source's last known LSN ${r.sourceLastLsn} from ${r.sourceLastFrom}; replayed here up to ${r.replayedLsn})`;
  return [
    `site promote: ${r.cluster} ${r.promoted ? `runs primary ${r.promoted}` : 'is promoting (no primary yet: watch `relevo list`)'}; it no longer follows ${r.sourceCluster}.`,
    `  ${loss}. Commits the source made after its last published position are not counted.`,
    r.sourceMarkedStandby
      ? `  ${r.sourceCluster}'s store answered: it is now a standby cluster of ${r.cluster}, so its members rejoin by pg_rewind (their unreplicated commits are rewound away).`
      : `  ${r.sourceCluster}'s store did not answer: before it comes back, run \`relevo site follow --demote\` on it, or it runs as a second primary.`,
  ].join('\n');
}

/** For `relevo list`: the link of a standby cluster, and the standby clusters that follow this one. */
export async function siteListing(handle: ClusterHandle, standbyCluster: StandbyCluster | null): Promise<{ standbyOf: { sourceCluster: string; link: SiteLink | null } | null; followers: SiteLink[] }> {
  const link = standbyCluster ? ((await readLink({ store: handle.store, keys: handle.keys })) ?? null) : null;
  const followers = (await handle.store.list(handle.keys.standbyClustersPrefix)).flatMap((kv) => {
    const parsed = parseRecord(SiteLinkSchema, kv.value);
    return parsed.ok && parsed.value.sourceCluster === handle.config.cluster ? [parsed.value] : [];
  });
  return { standbyOf: standbyCluster ? { sourceCluster: standbyCluster.sourceCluster, link } : null, followers };
}
