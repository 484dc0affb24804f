import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { LogicalSettingsSchema, PublicationDeclarationSchema, SubscriptionDeclarationSchema } from '../../src/cluster/logical-settings.js';
import { ClusterSettingsSchema } from '../../src/cluster/settings.js';
import { describeIssues } from '../../src/util/issues.js';
import { publicationDrift, shouldRepair, subscriptionDrift } from '../../src/logical/drift.js';
import { LOGICAL_CODES } from '../../src/logical/errors.js';
import { slotStateName, xidPrecedesOrEquals } from '../../src/logical/failover-slots.js';
import { createPublicationSql, MANAGED_COMMENT, renderConninfo, type PublicationState, type SubscriptionState } from '../../src/logical/sql.js';

const connection = { hosts: ['10.0.0.1:5432', '10.0.0.2:5432'], dbname: 'app', user: 'copier', password: { file: '/etc/relevo/copier' }, sslmode: 'require' };

describe('logical declarations', () => {
  it('accepts tables, schemas or all tables, exactly one of them', () => {
    assert.ok(PublicationDeclarationSchema.safeParse({ name: 'p', database: 'app', tables: ['public.a', 'b'] }).success);
    assert.ok(PublicationDeclarationSchema.safeParse({ name: 'p', database: 'app', schemas: ['sales'] }).success);
    assert.ok(PublicationDeclarationSchema.safeParse({ name: 'p', database: 'app', allTables: true }).success);
    assert.equal(PublicationDeclarationSchema.safeParse({ name: 'p', database: 'app' }).success, false);
    assert.equal(PublicationDeclarationSchema.safeParse({ name: 'p', database: 'app', tables: ['a'], allTables: true }).success, false);
    assert.deepEqual(PublicationDeclarationSchema.parse({ name: 'p', database: 'app', allTables: true }).publish, ['insert', 'update', 'delete', 'truncate']);
  });

  it('refuses names that would need quoting or could inject SQL', () => {
    for (const name of ['P', 'a b', 'x;drop', '"q"', '']) {
      assert.equal(PublicationDeclarationSchema.safeParse({ name, database: 'app', allTables: true }).success, false, name);
    }
    assert.equal(PublicationDeclarationSchema.safeParse({ name: 'p', database: 'app', tables: ["a'; drop table x; --"] }).success, false);
    assert.equal(SubscriptionDeclarationSchema.safeParse({ name: 's', database: 'app', publications: ['p'], connection: { ...connection, dbname: "app' host='evil" } }).success, false);
  });

  it('refuses a password in clear with a stable code, and never echoes it', () => {
    const candidate = { name: 's', database: 'app', publications: ['p'], connection: { ...connection, password: 'hunter2' } };
    const result = SubscriptionDeclarationSchema.safeParse(candidate);
    assert.equal(result.success, false);
    const text = describeIssues(candidate, result.error!).join('\n');
    assert.match(text, /LOGICAL_PASSWORD_IN_CLEAR/);
    assert.doesNotMatch(text, /hunter2/);
    assert.ok(SubscriptionDeclarationSchema.safeParse({ ...candidate, connection: { ...connection, password: { env: 'COPIER_PASSWORD' } } }).success);
  });

  it('needs a CA file for verify-full (the default) and refuses unknown keys', () => {
    const base = { name: 's', database: 'app', publications: ['p'] };
    assert.equal(SubscriptionDeclarationSchema.safeParse({ ...base, connection: { ...connection, sslmode: undefined } }).success, false);
    assert.ok(SubscriptionDeclarationSchema.safeParse({ ...base, connection: { ...connection, sslmode: 'verify-full', sslrootcert: '/etc/ca.crt' } }).success);
    assert.equal(SubscriptionDeclarationSchema.safeParse({ ...base, connection: { ...connection, conninfo: 'host=x' } }).success, false);
  });

  it('refuses duplicates, and publications without wal_level=logical', () => {
    const p = { name: 'p', database: 'app', allTables: true };
    assert.equal(LogicalSettingsSchema.safeParse({ publications: [p, p] }).success, false);
    const withoutLevel = ClusterSettingsSchema.safeParse({ logical: { publications: [p] } });
    assert.equal(withoutLevel.success, false);
    assert.match(JSON.stringify(withoutLevel.error!.issues), /LOGICAL_WAL_LEVEL/);
    assert.ok(ClusterSettingsSchema.safeParse({ postgresql: { wal_level: 'logical' }, logical: { publications: [p] } }).success);
  });
});

describe('logical drift', () => {
  const declared = PublicationDeclarationSchema.parse({ name: 'p', database: 'app', tables: ['a', 'sales.b'] });
  const state = (over: Partial<PublicationState>): PublicationState => ({ name: 'p', allTables: false, publish: ['insert', 'update', 'delete', 'truncate'], tables: ['public.a', 'sales.b'], schemas: [], managed: true, ...over });

  it('finds nothing when the database matches', () => {
    assert.deepEqual(publicationDrift('app', [declared], [state({})]), []);
  });

  it('reports missing, different and extra publications, with repairs', () => {
    assert.equal(publicationDrift('app', [declared], [])[0]!.kind, 'missing');
    const different = publicationDrift('app', [declared], [state({ tables: ['public.a'], publish: ['insert'] })]);
    assert.equal(different.length, 1);
    assert.equal(different[0]!.kind, 'different');
    assert.match(different[0]!.detail, /tables public\.a, declared public\.a,sales\.b; publishes insert/);
    assert.ok(different[0]!.repair.some((s) => s.startsWith('ALTER PUBLICATION "p" SET TABLE "public"."a", "sales"."b"')));
    assert.equal(shouldRepair(different[0]!, false), false, 'differences are repaired only with repairDrift');
    assert.equal(shouldRepair(different[0]!, true), true);
    const extra = publicationDrift('app', [], [state({ managed: false }), state({ name: 'old', managed: true })]);
    assert.deepEqual(extra.map((d) => [d.name, d.kind, shouldRepair(d, false)]), [['p', 'extra', false], ['old', 'extra', true]], 'a removed declaration is dropped; a hand-made object only with repairDrift');
  });

  it('rebuilds a publication that changes to or from FOR ALL TABLES', () => {
    const all = PublicationDeclarationSchema.parse({ name: 'p', database: 'app', allTables: true });
    const [item] = publicationDrift('app', [all], [state({})]);
    assert.deepEqual(item!.repair.slice(0, 2), ['DROP PUBLICATION IF EXISTS "p"', 'CREATE PUBLICATION "p" FOR ALL TABLES WITH (publish = \'insert, update, delete, truncate\')']);
  });

  it('always rewrites a connection, repairs other subscription drift only when asked', () => {
    const spec = { name: 's', publications: ['p'], conninfo: 'host=a', copyData: true, enabled: true };
    const found: SubscriptionState = { name: 's', enabled: false, conninfo: 'host=b', publications: ['p', 'q'], slotName: 's', managed: true };
    const items = subscriptionDrift('app', [spec], [found]);
    assert.deepEqual(items.map((i) => [i.detail.split(' ')[0], shouldRepair(i, false)]), [['connection', true], ['publications', false], ['disabled,', false]]);
  });

  it('renders a multi-host connection that reads its password from a passfile', () => {
    const conninfo = renderConninfo({ ...connection, passfile: '/data/x.pgpass', applicationName: 's' });
    assert.equal(conninfo, "host='10.0.0.1,10.0.0.2' port='5432,5432' dbname='app' user='copier' passfile='/data/x.pgpass' sslmode=require target_session_attrs=primary connect_timeout=5 application_name='s'");
    assert.doesNotMatch(conninfo, /password=/);
    assert.match(createPublicationSql(PublicationDeclarationSchema.parse({ name: 'p', database: 'app', schemas: ['sales'] })).join(';'), new RegExp(`FOR TABLES IN SCHEMA "sales".*${MANAGED_COMMENT.slice(0, 10)}`));
  });
});

describe('failover slots', () => {
  it('reads the slot name from a state file and refuses anything else', () => {
    const state = Buffer.alloc(200);
    state.writeUInt32LE(0x1051ca1, 0);
    state.write('items_sub', 16, 'utf8');
    assert.deepEqual(slotStateName(state), { name: 'items_sub' });
    assert.ok('problem' in slotStateName(Buffer.alloc(10)));
    assert.ok('problem' in slotStateName(Buffer.alloc(200)));
  });

  it('compares transaction ids modulo 2^32', () => {
    assert.equal(xidPrecedesOrEquals('100', '200'), true);
    assert.equal(xidPrecedesOrEquals('200', '100'), false);
    assert.equal(xidPrecedesOrEquals('200', '200'), true);
    assert.equal(xidPrecedesOrEquals('4294967000', '5'), true, 'across wraparound');
  });
});

describe('docs/logical.md', () => {
  it('lists every error code', () => {
    const doc = readFileSync(new URL('../../../docs/logical.md', import.meta.url), 'utf8');
    assert.deepEqual(Object.keys(LOGICAL_CODES).filter((code) => !doc.includes(`\`${code}\``)), []);
  });
});
