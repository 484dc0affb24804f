/** Asks every member of the last known membership to confirm this primary (POST /failsafe), in parallel. */
export interface PeerAddress {
  name: string;
  apiUrl: string;
}

export type PeerAnswer = { name: string; confirmed: true } | { name: string; confirmed: false; error: string };

export async function requestConfirmations(peers: PeerAddress[], leader: string, authorization: string | undefined, timeoutMs: number): Promise<PeerAnswer[]> {
  return Promise.all(
    peers.map(async (peer): Promise<PeerAnswer> => {
      try {
        const response = await fetch(`${peer.apiUrl}/failsafe`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
          body: JSON.stringify({ leader }),
          signal: AbortSignal.timeout(timeoutMs),
        });
        const body = (await response.json().catch(() => ({}))) as { confirmed?: unknown; error?: unknown };
        if (response.status === 200 && body.confirmed === true) return { name: peer.name, confirmed: true };
        return { name: peer.name, confirmed: false, error: `HTTP ${response.status}: ${typeof body.error === 'string' ? body.error : 'not confirmed'}` };
      } catch (error) {
        return { name: peer.name, confirmed: false, error: (error as Error).message };
      }
    }),
  );
}
