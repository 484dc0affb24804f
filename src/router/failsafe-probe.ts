/** The router's one effect for failsafe: GET /failsafe on the last known primary's agent. */
import { apiCall, peerRequest, type PeerAccess } from '../tls/client.js';
import type { FailsafeAnswer, ProbeOutcome } from './failsafe.js';

export async function askFailsafe(member: string, apiUrl: string, address: string, access: PeerAccess, timeoutMs: number, now: () => number): Promise<ProbeOutcome> {
  const sentAt = now();
  try {
    const response = await apiCall(`${apiUrl}/failsafe`, { ...peerRequest(access), timeoutMs });
    if (response.status !== 200) return { kind: 'no-answer', member, error: `HTTP ${response.status}` };
    const answer = parseAnswer(response.body);
    return answer ? { kind: 'answer', member, address, answer, sentAt } : { kind: 'no-answer', member, error: 'unreadable answer' };
  } catch (error) {
    return { kind: 'no-answer', member, error: (error as Error).message };
  }
}

function parseAnswer(body: string): FailsafeAnswer | undefined {
  try {
    const a = JSON.parse(body) as Partial<FailsafeAnswer>;
    if (typeof a.member !== 'string' || typeof a.active !== 'boolean' || typeof a.remainingMs !== 'number') return undefined;
    return { member: a.member, active: a.active, remainingMs: a.remainingMs, reason: typeof a.reason === 'string' ? a.reason : '' };
  } catch {
    return undefined;
  }
}
