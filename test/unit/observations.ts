/** Builders for decide() inputs: one realistic default, overridden per test — no copied fixtures. */
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import type { MemberStatus } from '../../src/cluster/types.js';
import type { ServerInspection } from '../../src/postgres/inspect.js';
import { freshMemory, type Observation, type StoreView } from '../../src/agent/observation.js';

export function member(name: string, overrides: Partial<MemberStatus> = {}): MemberStatus {
  return {
    name,
    state: 'replica',
    role: 'replica',
    reason: '',
    timeline: 1,
    receivedLsn: '0/5000000',
    receivedTimeline: 1,
    replayedLsn: '0/5000000',
    lagBytes: 0,
    lagSeconds: 0,
    replayPaused: false,
    streaming: true,
    upstream: 'a',
    slots: [],
    replication: [],
    postgresVersion: '15.18',
    pendingRestart: [],
    systemIdentifier: '42',
    agentPid: 1,
    postmasterPid: 2,
    dataDir: `/data/${name}`,
    apiUrl: `http://127.0.0.1:80${name.charCodeAt(0)}`,
    connectAddress: `127.0.0.1:54${name.charCodeAt(0)}`,
    tags: { nofailover: false, priority: 100 },
    paused: false,
    settingsGeneration: 0,
    updatedAt: '2026-01-01T00:00:00Z',
    ...overrides,
  };
}

export function primaryInspection(overrides: Partial<ServerInspection> = {}): ServerInspection {
  return {
    inRecovery: false,
    version: '15.18',
    timeline: 1,
    receivedLsn: '0/5000000',
    replayedLsn: '0/5000000',
    replayPaused: false,
    lagSeconds: 0,
    streaming: false,
    receivedTimeline: null,
    upstreamConninfo: null,
    slots: [],
    replication: [],
    synchronousStandbyNames: '',
    openTransactions: 0,
    pendingRestart: [],
    ...overrides,
  };
}

export function replicaInspection(overrides: Partial<ServerInspection> = {}): ServerInspection {
  return primaryInspection({ inRecovery: true, streaming: true, upstreamConninfo: 'host=127.0.0.1 port=5497', ...overrides });
}

type Reachable = Extract<StoreView, { reachable: true }>;

export function storeView(overrides: Partial<Reachable> = {}): Reachable {
  return {
    reachable: true,
    init: { member: 'a', startedAt: '2026-01-01T00:00:00Z', systemIdentifier: '42' },
    leader: { member: 'a', ttlMs: 6000, acquiredAt: '2026-01-01T00:00:00Z', revision: 7 },
    members: [member('a', { role: 'primary', state: 'primary', upstream: null }), member('b'), member('c')],
    slotRegistry: {},
    sync: { leader: 'a', members: ['b'], updatedAt: '2026-01-01T00:00:00Z' },
    history: [],
    optime: { member: 'a', address: '127.0.0.1:5497', lsn: '0/5000000', timeline: 1, at: '2026-01-01T00:00:00Z' },
    failover: undefined,
    revisions: { leader: 7, sync: 8, optime: 9 },
    unreadable: [],
    ...overrides,
  };
}

/** An observation from member `name` (default: replica b of primary a, everything healthy). */
export function observation(overrides: Partial<Observation> = {}, name = 'b'): Observation {
  return {
    now: Date.parse('2026-06-01T00:00:00Z'),
    monotonic: 100_000,
    member: { name, connectAddress: `127.0.0.1:54${name.charCodeAt(0)}`, nofailover: false, priority: 100 },
    settings: defaultClusterSettings(),
    dataDir: 'initialized',
    systemIdentifier: '42',
    control: undefined,
    standbyConfigured: true,
    upstreamConfigured: true,
    server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection() },
    store: storeView(),
    peers: [],
    haveCredentials: true,
    leaseRenewedAt: 99_000,
    operatorRequest: undefined,
    memory: freshMemory(),
    outcomes: [],
    previous: { state: 'replica', since: 0 },
    ...overrides,
  };
}
