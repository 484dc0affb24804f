#!/usr/bin/env node
import { Command } from 'commander';
import { stringify as stringifyYaml } from 'yaml';
import { loadMemberConfigChecked } from '../config/load.js';
import { createLogger } from '../util/log.js';
import { configPath } from './context.js';
import { registerBackupCommands } from './backup-command.js';
import { registerUpgradeCommands } from './upgrade-command.js';
import { registerLogicalCommands } from './logical-command.js';
import { registerSiteCommands } from './site-command.js';
import { CliError, EXIT, withCluster } from './context.js';
import { exitCodeOf, hintOf, isErrorCode } from '../errors/catalogue.js';
import { RELEVO_VERSION } from '../util/version.js';
import { SECRET_ROLES, type SecretRole } from './secret-roles.js';

// Command modules load on demand: a call pays only for the command it runs, not
// for every command's dependencies (about 0.4 s of CPU per call otherwise).
const agentCommand = () => import('./agent-command.js');
const fencer = () => import('../fence/fencer.js');
const clusterConfig = () => import('./cluster-config.js');
const initCommand = () => import('./init.js');
const demo = () => import('./demo.js');
const events = () => import('./events.js');
const dsn = () => import('./dsn.js');
const routerCommand = () => import('./router-command.js');
const rotateCommand = () => import('./rotate.js');
const rotateCaCommand = () => import('./rotate-ca.js');
const storeRepairCommand = () => import('./store-repair.js');
const listCommand = () => import('./list.js');
const undo = () => import('./undo.js');
const operations = () => import('./operations.js');

const program = new Command();
program.name('relevo').description('PostgreSQL high availability: agent, store, router and CLI').version(RELEVO_VERSION).showHelpAfterError();

const configOption = ['-c, --config <file>', 'member configuration file (default: $RELEVO_CONFIG)'] as const;

program
  .command('agent')
  .description('run the agent beside one PostgreSQL server (foreground)')
  .option(...configOption)
  .option('--keep-postgres', 'leave PostgreSQL running when the agent stops')
  .action(async (options: { config?: string; keepPostgres?: boolean }) => (await agentCommand()).runAgent(options));

program
  .command('fence')
  .description("run this member's fencer in the foreground (with fence.spawn: false; the agent starts one otherwise)")
  .option(...configOption)
  .action(async (options: { config?: string }) => {
    const config = loadMemberConfigChecked(configPath(options.config));
    const log = createLogger(config.log.level, { cluster: config.cluster, member: config.name, component: 'fencer' });
    await (await fencer()).runFencer({ member: config.name, dataDir: config.postgres.dataDir.replace(/\/+$/, ''), watchdog: config.fence.watchdog, watchdogDevice: config.fence.watchdogDevice, exitWhenOrphaned: false, log });
  });

program
  .command('list')
  .description("show every member's role, state, timeline, LSNs, lag and slots")
  .option(...configOption)
  .option('--json', 'machine-readable output')
  .option('-w, --watch [seconds]', 'refresh every N seconds (default 2)')
  .action(async (options: { config?: string; json?: boolean; watch?: string | boolean }) => {
    await withCluster(options.config, async (handle) => {
      const once = async () => {
        const listing = await (await listCommand()).clusterListing(handle);
        return options.json ? JSON.stringify(listing, null, 2) : (await listCommand()).renderListing(listing, { colour: process.stdout.isTTY && !process.env.NO_COLOR });
      };
      if (!options.watch) {
        console.log(await once());
        return;
      }
      const seconds = options.watch === true ? 2 : Number(options.watch);
      if (!(seconds > 0)) throw new CliError('BAD_ARGUMENT', `--watch: got "${options.watch}", expected a positive number of seconds`);
      for (;;) {
        const text = await once();
        process.stdout.write(process.stdout.isTTY ? `\x1b[2J\x1b[H${new Date().toISOString()}\n${text}\n` : `${text}\n`);
        await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
      }
    });
  });

program
  .command('init')
  .description('write a new host\'s member file, role passwords and cluster CA from flags (asks nothing, never overwrites)')
  .requiredOption('--cluster <name>', 'cluster name (the same on every host)')
  .requiredOption('--name <member>', "this member's name (unique in the cluster)")
  .option('--dir <dir>', 'where member.yaml, secrets.yaml and ca/ go', '/etc/relevo')
  .option('--etcd <urls>', 'etcd endpoints, comma-separated (e.g. https://10.0.0.1:2379,https://10.0.0.2:2379)')
  .option('--embedded <path>', 'embedded store database path (one host only: tests and demos)')
  .option('--data-dir <path>', 'PostgreSQL data directory (default /var/lib/postgresql/15/<cluster>)')
  .option('--bin-dir <path>', 'PostgreSQL binaries (default /usr/lib/postgresql/15/bin)')
  .option('--listen <host>', 'address PostgreSQL listens on', '127.0.0.1')
  .option('--port <port>', 'PostgreSQL port', '5432')
  .option('--connect-address <host:port>', 'address other members and clients use (default listen:port)')
  .option('--api-listen <host:port>', "the agent's REST API (default <listen>:8008)")
  .option('--from <dir>', "the first host's init directory: take its secrets.yaml and ca/ instead of generating new ones")
  .option('--no-tls', 'TLS off (not for production)')
  .action(async (options: { cluster: string; name: string; dir: string; etcd?: string; embedded?: string; dataDir?: string; binDir?: string; listen: string; port: string; connectAddress?: string; apiListen?: string; from?: string; tls: boolean }) => {
    const port = Number(options.port);
    if (!Number.isInteger(port)) throw new CliError('BAD_ARGUMENT', `--port: got "${options.port}", expected a port number`);
    const init = { ...options, port, etcd: options.etcd?.split(',').map((u) => u.trim()).filter(Boolean) };
    console.log((await initCommand()).describeInit(await (await initCommand()).runInit(init), init));
  });

const config = program.command('config').description('member file check and cluster-wide settings');
config
  .command('check <file>')
  .description('validate a member configuration file and print it with defaults filled in')
  .action((file: string) => {
    const parsed = loadMemberConfigChecked(file);
    console.log(stringifyYaml(parsed).trimEnd());
    console.error(`${file}: valid configuration for member ${parsed.name} of cluster ${parsed.cluster}`);
  });
config
  .command('show')
  .description('print the cluster-wide settings kept in the store')
  .option(...configOption)
  .action(async (options: { config?: string }) => {
    await withCluster(options.config, async (handle) => console.log((await (await clusterConfig()).showSettings(handle)).trimEnd()));
  });
config
  .command('set <assignments...>')
  .description('change cluster-wide settings, e.g. ttlMs=20000 postgresql.work_mem=16MB (empty value removes)')
  .option(...configOption)
  .action(async (assignments: string[], options: { config?: string }) => {
    await withCluster(options.config, async (handle) => {
      await (await clusterConfig()).setSettings(handle, assignments);
      console.log(`cluster settings updated: ${assignments.join(' ')}`);
    });
  });
config
  .command('edit')
  .description('edit the cluster-wide settings in $EDITOR; validated before they are written')
  .option(...configOption)
  .action(async (options: { config?: string }) => {
    await withCluster(options.config, async (handle) => {
      const result = await (await clusterConfig()).editSettings(handle);
      console.log(result ? 'cluster settings updated' : 'no change');
    });
  });

program
  .command('switchover')
  .description('move the primary role on purpose: clean shutdown, the candidate replays every WAL record, then it is promoted')
  .option(...configOption)
  .option('--to <member>', 'the replica to promote (default: the best one)')
  .option('--at <time>', 'do it at this ISO time instead of now')
  .option('--no-wait', 'return once the request is recorded')
  .action(async (options: { config?: string; to?: string; at?: string; wait: boolean }) => {
    await withCluster(options.config, async (handle) => console.log(await (await operations()).switchover(handle, { to: options.to, at: options.at, wait: options.wait && !options.at })));
  });

program
  .command('failover')
  .description('promote a named replica; refuses one that may lack acknowledged commits unless --force')
  .option(...configOption)
  .requiredOption('--to <member>', 'the replica to promote')
  .option('--force', 'promote even if acknowledged commits could be lost')
  .option('--no-wait', 'return once the request is recorded')
  .action(async (options: { config?: string; to: string; force?: boolean; wait: boolean }) => {
    await withCluster(options.config, async (handle) => console.log(await (await operations()).failover(handle, { to: options.to, force: options.force === true, wait: options.wait })));
  });

for (const [name, paused] of [['pause', true], ['resume', false]] as const) {
  program
    .command(name)
    .description(paused ? 'maintenance mode: agents take no automatic action' : 'leave maintenance mode')
    .option(...configOption)
    .action(async (options: { config?: string }) => {
      await withCluster(options.config, async (handle) => console.log(await (await operations()).pause(handle, paused)));
    });
}

program
  .command('history')
  .description('every timeline switch: time, old and new primary, reason, fork LSN')
  .option(...configOption)
  .option('--json', 'machine-readable output')
  .action(async (options: { config?: string; json?: boolean }) => {
    await withCluster(options.config, async (handle) => console.log(await (await operations()).history(handle, options.json === true)));
  });

program
  .command('events')
  .description("every agent's state transitions and actions, with their reasons, oldest first")
  .option(...configOption)
  .option('-f, --follow', 'keep printing new events')
  .option('--member <member>', 'only this member')
  .option('-n, --limit <n>', 'only the last N events')
  .option('--json', 'machine-readable output (one JSON object per line with --follow)')
  .action(async (options: { config?: string; follow?: boolean; member?: string; limit?: string; json?: boolean }) => {
    const limit = options.limit === undefined ? undefined : Number(options.limit);
    if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw new CliError('BAD_ARGUMENT', `--limit: got "${options.limit}", expected a positive integer`);
    await withCluster(options.config, async (handle) => (await events()).showEvents(handle, { ...options, limit }));
  });

program
  .command('restart [members...]')
  .description("restart a member's PostgreSQL; with --pending or --all, a rolling restart: replicas one at a time, then a switchover, then the former primary")
  .option(...configOption)
  .option('--pending', 'roll out parameters waiting for a restart (pg_settings.pending_restart), on the members that have some')
  .option('--all', 'rolling restart of every member (or of the members named), e.g. onto new PostgreSQL binaries')
  .option('--at <time>', 'with --pending/--all: start at this ISO time (the command waits until then)')
  .option('--step-timeout <seconds>', 'with --pending/--all: how long a restarted member may take to stream again', '120')
  .action(async (members: string[], options: { config?: string; pending?: boolean; all?: boolean; at?: string; stepTimeout: string }) => {
    await withCluster(options.config, async (handle) => {
      if (options.pending || options.all) {
        if (options.pending && options.all) throw new CliError('BAD_ARGUMENT', '--pending and --all exclude each other');
        const seconds = Number(options.stepTimeout);
        if (!(seconds > 0)) throw new CliError('BAD_ARGUMENT', `--step-timeout: got "${options.stepTimeout}", expected a positive number of seconds`);
        const mode = options.pending ? 'pending' : 'all';
        console.log(await (await operations()).rollingRestartCommand(handle, { mode, members, at: options.at, stepTimeoutMs: seconds * 1000, print: (line) => console.log(line) }));
        return;
      }
      if (options.at) throw new CliError('BAD_ARGUMENT', '--at applies to a rolling restart: add --pending or --all');
      if (members.length !== 1) throw new CliError('BAD_ARGUMENT', 'name one member to restart, or use --pending / --all for a rolling restart');
      console.log(await (await operations()).memberCommand(handle, 'restart', members[0]!));
    });
  });

program
  .command('replay')
  .description('pause or resume WAL replay on a replica (e.g. a delayed replica, docs/undo.md)')
  .argument('<action>', 'pause or resume')
  .argument('<member>', 'the replica')
  .option(...configOption)
  .action(async (action: string, member: string, options: { config?: string }) => {
    if (action !== 'pause' && action !== 'resume') throw new CliError('BAD_ARGUMENT', `replay: got "${action}", expected pause or resume`);
    await withCluster(options.config, async (handle) => console.log(await (await undo()).replayCommand(handle, action, member)));
  });

program
  .command('recover-table <table>')
  .description('copy a table as it was just before a mistake from a delayed replica into a new table on the primary (docs/undo.md)')
  .requiredOption('--from <member>', 'the delayed replica')
  .requiredOption('--into <name>', 'name of the new table on the primary (must not exist)')
  .option('-d, --database <name>', 'database holding the table', 'postgres')
  .option('--xid <xid>', 'target: just before this transaction commits')
  .option('--time <iso>', 'target: just before this time')
  .option('--find', 'target: find the TRUNCATE, DROP or mass DELETE in the WAL of the delay window (pg_waldump)')
  .option('--dry-run', 'check (and with --find, propose) only; change nothing')
  .option('--json', 'machine-readable report')
  .option(...configOption)
  .action(async (table: string, options: { from: string; into: string; database: string; xid?: string; time?: string; find?: boolean; dryRun?: boolean; json?: boolean; config?: string }) => {
    await withCluster(options.config, async (handle) => {
      const report = await (await undo()).recoverTable(handle, { ...options, table, print: (line) => (options.json ? console.error(line) : console.log(line)) });
      console.log(options.json ? JSON.stringify(report, null, 2) : options.dryRun ? `dry run: target ${JSON.stringify(report.target)} lies in the delay window of ${report.member}; nothing changed` : (await undo()).renderRecoverReport(report));
    });
  });

program
  .command('reinit <member>')
  .description('rebuild a replica from a fresh clone (its old data directory is moved aside, not deleted)')
  .option(...configOption)
  .action(async (member: string, options: { config?: string }) => {
    await withCluster(options.config, async (handle) => console.log(await (await operations()).memberCommand(handle, 'reinit', member)));
  });

program
  .command('store')
  .description('the coordination store')
  .command('repair')
  .description('list records that cannot be read (key, revision, what is wrong); with --delete or --set, fix one (only while it is unreadable, by compare-and-swap)')
  .option(...configOption)
  .option('--delete <key>', 'delete this unreadable record (e.g. sync, leader, members/node1, or the full key)')
  .option('--set <key>', 'rewrite this unreadable record with --value')
  .option('--value <json>', 'the record to write with --set, checked against its schema')
  .action(async (options: { config?: string; delete?: string; set?: string; value?: string }) => {
    await withCluster(options.config, async (handle) => console.log(await (await storeRepairCommand()).storeRepair(handle, options)));
  });

program
  .command('router')
  .description("run the client router (read-write and read-only listeners) from a member file's router: section")
  .option(...configOption)
  .action(async (options: { config?: string }) => (await routerCommand()).runRouter(options));

program
  .command('dsn')
  .description('print libpq multi-host and JDBC connection strings for applications that route themselves')
  .option(...configOption)
  .option('--user <user>', 'database user', 'app')
  .option('--database <db>', 'database name', 'postgres')
  .action(async (options: { config?: string; user: string; database: string }) => {
    await withCluster(options.config, async (handle) => console.log(await (await dsn()).connectionStrings(handle, options)));
  });

program
  .command('secrets')
  .description('role passwords')
  .command('rotate [role]')
  .description(`new passwords on the running cluster, no failover: ${SECRET_ROLES.join(' | ')} (default: all)`)
  .option(...configOption)
  .action(async (role: string | undefined, options: { config?: string }) => {
    const chosen = (role ?? 'all') as SecretRole;
    if (!SECRET_ROLES.includes(chosen)) throw new CliError('BAD_ARGUMENT', `role: got "${role}", expected one of ${SECRET_ROLES.join(', ')}`);
    await withCluster(options.config, async (handle) => console.log(await (await rotateCommand()).rotateSecrets(handle, chosen)));
  });

program
  .command('certs')
  .description('member certificates')
  .command('rotate')
  .description('re-issue every member certificate from the cluster CA; PostgreSQL and the API reload them without a restart. With --ca: replace the CA itself (trust both, reissue, drop the old), resumable')
  .option(...configOption)
  .option('--no-wait', 'return once the request is recorded (member certificates only)')
  .option('--ca', 'rotate the cluster CA: run where ca.key is; rerun to resume an interrupted rotation')
  .option('--new-ca-cert <file>', 'with --ca: use this CA certificate instead of generating one')
  .option('--new-ca-key <file>', 'with --ca: the key of --new-ca-cert (mode 0600)')
  .option('--phase-timeout <seconds>', 'with --ca: how long each phase may wait for every member', '120')
  .action(async (options: { config?: string; wait: boolean; ca?: boolean; newCaCert?: string; newCaKey?: string; phaseTimeout: string }) => {
    if (!options.ca) {
      if (options.newCaCert || options.newCaKey) throw new CliError('BAD_ARGUMENT', '--new-ca-cert/--new-ca-key go with --ca');
      await withCluster(options.config, async (handle) => console.log(await (await rotateCommand()).rotateCertificates(handle, { wait: options.wait })));
      return;
    }
    const seconds = Number(options.phaseTimeout);
    if (!(seconds > 0)) throw new CliError('BAD_ARGUMENT', `--phase-timeout: got "${options.phaseTimeout}", expected a number of seconds`);
    await withCluster(options.config, async (handle) =>
      console.log(await (await rotateCaCommand()).rotateCa(handle, { phaseTimeoutMs: seconds * 1000, ...(options.newCaCert ? { newCaCert: options.newCaCert } : {}), ...(options.newCaKey ? { newCaKey: options.newCaKey } : {}) })),
    );
  });

program
  .command('demo')
  .description('run a local 3-member cluster on the embedded store in the foreground; Ctrl-C stops everything')
  .option('--dir <dir>', 'working directory for data, configs and logs (default: a fresh /tmp/relevo-demo-XXXXXX); an existing one is reused only if an earlier demo created it')
  .option('--members <n>', 'number of members', '3')
  .option('--port <port>', 'first PostgreSQL port (members use consecutive ports)', '15432')
  .option('--api-port <port>', 'first REST API port', '18008')
  .option('--router-port <port>', "relevo router's read-write port (read-only: the next one)", '15440')
  .action(async (options: { dir?: string; members: string; port: string; apiPort: string; routerPort: string }) =>
    (await demo()).runDemo({ dir: options.dir, members: Number(options.members), port: Number(options.port), apiPort: Number(options.apiPort), routerPort: Number(options.routerPort) }),
  );

registerBackupCommands(program);
registerUpgradeCommands(program);
registerLogicalCommands(program);
registerSiteCommands(program, configOption);

/**
 * One line with the stable code, a hint, and the exit code of the code's class
 * (src/errors/catalogue.ts, docs/errors.md). An error without a known code is a
 * run-time failure (exit 1).
 */
function report(error: unknown): number {
  const e = error as { message?: string; code?: unknown; hint?: unknown; exitCode?: unknown };
  const message = e?.message ?? String(error);
  const code = isErrorCode(e?.code) ? e.code : undefined;
  if (code === undefined) {
    console.error(`relevo: ${message}`);
    return EXIT.failure;
  }
  const hint = typeof e.hint === 'string' ? e.hint : hintOf(code);
  console.error(`relevo: ${message}${message.includes(`[${code}]`) || message.startsWith(`${code}:`) ? '' : ` [${code}]`}\n  hint: ${hint}`);
  return typeof e.exitCode === 'number' ? e.exitCode : exitCodeOf(code);
}

program.parseAsync(process.argv).then(
  () => process.exit(EXIT.ok),
  (error: unknown) => process.exit(report(error)),
);
