/**
 * Router settings: the `router:` section of a configuration file and the
 * options of startRouter(). Every duration is in milliseconds.
 */
import { z } from 'zod';
import type { StoreConfig } from '../store/config.js';
import type { Store } from '../store/store.js';
import type { PeerAccess } from '../tls/client.js';
import { parseAddress } from './view.js';

const address = z.string().refine((a) => parseAddress(a, true) !== undefined, {
  message: 'expected host:port (IPv6 as [addr]:port; port 0 = any free port)',
});

export const RouterSettingsSchema = z
  .object({
    /** Router name: its statistics are published under routers/<name>. */
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, "_", "." and "-" only'),
    /** Cluster whose store keys the router follows. */
    cluster: z.string().min(1),
    listen: z
      .object({
        /** host:port of the read-write listener (to the lease holder); null = none. */
        readWrite: address.nullable().default('127.0.0.1:5440'),
        /** host:port of the read-only listener (replicas within the lag limits); null = none. */
        readOnly: address.nullable().default('127.0.0.1:5441'),
      })
      .strict()
      .default({ readWrite: '127.0.0.1:5440', readOnly: '127.0.0.1:5441' })
      .refine((l) => l.readWrite !== null || l.readOnly !== null, 'at least one listener is needed'),
    /** Replicas further behind than this many bytes of WAL get no read-only connections; null = no limit. */
    maxLagBytes: z.number().int().min(0).nullable().default(16 * 1024 * 1024),
    /** Same in seconds of replay lag (when the member knows it); null = no limit. */
    maxLagSeconds: z.number().min(0).nullable().default(30),
    /** Send read-only connections to the primary when no replica qualifies. */
    fallbackToPrimary: z.boolean().default(true),
    /** Only replicas that are streaming from their upstream take read-only connections. */
    requireStreaming: z.boolean().default(true),
    timeouts: z
      .object({
        /** A client must send its first packet within this time. */
        startupMs: z.number().int().min(100).default(10_000),
        /** Connecting to a member may take this long. */
        connectMs: z.number().int().min(100).default(3_000),
        /** New read-write connections wait at most this long for a switchover to finish. */
        holdMs: z.number().int().min(0).default(30_000),
        /** During a switchover, sessions on the old primary still busy after this are closed. */
        drainMs: z.number().int().min(0).default(5_000),
        /** Full re-read of the store (watches deliver changes in between). */
        refreshMs: z.number().int().min(50).default(1_000),
        /** Lease TTL assumed until a leader record (which carries the real one) was read. */
        defaultTtlMs: z.number().int().min(1_000).default(10_000),
      })
      .strict()
      .default({ startupMs: 10_000, connectMs: 3_000, holdMs: 30_000, drainMs: 5_000, refreshMs: 1_000, defaultTtlMs: 10_000 }),
    limits: z
      .object({
        /** Client connections a listener holds at once (waiting, held, connecting, relayed); more are refused at once (53300). */
        maxConnections: z.number().int().min(1).default(1_000),
        /** Connections a listener holds during a switchover; more are refused (53300) instead of piling up. */
        maxHeld: z.number().int().min(0).default(200),
      })
      .strict()
      .default({ maxConnections: 1_000, maxHeld: 200 }),
    /**
     * How each listener handles sessions: 'relay' passes bytes through end to end
     * (the server authenticates the client); 'session' terminates the protocol in
     * the router so sessions survive a switchover (docs/router.md, Session mode).
     */
    mode: z
      .object({
        readWrite: z.enum(['relay', 'session']).default('relay'),
        readOnly: z.enum(['relay', 'session']).default('relay'),
      })
      .strict()
      .default({ readWrite: 'relay', readOnly: 'relay' }),
    /** Session mode settings; required when a listener is in session mode. */
    session: z
      .object({
        /** File (mode 0600) of "role" "SCRAM-SHA-256$..." lines: the pg_authid verifiers clients authenticate against. */
        verifiersFile: z.string().startsWith('/', 'expected an absolute path'),
        /** The router's own certificate for clients that ask for TLS; null = clients get plaintext. */
        tls: z
          .object({ certFile: z.string().startsWith('/'), keyFile: z.string().startsWith('/') })
          .strict()
          .nullable()
          .default(null),
        /**
         * CA bundle (PEM) the servers' certificates are verified against: session mode then
         * connects like libpq with sslmode=verify-full channel_binding=require. null = plaintext
         * to the servers (clusters with tls.enabled: false only; relevo's pg_hba refuses it otherwise).
         */
        serverCaFile: z.string().startsWith('/', 'expected an absolute path').nullable().default(null),
        /**
         * Session pooling: a client's server session is reset (DISCARD ALL) and kept for the
         * next client when it leaves. `size`: server sessions per member, role, database and
         * startup parameters; `idleMs`: an unused one is closed after this. null = no pooling.
         */
        pool: z
          .object({ size: z.number().int().min(1).max(10_000), idleMs: z.number().int().min(1_000).default(60_000) })
          .strict()
          .nullable()
          .default(null),
      })
      .strict()
      .nullable()
      .default(null),
    /**
     * Router processes sharing the listeners (`relevo router` only; an embedded
     * router is always one). Each is a full router with its own status key.
     */
    workers: z.number().int().min(1).max(64).default(1),
    /** host:port of the Prometheus endpoint (GET /metrics, GET /stats); null = none. */
    metrics: address.nullable().default(null),
    /** How often statistics are published to the store under routers/<name>. */
    publishIntervalMs: z.number().int().min(500).default(5_000),
  })
  .strict();

/** Cross-field checks (kept out of the schema: the member file embeds it with .omit(), which refinements forbid). */
export function settingsProblem(s: RouterSettings): string | undefined {
  if (s.session === null && (s.mode.readWrite === 'session' || s.mode.readOnly === 'session')) {
    return 'router: a listener in session mode needs session.verifiersFile';
  }
  return undefined;
}

export type RouterSettings = z.infer<typeof RouterSettingsSchema>;
export type RouterSettingsInput = z.input<typeof RouterSettingsSchema>;

/** pino-compatible subset. */
export interface RouterLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export type RouterOptions = RouterSettingsInput & {
  /** An open store (the router does not close it), or how to open one (closed on stop). */
  store: Store | StoreConfig;
  logger?: RouterLogger;
  /**
   * How to reach the agents' REST API (cluster CA, credentials) for GET
   * /failsafe while the store cannot be read; asked on every use, so rotated
   * files take effect. Absent: plain requests (an HTTPS API then never answers).
   */
  agentAccess?: () => PeerAccess;
};
