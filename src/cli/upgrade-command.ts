/** `relevo upgrade …`: blue/green major-version upgrade (src/upgrade/run.ts, docs/upgrade.md). */
import type { Command } from 'commander';
import { loadMemberConfig } from '../config/load.js';
import { openStore } from '../store/open.js';
import { UpgradeError } from '../upgrade/errors.js';
import { forget, plan, rollback, start, status, switchNow, type UpgradeOptions } from '../upgrade/run.js';
import { CliError, configPath } from './context.js';

interface Flags {
  config?: string;
  to: string;
  database: string;
  route?: string;
  replicaIdentityFull?: boolean;
  maxLag: string;
  catchUpTimeout: string;
  drainTimeout: string;
  switch?: boolean;
  force?: boolean;
}

function seconds(value: string, flag: string): number {
  const n = Number(value);
  if (!(n > 0)) throw new CliError('BAD_ARGUMENT', `${flag}: got "${value}", expected a positive number of seconds`);
  return n * 1000;
}

async function withUpgrade<T>(flags: Flags, work: (o: UpgradeOptions) => Promise<T>): Promise<T> {
  const oldConfig = loadMemberConfig(configPath(flags.config));
  const newConfig = loadMemberConfig(flags.to);
  const store = await openStore(oldConfig.store);
  const maxLagBytes = Number(flags.maxLag);
  if (!(maxLagBytes >= 0)) throw new CliError('BAD_ARGUMENT', `--max-lag: got "${flags.maxLag}", expected bytes`);
  try {
    return await work({
      store,
      oldConfig,
      newConfig,
      database: flags.database,
      routeCluster: flags.route,
      replicaIdentityFull: flags.replicaIdentityFull === true,
      maxLagBytes,
      catchUpTimeoutMs: seconds(flags.catchUpTimeout, '--catch-up-timeout'),
      drainTimeoutMs: seconds(flags.drainTimeout, '--drain-timeout'),
      print: (line) => console.log(line),
    });
  } catch (error) {
    if (error instanceof UpgradeError) throw new CliError(error.code, error.message, error.exitCode);
    throw error;
  } finally {
    await store.close();
  }
}

export function registerUpgradeCommands(program: Command): void {
  const upgrade = program
    .command('upgrade')
    .description('blue/green major-version upgrade: logical copy into a new cluster, a write pause of seconds at the routers, switch (docs/upgrade.md)');
  const common = (cmd: Command) =>
    cmd
      .option('-c, --config <file>', 'a member file of the OLD cluster, any member (default: $RELEVO_CONFIG)')
      .requiredOption('--to <file>', "a member file of the NEW cluster, any member (the primaries' agents run the steps)")
      .requiredOption('-d, --database <db>', 'database to upgrade')
      .option('--route <cluster>', 'cluster the routers are configured for (default: the old cluster)')
      .option('--replica-identity-full', 'set REPLICA IDENTITY FULL on tables without a primary key instead of refusing')
      .option('--max-lag <bytes>', 'the copy counts as caught up below this lag', String(1024 * 1024))
      .option('--catch-up-timeout <seconds>', 'how long to wait for the copy', '3600')
      .option('--drain-timeout <seconds>', 'how long open transactions may run on after writes are held', '6');
  common(upgrade.command('plan').description('check everything and print the plan; changes nothing')).action(async (flags: Flags) => {
    console.log(await withUpgrade(flags, plan));
  });
  for (const name of ['start', 'resume']) {
    common(upgrade.command(name).description(name === 'start' ? 'run (or continue) every step up to and including the switch' : 'same as start: continue from the last recorded step'))
      .option('--no-switch', 'stop once the copy has caught up (switch later with `relevo upgrade switch`)')
      .action(async (flags: Flags) => {
        const st = await withUpgrade(flags, (o) => start(o, flags.switch !== false));
        console.log(`upgrade of ${st.database} to ${st.target}: step ${st.step}${st.pauseMs !== null && st.step === 'switched' ? `, writes held ${(st.pauseMs / 1000).toFixed(2)} s` : ''}`);
      });
  }
  common(upgrade.command('switch').description('hold writes, wait for the last LSN, copy sequences, compare counts, switch the routers')).action(async (flags: Flags) => {
    const st = await withUpgrade(flags, switchNow);
    console.log(`upgrade of ${st.database} to ${st.target}: step ${st.step}${st.pauseMs !== null ? `, writes held ${(st.pauseMs / 1000).toFixed(2)} s` : ''}`);
  });
  common(upgrade.command('status').description('where the upgrade stands, with live copy progress and the routers')).action(async (flags: Flags) => {
    console.log(await withUpgrade(flags, status));
  });
  common(upgrade.command('rollback').description('switch the routers back to the old cluster (which takes writes again); the new cluster becomes read-only'))
    .option('--force', 'even if the new cluster took writes since the switch (they stay there only)')
    .action(async (flags: Flags) => {
      const st = await withUpgrade(flags, (o) => rollback(o, flags.force === true));
      console.log(`upgrade of ${st.database} to ${st.target}: step ${st.step}`);
    });
  common(upgrade.command('forget').description('drop the subscription, slot and publication and the upgrade record (after the switch: finished; before: abandoned)')).action(async (flags: Flags) => {
    console.log(await withUpgrade(flags, forget));
  });
}
