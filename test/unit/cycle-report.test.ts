import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Action } from '../../src/agent/actions.js';
import { ranActions, type CycleReport } from '../../src/agent/cycle-report.js';
import type { ActionOutcome } from '../../src/agent/outcome.js';

describe('cycle report', () => {
  it('chaos seed 1, fence watchdog between cycles: an outcome without its action is left out instead of failing the cycle', () => {
    // The watchdog's stopPostgres outcome used to land in the running cycle's list, one more outcome than
    // actions: `Cannot read properties of undefined (reading 'type')`, "agent cycle failed".
    const actions: Action[] = [{ type: 'writeOptime' } as Action];
    const outcomes: ActionOutcome[] = [{ type: 'writeOptime', result: 'ok' } as ActionOutcome, { type: 'stopPostgres', result: 'ok' } as ActionOutcome];
    const report = { decision: { actions }, outcomes } as unknown as CycleReport;
    const ran = ranActions(report);
    assert.deepEqual(ran.map((r) => r.action.type), ['writeOptime']);
  });
});
