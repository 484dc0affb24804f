import type { MemberStatus, SlotRegistry } from '../cluster/types.js';
import { slotNameFor } from '../postgres/inspect.js';
import type { Action, Upstream } from './actions.js';
import type { Observation } from './observation.js';
import { isAllowedTransition, type AgentState } from './states.js';

export interface Decision {
  state: AgentState;
  actions: Action[];
  /** One sentence an operator can read: why this state, why these actions. */
  reason: string;
}

type Reachable = Extract<Observation['store'], { reachable: true }>;

/**
 * The HA decision: a pure function of one observed snapshot. No I/O, no clock
 * (time comes in `observation.now`). Effects are described, not performed.
 */
export function decide(observation: Observation): Decision {
  const target = chooseTarget(observation);
  const from = observation.previous.state;
  if (!isAllowedTransition(from, target.state)) {
    return {
      state: from,
      actions: [],
      reason: `internal error: no transition ${from} -> ${target.state} in the table (wanted because: ${target.reason}); staying put — please report this`,
    };
  }
  return target;
}

function chooseTarget(o: Observation): Decision {
  const store = o.store;
  if (!store.reachable) {
    return { state: 'store_unreachable', actions: [], reason: `cannot read the coordination store (${store.error})` };
  }
  const { init } = store;
  if (o.dataDir === 'initialized' && init?.systemIdentifier && o.systemIdentifier && init.systemIdentifier !== o.systemIdentifier) {
    return {
      state: 'foreign_data',
      actions: [],
      reason:
        `data directory holds system ${o.systemIdentifier} but cluster's is ${init.systemIdentifier}: ` +
        'it belongs to another cluster; point postgres.dataDir elsewhere or empty it',
    };
  }
  if (!init) {
    return o.dataDir === 'empty'
      ? { state: 'initializing', actions: [{ type: 'claimInitialize' }], reason: 'no cluster in the store: trying to initialise it' }
      : {
          state: 'initializing',
          actions: [{ type: 'claimInitialize', systemIdentifier: o.systemIdentifier }],
          reason: `no cluster in the store: registering the existing data directory (system ${o.systemIdentifier})`,
        };
  }
  if (!init.systemIdentifier) {
    if (init.member !== o.member.name) {
      return { state: 'waiting_for_primary', actions: [], reason: `member ${init.member} is initialising the cluster` };
    }
    if (o.dataDir === 'empty') return { state: 'bootstrapping', actions: [{ type: 'bootstrap' }], reason: 'we won the initialisation: running initdb' };
    if (o.systemIdentifier) {
      return {
        state: 'bootstrapping',
        actions: [{ type: 'completeInitialize', systemIdentifier: o.systemIdentifier }],
        reason: `recording system ${o.systemIdentifier} as the cluster's`,
      };
    }
  }
  if (o.dataDir === 'empty') return decideEmptyMember(o, store);
  return decideWithData(o, store);
}

function leaderStatus(store: Reachable): MemberStatus | undefined {
  return store.leader ? store.members.find((m) => m.name === store.leader!.member) : undefined;
}

function upstreamFor(o: Observation, store: Reachable): Upstream | undefined {
  const leader = leaderStatus(store);
  if (!leader || leader.name === o.member.name) return undefined;
  return { member: leader.name, address: leader.connectAddress, slot: slotNameFor(o.member.name) };
}

function decideEmptyMember(o: Observation, store: Reachable): Decision {
  const leader = leaderStatus(store);
  if (!store.leader || !leader || leader.role !== 'primary') {
    return { state: 'waiting_for_primary', actions: [], reason: 'no running primary to clone from' };
  }
  if (!o.haveCredentials) {
    return { state: 'waiting_for_credentials', actions: [], reason: 'no replication password: provide the secrets file or environment variables' };
  }
  const slot = slotNameFor(o.member.name);
  if (!leader.slots.some((s) => s.name === slot)) {
    return { state: 'waiting_for_primary', actions: [], reason: `waiting for primary ${leader.name} to create slot ${slot}` };
  }
  return {
    state: 'cloning',
    actions: [{ type: 'clone', upstream: upstreamFor(o, store)! }, { type: 'startPostgres', as: 'replica', upstream: upstreamFor(o, store) }],
    reason: `cloning from primary ${leader.name} through slot ${slot}`,
  };
}

function decideWithData(o: Observation, store: Reachable): Decision {
  const me = o.member.name;
  const leaderName = store.leader?.member;
  const server = o.server;
  if (server.kind === 'unreachable') {
    return { state: 'starting_postgres', actions: [], reason: `PostgreSQL (pid ${server.postmasterPid}) does not answer yet: ${server.error}` };
  }
  if (server.kind === 'stopped') {
    if (o.standbyConfigured || (leaderName !== undefined && leaderName !== me)) {
      const upstream = upstreamFor(o, store);
      return {
        state: 'starting_postgres',
        actions: [{ type: 'startPostgres', as: 'replica', upstream }],
        reason: upstream ? `starting PostgreSQL as a standby of ${upstream.member}` : 'starting PostgreSQL as a standby; no primary holds the lease',
      };
    }
    if (leaderName === me) {
      return { state: 'starting_postgres', actions: [{ type: 'startPostgres', as: 'primary' }], reason: 'we hold the leader lease: starting PostgreSQL as primary' };
    }
    return {
      state: 'starting_postgres',
      actions: [{ type: 'acquireLeader' }],
      reason: 'primary data directory and no leader: taking the leader lease before starting PostgreSQL',
    };
  }
  const inspection = server.inspection;
  if (inspection.inRecovery) {
    const upstream = upstreamFor(o, store);
    if (!upstream) {
      return { state: 'replica', actions: [], reason: leaderName === me ? 'we hold the lease while in recovery' : 'no primary holds the leader lease' };
    }
    return {
      state: 'replica',
      actions: [{ type: 'configure', as: 'replica', upstream }],
      reason: inspection.streaming ? `streaming from ${upstream.member}` : `following ${upstream.member}, not streaming yet`,
    };
  }
  if (leaderName !== undefined && leaderName !== me) {
    return {
      state: 'fenced',
      actions: [{ type: 'stopPostgres', mode: 'fast' }],
      reason: `member ${leaderName} holds the leader lease: stopping this primary to avoid two primaries`,
    };
  }
  if (leaderName === undefined) {
    return { state: 'primary', actions: [{ type: 'acquireLeader' }], reason: 'running primary and no leader: taking the leader lease' };
  }
  const slots = planSlots(o, store, inspection.slots.map((s) => ({ name: s.name, active: s.active })));
  return {
    state: 'primary',
    actions: [{ type: 'configure', as: 'primary' }, ...(slots ? [slots] : [])],
    reason: 'holding the leader lease',
  };
}

/**
 * Slots the primary keeps: one per member present in the store, and for a
 * member that vanished, until the grace period has passed since it was last seen.
 */
export function planSlots(
  o: Observation,
  store: Reachable,
  existing: { name: string; active: boolean }[],
): Extract<Action, { type: 'syncSlots' }> | undefined {
  const present = store.members.filter((m) => m.name !== o.member.name).map((m) => m.name);
  const registry: SlotRegistry = {};
  let registryChanged = false;
  for (const name of present) {
    registry[name] = { lastSeenAt: null };
    if (store.slotRegistry[name]?.lastSeenAt !== null) registryChanged = true;
  }
  const drop: { slot: string; reason: string }[] = [];
  for (const [name, entry] of Object.entries(store.slotRegistry)) {
    if (name === o.member.name || registry[name]) {
      if (name === o.member.name) registryChanged = true;
      continue;
    }
    const goneSince = entry.lastSeenAt ?? new Date(o.now).toISOString();
    if (entry.lastSeenAt === null) registryChanged = true;
    const goneForMs = o.now - Date.parse(goneSince);
    if (goneForMs > o.settings.slotGraceSeconds * 1000) {
      drop.push({ slot: slotNameFor(name), reason: `member ${name} gone since ${goneSince}, longer than slotGraceSeconds=${o.settings.slotGraceSeconds}` });
      registryChanged = true;
    } else {
      registry[name] = { lastSeenAt: goneSince };
    }
  }
  const existingNames = new Set(existing.map((s) => s.name));
  const create = present.map(slotNameFor).filter((slot) => !existingNames.has(slot));
  if (create.length === 0 && drop.length === 0 && !registryChanged) return undefined;
  return { type: 'syncSlots', create, drop, registry: registryChanged ? registry : undefined };
}
