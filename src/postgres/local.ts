import type { MemberConfig } from '../config/member.js';
import { ROLE_NAMES, type Credentials } from '../config/secrets.js';
import { lookupOsUser, type OsUser } from '../util/os-user.js';
import { socketDirOf } from './conf.js';
import type { PostmasterTarget } from './postmaster.js';
import type { SqlTarget } from './sql.js';
import { memberTlsFiles, type TlsFiles } from '../tls/member.js';

/** Everything needed to act on this member's PostgreSQL, derived once from the member file. */
export interface LocalPostgres {
  memberName: string;
  binDir: string;
  dataDir: string;
  user: OsUser;
  socketDir: string;
  port: number;
  /** pg_ctl -l target, beside the data directory. */
  logFile: string;
  /** libpq password file for replication connections (0600, owned by the OS user). */
  passfile: string;
  postmaster: PostmasterTarget;
  /** This member's TLS files; undefined when tls.enabled is false. */
  tls: TlsFiles | undefined;
}

export function localPostgres(config: MemberConfig): LocalPostgres {
  const user = lookupOsUser(config.postgres.osUser);
  const dataDir = config.postgres.dataDir.replace(/\/+$/, '');
  const logFile = `${dataDir}.log`;
  return {
    memberName: config.name,
    binDir: config.postgres.binDir,
    dataDir,
    user,
    socketDir: socketDirOf(config),
    port: config.postgres.port,
    logFile,
    passfile: `${dataDir}.pgpass`,
    postmaster: { binDir: config.postgres.binDir, user, dataDir, logFile },
    tls: memberTlsFiles(config),
  };
}

/** The agent's own connection: local socket, its role, scram. */
export function agentSqlTarget(local: LocalPostgres, credentials: Credentials): SqlTarget {
  return { host: local.socketDir, port: local.port, user: ROLE_NAMES.agent, password: credentials.agentPassword };
}
