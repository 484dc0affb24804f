import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CliError } from '../../src/cli/context.js';
import { runInit, type InitOptions } from '../../src/cli/init.js';
import { loadMemberConfig } from '../../src/config/load.js';

const work = mkdtempSync(join(tmpdir(), 'relevo-init-'));
const base = (dir: string, over: Partial<InitOptions> = {}): InitOptions => ({ cluster: 'prod', name: 'db1', dir: join(work, dir), listen: '10.0.0.1', port: 5432, etcd: ['https://10.0.0.1:2379'], tls: true, ...over });
const code = (expected: string) => (e: unknown) => e instanceof CliError && e.code === expected;

describe('relevo init', () => {
  after(() => rmSync(work, { recursive: true, force: true }));

  it('writes a valid member file, private secrets and a cluster CA; a second host copies them with --from', async () => {
    const first = await runInit(base('h1'));
    const config = loadMemberConfig(first.memberFile);
    assert.equal(config.name, 'db1');
    assert.equal(config.api.listen, '10.0.0.1:8008');
    assert.equal(statSync(first.secretsFile).mode & 0o777, 0o600);
    assert.ok(existsSync(join(first.caDir!, 'ca.crt')) && existsSync(join(first.caDir!, 'ca.key')));
    const second = await runInit(base('h2', { name: 'db2', listen: '10.0.0.2', from: join(work, 'h1') }));
    assert.equal(readFileSync(second.secretsFile, 'utf8'), readFileSync(first.secretsFile, 'utf8'));
    assert.equal(readFileSync(join(second.caDir!, 'ca.crt'), 'utf8'), readFileSync(join(first.caDir!, 'ca.crt'), 'utf8'));
  });

  it('refuses to overwrite, bad flags and a missing --from, writing nothing', async () => {
    await assert.rejects(runInit(base('h1')), code('INIT_EXISTS'));
    await assert.rejects(runInit(base('h3', { name: 'Bad Name' })), code('CONFIG_INVALID'));
    await assert.rejects(runInit(base('h4', { etcd: undefined })), code('BAD_ARGUMENT'));
    await assert.rejects(runInit(base('h5', { from: join(work, 'nowhere') })), code('BAD_ARGUMENT'));
    for (const dir of ['h3', 'h4', 'h5']) assert.ok(!existsSync(join(work, dir, 'member.yaml')));
  });
});
