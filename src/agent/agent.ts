import type { Logger } from 'pino';
import { peerAuthorization } from '../api/auth.js';
import { clusterKeys, type ClusterKeys } from '../cluster/keys.js';
import { defaultClusterSettings, type ClusterSettings } from '../cluster/settings.js';
import { describeUnreadable, parseRecord, RECORD_UNREADABLE, UnreadableReporter } from '../cluster/records.js';
import { LeaderRecordSchema, type MemberStatus, type SyncRecord } from '../cluster/types.js';
import { unknownMembers, unreadableOf } from '../cluster/view.js';
import { connectAddressOf, type MemberConfig } from '../config/member.js';
import { loadCredentials, ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { ensureNetworkRole } from '../postgres/roles.js';
import { agentSqlTarget, localPostgres, type LocalPostgres } from '../postgres/local.js';
import { KeptConnection } from '../postgres/sql.js';
import { runningPostmasterPid } from '../postgres/datadir.js';
import { stopPostgres } from '../postgres/postmaster.js';
import { startBackupDuties, type BackupObserver } from '../backup/duties.js';
import type { KeyValue, LeaseId, Store, Watch } from '../store/store.js';
import { decide, RETRY_SOON_MS, type Decision } from './decide.js';
import type { Action } from './actions.js';
import { runAction, type EffectContext } from './effects.js';
import { binariesPending, InstalledVersion } from '../postgres/binaries.js';
import { startAutoRoll } from './auto-roll.js';
import { askPeers, observeDataDir, observeServer, readCluster } from './observe.js';
import { givenAfterRead, grantAnswer, holdDeadline, mayConfirm, membershipAfterRead, type FailsafeGrantAnswer, type FailsafeView } from './failsafe.js';
import { requestConfirmations, type PeerAddress } from './failsafe-peers.js';
import { freshMemory, type AgentMemory, type Observation, type OperatorRequest } from './observation.js';
import type { ActionOutcome } from './outcome.js';
import type { AgentState } from './states.js';
import type { CycleObserver } from './cycle-report.js';
import { memberStatus } from './status.js';
import { Upkeep } from './upkeep.js';
import { LogicalKeeper } from '../logical/keeper.js';
import { SourceReader, siteLinkOf } from './source.js';
import { archiveFeedUsable, effectiveTags } from './delayed.js';
import { ReplayControl } from './replay.js';
import { memberApiClientTls, type PeerAccess } from '../tls/client.js';
import { FENCER_MISSING, FencerLink, type FencerCheck } from '../fence/link.js';
import { requestSwitchover } from '../cluster/operations.js';
import { RepublishGate } from '../util/republish.js';
import { CycleCpu } from './cycle-cpu.js';

/** An unchanged member status is rewritten this often (its updatedAt then moves). */
const STATUS_REFRESH_MS = 10_000;

export interface AgentOptions {
  config: MemberConfig;
  store: Store;
  log: Logger;
  /** Called after the member certificate was re-issued (the API reloads it). */
  onCertificateChanged?: () => void;
  /** Told about every round once it is published (metrics, event log). */
  observers?: CycleObserver[];
  /** Told the archive backlog and the backup catalogue (metrics). */
  backupObserver?: BackupObserver;
}

/**
 * One agent beside one PostgreSQL: observe → decide → act → publish, every
 * loopWaitMs, or sooner when the leader, initialise, config or failover key
 * changes, or when the decision asks to look again soon (a hand-over under way).
 */
export class Agent {
  readonly config: MemberConfig;
  readonly local: LocalPostgres;
  /** Replay pause/resume and recover-table's recovery target (src/agent/replay.ts). */
  readonly replay: ReplayControl;
  private readonly store: Store;
  private readonly keys: ClusterKeys;
  private readonly log: Logger;
  private readonly observers: CycleObserver[];
  private settings: ClusterSettings = defaultClusterSettings();
  private credentials: Credentials | undefined;
  /** The network role was checked on this primary (src/postgres/roles.ts). */
  private networkRoleReady = false;
  private lease: LeaseId | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  /** The fencer process (src/fence): fed the same deadline as the watchdog below, it acts when this process cannot. */
  private readonly fencer: FencerLink;
  private fencerCheck: FencerCheck | undefined;
  /** performance.now() since when a primary has run without its fencer; a hand-over is requested after ttlMs. */
  private fencerMissingSince: number | undefined;
  private leaseTtlMs = 0;
  private systemIdentifier: string | undefined;
  private state: AgentState = 'starting';
  private stateSince = performance.now();
  private lastReason = '';
  /** Written only from decide()'s answer. */
  private memory: AgentMemory = freshMemory();
  /** What became of the last cycle's actions (and of a watchdog stop since): the next observation carries them. */
  private outcomes: ActionOutcome[] = [];
  /** Outcomes of actions taken outside a cycle (the fence watchdog): handed to the next decision. */
  private outOfCycleOutcomes: ActionOutcome[] = [];
  private leaseRenewedAt: number | undefined;
  /** The last observation saw PostgreSQL run as primary (not paused): the fence watchdog is armed. */
  private runsAsPrimary = false;
  private operatorRequest: OperatorRequest | undefined;
  private readonly lastDetail = new Map<string, string>();
  /** Damaged records, reported once per key and revision. */
  private readonly unreadable = new UnreadableReporter();
  /** Last readable status of each member: where to ask one whose record became unreadable. */
  private readonly lastKnown = new Map<string, MemberStatus>();
  /** Generation of the cluster settings this agent last ran a whole cycle with (null: none yet). */
  private appliedGeneration: number | null = null;
  private readonly connection = new KeptConnection(() => {
    if (!this.credentials) throw new Error('no agent credentials to connect with');
    return agentSqlTarget(this.local, this.credentials);
  });
  private status: MemberStatus | undefined;
  private readonly statusGate = new RepublishGate(STATUS_REFRESH_MS);
  private sync: SyncRecord | undefined;
  private watch: Watch | undefined;
  /** The store watch is up: a change of the leader, failover or config key wakes the loop at once. */
  private watchLive = false;
  private wake: (() => void) | undefined;
  /** A watched key changed while a cycle ran (after its observation, maybe): the next cycle starts at once. */
  private wakePending = false;
  private running = false;
  private loopDone: Promise<void> | undefined;
  /** Store failsafe: last known membership and leader (from the last store read), confirmations held, one given. */
  private readonly failsafe = {
    membership: [] as PeerAddress[],
    lastLeader: undefined as string | undefined,
    confirmedAt: new Map<string, number>(),
    ended: undefined as string | undefined,
    active: false,
    /**
     * When failsafe ended because the store answers again: the hold the confirmations still give (no member
     * takes over before it). GET /failsafe keeps answering on it, so a router that asks before it reads the
     * store itself again does not drop sessions on a primary that never stopped being the only one.
     */
    heldAfterReturn: undefined as number | undefined,
    given: undefined as { leader: string; at: number } | undefined,
    timer: undefined as NodeJS.Timeout | undefined,
  };
  private readonly peerAuthorization: string | undefined;
  private readonly upkeep: Upkeep;
  private readonly installed: InstalledVersion;
  /** Publications, subscriptions and copies of logical slots (src/logical/keeper.ts): runs beside the cycle, never inside it. */
  private readonly logical: LogicalKeeper;
  private logicalRound: Promise<void> | undefined;
  /** The subtree's other keys (certificate rotation…) from the last observation's read; undefined when it could not read the store. */
  private lastOthers: ReadonlyMap<string, KeyValue> | undefined;
  private logicalRestartAskedAt = -Infinity;
  /** Its own connection: a slow logical statement must not delay the cycle's inspection. */
  private readonly logicalConnection = new KeptConnection(() => {
    if (!this.credentials) throw new Error('no agent credentials to connect with');
    return agentSqlTarget(this.local, this.credentials);
  }, 30_000);
  private stopBackupDuties: (() => void) | undefined;
  private readonly backupObserver: BackupObserver | undefined;
  /** Standby cluster: reads the source cluster's store (docs/sites.md). */
  private readonly source: SourceReader;
  private stopAutoRoll: (() => void) | undefined;
  private readonly cpu: CycleCpu;

  constructor(options: AgentOptions) {
    this.config = options.config;
    this.store = options.store;
    this.log = options.log;
    this.observers = options.observers ?? [];
    this.backupObserver = options.backupObserver;
    this.keys = clusterKeys(options.config.cluster);
    this.local = localPostgres(options.config);
    this.replay = new ReplayControl(this.config, this.local, this);
    this.peerAuthorization = peerAuthorization(options.config);
    this.logical = new LogicalKeeper(this.config, this.local, this.log, () => {
      // One request at a time, and not more often than every 30 s should the decision refuse it.
      if (this.operatorRequest || performance.now() - this.logicalRestartAskedAt < 30_000) return false;
      this.logicalRestartAskedAt = performance.now();
      this.request({ kind: 'restart' });
      return true;
    });
    this.source = new SourceReader(options.config, options.store, options.log);
    this.fencer = new FencerLink(options.config, this.local.dataDir, options.log);
    this.installed = new InstalledVersion(this.local.binDir, this.local.user);
    this.cpu = new CycleCpu((fields, line) => this.log.info(fields, line));
    this.upkeep = new Upkeep(this.config, this.local, this.store, this.keys, this.log, options.onCertificateChanged ?? (() => undefined));
  }

  /** How this agent talks to its peers' APIs: credentials when configured, and over HTTPS the cluster CA and our member certificate. */
  private peerAccess(): PeerAccess {
    const tls = memberApiClientTls(this.local.tls, true);
    return { ...(this.peerAuthorization ? { authorization: this.peerAuthorization } : {}), ...(tls ? { tls } : {}) };
  }

  /** Latest published status, for the REST API. */
  currentStatus(): MemberStatus | undefined {
    return this.status;
  }

  /** A member's last readable status from the store (recover-table's copy looks up the delayed replica here). */
  knownMember(name: string): MemberStatus | undefined {
    return this.lastKnown.get(name);
  }

  currentSync(): SyncRecord | undefined {
    return this.sync;
  }

  async start(): Promise<void> {
    this.running = true;
    this.credentials = loadCredentials(this.config);
    await this.checkFencer(true);
    this.watch = await this.store
      .watch(this.keys.root, (event) => {
        if ([this.keys.leader, this.keys.initialize, this.keys.config, this.keys.failover].includes(event.key)) this.wakeUp();
      }, (error: Error) => {
        // Without the watch, a replica at rest must look at the loop period again to see the leader go.
        this.watchLive = false;
        this.log.warn({ err: error.message }, 'the store watch broke; relying on the loop period');
      })
      .catch((error: Error) => {
        this.log.warn({ err: error.message }, 'cannot watch the store; relying on the loop period');
        return undefined;
      });
    this.watchLive = this.watch !== undefined;
    this.loopDone = this.loop();
    this.failsafeLoop();
    this.stopBackupDuties = startBackupDuties(this.config, this.local, this.store, this.log, () => this.settings, this.backupObserver);
    this.stopAutoRoll = startAutoRoll({ name: this.config.name, store: this.store, keys: this.keys, log: this.log, settings: () => this.settings, access: () => this.peerAccess() });
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const started = Date.now();
      let period = this.settings.loopWaitMs;
      try {
        const soon = await this.cycle();
        period = soon === undefined ? this.restingPeriod() : Math.min(period, soon);
      } catch (error) {
        this.log.error({ err: (error as Error).message }, 'agent cycle failed; retrying next cycle');
      }
      const wait = this.wakePending ? 0 : Math.max(0, period - (Date.now() - started));
      this.wakePending = false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /**
   * How long a cycle that wants nothing sooner waits. A streaming replica at rest, with the
   * store watch up, looks every 2 loops (never more than ttlMs/3, so its member key is renewed
   * well inside its lease): what it must react to at once (the leader key gone or changed, a
   * failover request, new settings) wakes it through the watch, and an operator request through
   * the API. The primary keeps the loop period: it renews the leader lease and watches its
   * standbys. This halves an idle replica's CPU without moving failover detection.
   */
  private restingPeriod(): number {
    const s = this.settings;
    const atRest =
      this.watchLive && this.state === 'replica' && this.operatorRequest === undefined && this.status?.streaming === true && this.outcomes.every((o) => o.result === 'ok');
    return atRest ? Math.max(s.loopWaitMs, Math.min(2 * s.loopWaitMs, Math.floor(s.ttlMs / 3))) : s.loopWaitMs;
  }

  /**
   * Renews the session lease, or grants a new one when it is gone (our member
   * key and any leader key went with it). The renewal time is taken before the
   * request is sent, so our idea of the lease's end is never later than the store's.
   */
  private async ensureLease(): Promise<void> {
    const sentAt = performance.now();
    if (this.lease && this.leaseTtlMs !== this.settings.ttlMs) await this.moveToNewLease();
    if (await this.renewLease(sentAt)) return;
    if (this.lease) this.log.warn('session lease expired: our member key and any leader lease are gone');
    this.lease = await this.store.grantLease(this.settings.ttlMs);
    this.leaseTtlMs = this.settings.ttlMs;
    this.leaseRenewedAt = sentAt;
    // Fed before this cycle's actions may start PostgreSQL: a stale deadline must not fence it.
    this.feedFencer();
  }

  /** Renews the session lease if we have one; false when there is none or it is gone. */
  private async renewLease(sentAt = performance.now()): Promise<boolean> {
    if (!this.lease || !(await this.store.keepAlive(this.lease))) return false;
    this.leaseRenewedAt = sentAt;
    this.armFence();
    return true;
  }

  /** What `relevo list` shows about the fencer and the watchdog device. */
  private fenceSummary(): NonNullable<MemberStatus['fence']> {
    const check = this.fencerCheck;
    const status = check?.status;
    const watchdog = status?.watchdog;
    return {
      fencer: check?.ok ? 'running' : 'missing',
      pid: check?.ok ? check.pid : null,
      state: status?.state ?? 'unknown',
      fences: status?.fences ?? 0,
      watchdog: watchdog ? (watchdog.state === 'idle' ? 'ready' : watchdog.state) : 'unknown',
      detail: check && !check.ok ? `${check.code}: ${check.reason}` : (watchdog?.detail ?? ''),
    };
  }

  /** The fencer gets the watchdog's deadline, armed on the same condition (and before a promotion, which arms it at the cycle's end). */
  private feedFencer(promoting = false): void {
    const armed = (this.runsAsPrimary || promoting) && !this.settings.paused && this.running;
    this.fencer.feed({
      armed,
      deadline: this.fenceDeadline(),
      ttlMs: this.settings.ttlMs,
      fenceMarginMs: this.settings.fenceMarginMs,
      reason: armed ? `${promoting ? 'promoting' : 'running as primary'} under the lease of agent ${process.pid}` : this.settings.paused ? 'cluster paused' : 'not running as primary',
    });
  }

  /**
   * The fencer must run (restarted here when missing). Without it this member
   * is not a candidate (observe), and a primary that stays without it for
   * ttlMs asks for a switchover to a healthy member (E_FENCER_MISSING): a
   * frozen agent could otherwise leave it acknowledging writes beside a new primary.
   */
  private async checkFencer(wait = false): Promise<void> {
    const check = await this.fencer.ensure(wait);
    const was = this.fencerCheck;
    this.fencerCheck = check;
    if (check.ok) {
      if (was && !was.ok) this.log.info({ fencer: check.pid }, `fencer running again (pid ${check.pid})`);
      this.fencerMissingSince = undefined;
      return;
    }
    if (!was || was.ok || was.reason !== check.reason) this.log.error({ code: check.code }, `${check.code}: the fencer of member ${this.config.name} is missing: ${check.reason}; this member takes no leader lease until it runs`);
    if (!this.runsAsPrimary) return;
    this.fencerMissingSince ??= performance.now();
    if (performance.now() - this.fencerMissingSince < this.settings.ttlMs) return;
    this.fencerMissingSince = performance.now();
    await requestSwitchover(this.store, this.keys, {}).then(
      () => this.log.error({ code: FENCER_MISSING }, `${FENCER_MISSING}: primary ${this.config.name} has run without its fencer for ${this.settings.ttlMs} ms: requested a switchover to a member that has one`),
      (error: Error) => this.log.error({ code: FENCER_MISSING, err: error.message }, `${FENCER_MISSING}: primary ${this.config.name} runs without its fencer and cannot hand over (${error.message}); it keeps serving, fenced only by this agent's own watchdog`),
    );
  }

  /**
   * ttlMs changed at run time: keys move to a lease with the new TTL (the
   * leader key by compare-and-swap, so leadership is never dropped or duplicated),
   * then the old lease is revoked.
   */
  private async moveToNewLease(): Promise<void> {
    const old = this.lease!;
    const lease = await this.store.grantLease(this.settings.ttlMs);
    const leader = await this.store.get(this.keys.leader);
    if (leader?.lease === old) {
      // Readers learn from the record how long a silent leader may keep the key.
      // A damaged record on our lease is rewritten whole.
      const parsed = parseRecord(LeaderRecordSchema, leader.value);
      const record = parsed.ok ? { ...parsed.value, ttlMs: this.settings.ttlMs } : { member: this.config.name, ttlMs: this.settings.ttlMs, acquiredAt: new Date().toISOString() };
      const moved = await this.store.compareAndSwap(this.keys.leader, JSON.stringify(record), leader.revision, { lease });
      if (moved === undefined) {
        await this.store.revokeLease(lease);
        return;
      }
    }
    if (this.status) await this.store.put(this.keys.member(this.config.name), JSON.stringify(this.status), { lease });
    this.lease = lease;
    this.leaseTtlMs = this.settings.ttlMs;
    await this.store.revokeLease(old);
    this.log.info({ ttlMs: this.settings.ttlMs }, `session lease renewed with the new ttlMs=${this.settings.ttlMs}`);
  }

  /**
   * The fence watchdog: while PostgreSQL runs as primary, a timer set for
   * ttlMs - fenceMarginMs after the last successful renewal (or, with failsafe
   * holding, until every member's confirmation lapses, if later). The loop would
   * fence too, but only once its store calls return; this does not wait for
   * them. If it fires, PostgreSQL is stopped before any replica can see the
   * lease expire, and the next decision learns it from the outcome.
   */
  private fenceDeadline(): number | undefined {
    const renewedAt = this.leaseRenewedAt;
    if (renewedAt === undefined) return undefined;
    const lease = renewedAt + this.settings.ttlMs - this.settings.fenceMarginMs;
    return Math.max(lease, this.failsafeHeldUntil() ?? -Infinity);
  }

  private armFence(): void {
    clearTimeout(this.fenceTimer);
    this.fenceTimer = undefined;
    this.feedFencer();
    const deadline = this.fenceDeadline();
    if (!this.runsAsPrimary || deadline === undefined || this.settings.paused || !this.running) return;
    this.fenceTimer = setTimeout(() => {
      if (!this.runsAsPrimary) return;
      // Renewed, or extended by failsafe, since the timer was set.
      if ((this.fenceDeadline() ?? -Infinity) > performance.now() + 1) return this.armFence();
      this.log.error(
        { ttlMs: this.settings.ttlMs, fenceMarginMs: this.settings.fenceMarginMs },
        `leader lease not renewed for ${this.settings.ttlMs - this.settings.fenceMarginMs} ms${this.failsafe.ended ? ` and failsafe ended (${this.failsafe.ended})` : ''}: stopping PostgreSQL before the lease can expire`,
      );
      void runAction(this.effectContext(), { type: 'stopPostgres', mode: 'fast' }).then((outcome) => {
        // Not this.outcomes: while a cycle runs, that list pairs one by one with its decision's actions.
        this.outOfCycleOutcomes.push(outcome);
        if (outcome.result !== 'ok') this.log.error({ err: outcome.error }, `fencing failed on member ${this.config.name}: ${outcome.error}`);
      });
    }, Math.max(0, deadline - performance.now()));
  }

  /** Failsafe: monotonic ms until which every member's confirmation holds (undefined: not holding). */
  private failsafeHeldUntil(): number | undefined {
    if (!this.settings.failsafe || this.failsafe.ended) return undefined;
    return holdDeadline(this.settings, this.failsafe.membership.map((m) => m.name), this.failsafe.confirmedAt);
  }

  /**
   * Every loopWaitMs, independently of the cycle (whose store calls wait for
   * their timeouts during an outage): while we lead, failsafe is on and our
   * lease renewal is overdue, ask every member of the last known membership
   * to confirm us. One missing confirmation ends failsafe until the store is back.
   */
  private failsafeLoop(): void {
    const round = async () => {
      const f = this.failsafe;
      const s = this.settings;
      const renewedAt = this.leaseRenewedAt;
      const overdue = renewedAt !== undefined && performance.now() - renewedAt > 2 * s.loopWaitMs;
      if (!s.failsafe || !this.runsAsPrimary || s.paused || !overdue) {
        if (f.active) this.log.warn('failsafe ended: the store answers again');
        const storeBack = f.active && s.failsafe && this.runsAsPrimary && !s.paused;
        if (storeBack) f.heldAfterReturn = this.failsafeHeldUntil();
        else if (!this.runsAsPrimary || s.paused || !s.failsafe) f.heldAfterReturn = undefined;
        f.active = false;
        f.ended = undefined;
        f.confirmedAt.clear();
        return;
      }
      if (f.ended) return;
      f.heldAfterReturn = undefined;
      const sentAt = performance.now();
      const answers = await requestConfirmations(f.membership, this.config.name, this.peerAccess(), Math.max(200, Math.min(1_000, s.loopWaitMs)));
      if (!this.runsAsPrimary || f.ended) return;
      const missing = answers.filter((a) => !a.confirmed);
      if (missing.length > 0 || f.membership.length === 0) {
        f.ended = missing.map((a) => `${a.name}: ${a.confirmed ? '' : a.error}`).join('; ') || 'no other member known';
        f.active = false;
        f.confirmedAt.clear();
        this.log.error({ failsafe: false }, `failsafe ended: not every member confirmed this primary (${f.ended}); stopping as without failsafe`);
        this.armFence();
        return;
      }
      for (const a of answers) f.confirmedAt.set(a.name, sentAt);
      if (!f.active) this.log.warn({ failsafe: true, members: f.membership.map((m) => m.name) }, `failsafe active: store unreachable; every member (${f.membership.map((m) => m.name).join(', ')}) confirmed this primary`);
      f.active = true;
      this.armFence();
    };
    const next = () => {
      if (!this.running) return;
      this.failsafe.timer = setTimeout(() => void round().catch((error: Error) => this.log.error({ err: error.message }, 'failsafe round failed')).finally(next), this.settings.loopWaitMs);
    };
    next();
  }

  /** POST /failsafe from a primary without the store: vouch for it if it is the primary we follow. */
  confirmFailsafe(leader: string): { ok: true; member: string } | { ok: false; reason: string } {
    const promised = this.failsafeView().confirmed?.leader;
    const verdict = mayConfirm(this.settings, { name: this.config.name, role: this.status?.role, state: this.status?.state }, this.failsafe.lastLeader, leader, promised);
    if (!verdict.ok) return verdict;
    if (!this.failsafe.given) this.log.warn({ failsafe: true, leader }, `confirmed failsafe to primary ${leader}: not taking over until the store is back and ${this.settings.ttlMs} ms passed`);
    this.failsafe.given = { leader, at: performance.now() };
    return { ok: true, member: this.config.name };
  }

  /** GET /failsafe (the router asks while it cannot read the store): primary under an active failsafe hold, and until when. */
  failsafeGrant(): FailsafeGrantAnswer {
    const f = this.failsafe;
    const now = performance.now();
    const afterReturn = f.heldAfterReturn !== undefined && f.heldAfterReturn > now && !f.active && !f.ended;
    return grantAnswer(this.config.name, { runsAsPrimary: this.runsAsPrimary, active: f.active || afterReturn, heldUntil: afterReturn ? f.heldAfterReturn : this.failsafeHeldUntil(), ended: f.ended }, now);
  }

  private failsafeView(): FailsafeView {
    const given = this.failsafe.given;
    return {
      heldUntil: this.failsafeHeldUntil(),
      members: this.failsafe.membership.map((m) => m.name),
      confirmed: given && performance.now() - given.at < this.settings.ttlMs ? given : undefined,
    };
  }

  /** An operator command from the REST API; carried out by the next cycle. */
  request(operatorRequest: OperatorRequest): void {
    this.operatorRequest = operatorRequest;
    this.wakeUp();
  }

  /**
   * Look again now. A change seen while a cycle runs is not lost (a promoting agent used to notice
   * the hand-over's next step only a whole loop later): the next cycle then starts without waiting.
   */
  private wakeUp(): void {
    if (this.wake) this.wake();
    else this.wakePending = true;
  }

  async observe(): Promise<Observation> {
    const cluster = await readCluster(this.store, this.keys, { name: this.config.name, lease: this.lease });
    this.cpu.mark('observe: store read');
    this.lastOthers = 'others' in cluster ? cluster.others : undefined;
    if (cluster.view.reachable) {
      // Damaged settings are not the defaults: keep running with the ones last read.
      if (!unreadableOf(cluster.view, 'config')) this.settings = cluster.settings;
      for (const record of this.unreadable.fresh(cluster.view.unreadable)) {
        this.log.error({ code: RECORD_UNREADABLE, key: record.key, revision: record.revision }, describeUnreadable(record));
      }
      for (const m of cluster.view.members) this.lastKnown.set(m.name, m);
      // Failsafe needs the membership and leader as last seen in the store.
      const read = cluster.view.members.filter((m) => m.name !== this.config.name).map((m) => ({ name: m.name, apiUrl: m.apiUrl }));
      this.failsafe.membership = membershipAfterRead(this.failsafe.membership, read, this.failsafe.confirmedAt.size > 0 && !this.failsafe.ended);
      this.failsafe.lastLeader = cluster.view.leader?.member;
      this.failsafe.given = givenAfterRead(this.failsafe.given, cluster.view.leader?.member);
    }
    if (!this.credentials) this.credentials = loadCredentials(this.config);
    this.cpu.mark('observe: store view');
    const server = await observeServer(this.local, this.connection, this.credentials);
    this.cpu.mark('observe: PostgreSQL');
    if (server.kind === 'running') {
      // New binaries installed under the running server: its next start runs them.
      const binaries = binariesPending(server.inspection.version, await this.installed.current());
      if (binaries) server.inspection.pendingRestart = [...server.inspection.pendingRestart, binaries];
    }
    const dataDir = await observeDataDir(this.local, this.systemIdentifier, server.kind === 'stopped');
    this.systemIdentifier = dataDir.systemIdentifier;
    const view = cluster.view;
    // Peers are asked directly only when an election may be due.
    const electionDue = view.reachable && view.leader === undefined && !unreadableOf(view, 'leader') && server.kind === 'running' && server.inspection.inRecovery;
    // A member whose record is unreadable is still asked, at the address it last published.
    const unknown = view.reachable ? unknownMembers(view).flatMap((name) => this.lastKnown.get(name) ?? []) : [];
    const peers = electionDue ? await askPeers([...view.members, ...unknown], this.config.name, Math.min(1_000, this.settings.loopWaitMs), this.peerAccess()) : [];
    const source = view.reachable ? await this.source.read(this.settings.standbyCluster) : undefined;
    return {
      now: Date.now(),
      monotonic: performance.now(),
      member: {
        name: this.config.name,
        connectAddress: connectAddressOf(this.config),
        // A delayed replica is never a candidate (src/agent/delayed.ts).
        nofailover: effectiveTags(this.config, this.settings).nofailover === true,
        ...(this.fencerCheck && !this.fencerCheck.ok ? { fencerMissing: this.fencerCheck.reason } : {}),
        priority: this.config.tags.priority,
        streamingOptional: archiveFeedUsable(this.config, this.settings) || this.replay.target() !== undefined,
      },
      settings: this.settings,
      ...dataDir,
      server,
      store: view,
      peers,
      ...(source ? { source } : {}),
      failsafe: this.failsafeView(),
      haveCredentials: this.credentials !== undefined,
      leaseRenewedAt: this.leaseRenewedAt,
      operatorRequest: this.operatorRequest,
      memory: this.memory,
      outcomes: this.outcomes,
      previous: { state: this.state, since: this.stateSince },
    };
  }

  /**
   * Actions that may run longer than a lease keep the session lease (and our
   * member key, and a leader key on it) alive meanwhile: clone, rewind and
   * bootstrap for as long as they take; a primary's start or restart in place
   * (pg_ctl -w waits out crash recovery, seconds on a loaded host) for at most
   * primaryRestartTimeoutMs, after which the lease lapses and a replica takes
   * over, as decide would release it after that long. Only renewals: a lease
   * that is gone is not granted anew here. The fence deadline follows each renewal.
   */
  private keepLeaseDuring(action: Action): ReturnType<typeof setInterval> | undefined {
    const startsPrimary = (action.type === 'startPostgres' && action.as === 'primary') || (action.type === 'restartPostgres' && this.runsAsPrimary);
    if (!(action.type === 'clone' || action.type === 'rewind' || action.type === 'bootstrap' || startsPrimary)) return undefined;
    const until = startsPrimary ? performance.now() + this.settings.primaryRestartTimeoutMs : Infinity;
    const timer = setInterval(() => {
      if (performance.now() > until) return clearInterval(timer);
      // A long copy may take a new lease if ours lapsed (nothing rides on it but our member key); a starting primary may only keep its own.
      void (startsPrimary ? this.renewLease() : this.ensureLease()).catch(() => undefined);
    }, this.settings.loopWaitMs);
    return timer;
  }

  /** One observe-decide-act round; returns how soon the decision wants to look again, if sooner than the loop. */
  private async cycle(): Promise<number | undefined> {
    const startedAt = performance.now();
    const from = this.state;
    this.cpu.begin();
    // Changes before this cycle's observation are seen by it.
    this.wakePending = false;
    let leaseError: string | undefined;
    await this.ensureLease().catch((error: Error) => {
      leaseError = error.message;
    });
    this.cpu.mark('lease');
    await this.checkFencer();
    this.cpu.mark('fencer');
    this.credentials = this.upkeep.secrets(this.credentials) ?? this.credentials;
    this.cpu.mark('secrets');
    let observation = await this.observe();
    this.cpu.mark('observe');
    const outOfCycle = this.outOfCycleOutcomes.splice(0);
    if (outOfCycle.length > 0) observation = { ...observation, outcomes: [...observation.outcomes, ...outOfCycle] };
    if (leaseError && observation.store.reachable) observation = { ...observation, store: { reachable: false, error: leaseError } };
    const decision = decide(observation);
    this.record(decision);
    this.cpu.mark('decide');
    this.memory = decision.memory;
    // The outcomes were handed to this decision; from here on they are this cycle's.
    this.outcomes = [];
    for (const action of decision.actions) {
      const long = action.type === 'clone' || action.type === 'rewind' || action.type === 'bootstrap';
      if (long) await this.publish(observation, decision);
      if (action.type === 'promote') this.feedFencer(true);
      const keepalive = this.keepLeaseDuring(action);
      const outcome = await runAction(this.effectContext(), action).finally(() => clearInterval(keepalive));
      this.outcomes.push(outcome);
      if (outcome.result === 'ok') {
        this.logDetail(action.type, outcome.detail);
      } else if (outcome.result === 'lost_cas') {
        // Not a failure of ours: the record changed since we read it. The next decision sees it, on a fresh read, soon.
        this.log.warn({ action: action.type, key: outcome.key }, `action ${action.type} on member ${this.config.name}: ${outcome.error}; re-reading`);
        break;
      } else {
        const code = outcome.code;
        this.log.error({ action: action.type, code, err: outcome.error }, `action ${action.type} failed on member ${this.config.name} (${code}): ${outcome.error}`);
        break;
      }
    }
    const stateChanging = decision.actions.some((a) => !['configure', 'writeOptime', 'syncSlots', 'writeSyncRecord', 'fenceFormerPrimary'].includes(a.type));
    this.cpu.mark('actions');
    // Seen afresh for the publication and the watchdog. Not after a detach: the next cycle, at once, observes
    // anyway (the candidate compares positions a whole observation sooner).
    if (stateChanging && decision.state !== 'detaching_upstream') observation = await this.observe();
    // A server that does not answer keeps the watchdog as it was: a hung primary may resume (found by the simulation, seed 15084).
    const server = observation.server;
    const runsAsPrimary = (server.kind === 'running' ? !server.inspection.inRecovery : server.kind === 'unreachable' && this.runsAsPrimary) && !observation.settings.paused;
    if (runsAsPrimary !== this.runsAsPrimary) {
      this.runsAsPrimary = runsAsPrimary;
      this.armFence();
    }
    if (runsAsPrimary && server.kind === 'running' && !this.networkRoleReady) await this.migrateNetworkRole();
    const store = observation.store;
    const allDone = this.outcomes.every((o) => o.result === 'ok');
    if (allDone && store.reachable && !unreadableOf(store, 'config')) this.appliedGeneration = observation.settings.generation;
    if (!this.logicalRound) {
      const seen = observation;
      this.logicalRound = this.logical.cycle(seen, this.logicalConnection, this.credentials).finally(() => (this.logicalRound = undefined));
    }
    this.cpu.mark('after-actions');
    await this.publish(observation, decision);
    this.cpu.mark('publish');
    const report = { observation, decision, from, outcomes: [...this.outcomes], status: this.status, durationMs: performance.now() - startedAt, ...(observation.store.reachable && this.lastOthers ? { others: this.lastOthers } : {}) };
    for (const observer of this.observers) observer.onCycle(report);
    this.cpu.mark('observers');
    // Certificate and CA-rotation upkeep, after the decision's effects and from this cycle's read of the subtree
    // (reading their records again cost store round trips): skipped when the store could not be read, so an outage
    // never slows the decisions (and the failsafe). Renewals are due days ahead; a rotation waits for the store anyway.
    if (this.lastOthers) {
      await this.upkeep.certificates(this.lastOthers.get(this.keys.certsRotation));
      await this.upkeep.caRotation(this.lastOthers.get(this.keys.caRotation));
    }
    this.cpu.end();
    // A lost compare-and-swap is re-planned on a fresh read at once.
    return this.outcomes.some((o) => o.result === 'lost_cas') ? Math.min(decision.retryInMs ?? Infinity, RETRY_SOON_MS) : decision.retryInMs;
  }

  /**
   * Once per agent process, on the primary: relevo's network role exists with
   * this version's grants (a cluster bootstrapped by an older relevo logged in
   * over the network as the superuser `relevo`; pg_hba now rejects that).
   */
  private async migrateNetworkRole(): Promise<void> {
    if (!this.credentials) return;
    const agentPassword = this.credentials.agentPassword;
    try {
      const changed = await this.connection.use((client) => ensureNetworkRole(client, agentPassword));
      this.networkRoleReady = true;
      if (changed) this.log.info({ role: ROLE_NAMES.network }, `created or updated relevo's network role ${ROLE_NAMES.network} (not a superuser; pg_rewind, fencing, backups and rotation use it)`);
    } catch (error) {
      this.log.warn({ role: ROLE_NAMES.network, err: (error as Error).message }, `could not create or update relevo's network role on member ${this.config.name}: ${(error as Error).message}; retrying next loop`);
    }
  }

  /** Logs an action's outcome when it says something new (a repeated fence probe is not news). */
  private logDetail(type: string, detail: string | undefined): void {
    if (!detail || this.lastDetail.get(type) === detail) return;
    this.lastDetail.set(type, detail);
    this.log.info({ action: type }, detail);
  }

  private record(decision: Decision): void {
    if (decision.defect) {
      // A bug, not an operating condition: logged at every cycle it recurs, with its code.
      this.log.error({ code: decision.defect.code, from: decision.defect.from, to: decision.defect.to }, decision.reason);
    }
    if (decision.state !== this.state) {
      this.log.info({ from: this.state, to: decision.state }, decision.reason);
      this.state = decision.state;
      this.stateSince = performance.now();
    } else if (decision.reason !== this.lastReason) {
      this.log.info({ state: decision.state }, decision.reason);
    }
    this.lastReason = decision.reason;
  }

  private async publish(observation: Observation, decision: Decision): Promise<void> {
    const logical = this.logical.status();
    const status = { ...memberStatus(this.config, observation, decision, observation.settings.paused, this.appliedGeneration, this.status, this.replay.target()), fence: this.fenceSummary(), ...(logical ? { logical } : {}) };
    if (observation.store.reachable) this.sync = observation.store.sync;
    this.status = status;
    const link = siteLinkOf(observation, this.config.cluster);
    if (link && observation.settings.standbyCluster) await this.source.publishLink(observation.settings.standbyCluster, link, this.keys.siteLink);
    if (!this.lease || !observation.store.reachable) return;
    // An unchanged status is written again only every STATUS_REFRESH_MS: each write wakes every
    // agent's and router's watch, the larger part of an idle cluster's CPU. The key lives on our lease either way.
    const { updatedAt: _updatedAt, ...content } = status;
    const fingerprint = `${this.lease} ${JSON.stringify(content)}`;
    const listed = observation.store.members.some((m) => m.name === this.config.name);
    if (listed && !this.statusGate.due(fingerprint)) return;
    await this.store.put(this.keys.member(this.config.name), JSON.stringify(status), { lease: this.lease }).then(
      () => this.statusGate.written(fingerprint),
      (error: Error) => this.log.warn({ err: error.message }, 'could not publish member status'),
    );
  }

  private effectContext(): EffectContext {
    return {
      config: this.config,
      local: this.local,
      store: this.store,
      keys: this.keys,
      log: this.log,
      settings: () => this.settings,
      sessionLease: () => {
        if (!this.lease) throw new Error('no session lease');
        return this.lease;
      },
      credentials: () => this.credentials,
      setCredentials: (credentials) => {
        this.credentials = credentials;
      },
      finishOperatorRequest: () => {
        this.operatorRequest = undefined;
      },
      beforeReplicaStart: () => this.logical.failoverSlots.install(),
      promoted: () => this.announcePromoted(),
    };
  }

  /**
   * Right after pg_promote() finished, before the rest of the promotion (slots, checkpoint, history)
   * and the cycle's publication: our member key says role primary (state still promoting), so a
   * router that waits for it (its store watch) sends clients to us now. The lease is ours already;
   * the next publication replaces this with the full status.
   */
  private async announcePromoted(): Promise<void> {
    const status = this.status;
    if (!status || !this.lease) return;
    const announced: MemberStatus = { ...status, state: 'promoting', role: 'primary', upstream: null, streaming: false, lagBytes: 0, updatedAt: new Date().toISOString() };
    await this.store.put(this.keys.member(this.config.name), JSON.stringify(announced), { lease: this.lease }).then(
      () => {
        this.status = announced;
      },
      (error: Error) => this.log.warn({ err: error.message }, 'could not announce the promotion in our member status'),
    );
  }

  /**
   * Graceful stop: PostgreSQL first (so a primary stops taking writes), then
   * the leases (so another member may take over only once it has stopped).
   */
  async stop(options: { stopPostgres: boolean }): Promise<void> {
    this.running = false;
    this.stopBackupDuties?.();
    this.stopAutoRoll?.();
    clearTimeout(this.fenceTimer);
    clearTimeout(this.failsafe.timer);
    this.wake?.();
    await this.loopDone;
    await this.logicalRound;
    await this.watch?.close();
    await this.source.close();
    this.connection.close();
    this.logicalConnection.close();
    if (options.stopPostgres && runningPostmasterPid(this.local.dataDir) !== undefined) {
      this.log.info('stopping PostgreSQL before releasing the leases');
      try {
        await stopPostgres(this.local.postmaster, 'fast');
      } catch (error) {
        // Keep the leases: they expire on their own after the TTL, never while this primary may still run.
        this.log.error({ err: (error as Error).message }, 'could not stop PostgreSQL; leaving the leases to expire');
        return;
      }
      this.fencer.stop({ ttlMs: this.settings.ttlMs, fenceMarginMs: this.settings.fenceMarginMs, reason: 'agent stopped with PostgreSQL' });
    }
    if (this.lease) await this.store.revokeLease(this.lease).catch(() => undefined);
  }
}
