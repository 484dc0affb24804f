import { z } from 'zod';

/** How a member reaches the coordination store (the `store:` section of a member file). */
export const StoreConfigSchema = z.discriminatedUnion('backend', [
  z
    .object({
      backend: z.literal('etcd'),
      /** etcd v3 client URLs, e.g. http://10.0.0.1:2379. */
      endpoints: z.array(z.string().url()).min(1),
      /** Per-operation timeout; past it an operation fails with StoreUnavailableError. */
      timeoutMs: z.number().int().min(100).max(60_000).default(2_000),
      /** Optional etcd authentication; the password comes from an environment variable or a file. */
      username: z.string().optional(),
      passwordEnv: z.string().optional(),
      passwordFile: z.string().optional(),
      /** TLS to etcd (https:// endpoints): the CA that signed the servers, and a client certificate for --client-cert-auth. */
      tls: z
        .object({ ca: z.string().min(1), cert: z.string().min(1).optional(), key: z.string().min(1).optional() })
        .strict()
        .refine((t) => (t.cert === undefined) === (t.key === undefined), 'set both store.tls.cert and store.tls.key, or neither')
        .optional(),
    })
    .strict(),
  z
    .object({
      backend: z.literal('embedded'),
      /** Path of the store file shared by all members on this host. */
      path: z.string().min(1),
      timeoutMs: z.number().int().min(100).max(60_000).default(2_000),
    })
    .strict(),
]);

export type StoreConfig = z.infer<typeof StoreConfigSchema>;
