/**
 * The npm package installs and runs on its own: `scripts/pack.sh` builds the
 * tarball, it is unpacked into a temp dir and its production dependencies are
 * installed from its npm-shrinkwrap.json (offline, from the npm cache; without
 * install scripts, which only build better-sqlite3's native addon — the
 * embedded store — and take a minute). Then `relevo --version`, `--help` and
 * `relevo init` run from that directory, with no source, no build and no
 * ensure-env step.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..', '..', '..');
const work = mkdtempSync(join(tmpdir(), 'relevo-package-'));

describe('npm package', () => {
  after(() => rmSync(work, { recursive: true, force: true }));

  it('packs, installs into a temp dir, and runs relevo --version, --help and init', async () => {
    // The suite built dist/ from these sources moments ago: skip npm's prepack compile (half a minute of CPU).
    await run('bash', [join(root, 'scripts', 'pack.sh'), work, '--prebuilt'], { cwd: root, timeout: 120_000 });
    const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, 'no tarball written');
    await run('tar', ['xzf', join(work, tarball), '-C', work]);
    const installed = join(work, 'package');
    // What a package must not carry: tests, benchmarks, sources other than the dashboard's assets.
    assert.ok(!existsSync(join(installed, 'dist', 'test')) && !existsSync(join(installed, 'bench')) && !existsSync(join(installed, 'src', 'cli')));
    assert.ok(existsSync(join(installed, 'npm-shrinkwrap.json')), 'the package pins its dependencies');
    await run('npm', ['ci', '--offline', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: installed, timeout: 180_000 });
    const relevo = join(installed, 'bin', 'relevo');
    const version = await run(relevo, ['--version'], { cwd: work });
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    assert.equal(version.stdout.trim(), pkg.version);
    const help = await run(relevo, ['--help'], { cwd: work });
    for (const command of ['agent', 'list', 'switchover', 'init', 'router']) assert.match(help.stdout, new RegExp(`^  ${command}\\b`, 'm'));
    await run(relevo, ['init', '--cluster', 'pkg', '--name', 'db1', '--dir', join(work, 'etc'), '--embedded', join(work, 'store.db'), '--no-tls']);
    assert.ok(existsSync(join(work, 'etc', 'member.yaml')) && existsSync(join(work, 'etc', 'secrets.yaml')));
    // No build step ran on the "target host": nothing outside the package was needed.
    assert.ok(!existsSync(join(installed, 'dist', '.build-stamp')));
  });
});
