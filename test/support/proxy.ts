/**
 * A forward proxy on 127.0.0.1 that counts what it carries: CONNECT tunnels (what undici's
 * ProxyAgent and http-client's tunnel use) and absolute-form requests (plain HTTP proxying).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';

export interface ForwardProxy {
  url: string;
  /** `CONNECT host:port` or `GET http://...`, one entry per tunnel or request carried. */
  carried: string[];
  /** Local ports of the proxy's connections to the servers: a request from one of them came through the proxy. */
  upstreamPorts: Set<number>;
  close(): Promise<void>;
}

/** Names under `.test` stand for this machine, as they do for the action (test-hosts.mjs). */
function resolve(host: string): string {
  const bare = host.replace(/^\[|\]$/g, '');
  return bare.endsWith('.test') ? '127.0.0.1' : bare;
}

export interface ProxyOptions {
  /** Answer every tunnel and request with this status (407: the proxy wants credentials) instead of carrying it. */
  refuse?: number;
  /** `'user:password'`: answer 407 to anything without those credentials. */
  requireAuth?: string;
}

export async function startProxy(options: ProxyOptions = {}): Promise<ForwardProxy> {
  const carried: string[] = [];
  const upstreamPorts = new Set<number>();
  const sockets = new Set<net.Socket>();
  const expected = options.requireAuth === undefined ? undefined : `Basic ${Buffer.from(options.requireAuth).toString('base64')}`;
  // The status a request is refused with, or undefined to carry it.
  const refusalOf = (req: http.IncomingMessage): number | undefined => {
    if (options.refuse !== undefined) return options.refuse;
    return expected !== undefined && req.headers['proxy-authorization'] !== expected ? 407 : undefined;
  };
  const challengeOf = (status: number): Record<string, string> => (status === 407 ? { 'proxy-authenticate': 'Basic realm="proxy"' } : {});
  const server = http.createServer((req, res) => {
    carried.push(`${req.method} ${req.url}`);
    const refusal = refusalOf(req);
    if (refusal !== undefined) {
      res.writeHead(refusal, { ...challengeOf(refusal), 'content-length': '0' }).end();
      return;
    }
    let target: URL;
    try {
      target = new URL(req.url ?? '');
    } catch {
      res.writeHead(400).end('absolute-form URL required');
      return;
    }
    const { 'proxy-authorization': _credentials, ...headers } = req.headers;
    const upstream = http.request(
      {
        host: resolve(target.hostname),
        port: target.port,
        path: target.pathname + target.search,
        method: req.method,
        headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    // A kept-alive socket from an earlier request is connected already.
    upstream.on('socket', (s) => {
      if (s.localPort !== undefined && !s.connecting) upstreamPorts.add(s.localPort);
      else s.on('connect', () => upstreamPorts.add(s.localPort as number));
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    carried.push(`CONNECT ${req.url}`);
    const refusal = refusalOf(req);
    if (refusal !== undefined) {
      const headers = Object.entries(challengeOf(refusal)).map(([k, v]) => `${k}: ${v}\r\n`);
      client.end(`HTTP/1.1 ${refusal} ${http.STATUS_CODES[refusal] ?? 'Refused'}\r\n${headers.join('')}content-length: 0\r\n\r\n`);
      return;
    }
    const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(req.url ?? '');
    if (!match) {
      client.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    const upstream = net.connect({ host: resolve(match[1]), port: Number(match[2]) }, () => {
      upstreamPorts.add(upstream.localPort as number);
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    for (const s of [upstream, client]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        upstream.destroy();
        client.destroy();
      });
    }
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    carried,
    upstreamPorts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
