import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { MAIN } from '../helpers/cluster.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'relevo-config-'));

async function relevo(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MAIN, ...args], { timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

function memberFile(name: string, body: string): string {
  const file = join(dir, name);
  writeFileSync(file, body);
  return file;
}

describe('member configuration', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));
  const dataDir = join(dir, 'data');
  const valid = `cluster: c1\nname: m1\nstore: { backend: embedded, path: ${dir}/store.db }\npostgres: { dataDir: ${dataDir}, port: 5999 }\nsecrets: { file: ${dir}/secrets.yaml }\n`;

  it('config check accepts a valid file and fills in defaults', async () => {
    const result = await relevo(['config', 'check', memberFile('ok.yaml', valid)]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /binDir: \/usr\/lib\/postgresql\/15\/bin/);
  });

  it('an agent with a malformed config exits non-zero naming key, value and expectation, and creates no data directory', async () => {
    const bad = memberFile('bad.yaml', valid.replace('port: 5999', 'port: "abc"'));
    const result = await relevo(['agent', '-c', bad]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /postgres\.port: got "abc"; .*number/);
    assert.equal(existsSync(dataDir), false);
    assert.equal(existsSync(join(dir, 'store.db')), false, 'store not touched either');
  });

  it('names unknown keys, bad names and broken YAML', async () => {
    const unknown = await relevo(['config', 'check', memberFile('unknown.yaml', `${valid}colour: blue\n`)]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown key\(s\) "colour"/);
    const badName = await relevo(['config', 'check', memberFile('name.yaml', valid.replace('name: m1', 'name: "M 1"'))]);
    assert.match(badName.stderr, /name: got "M 1"; expected a lower-case name/);
    const yaml = await relevo(['config', 'check', memberFile('yaml.yaml', 'cluster: [unclosed\n')]);
    assert.equal(yaml.code, 2);
    assert.match(yaml.stderr, /not valid YAML/);
    const missing = await relevo(['config', 'check', join(dir, 'nope.yaml')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read the file: ENOENT/);
  });

  it('config set validates cluster settings and changes nothing on a bad value', async () => {
    const file = memberFile('ok.yaml', valid);
    assert.equal((await relevo(['config', 'set', '-c', file, 'ttlMs=20000', 'postgresql.work_mem=16MB'])).code, 0);
    const bad = await relevo(['config', 'set', '-c', file, 'ttlMs=fast']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /ttlMs: got "fast"; .*number/);
    const shown = await relevo(['config', 'show', '-c', file]);
    assert.match(shown.stdout, /ttlMs: 20000/);
    assert.match(shown.stdout, /work_mem: 16MB/);
    const removed = await relevo(['config', 'set', '-c', file, 'postgresql.work_mem=']);
    assert.equal(removed.code, 0);
    assert.doesNotMatch((await relevo(['config', 'show', '-c', file])).stdout, /work_mem/);
  });
});
