import { z } from 'zod';

const UNITS: Record<string, number> = { ms: 1, s: 1000, sec: 1000, min: 60_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** '30min', '15s', '2h', '500ms' (or a number of milliseconds) as milliseconds; undefined when not a duration. */
export function parseDurationMs(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined;
  const match = value.trim().match(/^(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h|d)$/);
  if (!match) return undefined;
  const ms = Number(match[1]) * UNITS[match[2]!]!;
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

const Duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDurationMs(value);
  if (ms === undefined || ms < 1000 || ms > 7 * 86_400_000) {
    ctx.addIssue({ code: 'custom', message: `expected a duration from 1s to 7d such as "30min", "15s" or a number of milliseconds, got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return ms;
});

/**
 * A delayed replica (docs/undo.md): an undo for a bad TRUNCATE, DROP or mass
 * DELETE. It is never promoted, never a synchronous standby, and takes
 * read-only connections only when `routeReads` says so.
 */
export const DelaySettingsSchema = z
  .object({
    /** How far behind the primary replay is held (recovery_min_apply_delay): "30min", "15s", or milliseconds. */
    apply: Duration,
    /** Let the router send read-only connections here (they see data `apply` old). */
    routeReads: z.boolean().default(false),
    /**
     * Where WAL comes from: "stream" (primary_conninfo and a slot on the primary) or "archive"
     * (restore_command from the backup repository, no slot: a paused replica holds no WAL on the primary).
     */
    feed: z.enum(['stream', 'archive']).default('stream'),
  })
  .strict();
export type DelaySettings = z.infer<typeof DelaySettingsSchema>;
