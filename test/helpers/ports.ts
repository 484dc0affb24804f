import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * Ports for test servers come from below the kernel's ephemeral range: a port
 * the kernel hands out for listen(0) is also one it may pick as the source
 * port of any outgoing connection (a walreceiver, a client) before the test
 * server binds it — CI once failed with EADDRINUSE exactly so. Below the range
 * only another listener can take it, and we never hand out one port twice.
 */
const handedOut = new Set<number>();

function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 2_000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

const RANGE_LOW = 10_000;
const RANGE_HIGH = Math.max(RANGE_LOW + 1_000, ephemeralLow() - 1);

function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** A TCP port on `host`, free a moment ago, outside the ephemeral range, never returned before by this process. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = RANGE_LOW + Math.floor(Math.random() * (RANGE_HIGH - RANGE_LOW));
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    if (await bindable(port, host)) return port;
  }
  throw new Error(`no free port between ${RANGE_LOW} and ${RANGE_HIGH} on ${host} after 200 attempts`);
}

/** `count` distinct free ports. */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await freePort(host));
  return ports;
}
