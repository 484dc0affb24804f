/**
 * Opens the store backend named by a member's `store:` configuration.
 *
 * The etcd password is read here, from the environment variable or file the
 * configuration names, and handed to the client only: it never appears in an
 * error message, a log line or argv.
 */
import { readFile } from 'node:fs/promises';
import { secretFileProblem } from '../util/secret-file.js';
import { StoreError, StoreConfigError } from './errors.js';
import type { StoreConfig } from './config.js';
import type { EmbeddedStoreOptions } from './embedded.js';
import type { Store } from './store.js';

export interface OpenStoreOptions {
  /** Where passwordEnv is looked up; process.env by default. */
  env?: NodeJS.ProcessEnv;
  /** Tuning for the embedded backend (watch poll interval, event retention). */
  embedded?: EmbeddedStoreOptions;
}

/**
 * Returns a ready Store. For etcd no connection is made yet (an agent must be
 * able to start while etcd is down; operations then fail with
 * StoreUnavailableError). For the embedded backend the file is opened and its
 * schema created, so a bad path fails here.
 */
export async function openStore(config: StoreConfig, options: OpenStoreOptions = {}): Promise<Store> {
  switch (config.backend) {
    case 'etcd': {
      const password = await etcdPassword(config, options.env ?? process.env);
      const tls = await etcdTls(config);
      // Loaded on demand: the etcd client (gRPC, protobuf) costs ~20 MB an embedded-store agent does not need.
      const { EtcdStore } = await import('./etcd.js');
      return EtcdStore.fromConfig(config, password, tls);
    }
    case 'embedded':
      const { EmbeddedStore } = await import('./embedded.js');
      return EmbeddedStore.open(config, options.embedded);
  }
}

type EtcdConfig = Extract<StoreConfig, { backend: 'etcd' }>;

/** Reads the etcd TLS files; the key must be mode 0600 like every secret file. */
async function etcdTls(config: EtcdConfig): Promise<{ ca: Buffer; cert?: Buffer; key?: Buffer } | undefined> {
  if (!config.tls) return undefined;
  const read = async (what: string, path: string, secret: boolean) => {
    try {
      // One 0600 rule for every secret file (src/util/secret-file.ts).
      const problem = secret ? secretFileProblem(path, what) : undefined;
      if (problem !== undefined && problem !== 'missing') throw new StoreConfigError(`store: ${problem}`);
      return await readFile(path);
    } catch (error) {
      if (error instanceof StoreError) throw error;
      throw new StoreConfigError(`store: cannot read ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
  const ca = await read('store.tls.ca', config.tls.ca, false);
  if (config.tls.cert === undefined || config.tls.key === undefined) return { ca };
  return { ca, cert: await read('store.tls.cert', config.tls.cert, false), key: await read('store.tls.key', config.tls.key, true) };
}

async function etcdPassword(config: EtcdConfig, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const { username, passwordEnv, passwordFile } = config;
  if (username === undefined) {
    if (passwordEnv !== undefined || passwordFile !== undefined) {
      throw new StoreConfigError('store: passwordEnv/passwordFile given without username; set store.username too');
    }
    return undefined;
  }
  if (passwordEnv !== undefined && passwordFile !== undefined) {
    throw new StoreConfigError('store: set only one of passwordEnv and passwordFile');
  }
  if (passwordEnv !== undefined) {
    const value = env[passwordEnv];
    if (value === undefined || value === '') {
      throw new StoreConfigError(`store: environment variable ${passwordEnv} (store.passwordEnv) is not set or empty`);
    }
    return value;
  }
  if (passwordFile !== undefined) {
    // The same 0600 rule as every secret file (src/util/secret-file.ts).
    const problem = secretFileProblem(passwordFile, 'store.passwordFile');
    if (problem !== undefined && problem !== 'missing') throw new StoreConfigError(`store: ${problem}`);
    let text: string;
    try {
      text = await readFile(passwordFile, 'utf8');
    } catch (error) {
      throw new StoreConfigError(`store: cannot read password file ${passwordFile}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    // Files written with `echo` end in a newline that is not part of the password.
    const password = text.replace(/\r?\n$/, '');
    if (password === '') throw new StoreConfigError(`store: password file ${passwordFile} is empty`);
    return password;
  }
  throw new StoreConfigError('store: username is set but neither passwordEnv nor passwordFile; set one of them');
}
