import type { ClusterSettings } from '../cluster/settings.js';
import type { InitRecord, LeaderRecord, MemberStatus, SlotRegistry } from '../cluster/types.js';
import type { DataDirState } from '../postgres/datadir.js';
import type { ServerInspection } from '../postgres/inspect.js';
import type { AgentState } from './states.js';

/** What PostgreSQL looks like from this agent right now. */
export type LocalServer =
  | { kind: 'stopped' }
  /** The postmaster runs but does not answer SQL yet (starting, crash recovery). */
  | { kind: 'unreachable'; postmasterPid: number; error: string }
  | { kind: 'running'; postmasterPid: number; inspection: ServerInspection };

/** The store as last read; `reachable: false` means we know nothing about the cluster. */
export type StoreView =
  | { reachable: false; error: string }
  | {
      reachable: true;
      init: InitRecord | undefined;
      leader: (LeaderRecord & { revision: number }) | undefined;
      members: MemberStatus[];
      slotRegistry: SlotRegistry;
    };

/** One consistent snapshot of everything decide() may look at. */
export interface Observation {
  /** Milliseconds since the epoch; decide() never reads the clock itself. */
  now: number;
  member: { name: string; connectAddress: string; nofailover: boolean; priority: number };
  settings: ClusterSettings;
  dataDir: DataDirState;
  /** From pg_controldata when the data directory is initialized. */
  systemIdentifier: string | undefined;
  standbyConfigured: boolean;
  server: LocalServer;
  store: StoreView;
  /** The credentials file or variables are available (needed to clone). */
  haveCredentials: boolean;
  /** Where the agent was after the previous cycle. */
  previous: { state: AgentState; since: number };
}
