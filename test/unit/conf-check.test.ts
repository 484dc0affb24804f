import assert from 'node:assert/strict';
import { appendFileSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { UnsafePathError } from '../../src/postgres/owned-fs.js';
import { RELEVO_CONF, writeMemberConfiguration } from '../../src/postgres/conf.js';
import { lookupOsUser } from '../../src/util/os-user.js';

const root = process.getuid?.() === 0;

describe('the configuration check of every loop', { skip: !root && 'needs root (files owned by the postgres user)' }, () => {
  it('reads nothing again while nothing changed, and repairs any change to a file', () => {
    const pg = lookupOsUser('postgres');
    const dir = mkdtempSync(join(tmpdir(), 'relevo-conf-check-'));
    try {
      const data = join(dir, 'data');
      mkdirSync(data, { mode: 0o700 });
      chownSync(data, pg.uid, pg.gid);
      const settings = defaultClusterSettings();
      const write = (port = 5999) => writeMemberConfiguration(data, pg, { port }, settings, 'm1');
      assert.equal(write(), true, 'first write');
      assert.equal(write(), false, 'all right');
      assert.equal(write(), false, 'still all right (from the remembered check)');
      const relevoConf = join(data, RELEVO_CONF);
      const good = readFileSync(relevoConf, 'utf8');
      appendFileSync(relevoConf, "port = 1\n");
      assert.equal(write(), true, 'an edit is seen and undone');
      assert.equal(readFileSync(relevoConf, 'utf8'), good);
      assert.equal(write(), false);
      assert.equal(write(6000), true, 'new wanted content is written');
      assert.equal(write(6000), false);
      unlinkSync(join(data, 'pg_hba.conf'));
      assert.equal(write(6000), true, 'a removed file is written again');
      assert.equal(write(6000), false);
      // A link put in place of a file is refused, as by the full check.
      unlinkSync(relevoConf);
      writeFileSync(join(dir, 'elsewhere'), 'x');
      symlinkSync(join(dir, 'elsewhere'), relevoConf);
      assert.throws(() => write(6000), (e: unknown) => e instanceof UnsafePathError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
