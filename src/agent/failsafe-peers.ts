import { apiCall, peerRequest, type PeerAccess } from '../tls/client.js';

/** Asks every member of the last known membership to confirm this primary (POST /failsafe), in parallel. */
export interface PeerAddress {
  name: string;
  apiUrl: string;
}

export type PeerAnswer = { name: string; confirmed: true } | { name: string; confirmed: false; error: string };

export async function requestConfirmations(peers: PeerAddress[], leader: string, access: PeerAccess, timeoutMs: number): Promise<PeerAnswer[]> {
  return Promise.all(
    peers.map(async (peer): Promise<PeerAnswer> => {
      try {
        const response = await apiCall(`${peer.apiUrl}/failsafe`, {
          method: 'POST',
          ...peerRequest(access, { 'content-type': 'application/json' }),
          body: JSON.stringify({ leader }),
          timeoutMs,
        });
        const body = parseAnswer(response.body);
        if (response.status === 200 && body.confirmed === true) return { name: peer.name, confirmed: true };
        return { name: peer.name, confirmed: false, error: `HTTP ${response.status}: ${typeof body.error === 'string' ? body.error : 'not confirmed'}` };
      } catch (error) {
        return { name: peer.name, confirmed: false, error: (error as Error).message };
      }
    }),
  );
}

function parseAnswer(body: string): { confirmed?: unknown; error?: unknown } {
  try {
    const parsed: unknown = JSON.parse(body);
    return typeof parsed === 'object' && parsed !== null ? (parsed as { confirmed?: unknown; error?: unknown }) : {};
  } catch {
    return {};
  }
}
