/**
 * Pure comparison of what is declared with what a database holds: each
 * difference named (for `relevo list` and /status) and the statements that
 * repair it. The caller decides whether to run them (creation always,
 * repair of drift only with logical.repairDrift).
 */
import { qualified, type PublicationDeclaration } from '../cluster/logical-settings.js';
import {
  alterPublicationSql,
  alterSubscriptionConnectionSql,
  alterSubscriptionPublicationsSql,
  dropPublicationSql,
  dropSubscriptionSql,
  enableSubscriptionSql,
  sameSet,
  type PublicationState,
  type SubscriptionSpec,
  type SubscriptionState,
} from './sql.js';

export type DriftKind = 'missing' | 'extra' | 'different';

export interface DriftItem {
  object: 'publication' | 'subscription';
  name: string;
  database: string;
  kind: DriftKind;
  /** What differs, in words (never a secret: connection strings are not shown). */
  detail: string;
  /**
   * Statements that repair it. `always`: relevo's own part (a declared object missing, a
   * connection after a failover of this cluster, an object whose declaration was removed):
   * run whatever repairDrift says; otherwise only with repairDrift.
   */
  repair: string[];
  always: boolean;
}

export function publicationDrift(database: string, declared: PublicationDeclaration[], actual: PublicationState[]): DriftItem[] {
  const items: DriftItem[] = [];
  const byName = new Map(actual.map((p) => [p.name, p]));
  for (const p of declared) {
    const found = byName.get(p.name);
    if (!found) {
      // Created by the caller after its checks (tables exist, replica identity): no statements here.
      items.push({ object: 'publication', name: p.name, database, kind: 'missing', detail: 'declared, not in the database', repair: [], always: true });
      continue;
    }
    const differences: string[] = [];
    if (Boolean(p.allTables) !== found.allTables) differences.push(p.allTables ? 'should be FOR ALL TABLES' : 'is FOR ALL TABLES');
    else if (p.schemas && !sameSet(p.schemas, found.schemas)) differences.push(`schemas ${show(found.schemas)}, declared ${show(p.schemas)}`);
    else if (p.tables && !sameSet(p.tables.map(qualified), found.tables)) differences.push(`tables ${show(found.tables)}, declared ${show(p.tables.map(qualified))}`);
    else if (p.tables && found.schemas.length > 0) differences.push(`schemas ${show(found.schemas)}, declared none`);
    else if (p.schemas && found.tables.length > 0) differences.push(`tables ${show(found.tables)}, declared none`);
    if (!sameSet(p.publish, found.publish)) differences.push(`publishes ${show(found.publish)}, declared ${show(p.publish)}`);
    if (differences.length > 0) {
      items.push({ object: 'publication', name: p.name, database, kind: 'different', detail: differences.join('; '), repair: alterPublicationSql(p, found), always: false });
    }
  }
  return [...items, ...extras('publication', database, declared, actual, dropPublicationSql, '')];
}

export function subscriptionDrift(database: string, declared: SubscriptionSpec[], actual: SubscriptionState[]): DriftItem[] {
  const items: DriftItem[] = [];
  const byName = new Map(actual.map((s) => [s.name, s]));
  for (const s of declared) {
    const found = byName.get(s.name);
    if (!found) {
      items.push({ object: 'subscription', name: s.name, database, kind: 'missing', detail: 'declared, not in the database', repair: [], always: true });
      continue;
    }
    if (found.conninfo !== s.conninfo) {
      // The connection is relevo's to render (hosts, passfile of the current primary): always rewritten.
      items.push({ object: 'subscription', name: s.name, database, kind: 'different', detail: 'connection differs from the declaration', repair: [alterSubscriptionConnectionSql(s.name, s.conninfo)], always: true });
    }
    if (!sameSet(found.publications, s.publications)) {
      items.push({
        object: 'subscription',
        name: s.name,
        database,
        kind: 'different',
        detail: `publications ${show(found.publications)}, declared ${show(s.publications)}`,
        repair: [alterSubscriptionPublicationsSql(s.name, s.publications, found.enabled && s.enabled)],
        always: false,
      });
    }
    if (found.enabled !== s.enabled) {
      items.push({ object: 'subscription', name: s.name, database, kind: 'different', detail: found.enabled ? 'enabled, declared disabled' : 'disabled, declared enabled', repair: [enableSubscriptionSql(s.name, s.enabled)], always: false });
    }
  }
  return [...items, ...extras('subscription', database, declared, actual, dropSubscriptionSql, ' (and its slot on the publishing side)')];
}

/** Objects in the database without a declaration: relevo's own (a removed declaration) are dropped, others only reported. */
function extras(
  object: DriftItem['object'],
  database: string,
  declared: { name: string }[],
  actual: { name: string; managed: boolean }[],
  drop: (name: string) => string,
  alsoDropped: string,
): DriftItem[] {
  const declaredNames = new Set(declared.map((d) => d.name));
  return actual
    .filter((found) => !declaredNames.has(found.name))
    .map((found) => ({
      object,
      name: found.name,
      database,
      kind: 'extra' as const,
      detail: found.managed ? `its declaration was removed: dropping it${alsoDropped}` : 'not declared (made by hand?)',
      repair: [drop(found.name)],
      always: found.managed,
    }));
}

/** Whether relevo runs an item's repair now. */
export function shouldRepair(item: DriftItem, repairDrift: boolean): boolean {
  return item.repair.length > 0 && (item.always || repairDrift);
}

function show(values: readonly string[]): string {
  return values.length === 0 ? '(none)' : [...values].sort().join(',');
}
