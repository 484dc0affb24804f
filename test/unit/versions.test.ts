import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseServerVersion, promotionVersionCheck, versionsInUse } from '../../src/cluster/versions.js';
import { member } from './observations.js';

test('server_version strings parse to major.minor', () => {
  assert.deepEqual(parseServerVersion('15.14 (Debian 15.14-0+deb12u1)'), { major: 15, minor: 14, text: '15.14 (Debian 15.14-0+deb12u1)' });
  assert.equal(parseServerVersion('16beta2')?.major, 16);
  assert.equal(parseServerVersion('16beta2')?.minor, 0);
  assert.equal(parseServerVersion(null), undefined);
  assert.equal(parseServerVersion('garbage'), undefined);
});

test('a cluster is mixed when its members run different minor versions', () => {
  assert.deepEqual(versionsInUse([member('a', { postgresVersion: '15.18' }), member('b', { postgresVersion: '15.18 (Debian)' })]), ['15.18']);
  assert.deepEqual(
    versionsInUse([member('a', { postgresVersion: '15.9' }), member('b', { postgresVersion: '15.18' }), member('c', { postgresVersion: null })]),
    ['15.9', '15.18'],
  );
});

test('promotion across major versions is refused; to an older minor it is a warning', () => {
  const primary = member('a', { role: 'primary', postgresVersion: '15.18' });
  assert.match(promotionVersionCheck(member('b', { postgresVersion: '16.4' }), [primary]).refuse ?? '', /major versions is refused/);
  assert.match(promotionVersionCheck(member('b', { postgresVersion: '15.9' }), [primary]).warn ?? '', /older minor version/);
  assert.deepEqual(promotionVersionCheck(member('b', { postgresVersion: '15.18 (Debian)' }), [primary]), {});
  assert.deepEqual(promotionVersionCheck(member('b', { postgresVersion: null }), [primary]), {});
});

test('binaries installed under a running server of another minor version are a pending restart', async () => {
  const { binariesPending } = await import('../../src/postgres/binaries.js');
  assert.equal(binariesPending('15.17', '15.18'), 'binaries 15.18');
  assert.equal(binariesPending('15.18 (Debian 15.18-1)', '15.18'), undefined);
  assert.equal(binariesPending('15.18', undefined), undefined, 'unknown binaries are never a reason to restart');
});
