import net from 'node:net';

/**
 * A TCP proxy on loopback in front of a real server (Postgres at 127.0.0.1:5432 in the outage
 * tests), so a test can take the server away from the app and give it back:
 * - `cut()`: every open connection is destroyed and the port stops accepting (new connections
 *   are refused, ECONNREFUSED), as when the database host goes down;
 * - `freeze()`: connections stay open but no byte moves either way and new ones are accepted
 *   but never forwarded, as when the database hangs or a network drops packets;
 * - `restore()`: back to forwarding, on the same port.
 */
export interface TcpProxy {
  readonly port: number;
  /** `url` with its host and port replaced by the proxy's (user, password, database kept). */
  urlFor(url: string): string;
  /** Open client connections (each one has its own upstream connection). */
  readonly connections: number;
  cut(): Promise<void>;
  freeze(): void;
  restore(): Promise<void>;
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket | null;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let frozen = false;
  let port = 0;

  function destroyPair(pair: Pair): void {
    pairs.delete(pair);
    pair.client.destroy();
    pair.upstream?.destroy();
  }

  function connectUpstream(pair: Pair): void {
    const upstream = net.connect({ host: target.host, port: target.port });
    pair.upstream = upstream;
    upstream.setNoDelay(true);
    // Manual forwarding (no pipe) so that pause()/resume() alone freezes and thaws a connection.
    pair.client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk) => pair.client.write(chunk));
    upstream.on('error', () => destroyPair(pair));
    upstream.on('close', () => destroyPair(pair));
    if (frozen) upstream.pause();
  }

  const server = net.createServer((client) => {
    const pair: Pair = { client, upstream: null };
    pairs.add(pair);
    client.setNoDelay(true);
    client.on('error', () => destroyPair(pair));
    client.on('close', () => destroyPair(pair));
    if (frozen) {
      client.pause(); // accepted, never answered until restore()
      return;
    }
    connectUpstream(pair);
  });

  const listen = (p: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, '127.0.0.1', () => {
        server.off('error', reject);
        port = (server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  await listen(0);

  return {
    get port() {
      return port;
    },
    get connections() {
      return pairs.size;
    },
    urlFor(url: string): string {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    async cut() {
      const closed = server.listening ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
      for (const pair of [...pairs]) destroyPair(pair);
      await closed;
    },
    freeze() {
      frozen = true;
      for (const pair of pairs) {
        pair.client.pause();
        pair.upstream?.pause();
      }
    },
    async restore() {
      if (frozen) {
        frozen = false;
        for (const pair of [...pairs]) {
          if (pair.upstream) {
            pair.upstream.resume();
            pair.client.resume();
          } else {
            connectUpstream(pair);
            pair.client.resume();
          }
        }
      }
      if (!server.listening) await listen(port);
    },
    async close() {
      frozen = false;
      for (const pair of [...pairs]) destroyPair(pair);
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
