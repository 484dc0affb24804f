import type { Command } from 'commander';
import { CliError, withCluster } from './context.js';

// Loaded when a site command runs, not on every CLI call.
const siteActions = () => import('./site.js');

function positive(value: string, option: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new CliError('BAD_ARGUMENT', `${option}: got "${value}", expected a non-negative number`);
  return n;
}

/** `relevo site ...`: standby clusters and moving the primary between sites (docs/sites.md). */
export function registerSiteCommands(program: Command, configOption: readonly [string, string]): void {
  const site = program.command('site').description('standby clusters in another site: follow, planned switchover, unplanned promotion (docs/sites.md)');
  site
    .command('follow')
    .description('make this cluster (the member file\'s) a standby cluster of another; run before its agents first start')
    .option(...configOption)
    .option('--source <cluster>', 'the source cluster\'s name')
    .option('--source-config <file>', "a member file of the source cluster: its store is used (when it differs from ours) and its cluster name")
    .option('--source-repository <dir>', "also restore the source's archived WAL from its backup repository (as mounted here)")
    .option('--feed <feed>', 'where the standby leader\'s WAL comes from: stream (the source\'s primary), archive (the source\'s WAL archive only, no connection to it), both; default: both with --source-repository, else stream')
    .option('--demote', 'also when this cluster runs a primary: it shuts down and rejoins by pg_rewind (its unreplicated commits are rewound away)')
    .action(async (options: { config?: string; source?: string; sourceConfig?: string; sourceRepository?: string; feed?: string; demote?: boolean }) => {
      await withCluster(options.config, async (handle) => console.log(await (await siteActions()).siteFollow(handle, options)));
    });
  site
    .command('switchover')
    .description('planned: the source\'s primary shuts down cleanly, this standby cluster replays its final LSN and is promoted, the source follows it')
    .option(...configOption)
    .option('--max-lag-bytes <n>', 'refuse when the standby leader is further behind the source\'s primary', '16777216')
    .option('--timeout <seconds>', 'for each step (demotion, catch-up, promotion)', '60')
    .action(async (options: { config?: string; maxLagBytes: string; timeout: string }) => {
      const maxLagBytes = positive(options.maxLagBytes, '--max-lag-bytes');
      const timeoutMs = positive(options.timeout, '--timeout') * 1000;
      await withCluster(options.config, async (handle) => console.log(await (await siteActions()).siteSwitchover(handle, { maxLagBytes, timeoutMs })));
    });
  site
    .command('promote')
    .description('unplanned: promote this standby cluster and report the possible loss (source\'s last known LSN against the last replayed)')
    .option(...configOption)
    .option('--force', 'even though the source\'s store shows a running primary')
    .option('--timeout <seconds>', 'wait this long for the new primary', '60')
    .option('--json', 'machine-readable report')
    .action(async (options: { config?: string; force?: boolean; timeout: string; json?: boolean }) => {
      const timeoutMs = positive(options.timeout, '--timeout') * 1000;
      await withCluster(options.config, async (handle) => {
        const report = await (await siteActions()).sitePromote(handle, { force: options.force === true, timeoutMs });
        console.log(options.json ? JSON.stringify(report, null, 2) : (await siteActions()).renderPromote(report));
      });
    });
}
