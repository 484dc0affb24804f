/**
 * A PostgreSQL minor update with two real 15.x server builds (15.17 → 15.18,
 * from scripts/fetch-postgres.sh) on a 3-member cluster, under writes through
 * relevo's router and, for comparison, a libpq-style multi-host writer.
 *
 * Each member's postgres.binDir is a directory of links, as a package manager's
 * bin directory: initdb, pg_ctl and postgres point into the 15.17 build, the
 * client programs the builds lack (pg_basebackup, pg_rewind, pg_controldata)
 * into Debian's 15. The update re-points the server links at the 15.18 build —
 * what `apt upgrade` does to /usr/lib/postgresql/15/bin — the agents report the
 * new binaries as a pending restart, and `relevo restart --pending` rolls every
 * member onto them. PostgreSQL resolves its own links, so each
 * postmaster runs the build its pg_ctl link points at when it starts.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { loadMemberConfig } from '../../src/config/load.js';
import { clusterCaFile } from '../../src/tls/member.js';
import { startRouter, type RouterHandle } from '../../src/router/index.js';
import { MAIN, TEST_APP_ROLE, TestCluster } from './cluster.js';
import { Writer } from './writer.js';

const SERVER_PROGRAMS = ['initdb', 'pg_ctl', 'postgres'];
const CLIENT_PROGRAMS = ['pg_basebackup', 'pg_rewind', 'pg_controldata', 'psql'];
const DEBIAN_BIN = '/usr/lib/postgresql/15/bin';

/** The bin directory of a pinned real build (downloaded and checked once, then cached). */
export function fetchPostgres(version: string): string {
  const root = join(import.meta.dirname, '..', '..', '..');
  return execFileSync('bash', [join(root, 'scripts', 'fetch-postgres.sh'), version], { encoding: 'utf8', timeout: 300_000 }).trim();
}

/** A bin directory of links: server programs from `serverBin`, clients from Debian's 15. */
export class LinkedBinDir {
  readonly dir: string;

  constructor(serverBin: string) {
    this.dir = mkdtempSync(join(tmpdir(), 'relevo-bin-'));
    // PostgreSQL's OS user runs these.
    chmodSync(this.dir, 0o755);
    for (const p of CLIENT_PROGRAMS) symlinkSync(join(DEBIAN_BIN, p), join(this.dir, p));
    this.point(serverBin);
  }

  /** Re-points the server programs, as a package manager replaces them in place. */
  point(serverBin: string): void {
    for (const p of SERVER_PROGRAMS) {
      try {
        unlinkSync(join(this.dir, p));
      } catch {
        // first time
      }
      symlinkSync(join(serverBin, p), join(this.dir, p));
    }
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Sets a member's postgres.binDir in its file (before its agent starts). */
export function setBinDir(cluster: TestCluster, name: string, binDir: string): void {
  const member = cluster.member(name);
  const doc = parseYaml(readFileSync(member.file, 'utf8')) as { postgres: Record<string, unknown> };
  doc.postgres.binDir = binDir;
  writeFileSync(member.file, stringifyYaml(doc));
  member.config = loadMemberConfig(member.file);
}

/** A writer through a relevo router (relay mode, its defaults) started in this process. */
export async function routedWriter(cluster: TestCluster, table: string): Promise<{ writer: Writer; router: RouterHandle }> {
  const router = await startRouter({
    name: `${table}-router`,
    cluster: cluster.clusterName,
    store: cluster.storeConfig,
    listen: { readWrite: '127.0.0.1:0', readOnly: null },
  });
  const address = router.addresses.readWrite!;
  const first = cluster.member([...cluster.members.keys()][0]!).config;
  const writer = new Writer({
    targets: [{ name: 'router', host: address.replace(/:\d+$/, ''), port: Number(address.split(':').pop()) }],
    // The application's role (created by waitHealthy): relevo's own role does not log in over TCP.
    user: TEST_APP_ROLE.user,
    password: TEST_APP_ROLE.password,
    // The router relays TLS end to end: the member's certificate, verified against the cluster CA.
    tlsCaFile: clusterCaFile(first),
    table,
    intervalMs: 10,
    connectTimeoutMs: 1_000,
  });
  return { writer, router };
}

export { MAIN };
