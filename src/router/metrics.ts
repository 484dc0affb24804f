/**
 * Prometheus metrics of one router, computed when scraped from the same
 * numbers stats() reports: nothing is counted on the relay's hot path.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import type { RouterStatus } from './status.js';

export function createRegistry(stats: () => RouterStatus): Registry {
  const registry = new Registry();
  let snapshot: RouterStatus | undefined;
  // One stats() per scrape, shared by every metric's collect().
  const current = (): RouterStatus => {
    snapshot ??= stats();
    queueMicrotask(() => (snapshot = undefined));
    return snapshot;
  };
  const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge, s: RouterStatus) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(this, current());
      },
    });
  const counter = (name: string, help: string, labelNames: string[], fill: (c: Counter, s: RouterStatus) => void) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(this, current());
      },
    });

  gauge('relevo_router_open_connections', 'Relayed sessions open now', ['listener'], (g, s) => {
    for (const l of s.listeners) g.set({ listener: l.role }, l.open);
  });
  gauge('relevo_router_backend_connections', 'Relayed sessions open now, per member', ['listener', 'member'], (g, s) => {
    for (const l of s.listeners) for (const [member, n] of Object.entries(l.backends)) g.set({ listener: l.role, member }, n);
  });
  gauge('relevo_router_held_connections', 'Connections held now, waiting for a switchover to finish', ['listener'], (g, s) => {
    for (const l of s.listeners) g.set({ listener: l.role }, l.held);
  });
  counter('relevo_router_held_total', 'Connections ever held', ['listener'], (c, s) => {
    for (const l of s.listeners) c.inc({ listener: l.role }, l.heldTotal);
  });
  counter('relevo_router_accepted_total', 'Client connections accepted', ['listener'], (c, s) => {
    for (const l of s.listeners) c.inc({ listener: l.role }, l.accepted);
  });
  counter('relevo_router_refused_total', 'New connections refused, by reason', ['listener', 'reason'], (c, s) => {
    for (const l of s.listeners) for (const [reason, n] of Object.entries(l.refused)) c.inc({ listener: l.role, reason }, n);
  });
  counter('relevo_router_closed_total', 'Relayed sessions closed by the router, by reason', ['listener', 'reason'], (c, s) => {
    for (const l of s.listeners) for (const [reason, n] of Object.entries(l.closed)) c.inc({ listener: l.role, reason }, n);
  });
  counter('relevo_router_bytes_total', 'Bytes relayed', ['listener', 'direction'], (c, s) => {
    for (const l of s.listeners) {
      c.inc({ listener: l.role, direction: 'from_client' }, l.bytesFromClients);
      c.inc({ listener: l.role, direction: 'to_client' }, l.bytesToClients);
    }
  });
  gauge('relevo_router_store_readable', '1 while the store was read within the leader lease TTL', [], (g, s) => {
    g.set(s.store.readable ? 1 : 0);
  });
  gauge('relevo_router_store_age_seconds', 'Seconds since the last successful store read began', [], (g, s) => {
    if (s.store.ageMs !== null) g.set(s.store.ageMs / 1000);
  });
  gauge('relevo_router_failsafe', '1 while writes go on to the primary without the store, on its failsafe grant', [], (g, s) => {
    g.set(s.failsafe ? 1 : 0);
  });
  gauge('relevo_router_switchover', '1 while a switchover is in progress', [], (g, s) => {
    g.set(s.switchover ? 1 : 0);
  });
  return registry;
}

/** Serves GET /metrics (Prometheus text) and GET /stats (JSON) on host:port. */
export async function serveMetrics(
  registry: Registry,
  stats: () => RouterStatus,
  host: string,
  port: number,
): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (error: Error) => res.writeHead(500).end(error.message),
      );
    } else if (path === '/stats') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats()));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /stats\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  const bound = a && typeof a === 'object' ? a.port : port;
  return { server, url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}` };
}
