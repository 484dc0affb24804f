/**
 * Logical replication beside the HA decision, once per agent cycle (it never
 * changes the decision): on the leader, apply `logical.*` and publish the
 * logical slots; on a replica, keep copies of those slots. Never throws: what
 * goes wrong is reported in the member status (`logical.problems`).
 */
import type { Logger } from 'pino';
import type { LogicalStatus } from '../cluster/logical-status.js';
import type { MemberConfig } from '../config/member.js';
import { ROLE_NAMES, type Credentials } from '../config/secrets.js';
import type { Observation } from '../agent/observation.js';
import { effectiveTags } from '../agent/delayed.js';
import { slotNameFor } from '../postgres/inspect.js';
import { agentSqlTarget, type LocalPostgres } from '../postgres/local.js';
import { splitHostPort } from '../postgres/conf.js';
import type { KeptConnection, SqlTarget } from '../postgres/sql.js';
import { FailoverSlots } from './failover-slots.js';
import { reconcileLogical } from './reconcile.js';
import { readLogicalSlots, readPhysicalCatalogXmins } from './sql.js';

export class LogicalKeeper {
  private report: LogicalStatus | undefined;
  private lastReconcile = { at: -Infinity, generation: -1 };
  readonly failoverSlots: FailoverSlots;

  constructor(
    private readonly config: MemberConfig,
    private readonly local: LocalPostgres,
    private readonly log: Logger,
    /** Ask the agent for a restart of this replica (false when one cannot be asked now). */
    private readonly requestRestart: (reason: string) => boolean,
  ) {
    this.failoverSlots = new FailoverSlots(local.dataDir, local.user);
  }

  status(): LogicalStatus | undefined {
    return this.report;
  }

  async cycle(o: Observation, connection: KeptConnection, credentials: Credentials | undefined): Promise<void> {
    try {
      await this.round(o, connection, credentials);
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, `logical replication round failed on member ${this.config.name}: ${(error as Error).message}`);
    }
  }

  private async round(o: Observation, connection: KeptConnection, credentials: Credentials | undefined): Promise<void> {
    const store = o.store;
    const server = o.server;
    if (!store.reachable || server.kind !== 'running' || !credentials) return;
    const logical = o.settings.logical;
    const base = (): LogicalStatus => ({
      checkedAt: new Date(o.now).toISOString(),
      generation: o.settings.generation,
      problems: [],
      drift: [],
      publications: [],
      subscriptions: [],
      slots: [],
      physicalCatalogXmin: {},
      failoverSlots: [],
    });
    const leading = !server.inspection.inRecovery && store.leader?.member === this.config.name;
    if (leading) {
      const declared = logical.publications.length + logical.subscriptions.length > 0;
      const due = o.settings.generation !== this.lastReconcile.generation || performance.now() - this.lastReconcile.at >= logical.reconcileIntervalMs;
      // Slots are read every cycle (replicas follow them closely); the databases only when due. Below wal_level=logical
      // there is no logical slot (PostgreSQL refuses to start with one) and no catalog_xmin to pass on: nothing to read.
      const walLevel = server.inspection.walLevel;
      const slots =
        walLevel === undefined || walLevel === 'logical'
          ? await connection.use(async (client) => ({ slots: await readLogicalSlots(client), physical: await readPhysicalCatalogXmins(client) }))
          : { slots: [], physical: {} };
      const report = this.report && this.report.failoverSlots.length === 0 ? { ...this.report } : base();
      report.slots = slots.slots;
      report.physicalCatalogXmin = slots.physical;
      if (due) {
        // After a settings change (and at start) every database is looked at: a removed declaration's object may be anywhere.
        const scanAll = o.settings.generation !== this.lastReconcile.generation;
        this.lastReconcile = { at: performance.now(), generation: o.settings.generation };
        const reconciled = declared || scanAll
          ? await reconcileLogical({
              scanAll,
              logical,
              target: (database) => ({ ...agentSqlTarget(this.local, credentials), database }),
              passfileFor: (name) => `${this.local.dataDir}.logical-${name}.pgpass`,
              user: this.local.user,
              clusterName: `${this.config.cluster}/${this.config.name}`,
              log: this.log,
            })
          : { problems: [], drift: [], publications: [], subscriptions: [] };
        Object.assign(report, reconciled, { checkedAt: new Date(o.now).toISOString(), generation: o.settings.generation });
        this.logNewProblems(report);
      }
      // With wal_level=logical the section is always published, so replicas learn when the last slot is gone.
      const worthShowing = declared || report.slots.length > 0 || report.problems.length > 0 || report.drift.length > 0;
      this.report = worthShowing || o.settings.postgresql.wal_level === 'logical' ? report : undefined;
      return;
    }
    // A member that is never promoted (nofailover, a delayed replica) needs no copies (they would only hold WAL and catalog rows on the primary).
    if (!server.inspection.inRecovery || !logical.failoverSlots || effectiveTags(this.config, o.settings).nofailover) {
      this.report = undefined;
      return;
    }
    const leader = store.leader ? store.members.find((m) => m.name === store.leader!.member) : undefined;
    if (!leader?.logical) {
      // No leader, or one that does not say: existing copies stay until a primary says otherwise.
      this.report = undefined;
      return;
    }
    const primarySlots = leader.logical.slots;
    const [host, port] = splitHostPort(leader.connectAddress);
    const leaderTarget = (): SqlTarget => ({ host, port, user: ROLE_NAMES.network, password: credentials.agentPassword, tlsCaFile: this.local.tls?.caCert });
    const result = await connection.use((client) =>
      this.failoverSlots.sync(client, { slots: primarySlots, physicalCatalogXmin: leader.logical?.physicalCatalogXmin[slotNameFor(this.config.name)] }, leaderTarget, o.now),
    );
    const report = base();
    report.failoverSlots = result.failoverSlots;
    report.problems = result.problems;
    this.report = result.failoverSlots.length > 0 || result.problems.length > 0 ? report : undefined;
    this.logNewProblems(report);
    if (result.restart && !o.settings.paused) {
      if (this.requestRestart(`load logical slot ${this.failoverSlots.waitingForRestart.join(', ')} copied from the primary`)) {
        this.log.info({ slots: this.failoverSlots.waitingForRestart }, `restarting this replica to load logical slot ${this.failoverSlots.waitingForRestart.join(', ')} copied from the primary`);
      }
    }
  }

  private readonly logged = new Set<string>();

  private logNewProblems(report: LogicalStatus): void {
    const now = new Set<string>();
    for (const p of report.problems) {
      const key = `${p.code} ${p.database ?? ''} ${p.name ?? ''}`;
      now.add(key);
      if (this.logged.has(key)) continue;
      // A copy not ready yet is an expected phase (seconds after a new slot), not a failure.
      const level = p.code === 'LOGICAL_SLOT_NOT_READY' ? 'warn' : 'error';
      this.log[level]({ code: p.code, object: p.object, name: p.name, database: p.database }, p.message);
    }
    this.logged.clear();
    for (const key of now) this.logged.add(key);
  }
}
