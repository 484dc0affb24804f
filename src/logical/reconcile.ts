/**
 * The leader's side of `logical.*`: for every database with declarations,
 * create what is missing (after the preflight checks), report drift and
 * repair it per logical.repairDrift, and measure each subscription. Idempotent:
 * run again and again, it changes nothing once the databases match.
 */
import type { Logger } from 'pino';
import type { LogicalSettings, SubscriptionDeclaration } from '../cluster/logical-settings.js';
import type { LogicalDrift, LogicalProblem, LogicalStatus, SubscriptionStatus } from '../cluster/logical-status.js';
import type { OsUser } from '../util/os-user.js';
import { basename, dirname } from 'node:path';
import { readOwnedFile, withOwnedDir, writeOwnedFile } from '../postgres/owned-fs.js';
import { withConnection } from '../postgres/sql.js';
import { passfileContent, readSubscriptionSecret, withPublisher } from './connection.js';
import { publicationDrift, shouldRepair, subscriptionDrift } from './drift.js';
import { LogicalError } from './errors.js';
import { checkPublication, checkSubscription, type DatabaseTarget } from './preflight.js';
import {
  createPublicationSql,
  connectableDatabases,
  createSlotSql,
  createSubscriptionSql,
  readPublications,
  readPublisherLag,
  readSubscriptionProgress,
  readSubscriptions,
  renderConninfo,
  type SubscriptionSpec,
} from './sql.js';

export interface ReconcileInput {
  logical: LogicalSettings;
  target: DatabaseTarget;
  /** Where this member keeps a subscription's passfile (beside its data directory, owned by PostgreSQL's user). */
  passfileFor: (subscription: string) => string;
  user: OsUser;
  /** This server's cluster_name (relevo sets `<cluster>/<member>`): a subscription to it needs its slot made first. */
  clusterName: string;
  /**
   * Also look at every other database (after a settings change): an object relevo made whose declaration was
   * removed may be in a database nothing is declared in any more. There only such objects are acted on.
   */
  scanAll: boolean;
  log: Logger;
}

export type ReconcileResult = Pick<LogicalStatus, 'problems' | 'drift' | 'publications' | 'subscriptions'>;

function problemOf(error: unknown, object: LogicalProblem['object'], name: string, database: string): LogicalProblem {
  if (error instanceof LogicalError) return { code: error.code, object, name, database, message: error.message };
  const pgCode = (error as { code?: string }).code;
  if (pgCode === '3D000') return { code: 'LOGICAL_UNKNOWN_DATABASE', object, name, database, message: `LOGICAL_UNKNOWN_DATABASE: database ${database} does not exist` };
  return { code: 'LOGICAL_APPLY_FAILED', object, name, database, message: `LOGICAL_APPLY_FAILED: ${(error as Error).message}` };
}

/** Writes the subscription's passfile when its content changed; returns the path. */
function ensurePassfile(input: ReconcileInput, s: SubscriptionDeclaration): string {
  const path = input.passfileFor(s.name);
  const content = passfileContent(s.connection, readSubscriptionSecret(s.connection.password, `subscription ${s.name}: connection.password`));
  if (readOwnedFile(path, input.user) !== content) writeOwnedFile(path, content, input.user);
  return path;
}

/** A dropped subscription's password does not stay behind. */
function removePassfile(input: ReconcileInput, name: string): void {
  const path = input.passfileFor(name);
  withOwnedDir(dirname(path), input.user, (dir) => dir.remove(basename(path)));
}

function specOf(s: SubscriptionDeclaration, passfile: string): SubscriptionSpec {
  return {
    name: s.name,
    publications: s.publications,
    copyData: s.copyData,
    enabled: s.enabled,
    conninfo: renderConninfo({ ...s.connection, passfile, applicationName: s.name }),
  };
}

export async function reconcileLogical(input: ReconcileInput): Promise<ReconcileResult> {
  const { logical, target, log } = input;
  const result: ReconcileResult = { problems: [], drift: [], publications: [], subscriptions: [] };
  const declaredDatabases = new Set([...logical.publications.map((p) => p.database), ...logical.subscriptions.map((s) => s.database)]);
  const others = input.scanAll ? (await withConnection(target('postgres'), (client) => connectableDatabases(client))).filter((d) => !declaredDatabases.has(d)) : [];
  const databases = [...declaredDatabases, ...others].sort();
  for (const database of databases) {
    const declaredHere = declaredDatabases.has(database);
    const publications = logical.publications.filter((p) => p.database === database);
    const subscriptions = logical.subscriptions.filter((s) => s.database === database);
    // Secrets first: a subscription whose secret is unreadable is reported, the others go on.
    const specs: SubscriptionSpec[] = [];
    const usable: SubscriptionDeclaration[] = [];
    for (const s of subscriptions) {
      try {
        specs.push(specOf(s, ensurePassfile(input, s)));
        usable.push(s);
      } catch (error) {
        result.problems.push(problemOf(error, 'subscription', s.name, database));
      }
    }
    try {
      await withConnection(
        target(database),
        async (client) => {
          const drift = [
            ...publicationDrift(database, publications, await readPublications(client)),
            ...subscriptionDrift(database, specs, await readSubscriptions(client)),
          ].filter((item) => declaredHere || (item.kind === 'extra' && item.always));
          for (const item of drift) {
            let repaired = false;
            try {
              if (item.kind === 'missing' && item.object === 'publication') {
                const p = publications.find((x) => x.name === item.name)!;
                await checkPublication(target, p);
                for (const sql of createPublicationSql(p)) await client.query(sql);
                log.info({ publication: p.name, database }, `created publication ${p.name} in database ${database}`);
                continue;
              }
              if (item.kind === 'missing' && item.object === 'subscription') {
                const s = usable.find((x) => x.name === item.name)!;
                const { publisherClusterName } = await checkSubscription(target, s);
                // Both sides the same server: CREATE SUBSCRIPTION would wait for its own transaction while making the slot.
                const sameServer = publisherClusterName === input.clusterName;
                if (sameServer) await withConnection(target(s.connection.dbname), (publisher) => publisher.query(createSlotSql(s.name)), 30_000);
                // Otherwise creating the subscription creates its slot on the publishing side: it may wait for transactions open there.
                for (const sql of createSubscriptionSql(specs.find((x) => x.name === s.name)!, sameServer)) await client.query(sql);
                log.info({ subscription: s.name, database }, `created subscription ${s.name} in database ${database}`);
                continue;
              }
              if (shouldRepair(item, logical.repairDrift)) {
                for (const sql of item.repair) await client.query(sql);
                repaired = true;
                if (item.object === 'subscription' && item.kind === 'extra') removePassfile(input, item.name);
                log.warn({ object: item.object, name: item.name, database, kind: item.kind }, `repaired drift of ${item.object} ${item.name} in ${database}: ${item.detail}`);
              }
            } catch (error) {
              result.problems.push(problemOf(error, item.object, item.name, database));
            }
            // The connection is rewritten as a matter of course (e.g. after a failover here): not drift to report.
            if (!(repaired && item.always && item.kind === 'different')) {
              result.drift.push({ object: item.object, name: item.name, database, kind: item.kind, detail: item.detail, repaired } satisfies LogicalDrift);
            }
          }
          const present = await readPublications(client);
          for (const p of publications) {
            const found = present.find((x) => x.name === p.name);
            if (found) result.publications.push({ name: p.name, database, tables: found.allTables ? -1 : found.tables.length + found.schemas.length });
          }
          const progress = await readSubscriptionProgress(client);
          for (const s of subscriptions) result.subscriptions.push(await subscriptionStatus(s, progress.find((x) => x.name === s.name)));
        },
        30_000,
      );
    } catch (error) {
      const problem = problemOf(error, 'database', database, database);
      result.problems.push(problem);
      for (const s of subscriptions) result.subscriptions.push({ ...emptyStatus(s), state: 'unknown', error: problem.message });
    }
  }
  return result;
}

function emptyStatus(s: SubscriptionDeclaration): SubscriptionStatus {
  return { name: s.name, database: s.database, state: 'missing', lagBytes: null, lagSeconds: null, copying: [], appliedLsn: null, publisher: null, error: null };
}

async function subscriptionStatus(s: SubscriptionDeclaration, progress: Awaited<ReturnType<typeof readSubscriptionProgress>>[number] | undefined): Promise<SubscriptionStatus> {
  if (!progress) return emptyStatus(s);
  const state = !progress.enabled ? 'disabled' : !progress.workerRunning ? 'down' : progress.copying.length > 0 ? 'copying' : 'streaming';
  const status: SubscriptionStatus = { ...emptyStatus(s), state, copying: progress.copying, appliedLsn: progress.appliedLsn };
  try {
    const password = readSubscriptionSecret(s.connection.password, `subscription ${s.name}: connection.password`);
    const lag = await withPublisher(s.connection, password, async (client, host) => ({ host, ...(await readPublisherLag(client, s.name)) }), 3_000);
    status.publisher = lag.host;
    status.lagBytes = lag.lagBytes;
    status.lagSeconds = lag.lagSeconds;
    if (!lag.slotExists) status.error = `no slot ${s.name} on the publishing primary ${lag.host}`;
  } catch (error) {
    status.error = (error as Error).message;
  }
  // Counters only grow (a lost connection counts too): they matter while no worker runs.
  if (!progress.workerRunning && progress.enabled && progress.applyErrors + progress.syncErrors > 0 && !status.error) status.error = `${progress.applyErrors} apply and ${progress.syncErrors} table-copy errors so far (pg_stat_subscription_stats; see the server log)`;
  return status;
}
