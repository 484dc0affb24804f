/**
 * The router process: follows the store (watch + periodic full read), keeps
 * the view, and applies its changes to live sessions:
 *
 * - the lease holder changes or vanishes → every session to the old primary
 *   is closed at once (fail closed: it may be about to be demoted);
 * - the store is unreadable for longer than the lease TTL → same, and new
 *   read-write connections are refused with a FATAL ErrorResponse, unless
 *   the primary's agent confirms it holds the store failsafe (failsafe.ts):
 *   then writes go on to it while that confirmation lasts;
 * - a switchover begins → new read-write connections are held; sessions on
 *   the old primary are closed as soon as each is idle, or at drainMs;
 * - the switchover ends → held connections go to the new primary;
 * - the route record (src/cluster/route.ts) holds writes → as a switchover;
 *   it names another cluster → the router follows that cluster's leader and
 *   members instead (a blue/green upgrade), holding read-write connections
 *   until it has read that cluster; with a `store` it is kept in another
 *   store (another site's, docs/sites.md), which the router opens, reads and
 *   watches beside its own.
 *
 * Selection itself is in view.ts (pure); relaying in relay.ts.
 */
import { performance } from 'node:perf_hooks';
import type { Server } from 'node:http';
import { clusterKeys } from '../cluster/keys.js';
import { RouteRecordSchema, type RouteRecord } from '../cluster/route.js';
import { FailoverRequestSchema, LeaderRecordSchema, MemberStatusSchema, type LeaderRecord, type MemberStatus } from '../cluster/types.js';
import type { StoreConfig } from '../store/config.js';
import { openStore } from '../store/open.js';
import type { KeyValue, LeaseId, Store, Watch, WatchEvent } from '../store/store.js';
import { closure } from './errors.js';
import { Listener, type ListenerContext, type ListenerRole } from './listener.js';
import { createRegistry, serveMetrics } from './metrics.js';
import { afterProbe, afterRead, afterStaleness, grantInForce, NO_OUTAGE, probeDue, type RouterFailsafe } from './failsafe.js';
import { askFailsafe } from './failsafe-probe.js';
import type { PeerAccess } from '../tls/client.js';
import { RouterSettingsSchema, settingsProblem, type RouterLogger, type RouterOptions, type RouterSettings } from './options.js';
import type { Relay } from './relay.js';
import { CaFile, CertFiles } from './server-tls.js';
import { VerifierFile } from './verifiers.js';
import { ServerPool } from './pool.js';
import type { RouterStatus, ListenerStats } from './status.js';
import {
  parseAddress,
  pickReadOnly,
  pickReadWrite,
  readOnlyCandidates,
  routedPrimary,
  storeStaleness,
  switchoverInProgress,
  type Backend,
  type Decision,
  type FailoverRecord,
  type SelectionSettings,
} from './view.js';
import { z } from 'zod';

export interface RouterHandle {
  /** Bound addresses ("host:port"), useful when port 0 was asked for. */
  readonly addresses: { readWrite: string | null; readOnly: string | null; metrics: string | null };
  stats(): RouterStatus;
  /** Stops listening, closes every session with a FATAL "shutting down", unpublishes. */
  stop(): Promise<void>;
}


const silent: RouterLogger = { info() {}, warn() {}, error() {}, debug() {} };

function isStore(s: Store | StoreConfig): s is Store {
  return typeof (s as Store).get === 'function';
}

export async function startRouter(options: RouterOptions): Promise<RouterHandle> {
  const { store: storeOption, logger, agentAccess, ...rest } = options;
  const settings = RouterSettingsSchema.parse(rest);
  const problem = settingsProblem(settings);
  if (problem) throw new Error(problem);
  const ownsStore = !isStore(storeOption);
  const store = isStore(storeOption) ? storeOption : await openStore(storeOption);
  const router = new Router(settings, store, logger ?? silent, ownsStore, agentAccess ?? (() => ({})));
  try {
    await router.start();
  } catch (error) {
    await router.stop();
    throw error;
  }
  return {
    addresses: router.addresses,
    stats: () => router.stats(),
    stop: () => router.stop(),
  };
}

class Router {
  /** Keys of the cluster this router is configured for: its route record and its status key live there. */
  private readonly home;
  /** Keys of the cluster whose leader and members the router follows now (home unless the route record says otherwise). */
  private keys;
  private following: string;
  private route: RouteRecord | undefined;
  private routeMalformed = false;
  /** Store revision of the route record applied (0 = none). */
  private routeRevision = 0;
  /** Bumped when the followed cluster changes: a store read begun before belongs to the old one. */
  private targetEpoch = 0;
  /** The followed cluster changed and has not been read yet: read-write connections wait. */
  private loadingTarget = false;
  private refreshAgain = false;
  private targetWatch: Watch | undefined;
  /**
   * The store the followed cluster's keys are read from: the router's own, or
   * another site's named by the route record (opened here, closed when left).
   * Undefined while that one is being opened.
   */
  private targetStore: Store | undefined;
  /** JSON of the route record's `store`, '' for the router's own store. */
  private targetStoreId = '';
  private opening = false;
  private appliedCluster: string;
  /** The store of the applied cluster (targetStoreId): a cluster of the same name in another store is another cluster. */
  private appliedStoreId = '';
  private publishedRoute = '';
  private readonly selection: SelectionSettings;
  private leader: LeaderRecord | undefined;
  private readonly members = new Map<string, MemberStatus>();
  private failover: FailoverRecord | undefined;
  /** Monotonic ms when the last successful full read began. */
  private lastReadAt: number | undefined;
  /** Store revision of the state applied for each key (including deletions). */
  private readonly revisions = new Map<string, number>();
  /** Keys currently present in the view. */
  private readonly present = new Set<string>();
  private applyQueued = false;
  private reading = false;
  private watch: Watch | undefined;
  private watching = false;
  private timers: NodeJS.Timeout[] = [];
  /** Member that read-write sessions go to, as last applied to live sessions. */
  private appliedPrimary: string | undefined;
  private appliedSwitchover = false;
  /** Read-write sessions go to the primary on a failsafe grant now. */
  private appliedFailsafe = false;
  private storeWasReadable = false;
  /** Store failsafe: the grant of the primary's agent, and where the router is in an outage (failsafe.ts). */
  private failsafe: RouterFailsafe = NO_OUTAGE;
  private probing = false;
  private readonly listeners: Listener[] = [];
  private readonly keyOwners = new Map<string, Relay>();
  private readonly relayKeys = new Map<Relay, string>();
  private metricsServer: Server | undefined;
  /** Session mode's server pool, when pooling is on. */
  private pool: ServerPool | undefined;
  private metricsUrl: string | null = null;
  private lease: LeaseId | undefined;
  private stopped = false;
  private readonly startedAt = new Date().toISOString();
  addresses: RouterHandle['addresses'] = { readWrite: null, readOnly: null, metrics: null };

  constructor(
    private readonly settings: RouterSettings,
    private readonly store: Store,
    private readonly log: RouterLogger,
    private readonly ownsStore: boolean,
    private readonly agentAccess: () => PeerAccess,
  ) {
    this.home = clusterKeys(settings.cluster);
    this.keys = this.home;
    this.targetStore = store;
    this.following = settings.cluster;
    this.appliedCluster = settings.cluster;
    this.selection = {
      maxLagBytes: settings.maxLagBytes,
      maxLagSeconds: settings.maxLagSeconds,
      fallbackToPrimary: settings.fallbackToPrimary,
      requireStreaming: settings.requireStreaming,
      defaultTtlMs: settings.timeouts.defaultTtlMs,
    };
  }

  private now(): number {
    return performance.now();
  }

  async start(): Promise<void> {
    const ctx: ListenerContext = {
      decide: (role, acceptPromoting) => this.decide(role, acceptPromoting),
      cancelTargets: (role, pid, secret) => this.cancelTargets(role, pid, secret),
      registerKey: (relay, pid, secret) => {
        const key = `${pid}:${secret}`;
        this.keyOwners.set(key, relay);
        this.relayKeys.set(relay, key);
      },
      unregisterKey: (relay) => {
        const key = this.relayKeys.get(relay);
        if (key === undefined) return;
        this.relayKeys.delete(relay);
        if (this.keyOwners.get(key) === relay) this.keyOwners.delete(key);
      },
      timeouts: this.settings.timeouts,
      limits: this.settings.limits,
      now: () => this.now(),
    };
    const sessionSupport = this.sessionSupport();
    // Read the store before listening so the first clients meet a real view.
    await this.startWatch();
    await this.refresh();
    // The route record may name another cluster: read that one too before listening.
    for (let i = 0; i < 3 && this.loadingTarget; i++) await this.refresh();
    const { readWrite, readOnly } = this.settings.listen;
    for (const [role, address] of [['rw', readWrite], ['ro', readOnly]] as const) {
      if (address === null) continue;
      const parsed = parseAddress(address, true);
      if (!parsed) throw new Error(`router: bad listen address "${address}"`);
      const mode = role === 'rw' ? this.settings.mode.readWrite : this.settings.mode.readOnly;
      const listener = new Listener(role, mode === 'session' ? { ...ctx, session: sessionSupport } : ctx);
      await listener.listen(parsed.host, parsed.port);
      this.listeners.push(listener);
      if (role === 'rw') this.addresses.readWrite = listener.address;
      else this.addresses.readOnly = listener.address;
      this.log.info({ listener: role, address: listener.address }, 'router listening');
    }
    if (this.settings.metrics !== null) {
      const parsed = parseAddress(this.settings.metrics, true);
      if (!parsed) throw new Error(`router: bad metrics address "${this.settings.metrics}"`);
      const registry = createRegistry(() => this.stats());
      const served = await serveMetrics(registry, () => this.stats(), parsed.host, parsed.port);
      this.metricsServer = served.server;
      this.metricsUrl = served.url;
      this.addresses.metrics = served.url.replace(/^http:\/\//, '');
    }
    const every = (ms: number, fn: () => void): void => {
      const t = setInterval(fn, ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.settings.timeouts.refreshMs, () => void this.refresh());
    // Staleness is checked more often than the store is read, so the TTL bound is tight. The
    // failsafe probe check rides on the same timer (one wake-up instead of two: an idle router's
    // CPU is mostly its wake-ups); it runs once its own interval has passed.
    const applyMs = Math.max(20, Math.min(250, Math.floor(this.settings.timeouts.refreshMs / 2)));
    const probeMs = this.probeIntervalMs();
    let probedAt = -Infinity;
    every(applyMs, () => {
      this.apply();
      const now = Date.now();
      if (now - probedAt < probeMs - applyMs / 2) return;
      probedAt = now;
      void this.probeFailsafe();
    });
    every(this.settings.publishIntervalMs, () => void this.publish());
    void this.publish();
  }

  /** Verifiers, TLS and cancel routing for listeners in session mode (the verifier, certificate and CA files are re-read when they change). */
  private sessionSupport(): ListenerContext['session'] {
    const s = this.settings.session;
    if (!s) return undefined;
    const verifiers = new VerifierFile(s.verifiersFile);
    const tls = s.tls ? new CertFiles(s.tls.certFile, s.tls.keyFile) : undefined;
    this.pool = s.pool ? new ServerPool(s.pool.size, s.pool.idleMs) : undefined;
    return {
      pool: this.pool,
      verifier: (user) => verifiers.get(user),
      tls,
      serverCa: s.serverCaFile ? new CaFile(s.serverCaFile) : undefined,
      cancel: (pid, secret) => {
        for (const l of this.listeners) {
          for (const session of l.sessions) if (session.key.pid === pid && session.key.secret === secret) session.cancel();
        }
      },
    };
  }

  // ---- reading the store -------------------------------------------------

  private async startWatch(): Promise<void> {
    if (this.watching || this.stopped) return;
    this.watching = true;
    try {
      this.watch = await this.store.watch(
        this.home.root,
        (event) => this.onEvent(event, 'home'),
        (error) => {
          this.log.warn({ err: error.message }, 'store watch broke; re-reading');
          this.watch = undefined;
          this.watching = false;
        },
      );
    } catch (error) {
      this.watching = false;
      this.log.warn({ err: (error as Error).message }, 'cannot watch the store yet');
    }
  }

  /** Watches the followed cluster's keys when it is not the home cluster (whose root the main watch covers). */
  private async startTargetWatch(): Promise<void> {
    const store = this.targetStore;
    if (this.targetWatch || this.stopped || store === undefined || (!this.elsewhere() && this.following === this.settings.cluster)) return;
    const epoch = this.targetEpoch;
    const prefix = this.keys.root;
    try {
      const watch = await store.watch(
        prefix,
        (event) => this.onEvent(event, 'target'),
        (error) => {
          this.log.warn({ err: error.message }, 'store watch of the followed cluster broke; re-reading');
          if (this.targetWatch === watch) this.targetWatch = undefined;
        },
      );
      if (epoch !== this.targetEpoch || this.stopped) await watch.close().catch(() => undefined);
      else this.targetWatch = watch;
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, 'cannot watch the followed cluster yet');
    }
  }

  /** The followed cluster is kept in another store than the router's own. */
  private elsewhere(): boolean {
    return this.targetStoreId !== '';
  }

  /** The route record names another cluster (or store): forget the old view and follow that cluster. */
  private retarget(target: string, storeConfig: StoreConfig | undefined): void {
    const from = this.following;
    const storeId = storeConfig === undefined ? '' : JSON.stringify(storeConfig);
    const old = this.targetWatch;
    this.targetWatch = undefined;
    const closing = old ? old.close().catch(() => undefined) : Promise.resolve();
    if (storeId !== this.targetStoreId) {
      const left = this.targetStore;
      // The other site's store is closed once its watch is.
      if (left !== undefined && left !== this.store) void closing.then(() => left.close()).catch(() => undefined);
      this.targetStoreId = storeId;
      this.targetStore = storeConfig === undefined ? this.store : undefined;
    }
    this.following = target;
    this.keys = clusterKeys(target);
    this.targetEpoch += 1;
    this.loadingTarget = true;
    this.leader = undefined;
    this.members.clear();
    this.failover = undefined;
    for (const key of [...this.present]) if (key !== this.home.route) this.present.delete(key);
    for (const key of [...this.revisions.keys()]) if (key !== this.home.route) this.revisions.delete(key);
    if (this.targetStore === undefined) void this.openTargetStore(storeConfig!);
    else void this.startTargetWatch();
    this.log.warn({ from, to: target, ...(storeConfig ? { store: storeConfig.backend } : {}) }, `route record: following ${storeConfig ? "another store's" : 'another'} cluster`);
    this.refreshAgain = true;
    queueMicrotask(() => void this.refresh());
  }

  /** Opens the other site's store named by the route record; read-write connections wait meanwhile (loadingTarget). */
  private async openTargetStore(config: StoreConfig): Promise<void> {
    if (this.opening) return;
    this.opening = true;
    const id = JSON.stringify(config);
    try {
      const store = await openStore(config);
      if (this.stopped || id !== this.targetStoreId || this.targetStore !== undefined) {
        await store.close().catch(() => undefined);
        return;
      }
      this.targetStore = store;
      void this.startTargetWatch();
      this.refreshAgain = true;
      void this.refresh();
    } catch (error) {
      // Tried again at the next refresh; writes wait (then time out) meanwhile, as for any cluster not read yet.
      this.log.warn({ err: (error as Error).message, store: config.backend }, "cannot open the followed cluster's store");
    } finally {
      this.opening = false;
    }
  }

  /**
   * Watch events and full reads can arrive in any order relative to each
   * other; the view must never step back to an older state (a stale "leader
   * deleted" would close the sessions of the current primary). So each key
   * remembers the store revision of what was applied, and older news is dropped.
   */
  private onEvent(event: WatchEvent, from: 'home' | 'target'): void {
    const { key } = event;
    if (!this.relevant(key, from)) return;
    if (event.revision <= (this.revisions.get(key) ?? 0)) return;
    this.revisions.set(key, event.revision);
    this.absorb(key, event.type === 'put' ? event.value : undefined);
    // One apply per batch of events: a put and delete of the same batch never show half-done.
    if (!this.applyQueued) {
      this.applyQueued = true;
      queueMicrotask(() => {
        this.applyQueued = false;
        this.apply();
      });
    }
  }

  /**
   * With the followed cluster in another store, the router's own store gives
   * only the route record and the other one everything else: the same key
   * name in both (two clusters of one name) never mixes, nor do their revisions.
   */
  private relevant(key: string, from: 'home' | 'target'): boolean {
    const k = this.keys;
    if (key === this.home.route) return from === 'home';
    if (from === 'home' && this.elsewhere()) return false;
    return key === k.leader || key === k.failover || key.startsWith(k.membersPrefix);
  }

  /** Updates the view from one key (value undefined = absent). */
  private absorb(key: string, value: string | undefined): void {
    const k = this.keys;
    if (key === this.home.route) {
      this.route = value === undefined ? undefined : this.parse(key, value, RouteRecordSchema);
      // An unreadable record holds writes rather than guess where clients belong.
      this.routeMalformed = value !== undefined && this.route === undefined;
      this.routeRevision = value === undefined ? 0 : (this.revisions.get(key) ?? 0);
      if (!this.routeMalformed) {
        const target = this.route?.cluster ?? this.settings.cluster;
        const storeConfig = this.route?.store;
        if (target !== this.following || (storeConfig === undefined ? '' : JSON.stringify(storeConfig)) !== this.targetStoreId) this.retarget(target, storeConfig);
      }
    } else if (key === k.leader) {
      this.leader = value === undefined ? undefined : this.parse(key, value, LeaderRecordSchema);
    } else if (key === k.failover) {
      this.failover = value === undefined ? undefined : this.parse(key, value, FailoverRequestSchema);
    } else if (key.startsWith(k.membersPrefix)) {
      const name = key.slice(k.membersPrefix.length);
      const status = value === undefined ? undefined : this.parse(key, value, MemberStatusSchema);
      if (status) this.members.set(name, { ...status, name });
      else this.members.delete(name);
    }
    if (value === undefined) this.present.delete(key);
    else this.present.add(key);
  }

  /**
   * Applies a full read. The read reflects every change up to at least the
   * highest revision in it, so a key we hold at or below that revision and
   * that is missing from the read was deleted.
   */
  private absorbSnapshot(kvs: KeyValue[], from: 'home' | 'target'): void {
    let maxRevision = 0;
    for (const kv of kvs) maxRevision = Math.max(maxRevision, kv.revision);
    const seen = new Set<string>();
    for (const kv of kvs) {
      if (!this.relevant(kv.key, from)) continue;
      seen.add(kv.key);
      if (kv.revision <= (this.revisions.get(kv.key) ?? 0)) continue;
      this.revisions.set(kv.key, kv.revision);
      this.absorb(kv.key, kv.value);
    }
    for (const key of [...this.present]) {
      // Revisions of two stores do not compare: only keys this read speaks for.
      if (!this.relevant(key, from)) continue;
      if (seen.has(key) || (this.revisions.get(key) ?? 0) > maxRevision) continue;
      this.revisions.set(key, maxRevision);
      this.absorb(key, undefined);
    }
  }

  private parse<T>(key: string, value: string, schema: z.ZodType<T>): T | undefined {
    try {
      return schema.parse(JSON.parse(value));
    } catch (error) {
      // An unreadable record counts as absent: fail closed rather than guess.
      this.log.warn({ key, err: (error as Error).message }, 'ignoring malformed store record');
      return undefined;
    }
  }

  private async refresh(): Promise<void> {
    if (this.reading || this.stopped) return;
    this.reading = true;
    this.refreshAgain = false;
    const startedAt = this.now();
    const epoch = this.targetEpoch;
    const followed = this.keys;
    const elsewhere = this.elsewhere();
    const targetStore = this.targetStore;
    try {
      const kvs: KeyValue[] = await this.store.list(this.home.root);
      // The other site's store is not open yet: the followed cluster stays unread (writes held) and this read counts only for the route record.
      const complete = targetStore !== undefined;
      const theirs: KeyValue[] = targetStore === undefined || (!elsewhere && followed === this.home) ? [] : await targetStore.list(followed.root);
      if (this.stopped) return;
      if (elsewhere) {
        this.absorbSnapshot(kvs, 'home');
        // (the route record just read may have moved the router elsewhere again)
        if (epoch === this.targetEpoch && complete) this.absorbSnapshot(theirs, 'target');
      } else {
        kvs.push(...theirs);
        // The followed cluster changed during the read: only the route record in it is news.
        this.absorbSnapshot(epoch === this.targetEpoch ? kvs : kvs.filter((kv) => kv.key === this.home.route), 'home');
      }
      if (!complete) {
        if (!this.opening && this.targetStoreId !== '' && this.route?.store) void this.openTargetStore(this.route.store);
      } else if (epoch === this.targetEpoch) {
        if (this.loadingTarget) this.log.info({ cluster: this.following }, 'read the followed cluster');
        this.loadingTarget = false;
        if (!this.targetWatch) void this.startTargetWatch();
      } else {
        this.refreshAgain = true;
      }
      this.lastReadAt = startedAt;
      if (!this.storeWasReadable) this.log.info({}, 'store readable');
      this.storeWasReadable = true;
      this.afterRead({ ok: true, startedAt, at: this.now(), stale: this.staleness().stale, leader: this.leader?.member });
      if (!this.watching) void this.startWatch();
    } catch (error) {
      if (this.storeWasReadable) this.log.warn({ err: (error as Error).message }, 'cannot read the store');
      this.storeWasReadable = false;
      this.afterRead({ ok: false });
    } finally {
      this.reading = false;
    }
    this.apply();
    if (this.refreshAgain && !this.stopped) await this.refresh();
  }

  // ---- store failsafe ----------------------------------------------------

  private probeIntervalMs(): number {
    return Math.max(100, Math.min(250, Math.floor(this.settings.timeouts.refreshMs / 2)));
  }

  private afterRead(read: Parameters<typeof afterRead>[1]): void {
    const before = this.failsafe;
    this.failsafe = afterRead(before, read);
    if (before.outage && !this.failsafe.outage && before.grant) {
      this.log.warn({ member: before.grant.member, leader: this.leader?.member ?? null }, `failsafe over: read the store again; following it${this.failsafe.grant ? ` (while it names no leader, writes go to ${before.grant.member} until its grant runs out)` : ''}`);
    }
    // The store answers again: read once more, from now, before letting it decide.
    if (this.failsafe.answeredAt !== undefined && before.answeredAt === undefined) this.refreshAgain = true;
  }

  /**
   * The one effect of failsafe: while the store cannot be read (or is about
   * to go stale), ask the last known primary's agent whether it holds the
   * store failsafe; its answer grants or ends routing to it (failsafe.ts).
   */
  private async probeFailsafe(): Promise<void> {
    if (this.probing || this.stopped) return;
    const now = this.now();
    const staleness = this.staleness();
    this.failsafe = afterStaleness(this.failsafe, staleness.stale);
    const afterMs = Math.min(2 * this.settings.timeouts.refreshMs, staleness.ttlMs / 2);
    if (!probeDue(this.failsafe, { now, lastReadAt: this.lastReadAt, afterMs })) return;
    const leader = this.leader?.member;
    const status = leader === undefined ? undefined : this.members.get(leader);
    if (!leader || !status || status.role !== 'primary') return;
    this.probing = true;
    try {
      const outcome = await askFailsafe(leader, status.apiUrl, status.connectAddress, this.agentAccess(), Math.max(200, Math.min(1_000, Math.floor(staleness.ttlMs / 4))), () => this.now());
      if (this.stopped) return;
      const before = this.failsafe.grant;
      const { state, reason } = afterProbe(this.failsafe, outcome, staleness.ttlMs);
      this.failsafe = state;
      const after = state.grant;
      if (!before && after) this.log.warn({ member: after.member, failsafe: true }, `failsafe: ${reason}; writes go on to it while the store cannot be read`);
      else if (before && !after) this.log.error({ member: before.member, failsafe: false }, `failsafe grant ended: ${reason}`);
    } finally {
      this.probing = false;
    }
    this.apply();
  }

  // ---- applying the view -------------------------------------------------

  /** What decides where writes go: the view, and a failsafe grant during an outage. */
  private viewInput() {
    const grant = grantInForce(this.failsafe, this.leader?.member);
    return { snapshot: this.snapshot(), settings: this.selection, now: this.now(), lastStoreReadAt: this.lastReadAt, ...(grant ? { failsafe: grant } : {}) };
  }

  private snapshot() {
    return { leader: this.leader, members: this.members, failover: this.failover, hold: this.holdReason() };
  }

  private holdReason(): string | undefined {
    if (this.loadingTarget) return `moving to cluster ${this.following}`;
    if (this.routeMalformed) return 'the route record is unreadable';
    if (this.route?.hold) return `writes held: ${this.route.reason}`;
    return undefined;
  }

  private staleness() {
    return storeStaleness({ snapshot: this.snapshot(), settings: this.selection, now: this.now(), lastStoreReadAt: this.lastReadAt });
  }

  /** Brings live sessions and held clients in line with the current view. */
  private apply(): void {
    if (this.stopped) return;
    const staleness = this.staleness();
    this.failsafe = afterStaleness(this.failsafe, staleness.stale);
    const snapshot = this.snapshot();
    const routed = routedPrimary(this.viewInput());
    const primary = routed.member;
    if (routed.failsafe !== this.appliedFailsafe) {
      this.appliedFailsafe = routed.failsafe;
      if (routed.failsafe) this.log.warn({ member: primary, failsafe: true, ageMs: staleness.ageMs }, `failsafe: store not read for ${Math.round(staleness.ageMs ?? 0)} ms; writes still go to ${primary}, which holds the store failsafe`);
    }
    const previous = this.appliedPrimary;
    if (this.appliedCluster !== this.following || this.appliedStoreId !== this.targetStoreId) {
      // Another cluster now: every session on the old one goes (read-write ones were drained by the hold).
      const fields = closure('cluster-switched', { from: this.appliedCluster, to: this.following });
      let n = 0;
      for (const l of this.listeners) {
        n += l.closeWhere(() => true, fields, 'cluster-switched');
        if (previous !== undefined) l.rerouteConnecting(previous);
        for (const s of l.sessions) s.leaveServer();
      }
      this.pool?.drop();
      this.log.warn({ from: this.appliedCluster, to: this.following, closed: n }, 'following another cluster: closed the sessions on the old one');
      this.appliedCluster = this.following;
      this.appliedStoreId = this.targetStoreId;
      this.appliedPrimary = undefined;
    } else if (previous !== undefined && primary !== previous) {
      const fields = staleness.stale && primary === undefined
        ? closure('store-unreadable', staleness)
        : closure('primary-changed', { member: previous });
      const reason = staleness.stale && primary === undefined ? 'store-unreadable' : 'primary-changed';
      let n = 0;
      for (const l of this.listeners) {
        n += l.closeWhere((r) => r.primary && r.target.member === previous, fields, reason);
        l.rerouteConnecting(previous);
        // Session mode: the session stays, only its server session goes (idle ones notice nothing).
        for (const s of l.sessions) if (s.primary && s.target?.member === previous) s.leaveServer();
      }
      this.pool?.drop(previous);
      this.log.warn({ from: previous, to: primary ?? null, closed: n, reason }, 'primary changed: closed its sessions');
    }
    this.appliedPrimary = primary;

    const switchover = !staleness.stale && switchoverInProgress(snapshot);
    if (switchover !== this.appliedSwitchover) {
      this.appliedSwitchover = switchover;
      const from = snapshot.failover?.from ?? previous ?? '?';
      // Pooled server sessions on the old primary are not reused any more.
      if (switchover && previous !== undefined) this.pool?.drop(previous);
      for (const l of this.listeners) {
        for (const r of l.relays) {
          if (!r.primary) continue;
          if (switchover) {
            const { drainMs } = this.settings.timeouts;
            r.closeWhenIdle(
              closure('switchover-idle', { member: r.target.member }),
              'switchover-idle',
              drainMs,
              closure('switchover-timeout', { member: r.target.member, timeoutMs: drainMs }),
              'switchover-timeout',
            );
          } else {
            r.cancelDrain();
          }
        }
        for (const s of l.sessions) {
          if (!s.primary) continue;
          const { drainMs } = this.settings.timeouts;
          if (switchover) s.beginMove(drainMs, closure('session-open-transaction', { member: s.target?.member ?? from, timeoutMs: drainMs }));
          else s.cancelMove();
        }
      }
      this.log.info({ from, switchover }, switchover ? 'switchover: holding new read-write connections' : 'switchover over');
    }

    // A replica that became primary stops taking read-only sessions (unless fallback allows it).
    if (primary !== undefined && !this.settings.fallbackToPrimary) {
      for (const l of this.listeners) {
        if (l.role !== 'ro') continue;
        l.closeWhere((r) => !r.primary && r.target.member === primary, closure('not-replica', { member: primary }), 'not-replica');
        for (const s of l.sessions) if (!s.primary && s.target?.member === primary) s.leaveServer();
      }
    }
    for (const l of this.listeners) l.reevaluateHeld();
    // Tell `relevo upgrade` at once that this router applied the route record.
    const route = `${this.routeRevision}/${this.following}/${snapshot.hold !== undefined}`;
    if (route !== this.publishedRoute) {
      this.publishedRoute = route;
      void this.publish();
    }
  }

  private decide(role: ListenerRole, acceptPromoting = false): Decision {
    const listener = this.listeners.find((l) => l.role === role);
    const input = {
      ...this.viewInput(),
      connections: listener?.perMember ?? new Map<string, number>(),
      acceptPromoting,
    };
    return role === 'rw' ? pickReadWrite(input) : pickReadOnly(input);
  }

  private cancelTargets(role: ListenerRole, pid: number, secret: number): Backend[] {
    const owner = this.keyOwners.get(`${pid}:${secret}`);
    if (owner) return [owner.target];
    // Key unseen (TLS session): every backend this listener relays to; the wrong ones ignore it.
    const listener = this.listeners.find((l) => l.role === role);
    const targets = new Map<string, Backend>();
    for (const r of listener?.relays ?? []) targets.set(r.target.address, r.target);
    return [...targets.values()];
  }

  // ---- reporting ---------------------------------------------------------

  stats(): RouterStatus {
    const staleness = this.staleness();
    const { eligible, excluded } = readOnlyCandidates(this.snapshot(), this.selection);
    const listeners: ListenerStats[] = this.listeners.map((l) => ({
      role: l.role,
      address: l.address,
      open: l.openCount,
      backends: Object.fromEntries(l.perMember),
      held: l.heldCount,
      heldTotal: l.counters.heldTotal,
      accepted: l.counters.accepted,
      refused: Object.fromEntries(l.counters.refused),
      closed: Object.fromEntries(l.counters.closed),
      bytesFromClients: l.bytesFromClients,
      bytesToClients: l.bytesToClients,
    }));
    return {
      name: this.settings.name,
      cluster: this.settings.cluster,
      pid: process.pid,
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
      metricsUrl: this.metricsUrl,
      store: { readable: !staleness.stale, ageMs: staleness.ageMs === null ? null : Math.round(staleness.ageMs), ttlMs: staleness.ttlMs },
      primary: this.appliedPrimary ?? null,
      switchover: this.appliedSwitchover,
      replicas: { eligible: eligible.map((b) => b.member), excluded },
      listeners,
      route: { following: this.following, hold: this.holdReason() !== undefined, revision: this.routeRevision },
      failsafe: this.failsafeStatus(),
    };
  }

  private failsafeStatus(): RouterStatus['failsafe'] {
    const input = this.viewInput();
    const routed = routedPrimary(input);
    if (!routed.failsafe || !input.failsafe) return null;
    return { member: input.failsafe.member, remainingMs: Math.max(0, Math.round(input.failsafe.until - input.now)) };
  }

  /** Publishes stats under routers/<name>, attached to a lease so a dead router's entry expires. */
  private async publish(): Promise<void> {
    if (this.stopped) return;
    try {
      const ttl = this.settings.publishIntervalMs * 3;
      if (this.lease === undefined || !(await this.store.keepAlive(this.lease))) {
        this.lease = await this.store.grantLease(ttl);
      }
      if (this.stopped) return;
      await this.store.put(this.home.router(this.settings.name), JSON.stringify(this.stats()), { lease: this.lease });
    } catch (error) {
      this.log.debug({ err: (error as Error).message }, 'cannot publish router statistics');
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    const bye = closure('router-stopping');
    await Promise.all(this.listeners.map((l) => l.close(bye)));
    this.pool?.drop();
    if (this.metricsServer) {
      const server = this.metricsServer;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await this.watch?.close().catch(() => undefined);
    await this.targetWatch?.close().catch(() => undefined);
    if (this.targetStore !== undefined && this.targetStore !== this.store) await this.targetStore.close().catch(() => undefined);
    if (this.lease !== undefined) await this.store.revokeLease(this.lease).catch(() => undefined);
    if (this.ownsStore) await this.store.close().catch(() => undefined);
  }
}
