/**
 * Write pause of a planned switchover in the simulation: the longest time
 * without an acknowledged commit around a switchover on a healthy cluster.
 * Effects take no time here, so what remains is the agents' timing: loop
 * period, retries and watches. `node dist/test/sim/switchover.js`
 */
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { TICK_MS, World, type Schedule } from './sim.js';

export function switchoverPause(seed: number, members: string[], synchronousMode: 'on' | 'off'): number {
  const at = 200;
  const schedule: Schedule = {
    seed,
    members,
    settings: { ...defaultClusterSettings(), synchronousMode },
    drift: Object.fromEntries(members.map((m) => [m, 1])),
    faults: [{ at, kind: 'switchover', member: members[0]!, ms: TICK_MS, to: null }],
    faultSteps: 400,
    writeChance: 1,
  };
  const world = new World(schedule);
  world.run(400);
  if (world.violation) throw new Error(world.violation.message);
  // From the old primary's last acknowledgement to the new primary's first.
  const handOver = world.ackGaps.find((g) => g.at >= at * TICK_MS - 1_000 && g.from !== g.to);
  if (!handOver) throw new Error(`seed ${seed}: no switchover happened`);
  return handOver.ms;
}

if (process.argv[1]?.endsWith('switchover.js')) {
  for (const mode of ['on', 'off'] as const) {
    for (const members of [['a', 'b'], ['a', 'b', 'c']]) {
      const pauses = Array.from({ length: 50 }, (_, i) => switchoverPause(i + 1, members, mode)).sort((x, y) => x - y);
      const median = pauses[Math.floor(pauses.length / 2)]!;
      console.log(`synchronousMode=${mode} members=${members.length}: write pause median ${median} ms, max ${pauses.at(-1)} ms (50 seeds)`);
    }
  }
}
