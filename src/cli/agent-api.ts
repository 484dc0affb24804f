import { apiCredentials, basicAuthHeader } from '../api/auth.js';
import type { MemberConfig } from '../config/member.js';
import { apiCall, type ApiResponse } from '../tls/client.js';
import { clusterCaPem } from '../tls/member.js';

/**
 * A CLI request to an agent's REST API: the member file's api.auth
 * credentials, and with TLS on the server is verified against the cluster CA.
 */
export function agentApiCall(config: MemberConfig, url: string, options: { method?: string; timeoutMs: number; body?: string; maxBodyBytes?: number }): Promise<ApiResponse> {
  const credentials = apiCredentials(config);
  const ca = clusterCaPem(config);
  return apiCall(url, {
    ...options,
    headers: { ...(credentials ? { authorization: basicAuthHeader(credentials) } : {}), ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(ca ? { tls: { ca } } : {}),
  });
}
