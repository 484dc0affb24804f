import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isManagedParameter, networkProblem } from '../../src/cluster/parameters.js';
import { ClusterSettingsSchema } from '../../src/cluster/settings.js';
import { parseMemberConfig } from '../../src/config/load.js';
import { MemberConfigSchema } from '../../src/config/member.js';
import { baseParameters, defaultParameters, renderHba, renderRelevoConf } from '../../src/postgres/conf.js';

const MEMBER_YAML = `cluster: c1\nname: m1\nstore: { backend: embedded, path: /x/store.db }\npostgres: { dataDir: /x/data }\nsecrets: { file: /x/secrets.yaml }\n`;

describe('allowedNetworks', () => {
  it('accepts CIDR ranges, samehost, samenet and host names', () => {
    for (const entry of ['10.0.0.0/8', '127.0.0.1/32', '0.0.0.0/0', '::1/128', 'fd00::/8', 'samehost', 'samenet', 'db1.example.com', '.example.com', 'localhost']) {
      assert.equal(networkProblem(entry), undefined, entry);
    }
  });
  it('refuses anything else, naming the entry', () => {
    for (const entry of ['0.0.0.0/0 trust #', '10.0.0.1', 'all', '10.0.0.0/33', '::/129', 'a b', 'host,other', '"x"', '', '10.0.0.0/8 trust', '@file', '+group', 'samenet\n']) {
      const problem = networkProblem(entry);
      assert.ok(problem, `refused: ${JSON.stringify(entry)}`);
    }
    const result = ClusterSettingsSchema.safeParse({ allowedNetworks: ['0.0.0.0/0 trust #', 'samenet'] });
    assert.equal(result.success, false);
    assert.match(JSON.stringify(result.error!.issues), /0\.0\.0\.0\/0 trust #/);
  });
  it('what pg_hba.conf gets is only ever scram-sha-256 or peer', () => {
    const hba = renderHba(ClusterSettingsSchema.parse({ allowedNetworks: ['10.0.0.0/8', 'samenet', 'db.example.com'] }));
    for (const line of hba.split('\n').filter((l) => l && !l.startsWith('#'))) assert.match(line, /\s(scram-sha-256|peer)$/, line);
  });
});

describe('PostgreSQL parameters', () => {
  it('refuses managed and authentication parameters in cluster settings and member files', () => {
    for (const name of ['hba_file', 'ident_file', 'listen_addresses', 'port', 'ssl', 'ssl_cert_file', 'password_encryption', 'synchronous_standby_names', 'primary_conninfo', 'primary_slot_name', 'archive_command', 'restore_command', 'include']) {
      assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { [name]: 'x' } }).success, false, `cluster: ${name}`);
      const member = MemberConfigSchema.safeParse({ ...parseMemberConfig(MEMBER_YAML, 'm.yaml'), postgres: { dataDir: '/x/data', parameters: { [name]: 'x' } } });
      assert.equal(member.success, false, `member: ${name}`);
    }
    assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { work_mem: '16MB', shared_buffers: '1GB', wal_level: 'logical' } }).success, true);
    assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { wal_level: 'minimal' } }).success, false);
    assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { work_mem: "1MB'\nhba_file = '/tmp/x" } }).success, false, 'no line break in a value');
  });

  it('every parameter relevo writes to relevo.conf is either managed (refused) or an overridable default: the list cannot drift', () => {
    const config = parseMemberConfig(MEMBER_YAML, 'm.yaml');
    const settings = ClusterSettingsSchema.parse({});
    // As the agent renders it: base parameters, synchronous_standby_names, standby settings.
    const text = renderRelevoConf({ ...baseParameters(config, settings), synchronous_standby_names: 'x' }, { upstream: { address: 'h:5432', slot: 's' }, passfile: '/p' }, 'm1');
    const names = text.split('\n').filter((l) => /^[a-z_]+ =/.test(l)).map((l) => l.split(' ')[0]!);
    assert.ok(names.length > 20);
    const defaults = new Set(Object.keys(defaultParameters()));
    const unclassified = names.filter((n) => !isManagedParameter(n) && !defaults.has(n));
    assert.deepEqual(unclassified, []);
    for (const name of names.filter((n) => !defaults.has(n))) assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { [name]: 'x' } }).success, false, name);
  });

  it('an overridden default still loses to what relevo manages', () => {
    const config = parseMemberConfig(MEMBER_YAML, 'm.yaml');
    const params = baseParameters(config, ClusterSettingsSchema.parse({ postgresql: { shared_buffers: '1GB' } }));
    assert.equal(params.shared_buffers, '1GB');
    assert.equal(params.password_encryption, 'scram-sha-256');
  });
});
