/**
 * TLS in front of a plain server: what turns a fake storage server on loopback into an `https:`
 * one. Every connection is piped, unchanged, to the server behind.
 */
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { TestCertificates } from './certs.js';

export interface TlsFront {
  /** `https://host:port` */
  origin: string;
  port: number;
  /** The remote ports of the connections it took: a proxy's, when one carried them. */
  clientPorts: Set<number>;
  close(): Promise<void>;
}

/** `target` is the plain server's port on `targetHost` (default 127.0.0.1); the front listens on `host`. */
export async function startTlsFront(options: {
  certs: TestCertificates;
  target: number;
  targetHost?: string;
  host?: string;
}): Promise<TlsFront> {
  const host = options.host ?? '127.0.0.1';
  const sockets = new Set<net.Socket>();
  const clientPorts = new Set<number>();
  const server = tls.createServer({ key: options.certs.key, cert: options.certs.cert }, (client) => {
    clientPorts.add(client.remotePort as number);
    const upstream = net.connect(options.target, options.targetHost ?? '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  // A client that refuses the certificate ends the handshake: not the test's failure.
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `https://${host}:${port}`,
    port,
    clientPorts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
