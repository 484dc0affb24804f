/** The roles `relevo secrets rotate` takes; apart from rotate.ts so the CLI can describe them without loading it. */
export const SECRET_ROLES = ['replication', 'agent', 'api', 'all'] as const;
export type SecretRole = (typeof SECRET_ROLES)[number];
