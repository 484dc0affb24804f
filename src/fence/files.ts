/**
 * Where the agent and its fencer meet: two small files beside the data
 * directory (never inside it: a base backup would copy them). The agent
 * writes the feed, the fencer writes its status; each is replaced whole by
 * rename, so a reader sees the old or the new content, never half of one.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { FeedSchema, type Feed } from './deadline.js';

export interface FenceFiles {
  feed: string;
  status: string;
  log: string;
}

export function fenceFiles(dataDir: string): FenceFiles {
  const base = dataDir.replace(/\/+$/, '');
  return { feed: `${base}.fence-feed.json`, status: `${base}.fencer.json`, log: `${base}.fencer.log` };
}

export const WATCHDOG_MODES = ['off', 'auto', 'required'] as const;
export type WatchdogMode = (typeof WATCHDOG_MODES)[number];

export const WatchdogStatusSchema = z.object({
  mode: z.enum(WATCHDOG_MODES),
  /** off: not asked for; active: the device is open and fed while armed; unavailable: no usable device (auto); failed: required but unusable. */
  state: z.enum(['off', 'idle', 'active', 'unavailable', 'failed']),
  detail: z.string(),
});
export type WatchdogStatus = z.infer<typeof WatchdogStatusSchema>;

export const FencerStatusSchema = z.object({
  version: z.literal(1),
  pid: z.number().int().positive(),
  member: z.string(),
  dataDir: z.string(),
  /** CLOCK_MONOTONIC ms of the fencer's last look at the feed: its heartbeat. */
  tickMs: z.number(),
  state: z.enum(['idle', 'armed', 'fenced']),
  detail: z.string(),
  /** Times this fencer stopped PostgreSQL. */
  fences: z.number().int().min(0),
  lastFence: z.object({ at: z.string(), pids: z.array(z.number()), reason: z.string() }).optional(),
  watchdog: WatchdogStatusSchema,
});
export type FencerStatus = z.infer<typeof FencerStatusSchema>;

/** Replaces a file whole: temp file, then rename (no fsync: this is hand-over state, a reboot resets it anyway). */
export function replaceFile(path: string, content: string): void {
  const temp = `${path}.tmp-${process.pid}`;
  writeFileSync(temp, content, { mode: 0o600 });
  renameSync(temp, path);
}

function readJson<T>(path: string, schema: z.ZodType<T>): T | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export const readFeed = (path: string): Feed | undefined => readJson(path, FeedSchema);
export const readFencerStatus = (path: string): FencerStatus | undefined => readJson(path, FencerStatusSchema);
