import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { BACKUP_ERRORS } from '../../src/backup/errors.js';
import { CliError } from '../../src/cli/context.js';
import { OperationError } from '../../src/cluster/operations.js';
import { CATALOGUE, errorBody, exitCodeOf, isErrorCode, renderErrorsDoc } from '../../src/errors/catalogue.js';

const root = join(import.meta.dirname, '..', '..', '..');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

/** Codes raised in src/: by an error constructor, an API body, or a class's `code` field. */
function raisedCodes(): { code: string; where: string }[] {
  const found: { code: string; where: string }[] = [];
  const patterns = [
    /\b(?:CliError|OperationError|BackupError|errorBody)\(\s*'([A-Z][A-Z0-9_]+)'/g,
    /\breadonly code(?::[^=;]+)? = '([A-Z][A-Z0-9_]+)'/g,
    /'((?:TLS|UNSAFE_PATH|E_STATE)_[A-Z_]+)'/g,
  ];
  for (const file of sources(join(root, 'src'))) {
    if (file.endsWith(join('errors', 'catalogue.ts'))) continue;
    const text = readFileSync(file, 'utf8');
    for (const pattern of patterns) {
      for (const match of text.matchAll(pattern)) found.push({ code: match[1]!, where: `${file.slice(root.length + 1)}:${text.slice(0, match.index).split('\n').length}` });
    }
  }
  return found;
}

describe('error catalogue', () => {
  it('every code raised in src/ is in the catalogue', () => {
    const raised = raisedCodes();
    assert.ok(raised.length > 80, `found only ${raised.length} raised codes: the scan is broken`);
    const missing = raised.filter((r) => !isErrorCode(r.code)).map((r) => `${r.code} (${r.where})`);
    assert.deepEqual(missing, [], 'codes raised but not in src/errors/catalogue.ts');
  });

  it('every CLI and operation error is raised with a code (no bare message)', () => {
    const bare: string[] = [];
    for (const file of sources(join(root, 'src'))) {
      const text = readFileSync(file, 'utf8');
      for (const match of text.matchAll(/new (CliError|OperationError)\(\s*([^\s])/g)) {
        const rest = text.slice(match.index + match[0].length - 1, match.index + match[0].length + 40);
        if (!/^'[A-Z][A-Z0-9_]+'/.test(rest) && !/^error\.code,/.test(rest) && !/^code,/.test(rest)) {
          bare.push(`${file.slice(root.length + 1)}:${text.slice(0, match.index).split('\n').length}`);
        }
      }
    }
    assert.deepEqual(bare, []);
  });

  it('has no duplicate codes (backup codes are merged in, never overridden)', () => {
    const text = readFileSync(join(root, 'src', 'errors', 'catalogue.ts'), 'utf8');
    const keys = [...text.matchAll(/^ {2}([A-Z][A-Z0-9_]+): \{/gm)].map((m) => m[1]!);
    assert.equal(new Set(keys).size, keys.length, 'a code is listed twice');
    for (const code of Object.keys(BACKUP_ERRORS)) assert.ok(!keys.includes(code), `${code} is both a backup code and a catalogue entry`);
    for (const [code, entry] of Object.entries(CATALOGUE)) {
      assert.ok(entry.summary.length > 0 && entry.hint.length > 0, `${code} has no summary or hint`);
    }
  });

  it('docs/errors.md is generated from the catalogue (npm run docs) and lists every code', () => {
    const doc = readFileSync(join(root, 'docs', 'errors.md'), 'utf8');
    assert.equal(doc, renderErrorsDoc(), 'docs/errors.md is stale: run npm run docs');
    for (const code of Object.keys(CATALOGUE)) assert.ok(doc.includes(`\`${code}\``), `${code} is not in docs/errors.md`);
  });

  it('exit codes and API bodies derive from the code', () => {
    assert.equal(new CliError('BAD_ARGUMENT', 'x').exitCode, 2);
    assert.equal(new CliError('STORE_UNREACHABLE', 'x').exitCode, 1);
    assert.equal(exitCodeOf('RECORD_UNREADABLE'), 3);
    const refused = new OperationError('ALREADY_PAUSED', 'the cluster is already paused');
    assert.equal(refused.code, 'ALREADY_PAUSED');
    assert.equal(refused.hint, CATALOGUE.ALREADY_PAUSED.hint);
    assert.deepEqual(Object.keys(errorBody('UNKNOWN_MEMBER', 'm')).sort(), ['code', 'error', 'hint', 'message']);
  });
});
