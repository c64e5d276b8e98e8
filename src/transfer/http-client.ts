/**
 * The download's HTTP client: GETs that follow redirects under the policy of `redirects.ts`, over
 * keep-alive connections (`connection.ts`) pooled by route, through the runner's proxy settings
 * (`https_proxy`, `http_proxy`, `no_proxy`, as `@actions/http-client` reads them). The probe, the
 * ranged download and the one-stream download's redirects all go through it, so an `http:` API
 * may send the archive to `https:` storage and back is never a problem.
 */
import { getProxyUrl } from '@actions/http-client/lib/proxy';
import { displayUrl } from '../format.js';
import { type BodySink, DeadlineError, HttpConnection, type Route, routeKey, StallError } from './connection.js';
import { headerValue, type ResponseHead } from './http-head.js';
import { firstHop, type Hop, nextHop, REDIRECT_STATUSES } from './redirects.js';

const USER_AGENT = 'together-download';
/** A redirect's own body is read (and dropped) up to this size, so its connection can be reused. */
const REDIRECT_BODY_LIMIT = 64 * 1024;

export interface ApiAuth {
  apiKey: string;
  /** `scheme://host:port` of the API: the only origin that receives the key. */
  apiOrigin: string;
}

export interface GetOptions {
  headers: Record<string, string>;
  /** Each connection gives up after this long without a byte (connecting included). */
  stallMs: number;
  /** The whole chain of requests, and what is then read with `readSmall`, must end within this (ms from now). */
  deadlineMs?: number;
  /** Where "Redirected to ..." lines go. */
  print: (line: string) => void;
  /**
   * Given, it registers the query of every URL redirected to as a secret (masked by the runner,
   * redacted by our log): for a URL that code other than ours may print.
   */
  maskQuery?: (query: string) => void;
  signal?: AbortSignal;
}

/** The proxy for `url` from the runner's environment, as http-client chooses it. */
export function proxyFor(url: URL): URL | undefined {
  const proxy = getProxyUrl(url);
  // A plain URL: http-client's decodes its credentials, which are encoded again when used.
  return proxy ? new URL(proxy.href) : undefined;
}

export function routeFor(url: URL): Route {
  return { origin: new URL(url.origin), proxy: proxyFor(url) };
}

/** A response of the chain's last hop, on a connection of the pool. */
export class Answer {
  private settled = false;

  constructor(
    readonly head: ResponseHead,
    readonly hop: Hop,
    readonly connection: HttpConnection,
    private readonly pool: ConnectionPool,
  ) {}

  get status(): number {
    return this.head.status;
  }

  /** The URL that answered (after redirects). */
  get url(): string {
    return this.hop.url.href;
  }

  header(name: string): string | undefined {
    return headerValue(this.head, name);
  }

  /** At most `limit` bytes of the body (the rest is not read); the connection goes back to the pool. */
  async readSmall(limit: number): Promise<Buffer> {
    try {
      return await this.connection.readSmallBody(limit);
    } finally {
      this.release();
    }
  }

  /** The whole body, handed to `sink` without a copy; the connection goes back to the pool. */
  async readInto(sink: BodySink): Promise<void> {
    try {
      await this.connection.readBody(sink);
    } finally {
      this.release();
    }
  }

  /** Drops the connection: the body is not wanted. */
  abandon(): void {
    this.connection.destroy();
    this.release();
  }

  private release(): void {
    if (this.settled) return;
    this.settled = true;
    this.pool.release(this.connection);
  }
}

/** Keep-alive connections by route. */
export class ConnectionPool {
  private readonly idle = new Map<string, HttpConnection[]>();
  private readonly active = new Set<HttpConnection>();

  async acquire(
    route: Route,
    options: { timeoutMs: number; signal?: AbortSignal },
  ): Promise<{ connection: HttpConnection; reused: boolean }> {
    const list = this.idle.get(routeKey(route));
    while (list && list.length > 0) {
      const connection = list.pop() as HttpConnection;
      if (connection.isReusable) {
        this.active.add(connection);
        return { connection, reused: true };
      }
      connection.destroy();
    }
    return { connection: await this.open(route, options), reused: false };
  }

  /** A new connection, never a kept-alive one. */
  async open(route: Route, options: { timeoutMs: number; signal?: AbortSignal }): Promise<HttpConnection> {
    const connection = await HttpConnection.open(route, options);
    this.active.add(connection);
    return connection;
  }

  release(connection: HttpConnection): void {
    this.active.delete(connection);
    if (!connection.isReusable) {
      connection.destroy();
      return;
    }
    connection.unwatch();
    const list = this.idle.get(connection.key) ?? [];
    list.push(connection);
    this.idle.set(connection.key, list);
  }

  /** Ends every connection, busy or idle. */
  close(): void {
    for (const connection of this.active) connection.destroy();
    for (const list of this.idle.values()) for (const connection of list) connection.destroy();
    this.active.clear();
    this.idle.clear();
  }
}

export class DownloadClient {
  readonly pool = new ConnectionPool();

  constructor(private readonly auth: ApiAuth) {}

  /** GETs `url`, following redirects; resolves with the first answer that is not a redirect. */
  async get(url: string, options: GetOptions): Promise<Answer> {
    const deadlineAt = options.deadlineMs === undefined ? undefined : Date.now() + options.deadlineMs;
    let hop = firstHop(url, this.auth.apiOrigin);
    for (;;) {
      const answer = await this.send(hop, options, deadlineAt);
      const location = answer.header('location');
      if (!REDIRECT_STATUSES.has(answer.status) || location === undefined) return answer;
      await answer.readSmall(REDIRECT_BODY_LIMIT).catch(() => undefined);
      const next = nextHop(hop, location, this.auth.apiOrigin);
      if (options.maskQuery && next.url.search.length > 1) options.maskQuery(next.url.search.slice(1));
      options.print(`Redirected (HTTP ${answer.status}) to ${displayUrl(next.url.href)}`);
      hop = next;
    }
  }

  close(): void {
    this.pool.close();
  }

  private async send(hop: Hop, options: GetOptions, deadlineAt: number | undefined): Promise<Answer> {
    const headers: Array<[string, string]> = [
      ['User-Agent', USER_AGENT],
      ['Accept-Encoding', 'identity'],
      ...Object.entries(options.headers),
    ];
    if (hop.sendAuth) headers.push(['Authorization', `Bearer ${this.auth.apiKey}`]);
    const route = routeFor(hop.url);
    for (let fresh = false; ; fresh = true) {
      const left = deadlineAt === undefined ? undefined : deadlineAt - Date.now();
      if (left !== undefined && left <= 0) throw new DeadlineError(options.deadlineMs as number);
      const openTimeout = Math.min(options.stallMs, left ?? Number.POSITIVE_INFINITY);
      const { connection, reused } = fresh
        ? { connection: await this.openFresh(route, openTimeout, options.signal), reused: false }
        : await this.pool.acquire(route, { timeoutMs: openTimeout, signal: options.signal });
      // The stall timer covers a server that never answers; the deadline, when given, the whole chain.
      connection.watch({ stallMs: options.stallMs, deadlineMs: left === undefined ? undefined : left });
      const onAbort = () => connection.destroy(new Error('aborted'));
      options.signal?.addEventListener('abort', onAbort);
      try {
        const head = await connection.request(hop.url, headers);
        return new Answer(head, hop, connection, this.pool);
      } catch (error) {
        this.pool.release(connection);
        // A kept-alive connection the server had just closed: try once more on a new one.
        const stale = reused && connection.responseBytes === 0 && !(error instanceof StallError) && !(error instanceof DeadlineError);
        if (!stale || options.signal?.aborted) throw error;
      } finally {
        options.signal?.removeEventListener('abort', onAbort);
      }
    }
  }

  private async openFresh(route: Route, timeoutMs: number, signal?: AbortSignal): Promise<HttpConnection> {
    return this.pool.open(route, { timeoutMs, signal });
  }
}
