/**
 * The fencer's rule, pure: a primary's PostgreSQL must not outlive the
 * deadline its agent last fed (ttlMs - fenceMarginMs after the last lease
 * renewal it sent, or later while failsafe holds). Times are CLOCK_MONOTONIC
 * milliseconds, a clock every process on the host shares.
 */
import { z } from 'zod';

export const FEED_VERSION = 1;

/** What the agent writes after every lease renewal and every change of role. */
export const FeedSchema = z.object({
  version: z.literal(FEED_VERSION),
  member: z.string(),
  agentPid: z.number().int().positive(),
  /** PostgreSQL runs (or is about to run) as primary under this agent's lease: the fence is armed. */
  armed: z.boolean(),
  /** CLOCK_MONOTONIC ms after which PostgreSQL must not acknowledge anything. */
  deadlineMs: z.number(),
  /** CLOCK_MONOTONIC ms when the agent wrote this feed. */
  writtenMs: z.number(),
  ttlMs: z.number().int().positive(),
  fenceMarginMs: z.number().int().positive(),
  /** Why armed or not, for the log and `relevo list`. */
  reason: z.string(),
});
export type Feed = z.infer<typeof FeedSchema>;

export type Verdict =
  | { kind: 'idle'; reason: string }
  | { kind: 'armed'; remainingMs: number }
  | { kind: 'fence'; overdueMs: number; reason: string };

/**
 * `now` must be read BEFORE the feed: a renewal written in between then only
 * makes the feed newer than the clock, never the other way round (a healthy
 * primary is never fenced on a stale read).
 */
export function verdict(feed: Feed | undefined, now: number): Verdict {
  if (!feed) return { kind: 'idle', reason: 'never fed: no agent has armed the fence' };
  if (!feed.armed) return { kind: 'idle', reason: feed.reason };
  const remainingMs = feed.deadlineMs - now;
  if (remainingMs > 0) return { kind: 'armed', remainingMs };
  return {
    kind: 'fence',
    overdueMs: -remainingMs,
    reason: `not fed for ${Math.round(now - feed.writtenMs)} ms (agent ${feed.agentPid}); the deadline ttlMs - fenceMarginMs = ${feed.ttlMs - feed.fenceMarginMs} ms after the last lease renewal passed ${Math.round(-remainingMs)} ms ago`,
  };
}

/**
 * How often the fencer looks. Armed (or never fed): a tenth of the margin, between 20 and 100 ms.
 * Unarmed: a quarter of ttlMs - fenceMarginMs, at most 1 s and never less than armed. An idle fencer
 * looking 10 times a second cost about 1 % of a core; arming is then seen at most that long after it
 * was written, which leaves three quarters of the time to the first possible deadline (a promotion
 * arms with a deadline ttlMs - fenceMarginMs after its lease renewal). The heartbeat stays far inside
 * the agent's FENCER_STALE_MS.
 */
export function tickMs(feed: Feed | undefined): number {
  const margin = feed?.fenceMarginMs ?? 2_000;
  const armed = Math.max(20, Math.min(100, Math.floor(margin / 10)));
  if (!feed || feed.armed) return armed;
  return Math.max(armed, Math.min(1_000, Math.floor((feed.ttlMs - feed.fenceMarginMs) / 4)));
}

/**
 * The fencer's heartbeat is stale when it has not ticked for this long: it
 * is missing (or frozen) and the agent replaces it.
 */
export function heartbeatStale(lastTickMs: number | undefined, now: number, staleAfterMs: number): boolean {
  return lastTickMs === undefined || now - lastTickMs > staleAfterMs;
}

/** CLOCK_MONOTONIC now, in ms (libuv's hrtime on Linux). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
