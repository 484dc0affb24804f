import { z } from 'zod';

/** A logical replication problem, with a stable code the operator can act on (docs/logical.md#error-codes). */
export const LogicalProblemSchema = z.object({
  code: z.string(),
  object: z.enum(['publication', 'subscription', 'slot', 'database']).optional(),
  name: z.string().optional(),
  database: z.string().optional(),
  message: z.string(),
});
export type LogicalProblem = z.infer<typeof LogicalProblemSchema>;

export const LogicalDriftSchema = z.object({
  object: z.enum(['publication', 'subscription']),
  name: z.string(),
  database: z.string(),
  kind: z.enum(['missing', 'extra', 'different']),
  detail: z.string(),
  /** relevo ran the repair this round (repairDrift, or relevo's own part). */
  repaired: z.boolean(),
});
export type LogicalDrift = z.infer<typeof LogicalDriftSchema>;

export const SubscriptionStatusSchema = z.object({
  name: z.string(),
  database: z.string(),
  /** streaming | copying | disabled | down | missing */
  state: z.string(),
  /** Publisher WAL not yet confirmed by this subscription (bytes), and its replay lag (seconds); null when unknown. */
  lagBytes: z.number().nullable(),
  lagSeconds: z.number().nullable(),
  /** Tables whose initial copy is not finished, with pg_subscription_rel.srsubstate. */
  copying: z.array(z.object({ table: z.string(), state: z.string() })),
  appliedLsn: z.string().nullable(),
  /** host:port of the publishing primary as last reached. */
  publisher: z.string().nullable(),
  error: z.string().nullable(),
});
export type SubscriptionStatus = z.infer<typeof SubscriptionStatusSchema>;

export const LogicalSlotStatusSchema = z.object({
  name: z.string(),
  plugin: z.string(),
  database: z.string(),
  confirmedFlushLsn: z.string().nullable(),
  catalogXmin: z.string().nullable(),
  active: z.boolean(),
});

/** A replica's copy of one of the primary's logical slots. */
export const FailoverSlotStatusSchema = z.object({
  name: z.string(),
  /** Position of the copy here (null: not copied yet). */
  confirmedFlushLsn: z.string().nullable(),
  /** The primary's slot position this copy follows. */
  primaryConfirmedFlushLsn: z.string().nullable(),
  /** The copy exists, follows the primary and the primary keeps the catalog rows it needs (hot_standby_feedback). */
  ready: z.boolean(),
  detail: z.string(),
});

/** What a member publishes about logical replication (under its status, field `logical`). */
export const LogicalStatusSchema = z.object({
  checkedAt: z.string(),
  /** Settings generation this report was made with. */
  generation: z.number().int(),
  problems: z.array(LogicalProblemSchema),
  drift: z.array(LogicalDriftSchema),
  publications: z.array(z.object({ name: z.string(), database: z.string(), tables: z.number().int() })),
  subscriptions: z.array(SubscriptionStatusSchema),
  /** Primary: its persistent logical slots (what replicas copy). */
  slots: z.array(LogicalSlotStatusSchema),
  /** Primary: catalog_xmin of each physical slot (a standby's feedback). */
  physicalCatalogXmin: z.record(z.string(), z.string().nullable()),
  /** Replica: its copies of the primary's logical slots. */
  failoverSlots: z.array(FailoverSlotStatusSchema),
});
export type LogicalStatus = z.infer<typeof LogicalStatusSchema>;
