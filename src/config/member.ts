import { z } from 'zod';
import { PostgresParametersSchema } from '../cluster/parameters.js';
import { RouterSettingsSchema } from '../router/options.js';
import { StoreConfigSchema } from '../store/config.js';
import { DelaySettingsSchema } from './delay.js';

const hostPort = z.string().regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'expected host:port');
const memberName = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'expected a lower-case name: letters, digits, "-" or "_", starting with a letter');

/** Where a secret comes from: an environment variable or a file (mode 0600). Never inline. */
export const SecretSourceSchema = z.union([
  z.object({ env: z.string().min(1) }).strict(),
  z.object({ file: z.string().min(1) }).strict(),
]);
export type SecretSource = z.infer<typeof SecretSourceSchema>;

/** One YAML file per member. */
export const MemberConfigSchema = z
  .object({
    /** Cluster name: every member of one cluster uses the same. */
    cluster: memberName,
    /** This member's name, unique in the cluster. */
    name: memberName,
    store: StoreConfigSchema,
    postgres: z
      .object({
        dataDir: z.string().startsWith('/', 'expected an absolute path'),
        binDir: z.string().startsWith('/', 'expected an absolute path').default('/usr/lib/postgresql/15/bin'),
        listen: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(1).max(65535).default(5432),
        /** host:port other members and clients use; defaults to listen:port. */
        connectAddress: hostPort.optional(),
        /** OS user that runs PostgreSQL programs when the agent is root. */
        osUser: z.string().min(1).default('postgres'),
        /** Directory for the Unix socket; defaults to the data directory's parent /run. */
        socketDir: z.string().startsWith('/').optional(),
        /** Member-local PostgreSQL parameters (override cluster-wide ones; the ones relevo manages are refused). */
        parameters: PostgresParametersSchema.default({}),
      })
      .strict(),
    api: z
      .object({
        listen: hostPort.default('127.0.0.1:8008'),
        /** URL other members and the CLI use; defaults to http://listen. */
        url: z.string().url().optional(),
        /**
         * HTTP basic authentication for the state-changing endpoints (switchover,
         * failover, restart, reinit, pause, config). Without it they are refused.
         */
        auth: z.object({ username: z.string().min(1), password: SecretSourceSchema }).strict().optional(),
        /** Also require authentication for the read-only endpoints. */
        authReadOnly: z.boolean().default(false),
        /**
         * Client addresses (CIDR or single address) allowed to call the
         * state-changing endpoints; empty allows any authenticated client.
         */
        allowlist: z.array(z.string().min(1)).default([]),
      })
      .strict()
      .default({ listen: '127.0.0.1:8008', authReadOnly: false, allowlist: [] }),
    /**
     * TLS for PostgreSQL, replication and the REST API (on by default). See docs/security.md.
     */
    tls: z
      .object({
        enabled: z.boolean().default(true),
        /**
         * Cluster CA directory: ca.crt, and ca.key on hosts that issue their own
         * member certificate. Default: the "ca" directory beside secrets.file.
         */
        caDir: z.string().startsWith('/', 'expected an absolute path').optional(),
        /** A pre-issued member certificate and key (PEM); without them the agent issues its own from the CA key. */
        cert: z.string().startsWith('/', 'expected an absolute path').optional(),
        key: z.string().startsWith('/', 'expected an absolute path').optional(),
        /** More names or addresses for the member certificate, e.g. a DNS name or a router relaying TLS end to end. */
        extraNames: z.array(z.string().regex(/^[A-Za-z0-9.:*-]+$/, 'expected a host name or an IP address')).default([]),
        /** Lifetime of a member certificate the agent issues; renewed when less than a third remains. */
        validityDays: z.number().int().min(1).max(825).default(365),
      })
      .strict()
      .refine((t) => (t.cert === undefined) === (t.key === undefined), 'set both tls.cert and tls.key, or neither')
      .default({ enabled: true, extraNames: [], validityDays: 365 }),
    secrets: z
      .object({
        /**
         * File (mode 0600) holding the generated role passwords. The member that
         * bootstraps the cluster creates it; the others read it (copy it to every
         * host, or use the environment variables below).
         */
        file: z.string().startsWith('/', 'expected an absolute path'),
        replicationPassword: SecretSourceSchema.optional(),
        agentPassword: SecretSourceSchema.optional(),
      })
      .strict(),
    tags: z
      .object({
        nofailover: z.boolean().default(false),
        priority: z.number().int().min(0).max(1000).default(100),
      })
      .catchall(z.union([z.string(), z.number(), z.boolean()]))
      .default({ nofailover: false, priority: 100 }),
    /** A delayed replica (docs/undo.md): kept `apply` behind, never promoted, never synchronous. */
    delay: DelaySettingsSchema.optional(),
    /**
     * Client router settings (src/router/options.ts). `relevo router -c FILE`
     * runs it; with `embedded: true` the agent runs it in its own process.
     */
    router: RouterSettingsSchema.omit({ name: true, cluster: true })
      .extend({ name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).optional(), embedded: z.boolean().default(false) })
      .optional(),
    /**
     * The fencer (docs/architecture.md#fencing): a process apart from the agent
     * that stops a primary's PostgreSQL by PID when the agent stops renewing its lease.
     */
    fence: z
      .object({
        /** The agent starts the fencer itself (false: an external `relevo fence` runs, e.g. deploy/systemd/relevo-fence.service). */
        spawn: z.boolean().default(true),
        /** Linux watchdog device: off; auto (use it where present and fast enough); required (no lease without it). */
        watchdog: z.enum(['off', 'auto', 'required']).default('auto'),
        watchdogDevice: z.string().startsWith('/', 'expected an absolute path').default('/dev/watchdog'),
      })
      .strict()
      .default({ spawn: true, watchdog: 'auto', watchdogDevice: '/dev/watchdog' }),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info') })
      .strict()
      .default({ level: 'info' }),
  })
  .strict()
  .superRefine((config, ctx) => {
    // A wildcard is where to listen, not an address others can reach: published as is, peers and the CLI would talk to themselves.
    if (isWildcardHost(hostOf(config.api.listen)) && config.api.url === undefined) {
      ctx.addIssue({ code: 'custom', path: ['api', 'url'], message: `api.listen ${config.api.listen} is a wildcard address: set api.url to the URL other members and the CLI reach this agent at` });
    }
    if (config.api.url !== undefined && isWildcardHost(new URL(config.api.url).hostname)) {
      ctx.addIssue({ code: 'custom', path: ['api', 'url'], message: 'a wildcard address is not reachable: give this host\'s name or address' });
    }
    if (config.postgres.listen.split(',').some((h) => isWildcardHost(h.trim())) && config.postgres.connectAddress === undefined) {
      ctx.addIssue({ code: 'custom', path: ['postgres', 'connectAddress'], message: `postgres.listen "${config.postgres.listen}" includes a wildcard address: set postgres.connectAddress to the host:port other members and clients use` });
    }
    if (config.postgres.connectAddress !== undefined && isWildcardHost(hostOf(config.postgres.connectAddress))) {
      ctx.addIssue({ code: 'custom', path: ['postgres', 'connectAddress'], message: 'a wildcard address is not reachable: give this host\'s name or address' });
    }
    if (config.api.authReadOnly && config.api.auth === undefined) {
      ctx.addIssue({ code: 'custom', path: ['api', 'authReadOnly'], message: 'api.authReadOnly needs api.auth (the credentials readers and peer agents present)' });
    }
  });

/** Addresses that mean "every interface". */
export function isWildcardHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  return bare === '' || bare === '*' || bare === '0.0.0.0' || /^[0:]+$/.test(bare);
}

function hostOf(hostPort: string): string {
  return hostPort.slice(0, hostPort.lastIndexOf(':'));
}

export type MemberConfig = z.infer<typeof MemberConfigSchema>;

export function connectAddressOf(config: MemberConfig): string {
  return config.postgres.connectAddress ?? `${config.postgres.listen}:${config.postgres.port}`;
}

export function apiUrlOf(config: MemberConfig): string {
  return config.api.url ?? `${config.tls.enabled ? 'https' : 'http'}://${config.api.listen}`;
}
