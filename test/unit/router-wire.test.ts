/** Session mode's whole-message splitter and verifier file. */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { scramVerifier } from '../../src/postgres/scram.js';
import { VerifierFile, VerifierFileError } from '../../src/router/verifiers.js';
import { MessageSplitter, message, parseStartupParams, query, startupMessage } from '../../src/router/wire.js';

describe('MessageSplitter', () => {
  it('yields whole messages across arbitrary chunk boundaries and keeps the incomplete tail', () => {
    const stream = Buffer.concat([query('SELECT 1'), message('S'), query('SELECT 2')]);
    for (let cut = 1; cut < stream.length; cut++) {
      const s = new MessageSplitter();
      const seen: string[] = [];
      const each = (type: number, body: Buffer) => seen.push(`${String.fromCharCode(type)}:${body.toString('utf8').replace(/\0/g, '')}`);
      const a = s.push(stream.subarray(0, cut), each);
      const b = s.push(stream.subarray(cut), each);
      assert.deepEqual(seen, ['Q:SELECT 1', 'S:', 'Q:SELECT 2'], `cut at ${cut}`);
      assert.equal(a.length + b.length, stream.length);
      assert.equal(s.pending, 0);
    }
  });

  it('refuses an impossible length', () => {
    assert.throws(() => new MessageSplitter().push(Buffer.from([0x51, 0, 0, 0, 2]), () => undefined), /invalid length 2/);
  });

  it('round-trips startup parameters', () => {
    const params = new Map([['user', 'app'], ['database', 'db'], ['application_name', 'x y']]);
    assert.deepEqual(parseStartupParams(startupMessage(params)), params);
  });
});

describe('VerifierFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-verifiers-'));
  const path = join(dir, 'v');

  it('reads SCRAM verifiers, refuses clear passwords without echoing them, and a readable file', () => {
    writeFileSync(path, `; comment\n"app" "${scramVerifier('pw')}"\n"we""ird" "${scramVerifier('pw2')}"\n`, { mode: 0o600 });
    const f = new VerifierFile(path);
    assert.ok(f.get('app'));
    assert.ok(f.get('we"ird'));
    assert.equal(f.get('nobody'), undefined);
    writeFileSync(path, '"app" "my-clear-password"\n', { mode: 0o600 });
    assert.throws(() => new VerifierFile(path), (e: Error) => e instanceof VerifierFileError && /line 1/.test(e.message) && !e.message.includes('my-clear-password'));
    writeFileSync(path, `"app" "${scramVerifier('pw')}"\n`);
    chmodSync(path, 0o644);
    assert.throws(() => new VerifierFile(path), /readable by group or others/);
    rmSync(dir, { recursive: true, force: true });
  });
});
