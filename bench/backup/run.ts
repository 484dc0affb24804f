/**
 * bench/backup: one side-by-side run on a pgbench database (default scale 67,
 * about 1 GB): WAL archive throughput under pgbench at full speed (relevo's
 * archive_command vs pgBackRest's archive-push), then full and incremental
 * backups (relevo, pgBackRest 2.45), plain pg_basebackup and `cp -a` of the
 * stopped data directory, then a restore with each. Every tool runs under
 * /usr/bin/time for wall and CPU seconds. The backups and restores run in
 * several interleaved rounds (VACUUM and CHECKPOINT before each round's
 * backups). Run it under the heavy lock:
 *   flock /tmp/relevo-heavy.lock node dist/bench/backup/run.js [--scale 67] [--pgbench-seconds 20] [--rounds 3] [--skip-wal] [--via-basebackup]
 */
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { LIBEXEC, readSystemIdentifier } from '../../src/backup/archive.js';
import { initRepository } from '../../src/backup/open.js';
import { lookupOsUser, spawnIdentity } from '../../src/util/os-user.js';
import type { SideContext } from './side.js';

const { values } = parseArgs({ options: { scale: { type: 'string', default: '67' }, 'pgbench-seconds': { type: 'string', default: '20' }, level: { type: 'string', default: '1' }, rounds: { type: 'string', default: '3' }, 'skip-wal': { type: 'boolean', default: false }, 'via-basebackup': { type: 'boolean', default: false } } });
const scale = Number(values.scale);
const rounds = Number(values.rounds);
const loadBefore = loadavg();
const pgbenchSeconds = Number(values['pgbench-seconds']);
const level = Number(values.level);
const BIN = '/usr/lib/postgresql/15/bin';
const here = dirname(fileURLToPath(import.meta.url));
const user = lookupOsUser('postgres');

interface Timed {
  wall: number;
  cpu: number;
  stdout: string;
}

/** Runs argv under /usr/bin/time, as postgres when asked. */
function timed(argv: string[], asPostgres: boolean, env: Record<string, string> = {}): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', 'TIME %e %U %S', ...argv], {
      ...(asPostgres ? spawnIdentity(user) : {}),
      cwd: '/tmp',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: asPostgres ? user.home : (process.env.HOME ?? '/root'), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-20_000)));
    child.on('close', (code) => {
      const match = /TIME ([\d.]+) ([\d.]+) ([\d.]+)/.exec(stderr);
      if (code !== 0 || !match) return reject(new Error(`${argv.join(' ')} failed (${code}): ${stderr.slice(-2000)}`));
      resolve({ wall: Number(match[1]), cpu: Number(match[2]) + Number(match[3]), stdout });
    });
  });
}

const asPg = (program: string, args: string[]) => execFileSync(program, args, { ...spawnIdentity(user), cwd: '/tmp', encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const du = (path: string) => Number(execFileSync('du', ['-sb', path], { encoding: 'utf8' }).split('\t')[0]);
/** What a backup copies: the data directory without pg_wal (every tool here takes WAL from elsewhere or not at all). */
const dataSize = (dir: string) => du(dir) - du(join(dir, 'pg_wal'));

const base = mkdtempSync('/tmp/relevo-bench-backup-');
execFileSync('chown', [`${user.uid}:${user.gid}`, base]);
const data = join(base, 'data');
const port = 20000 + Math.floor(Math.random() * 5000);
const psql = (sql: string) => asPg(join(BIN, 'psql'), ['-X', '-At', '-h', base, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-c', sql]).trim();
const pgctl = (...args: string[]) => asPg(join(BIN, 'pg_ctl'), ['-D', data, '-w', '-t', '300', '-l', join(base, 'pg.log'), ...args]);

const rows: string[][] = [];
const results: { round: number; tool: string; operation: string; seconds: number; mbPerSecond: number; cpuSeconds: number; repoMB: number | null }[] = [];
const mb = (bytes: number) => bytes / 1048576;
let round = 0;
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
/** One row per tool and operation, in first-seen order: the median of each column over the rounds. */
function medians(): string[][] {
  const keys = [...new Set(results.map((r) => `${r.tool}\t${r.operation}`))];
  return keys.map((key) => {
    const of = results.filter((r) => `${r.tool}\t${r.operation}` === key);
    const repo = of.map((r) => r.repoMB).filter((v): v is number => v !== null);
    return [...key.split('\t'), median(of.map((r) => r.seconds)).toFixed(1), median(of.map((r) => r.mbPerSecond)).toFixed(0), median(of.map((r) => r.cpuSeconds)).toFixed(1), repo.length ? median(repo).toFixed(0) : '-'];
  });
}
function record(tool: string, operation: string, t: Timed, dataBytes: number, repoBytes: number | null) {
  const row = { round, tool, operation, seconds: t.wall, mbPerSecond: mb(dataBytes) / t.wall, cpuSeconds: t.cpu, repoMB: repoBytes === null ? null : mb(repoBytes) };
  results.push(row);
  rows.push([String(round), tool, operation, t.wall.toFixed(1), row.mbPerSecond.toFixed(0), t.cpu.toFixed(1), row.repoMB === null ? '-' : row.repoMB.toFixed(0)]);
  console.error(`${tool} ${operation}: ${t.wall.toFixed(1)} s, ${row.mbPerSecond.toFixed(0)} MB/s, CPU ${t.cpu.toFixed(1)} s, repository ${row.repoMB?.toFixed(0) ?? '-'} MB`);
}

try {
  asPg(join(BIN, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync']);
  const sysid = readSystemIdentifier(data)!;
  const repo = join(base, 'repo');
  mkdirSync(repo);
  execFileSync('chown', [`${user.uid}:${user.gid}`, repo]);
  initRepository(repo, 'bench', sysid, user);
  const relevoArchive = `'${join(LIBEXEC, 'relevo-wal-push')}' '${repo}' bench-${sysid} %p %f`;
  const pgbrConf = join(base, 'pgbackrest.conf');
  writeFileSync(
    pgbrConf,
    `[global]\nrepo1-path=${base}/pgbr-repo\ncompress-type=gz\ncompress-level=${level}\nprocess-max=2\nstart-fast=y\narchive-check=n\nlog-level-console=warn\nlog-level-file=off\nlock-path=${base}/pgbr-lock\nspool-path=${base}/pgbr-spool\n\n[bench]\npg1-path=${data}\npg1-port=${port}\npg1-socket-path=${base}\n`,
  );
  for (const dir of ['pgbr-repo', 'pgbr-lock', 'pgbr-spool']) mkdirSync(join(base, dir));
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, base]);
  const pgbrArchive = `pgbackrest --config=${pgbrConf} --stanza=bench archive-push %p`;
  appendFileSync(
    join(data, 'postgresql.conf'),
    `port = ${port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '${base}'\nwal_level = replica\nmax_wal_senders = 10\narchive_mode = on\narchive_command = '${relevoArchive.replace(/'/g, "''")}'\nshared_buffers = 256MB\nmax_wal_size = 4GB\ncheckpoint_timeout = 30min\n`,
  );
  writeFileSync(join(data, 'pg_hba.conf'), 'local all all trust\nlocal replication all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n');
  pgctl('start');
  psql("CREATE ROLE relevo SUPERUSER LOGIN PASSWORD 'bench'; CREATE ROLE replicator REPLICATION LOGIN PASSWORD 'bench'");
  asPg('pgbackrest', [`--config=${pgbrConf}`, '--stanza=bench', 'stanza-create']);
  const init = await timed([join(BIN, 'pgbench'), '-i', '-q', '-s', String(scale), '-h', base, '-p', String(port), '-U', 'postgres', 'postgres'], true);
  psql('CHECKPOINT');
  const dataBytes = dataSize(data);
  console.error(`pgbench -i -s ${scale}: ${init.wall.toFixed(0)} s, data directory ${mb(dataBytes).toFixed(0)} MB without pg_wal`);

  // WAL archive under pgbench at full speed, relevo and pgBackRest interleaved.
  const walRows: string[][] = [];
  for (const [tool, command] of values['skip-wal'] ? [] : ([['relevo', relevoArchive], ['pgBackRest', pgbrArchive], ['relevo', relevoArchive], ['pgBackRest', pgbrArchive]] as const)) {
    psql(`ALTER SYSTEM SET archive_command = '${command.replace(/'/g, "''")}'`);
    psql('SELECT pg_reload_conf()');
    psql('SELECT pg_switch_wal()');
    await new Promise((r) => setTimeout(r, 2_000));
    const before = psql('SELECT pg_current_wal_lsn()');
    const run = await timed([join(BIN, 'pgbench'), '-c', '8', '-j', '2', '-T', String(pgbenchSeconds), '-h', base, '-p', String(port), '-U', 'postgres', 'postgres'], true);
    const walBytes = Number(psql(`SELECT pg_current_wal_lsn() - '${before}'::pg_lsn`));
    const ready = () => Number(psql("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"));
    const backlogAtEnd = ready();
    const t0 = Date.now();
    while (ready() > 0 && Date.now() - t0 < 120_000) await new Promise((r) => setTimeout(r, 200));
    const drain = (Date.now() - t0) / 1000;
    const tps = /tps = ([\d.]+)/.exec(run.stdout)?.[1] ?? '?';
    const failed = psql('SELECT failed_count FROM pg_stat_archiver');
    walRows.push([tool, tps, (mb(walBytes) / pgbenchSeconds).toFixed(1), String(backlogAtEnd), drain.toFixed(1), failed]);
    console.error(`WAL ${tool}: ${tps} tps, ${(mb(walBytes) / pgbenchSeconds).toFixed(1)} MB/s of WAL, ${backlogAtEnd} segments waiting at the end, drained in ${drain.toFixed(1)} s`);
  }
  psql(`ALTER SYSTEM SET archive_command = '${relevoArchive.replace(/'/g, "''")}'`);
  psql('SELECT pg_reload_conf()');
  psql('CHECKPOINT');
  // The archiver still pushing pgbench -i's WAL (with --skip-wal nothing drained it) would share the
  // CPU with round 1's first backup, and hold up its wait for the end segment: drained first.
  const waiting = () => Number(psql("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"));
  for (const t0 = Date.now(); waiting() > 0 && Date.now() - t0 < 300_000; ) await new Promise((r) => setTimeout(r, 500));

  // relevo runs on the database host here: it reads the data directory directly, unless told to go through pg_basebackup.
  const side: SideContext = {
    repository: repo,
    systemIdentifier: sysid,
    address: `127.0.0.1:${port}`,
    password: 'bench',
    compressLevel: level,
    parallel: 4,
    ...(values['via-basebackup'] ? {} : { local: { dataDir: data, socketDir: base, port } }),
  };
  const sideJs = join(here, 'side.js');
  /** What bin/relevo sets for `relevo backup` and `relevo restore` (freed memory kept in the process). */
  const relevoEnv = { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=536870912' };
  const relevoRepoBytes = () => du(join(repo, `bench-${sysid}`, 'backups'));
  const pgbr = (args: string[]) => timed(['pgbackrest', `--config=${pgbrConf}`, '--stanza=bench', ...args], true);

  for (round = 1; round <= rounds; round++) {
    psql('VACUUM');
    psql('CHECKPOINT');
    const fullBytes = dataSize(data);
    // Repository sizes of this round only: the repositories keep earlier rounds' backups.
    const relevoStart = relevoRepoBytes();
    let before = 0;
    record('relevo', 'full backup', await timed([process.execPath, sideJs, 'backup', JSON.stringify(side), 'full'], false, relevoEnv), fullBytes, (before = relevoRepoBytes()) - relevoStart);
    const pgbrStart = du(join(base, 'pgbr-repo', 'backup'));
    let pgbrBefore = 0;
    record('pgBackRest', 'full backup', await pgbr(['--type=full', 'backup']), fullBytes, (pgbrBefore = du(join(base, 'pgbr-repo', 'backup'))) - pgbrStart);
    record('pg_basebackup', 'backup (plain, -X fetch)', await timed([join(BIN, 'pg_basebackup'), '-D', join(base, `pgbb${round}`), '-Fp', '-X', 'fetch', '-c', 'fast', '-h', base, '-p', String(port), '-U', 'postgres'], true), fullBytes, du(join(base, `pgbb${round}`)));
    pgctl('-m', 'fast', 'stop');
    record('cp -a', 'copy of the stopped data directory', await timed(['cp', '-a', data, join(base, `cpa${round}`)], false), fullBytes, du(join(base, `cpa${round}`)));
    pgctl('start');

    psql('UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0');
    psql('CHECKPOINT');
    record('relevo', 'incremental after 1 % of rows changed', await timed([process.execPath, sideJs, 'backup', JSON.stringify(side), 'incremental'], false, relevoEnv), dataSize(data), relevoRepoBytes() - before);
    const incr = await pgbr(['--type=incr', 'backup']);
    record('pgBackRest', 'incremental after 1 % of rows changed', incr, dataSize(data), du(join(base, 'pgbr-repo', 'backup')) - pgbrBefore);

    record('relevo', 'restore (incremental chain)', await timed([process.execPath, sideJs, 'restore', JSON.stringify(side), join(base, `r-relevo${round}`)], false, relevoEnv), dataSize(data), null);
    mkdirSync(join(base, `r-pgbr${round}`));
    execFileSync('chown', [`${user.uid}:${user.gid}`, join(base, `r-pgbr${round}`)]);
    record('pgBackRest', 'restore (incremental chain)', await pgbr([`--pg1-path=${join(base, `r-pgbr${round}`)}`, 'restore']), dataSize(data), null);
    record('pg_basebackup', 'restore (cp -a of the plain copy)', await timed(['cp', '-a', join(base, `pgbb${round}`), join(base, `r-pgbb${round}`)], false), dataSize(data), null);
    record('cp -a', 'restore (cp -a back)', await timed(['cp', '-a', join(base, `cpa${round}`), join(base, `r-cpa${round}`)], false), dataSize(data), null);
    // Keep the disk use of one round: copies and restores go, the repositories stay.
    for (const dir of [`pgbb${round}`, `cpa${round}`, `r-relevo${round}`, `r-pgbr${round}`, `r-pgbb${round}`, `r-cpa${round}`]) rmSync(join(base, dir), { recursive: true, force: true });
  }

  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const table = (header: string[], body: string[][]) => [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  const md = [
    `# bench/backup ${stamp}`,
    '',
    `pgbench scale ${scale}, data directory ${mb(dataBytes).toFixed(0)} MB without pg_wal (MB/s below are of that size); gzip level ${level} for relevo and pgBackRest (process-max 2; relevo parallel 4 on node's thread pool; relevo reads ${values['via-basebackup'] ? "pg_basebackup's tar stream" : 'the data directory directly (pg_backup_start/stop)'}); ${rounds} interleaved rounds, VACUUM and CHECKPOINT before each round's backups; ${cpus().length} cores, load average ${loadBefore.map((l) => l.toFixed(1)).join(' ')} before the run (1, 5, 15 min), ${loadavg().map((l) => l.toFixed(1)).join(' ')} at the end (the bench's own load included).`,
    '',
    '## WAL archive under pgbench -c 8 -j 2 (TPC-B-like), interleaved',
    '',
    table(['archive_command', 'tps', 'WAL MB/s', 'segments waiting at the end', 'drained in s', 'failed (cumulative)'], walRows),
    '',
    '## Backup and restore',
    '',
    table(['round', 'tool', 'operation', 's', 'MB/s', 'CPU s', 'repository MB'], rows),
    '',
    '## Medians over the rounds',
    '',
    table(['tool', 'operation', 's', 'MB/s', 'CPU s', 'repository MB'], medians()),
    '',
  ].join('\n');
  mkdirSync(join(here, '..', '..', '..', 'bench', 'results'), { recursive: true });
  writeFileSync(join(here, '..', '..', '..', 'bench', 'results', `backup-${stamp}.md`), md);
  writeFileSync(join(here, '..', '..', '..', 'bench', 'results', `backup-${stamp}.json`), JSON.stringify({ scale, dataBytes, level, rounds, via: values['via-basebackup'] ? 'pg_basebackup' : 'direct', loadBefore, loadAfter: loadavg(), wal: walRows, results }, null, 2));
  console.log(md);
} finally {
  try {
    pgctl('-m', 'immediate', 'stop');
  } catch {
    // not running
  }
  rmSync(base, { recursive: true, force: true });
}
