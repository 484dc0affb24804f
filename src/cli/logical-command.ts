/**
 * `relevo logical …`: declares publications and subscriptions in the cluster
 * settings (compare-and-swap), after checking them against the live
 * databases so that bad input changes nothing; shows their status.
 */
import type { Command } from 'commander';
import { readCluster } from '../agent/observe.js';
import {
  PublicationDeclarationSchema,
  SubscriptionDeclarationSchema,
  type PublicationDeclaration,
  type SubscriptionDeclaration,
} from '../cluster/logical-settings.js';
import type { LogicalStatus } from '../cluster/logical-status.js';
import { ClusterSettingsSchema, type ClusterSettings } from '../cluster/settings.js';
import { writeStoredSettings } from '../cluster/settings-store.js';
import { describeIssues } from '../config/load.js';
import { loadCredentials, ROLE_NAMES } from '../config/secrets.js';
import { LogicalError } from '../logical/errors.js';
import { checkPublication, checkSubscription, type DatabaseTarget } from '../logical/preflight.js';
import { splitHostPort } from '../postgres/conf.js';
import { clusterCaFile } from '../tls/member.js';
import { readSettings } from './cluster-config.js';
import { CliError, EXIT, withCluster, type ClusterHandle } from './context.js';
import { formatBytes, renderTable } from './table.js';

const configOption = ['-c, --config <file>', 'member configuration file (default: $RELEVO_CONFIG)'] as const;
const list = (value: string) => value.split(',').map((v) => v.trim()).filter((v) => v !== '');

/** The leader's databases, reached as relevo's network role (no superuser; it reads every catalog) (TLS with the cluster CA when on). */
async function leaderTarget(handle: ClusterHandle): Promise<DatabaseTarget> {
  const { view } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) throw new CliError('STORE_UNREACHABLE', `store unreachable: ${view.error}`);
  const leader = view.leader && view.members.find((m) => m.name === view.leader!.member);
  if (!leader) throw new CliError('LOGICAL_NOT_LEADER', 'the cluster has no leader now; declarations are checked against the primary — try again once `relevo list` shows one', EXIT.failure);
  const credentials = loadCredentials(handle.config);
  if (!credentials) throw new CliError('SECRET_UNAVAILABLE', `no agent credentials in ${handle.config.secrets.file}: run this on a member host`, EXIT.failure);
  const [host, port] = splitHostPort(leader.connectAddress);
  const tlsCaFile = clusterCaFile(handle.config);
  return (database) => ({ host, port, user: ROLE_NAMES.network, password: credentials.agentPassword, database, tlsCaFile });
}

function parsed<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: import('zod').ZodError } }, candidate: unknown, what: string): T {
  const result = schema.safeParse(candidate);
  if (!result.success) throw new CliError('INVALID_SETTINGS', `invalid ${what}, nothing changed:\n${describeIssues(candidate, result.error).map((l) => `  - ${l}`).join('\n')}`);
  return result.data;
}

/** Runs a check; a LogicalError becomes the CLI's refusal with its code and remedy. */
async function checked<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof LogicalError) throw new CliError(error.code, `${error.message}\n  nothing changed. ${error.remedy}`, EXIT.usage);
    const pgCode = (error as { code?: string }).code;
    if (pgCode === '3D000') throw new CliError('LOGICAL_UNKNOWN_DATABASE', `LOGICAL_UNKNOWN_DATABASE: ${(error as Error).message}; nothing changed`, EXIT.usage);
    throw error;
  }
}

/** Validates the whole settings with the change and writes them as the next generation (compare-and-swap). */
async function writeLogical(handle: ClusterHandle, change: (settings: ClusterSettings) => ClusterSettings): Promise<number> {
  const read = await readSettings(handle);
  const candidate = change(structuredClone(read.settings));
  const validated = parsed(ClusterSettingsSchema, candidate, 'cluster settings');
  if (!(await writeStoredSettings(handle.store, handle.keys, validated, read))) {
    throw new CliError('CONCURRENT_CHANGE', 'cluster settings changed meanwhile; nothing written, run the command again', EXIT.failure);
  }
  return read.settings.generation + 1;
}

/** Waits for the leader to report a round made with `generation`, then returns its problems about `name`. */
async function awaitApplied(handle: ClusterHandle, generation: number, name: string, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const logical = await leaderLogical(handle);
    if (logical && logical.generation >= generation) {
      const problems = logical.problems.filter((p) => p.name === name);
      if (problems.length > 0) throw new CliError('LOGICAL_APPLY_FAILED', `declared, but the leader could not apply it yet:\n${problems.map((p) => `  - ${p.message}`).join('\n')}`, EXIT.failure);
      return 'applied by the leader';
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return `not yet applied by the leader after ${timeoutMs / 1000} s (see \`relevo logical status\`)`;
}

async function leaderLogical(handle: ClusterHandle): Promise<LogicalStatus | undefined> {
  const { view } = await readCluster(handle.store, handle.keys);
  if (!view.reachable || !view.leader) return undefined;
  return view.members.find((m) => m.name === view.leader!.member)?.logical;
}

export async function addPublication(handle: ClusterHandle, declaration: unknown, options: { wait: boolean }): Promise<string> {
  const p = parsed<PublicationDeclaration>(PublicationDeclarationSchema, declaration, 'publication');
  const target = await leaderTarget(handle);
  const { tables } = await checked(() => checkPublication(target, p));
  const generation = await writeLogical(handle, (s) => {
    s.logical.publications = [...s.logical.publications.filter((x) => !(x.name === p.name && x.database === p.database)), p];
    return s;
  });
  const applied = options.wait ? `; ${await awaitApplied(handle, generation, p.name)}` : '';
  return `publication ${p.name} declared in database ${p.database} (${p.allTables ? 'all tables' : `${tables} table${tables === 1 ? '' : 's'}`}, settings generation ${generation})${applied}`;
}

export async function addSubscription(handle: ClusterHandle, declaration: unknown, options: { wait: boolean }): Promise<string> {
  const s = parsed<SubscriptionDeclaration>(SubscriptionDeclarationSchema, declaration, 'subscription');
  const target = await leaderTarget(handle);
  const { publisher, tables } = await checked(() => checkSubscription(target, s));
  const generation = await writeLogical(handle, (settings) => {
    settings.logical.subscriptions = [...settings.logical.subscriptions.filter((x) => x.name !== s.name), s];
    return settings;
  });
  const applied = options.wait ? `; ${await awaitApplied(handle, generation, s.name)}` : '';
  return `subscription ${s.name} declared in database ${s.database}: ${tables.length} table${tables.length === 1 ? '' : 's'} from ${publisher} (settings generation ${generation})${applied}`;
}

export async function removeDeclaration(handle: ClusterHandle, kind: 'publication' | 'subscription', name: string, database: string | undefined): Promise<string> {
  let found = false;
  const generation = await writeLogical(handle, (s) => {
    if (kind === 'publication') {
      const kept = s.logical.publications.filter((p) => !(p.name === name && (database === undefined || p.database === database)));
      found = kept.length !== s.logical.publications.length;
      s.logical.publications = kept;
    } else {
      const kept = s.logical.subscriptions.filter((x) => x.name !== name);
      found = kept.length !== s.logical.subscriptions.length;
      s.logical.subscriptions = kept;
    }
    if (!found) throw new CliError('BAD_ARGUMENT', `no ${kind} ${name}${database ? ` in database ${database}` : ''} is declared; nothing changed`);
    return s;
  });
  return `${kind} ${name} removed from the settings (generation ${generation}); the leader drops it`;
}

export function renderLogical(members: { name: string; role: string; logical?: LogicalStatus }[], leader: string | null): string {
  const lines: string[] = [];
  const primary = members.find((m) => m.name === leader)?.logical;
  if (primary) {
    if (primary.subscriptions.length > 0) {
      lines.push(
        `Subscriptions (on ${leader})\n${renderTable(
          ['Subscription', 'Database', 'State', 'Lag', 'Lag s', 'Copying', 'Publisher', 'Error'],
          primary.subscriptions.map((s) => [
            s.name,
            s.database,
            s.state,
            formatBytes(s.lagBytes),
            s.lagSeconds === null ? '-' : s.lagSeconds.toFixed(1),
            s.copying.length === 0 ? '-' : s.copying.map((c) => `${c.table}(${c.state})`).join(','),
            s.publisher ?? '-',
            s.error ?? '-',
          ]),
        )}`,
      );
    }
    if (primary.publications.length > 0) {
      lines.push(`Publications: ${primary.publications.map((p) => `${p.database}.${p.name} (${p.tables < 0 ? 'all tables' : `${p.tables} table(s)/schema(s)`})`).join(', ')}`);
    }
    if (primary.drift.length > 0) {
      lines.push(`Drift (LOGICAL_DRIFT)\n${primary.drift.map((d) => `  ${d.object} ${d.database}.${d.name}: ${d.kind} — ${d.detail}${d.repaired ? ' (repaired)' : ''}`).join('\n')}`);
    }
  }
  const slotRows = members.flatMap((m) => (m.logical?.failoverSlots ?? []).map((f) => [f.name, m.name, f.confirmedFlushLsn ?? '-', f.primaryConfirmedFlushLsn ?? '-', f.ready ? 'ready' : 'NOT READY', f.detail]));
  if (primary && primary.slots.length > 0) {
    lines.push(
      `Logical slots (on ${leader}) and their copies on replicas\n${renderTable(
        ['Slot', 'Member', 'Position', 'Primary position', 'Failover', 'Detail'],
        [...primary.slots.map((s) => [s.name, leader ?? '-', s.confirmedFlushLsn ?? '-', s.confirmedFlushLsn ?? '-', 'primary', s.active ? 'in use' : 'inactive']), ...slotRows],
      )}`,
    );
  }
  const problems = members.flatMap((m) => (m.logical?.problems ?? []).map((p) => `  ${m.name}: ${p.message}`));
  if (problems.length > 0) lines.push(`Logical replication problems\n${problems.join('\n')}`);
  return lines.join('\n\n');
}

export function registerLogicalCommands(program: Command): void {
  const logical = program.command('logical').description('publications and subscriptions kept by the leader, and logical slots kept across failover (docs/logical.md)');
  const publication = logical.command('publication').description('publications this cluster offers');
  publication
    .command('add <name>')
    .description('declare a publication (checked first: database, tables, replica identity)')
    .option(...configOption)
    .requiredOption('--database <db>', 'database')
    .option('--tables <list>', 'schema.table,… to publish')
    .option('--schemas <list>', 'every table of these schemas')
    .option('--all-tables', 'every table of the database')
    .option('--publish <ops>', 'insert,update,delete,truncate (default all)')
    .option('--no-wait', 'return once declared, without waiting for the leader')
    .action(async (name: string, o: { config?: string; database: string; tables?: string; schemas?: string; allTables?: boolean; publish?: string; wait: boolean }) => {
      const declaration = {
        name,
        database: o.database,
        ...(o.tables ? { tables: list(o.tables) } : {}),
        ...(o.schemas ? { schemas: list(o.schemas) } : {}),
        ...(o.allTables ? { allTables: true } : {}),
        ...(o.publish ? { publish: list(o.publish) } : {}),
      };
      await withCluster(o.config, async (handle) => console.log(await addPublication(handle, declaration, { wait: o.wait })));
    });
  publication
    .command('remove <name>')
    .description('remove a declared publication; the leader drops it')
    .option(...configOption)
    .option('--database <db>', 'only in this database')
    .action(async (name: string, o: { config?: string; database?: string }) => {
      await withCluster(o.config, async (handle) => console.log(await removeDeclaration(handle, 'publication', name, o.database)));
    });
  const subscription = logical.command('subscription').description('subscriptions this cluster keeps (copies of data from another database or cluster)');
  subscription
    .command('add <name>')
    .description('declare a subscription (checked first: database, secret, publisher, publications, target tables)')
    .option(...configOption)
    .requiredOption('--database <db>', 'database here that receives the rows')
    .requiredOption('--publications <list>', 'publication names on the other side')
    .requiredOption('--hosts <list>', 'host:port of every member of the other side')
    .requiredOption('--dbname <db>', 'database on the other side')
    .requiredOption('--user <role>', 'role on the other side (REPLICATION, and SELECT on the tables)')
    .option('--password-file <file>', "file (mode 0600, on every member here) holding that role's password")
    .option('--password-env <name>', "environment variable of the agents holding that role's password")
    .option('--sslmode <mode>', 'disable | prefer | require | verify-ca | verify-full', 'verify-full')
    .option('--sslrootcert <file>', "CA file of the other side (on every member here)")
    .option('--no-copy-data', 'do not copy existing rows first')
    .option('--disabled', 'declare it disabled')
    .option('--no-wait', 'return once declared, without waiting for the leader')
    .action(
      async (
        name: string,
        o: { config?: string; database: string; publications: string; hosts: string; dbname: string; user: string; passwordFile?: string; passwordEnv?: string; sslmode: string; sslrootcert?: string; copyData: boolean; disabled?: boolean; wait: boolean },
      ) => {
        if ((o.passwordFile === undefined) === (o.passwordEnv === undefined)) throw new CliError('BAD_ARGUMENT', 'give exactly one of --password-file or --password-env (a password is never given in clear)');
        const declaration = {
          name,
          database: o.database,
          publications: list(o.publications),
          connection: {
            hosts: list(o.hosts),
            dbname: o.dbname,
            user: o.user,
            password: o.passwordFile ? { file: o.passwordFile } : { env: o.passwordEnv },
            sslmode: o.sslmode,
            ...(o.sslrootcert ? { sslrootcert: o.sslrootcert } : {}),
          },
          copyData: o.copyData,
          enabled: !o.disabled,
        };
        await withCluster(o.config, async (handle) => console.log(await addSubscription(handle, declaration, { wait: o.wait })));
      },
    );
  subscription
    .command('remove <name>')
    .description('remove a declared subscription; the leader drops it and its slot on the other side')
    .option(...configOption)
    .action(async (name: string, o: { config?: string }) => {
      await withCluster(o.config, async (handle) => console.log(await removeDeclaration(handle, 'subscription', name, undefined)));
    });
  logical
    .command('status')
    .description('subscriptions (state, lag, tables being copied), drift, logical slots and their copies on replicas')
    .option(...configOption)
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      await withCluster(o.config, async (handle) => {
        const { view } = await readCluster(handle.store, handle.keys);
        if (!view.reachable) throw new CliError('STORE_UNREACHABLE', `store unreachable: ${view.error}`);
        const leader = view.leader?.member ?? null;
        if (o.json) {
          console.log(JSON.stringify({ leader, members: view.members.map((m) => ({ name: m.name, role: m.role, logical: m.logical ?? null })) }, null, 2));
          return;
        }
        console.log(renderLogical(view.members, leader) || 'no publications, subscriptions or logical slots');
      });
    });
}
