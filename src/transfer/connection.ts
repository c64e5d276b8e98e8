/**
 * One keep-alive HTTP/1.1 connection that reads its socket into fixed buffers of its own
 * (`net.connect` / `tls.connect` with `onread`): each read lands right after the previous one, and
 * a filled buffer is handed to the body's sink as it is, so a body byte is never copied in user
 * space and no memory is allocated per read. While the sink holds the other buffers (disk writes
 * still pending), this connection stops reading; the others go on.
 *
 * A read never lands in memory the sink still holds: after a read callback says stop, Node's TLS
 * layer still hands over the plaintext it has already decrypted, into the buffer set up for the
 * next read, so that buffer is always a free one.
 *
 * TLS inside a proxy's CONNECT tunnel is the one exception to "no copy": Node honours `onread`
 * only for a TLS socket it opens itself, so there the decrypted chunks are copied into the same
 * buffers as they come.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import {
  bodyFraming,
  ChunkedDecoder,
  type Framing,
  HeadParser,
  headerValue,
  keepsAlive,
  ProtocolError,
  type ResponseHead,
} from './http-head.js';

/** Each connection's read buffers: one being read into, the others free or being written. */
export const READ_BUFFERS = 3;
export const READ_BUFFER_BYTES = 256 * 1024;
/**
 * A buffer with less room than this is handed on and the next one is read into. It is more than a
 * TLS socket can hand over after a stop (one read of ciphertext, 64 KiB, and a record).
 */
const MIN_READ_ROOM = 128 * 1024;
/** Bytes held in a buffer longer than this are handed on at the next read, so a slow body still reaches the disk. */
const HOLD_MS = 250;

/** Where a connection goes: the origin it talks to, and the proxy that carries it, if any. */
export interface Route {
  /** `http:` or `https:` origin of the server. */
  origin: URL;
  /** The forward proxy (`http:` or `https:` URL, credentials allowed), when one is used. */
  proxy?: URL;
}

export function routeKey(route: Route): string {
  return `${route.proxy ? `${route.proxy.href} ` : ''}${route.origin.origin}`;
}

/** No byte for the stall timeout. */
export class StallError extends Error {
  constructor(readonly ms: number) {
    super(`no data for ${ms / 1000} s`);
    this.name = 'StallError';
  }
}

/** The overall deadline passed. */
export class DeadlineError extends Error {
  constructor(readonly ms: number) {
    super(`no complete answer within ${ms / 1000} s`);
    this.name = 'DeadlineError';
  }
}

/** The proxy refused to open a tunnel. */
export class ProxyRefusedError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    readonly proxy: URL,
    readonly target: string,
  ) {
    super(`the proxy answered HTTP ${status}${reason ? ` ${reason}` : ''} to CONNECT ${target}`);
    this.name = 'ProxyRefusedError';
  }
}

/** A failure while opening a connection: `cause` is the system's or TLS's error. */
export class ConnectError extends Error {
  constructor(
    readonly cause: Error,
    /** `host:port` that was being reached (the proxy's, for `viaProxy`). */
    readonly endpoint: string,
    readonly viaProxy: boolean,
    readonly tlsHost?: string,
  ) {
    super(cause.message);
    this.name = 'ConnectError';
  }
}

/** Receives a body: `buf[start, end)` stays valid until `done()` is called. */
export interface BodySink {
  data(buf: Buffer, start: number, end: number, done: () => void): void;
}

export interface OpenOptions {
  /** Gives up opening (DNS, TCP, proxy, TLS) after this long. */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Certificate authorities to trust instead of Node's (with NODE_EXTRA_CA_CERTS); for tests. */
  ca?: Buffer;
}

const isIp = (host: string) => net.isIP(host.replace(/^\[|\]$/g, '')) !== 0;
const bareHost = (host: string) => host.replace(/^\[|\]$/g, '');
const portOf = (url: URL) => Number(url.port || (url.protocol === 'https:' ? 443 : 80));

type Phase = 'idle' | 'head' | 'body' | 'closed';

/** Bytes `[start, end)` of one of the buffers. */
interface Region {
  index: number;
  start: number;
  end: number;
}

export class HttpConnection {
  readonly key: string;
  /** Requests this connection has carried. */
  requests = 0;
  /** Bytes read for the current response, head included. */
  responseBytes = 0;
  private socket!: net.Socket;
  private readonly buffers = Array.from({ length: READ_BUFFERS }, () => Buffer.allocUnsafe(READ_BUFFER_BYTES));
  /** Regions of each buffer the sink still holds. */
  private readonly outstanding = new Array<number>(READ_BUFFERS).fill(0);
  // Node asks for the next read's buffer right after each read, so `current` and `fill` (where
  // the next read lands) change only inside `onRead`.
  private current = 0;
  private fill = 0;
  /** Where the bytes of the current buffer not yet handed on start. */
  private regionStart = 0;
  /** A full buffer's body bytes that could not be handed on yet (no sink). */
  private held?: Region;
  private heldSince = 0;
  private paused = false;
  private phase: Phase = 'idle';
  private parser = new HeadParser();
  private head?: ResponseHead;
  private framing: Framing = { kind: 'none' };
  private bodyLeft = 0;
  /** Every body byte has arrived (it may not all be handed on yet). */
  private bodyArrived = false;
  private chunked?: ChunkedDecoder;
  private sink?: BodySink;
  /** A copy of the body, for small bodies (`readSmallBody`). */
  private collect?: { chunks: Buffer[]; length: number; limit: number };
  /** Bytes beyond the response, or a body cut off on purpose: the connection cannot carry another request. */
  private spoilt = false;
  /** Bytes at the end of what is not handed on yet that lie past a body cut short by `limitBody`. */
  private excess = 0;
  private ended = false;
  private failure?: Error;
  private waiter?: { resolve: (head?: ResponseHead) => void; reject: (e: Error) => void };
  private stall?: NodeJS.Timeout;
  private deadline?: NodeJS.Timeout;
  /** In copy mode (TLS in a tunnel): what is left of a chunk that came while reading had to stop. */
  private leftover?: Buffer;
  private copyMode = false;

  private constructor(readonly route: Route) {
    this.key = routeKey(route);
  }

  /** Opens a connection along `route`: TCP, a CONNECT tunnel through a proxy, TLS. */
  static async open(route: Route, options: OpenOptions): Promise<HttpConnection> {
    const connection = new HttpConnection(route);
    await connection.connect(options);
    return connection;
  }

  get alive(): boolean {
    return this.phase !== 'closed' && !this.socket.destroyed && !this.ended;
  }

  /** Idle and able to carry another request. */
  get isReusable(): boolean {
    return this.alive && this.phase === 'idle' && !this.spoilt;
  }

  /** How the current response's body is framed. */
  get bodyFraming(): Framing {
    return this.framing;
  }

  /**
   * Sends a GET for `target` (origin-form, or absolute-form through an http proxy) and resolves
   * with the final response head (1xx heads are skipped). Timers set with `watch` apply.
   */
  async request(target: URL, headers: Array<[string, string]>): Promise<ResponseHead> {
    if (!this.alive) throw this.failure ?? new Error('the connection is closed');
    if (this.phase !== 'idle') throw new Error('a request is already under way on this connection');
    const viaHttpProxy = this.route.proxy !== undefined && target.protocol === 'http:';
    const path = `${target.pathname}${target.search}`;
    const lines = [`GET ${viaHttpProxy ? `${target.origin}${path}` : path} HTTP/1.1`, `Host: ${target.host}`];
    for (const [name, value] of headers) lines.push(`${name}: ${value}`);
    const auth = viaHttpProxy ? proxyAuthorization(this.route.proxy as URL) : undefined;
    if (auth) lines.push(`Proxy-Authorization: ${auth}`);
    this.phase = 'head';
    this.head = undefined;
    this.bodyArrived = false;
    this.responseBytes = 0;
    this.requests++;
    const head = new Promise<ResponseHead | undefined>((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
    this.socket.write(Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'));
    return (await head) as ResponseHead;
  }

  /**
   * A stall timer restarted at every read (`stallMs`) and an overall deadline (`deadlineMs` from
   * now) for what this connection does next; either destroys the connection when it fires.
   */
  watch({ stallMs, deadlineMs }: { stallMs?: number; deadlineMs?: number }): void {
    this.unwatch();
    if (stallMs !== undefined) this.stall = setTimeout(() => this.destroy(new StallError(stallMs)), stallMs);
    if (deadlineMs !== undefined) this.deadline = setTimeout(() => this.destroy(new DeadlineError(deadlineMs)), Math.max(0, deadlineMs));
  }

  unwatch(): void {
    clearTimeout(this.stall);
    clearTimeout(this.deadline);
    this.stall = this.deadline = undefined;
  }

  /**
   * Takes the body to be `length` bytes, whatever its Content-Length said (a 206 whose Content-Range
   * is right but whose length is not). Bytes past it are not handed on, and the connection is not
   * used again.
   */
  limitBody(length: number): void {
    if (this.phase !== 'body' || this.framing.kind !== 'length' || this.framing.length === length) return;
    const arrived = this.framing.length - this.bodyLeft;
    this.framing = { kind: 'length', length };
    this.bodyLeft = Math.max(0, length - arrived);
    this.excess = Math.max(0, arrived - length);
    this.spoilt = true;
    if (this.bodyLeft === 0) this.bodyArrived = true;
  }

  /**
   * Streams the body into `sink` without copying it; resolves once the last byte was handed on,
   * rejects when the connection fails first (after handing on every byte that arrived). Only a
   * length or the end of the connection may frame such a body: a chunked one is refused.
   */
  readBody(sink: BodySink): Promise<void> {
    if (this.phase !== 'body') return this.failure ? Promise.reject(this.failure) : Promise.resolve();
    if (this.framing.kind === 'chunked') return Promise.reject(new ProtocolError('a chunked body where a plain one was expected'));
    this.sink = sink;
    const finished = this.bodyWaiter();
    this.handOn();
    if (this.bodyArrived) this.endBody();
    this.resumeIfAble();
    return finished;
  }

  /**
   * Reads at most `limit` bytes of the body into memory (any framing). A longer body is cut off:
   * the connection is closed rather than read to its end. A body that breaks off after some bytes
   * still yields them.
   */
  async readSmallBody(limit: number): Promise<Buffer> {
    if (this.phase !== 'body') {
      if (this.failure) throw this.failure;
      return Buffer.alloc(0);
    }
    const collect = { chunks: [] as Buffer[], length: 0, limit };
    this.collect = collect;
    const finished = this.bodyWaiter();
    // Bytes that came before the collector: a plain body's are already counted against its length.
    const counted = this.framing.kind !== 'chunked';
    if (this.held) this.collectFrom(this.held.index, this.held.start, this.held.end, counted);
    this.held = undefined;
    this.collectFrom(this.current, this.regionStart, this.fill, counted);
    this.regionStart = this.fill;
    if (this.phase === 'body' && this.bodyArrived) this.endBody();
    this.resumeIfAble();
    try {
      await finished;
    } catch (error) {
      if (collect.length === 0) throw error;
    } finally {
      this.collect = undefined;
    }
    return Buffer.concat(collect.chunks, collect.length);
  }

  /** Ends the connection; a request under way fails with `error` (or "closed"). */
  destroy(error?: Error): void {
    this.failure ??= error ?? new Error('the connection was closed');
    this.socket?.destroy();
    this.finish();
  }

  // --- opening ------------------------------------------------------------------------------

  private async connect(options: OpenOptions): Promise<void> {
    const { origin, proxy } = this.route;
    let opening: net.Socket | undefined;
    const timer = setTimeout(() => opening?.destroy(new Error(`no connection within ${options.timeoutMs / 1000} s`)), options.timeoutMs);
    const onAbort = () => opening?.destroy(new Error('aborted'));
    options.signal?.addEventListener('abort', onAbort);
    const onread = { buffer: () => this.nextView(), callback: (n: number) => this.onRead(n) };
    try {
      const secure = origin.protocol === 'https:';
      if (!proxy || !secure) {
        // Straight to the server, or plain http through a proxy (absolute-form requests to it).
        const peer = proxy ?? origin;
        const tlsToPeer = peer.protocol === 'https:';
        const host = bareHost(peer.hostname);
        opening = tlsToPeer
          ? tls.connect(withOnread({ ...tlsOptions(peer), ca: options.ca }, onread))
          : net.connect({ host, port: portOf(peer), onread });
        await connected(opening, tlsToPeer, `${peer.hostname}:${portOf(peer)}`, proxy !== undefined, tlsToPeer ? peer.hostname : undefined);
      } else {
        // https through a proxy: a CONNECT tunnel, then TLS with the server inside it.
        const tunnel = await openTunnel(proxy, origin, (s) => {
          opening = s;
        });
        opening = tls.connect({ socket: tunnel, ...tlsOptions(origin), ca: options.ca });
        this.copyMode = true;
        await connected(opening, true, `${origin.hostname}:${portOf(origin)}`, false, origin.hostname);
      }
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    }
    this.socket = opening;
    this.socket.setNoDelay(true);
    if (this.copyMode) {
      this.socket.on('data', (chunk: Buffer) => this.onChunk(chunk));
    } else {
      // With `onread` honoured no 'data' event ever comes; one would mean this Node.js reads sockets differently.
      this.socket.on('data', () => this.destroy(new Error('this Node.js version does not read sockets into a given buffer (onread)')));
    }
    this.socket.on('error', (error) => {
      this.failure ??= error;
    });
    this.socket.on('end', () => {
      this.ended = true;
      this.onEnd();
    });
    this.socket.on('close', () => {
      this.failure ??= new Error('the connection was closed');
      this.finish();
    });
  }

  // --- reading ------------------------------------------------------------------------------

  /** Where the next read lands: right after the bytes already in the current buffer. */
  private nextView(): Buffer {
    return this.buffers[this.current].subarray(this.fill);
  }

  /** Copy mode: a chunk goes into the buffers as reads would have put it there. */
  private onChunk(chunk: Buffer): void {
    for (let offset = 0; offset < chunk.length; ) {
      if (this.paused) {
        this.leftover = this.leftover ? Buffer.concat([this.leftover, chunk.subarray(offset)]) : chunk.subarray(offset);
        this.socket.pause();
        return;
      }
      const view = this.nextView();
      const n = Math.min(view.length, chunk.length - offset);
      chunk.copy(view, 0, offset, offset + n);
      offset += n;
      if (!this.onRead(n)) {
        this.paused = true;
        this.socket.pause();
      }
      if (this.phase === 'closed') return;
    }
  }

  /** One read of `n` bytes at `fill` of the current buffer. Returns false to stop reading for now. */
  private onRead(n: number): boolean {
    this.stall?.refresh();
    this.responseBytes += n;
    const start = this.fill;
    this.fill += n;
    try {
      this.consume(start);
    } catch (error) {
      this.destroy(error as Error);
      return false;
    }
    return this.afterRead();
  }

  private consume(start: number): void {
    const buf = this.buffers[this.current];
    let from = start;
    if (this.phase === 'idle' || this.phase === 'closed') {
      this.spoilt = true;
      throw new ProtocolError('the server sent data without a request');
    }
    while (this.phase === 'head') {
      const at = this.parser.feed(buf, from, this.fill);
      if (at === -1) {
        // The head's bytes are copied into the parser: their room in the buffer can be reused.
        this.fill = this.regionStart;
        return;
      }
      const head = this.parser.parse();
      from = at;
      if (head.status >= 100 && head.status < 200) {
        if (head.status === 101) throw new ProtocolError('the server switched protocols (HTTP 101)');
        continue; // 100 Continue, 103 Early Hints: the real answer follows.
      }
      this.startBody(head);
      this.regionStart = from;
      const waiter = this.waiter;
      this.waiter = undefined;
      waiter?.resolve(head);
    }
    if (this.phase !== 'body') return;
    if (this.collect) {
      this.collectFrom(this.current, from, this.fill);
      this.regionStart = this.fill;
      if (this.bodyArrived && this.phase === 'body') this.endBody();
      return;
    }
    if (this.framing.kind === 'chunked') return; // read by `readSmallBody` only
    const arrived = this.fill - from;
    if (arrived > this.bodyLeft) {
      // More than the response: nothing is pipelined, so the server misbehaves. Drop the excess
      // and the connection with it.
      this.spoilt = true;
      this.fill = from + this.bodyLeft;
    }
    this.bodyLeft -= Math.min(arrived, this.bodyLeft);
    if (this.bodyLeft === 0) {
      this.bodyArrived = true;
      if (this.sink) {
        this.handOn();
        this.endBody();
      }
    }
  }

  private startBody(head: ResponseHead): void {
    this.head = head;
    this.framing = bodyFraming(head);
    this.phase = 'body';
    this.chunked = this.framing.kind === 'chunked' ? new ChunkedDecoder() : undefined;
    this.bodyLeft = this.framing.kind === 'length' ? this.framing.length : this.framing.kind === 'none' ? 0 : Number.POSITIVE_INFINITY;
    this.bodyArrived = this.bodyLeft === 0;
  }

  /** Copies body bytes `[from, to)` of a buffer into the collector, decoding chunks; `counted` bytes are already trimmed to the body. */
  private collectFrom(index: number, from: number, to: number, counted = false): void {
    const collect = this.collect as NonNullable<HttpConnection['collect']>;
    const buf = this.buffers[index];
    const take = (a: number, b: number) => {
      const n = Math.min(collect.limit - collect.length, b - a);
      if (n <= 0) return;
      collect.chunks.push(Buffer.from(buf.subarray(a, a + n)));
      collect.length += n;
    };
    if (counted) {
      take(from, to);
    } else if (this.chunked) {
      const { done, rest } = this.chunked.push(buf, from, to, take);
      if (done) {
        if (rest < to) this.spoilt = true;
        this.bodyArrived = true;
      }
    } else {
      const n = Math.min(to - from, this.bodyLeft);
      if (to - from > this.bodyLeft) this.spoilt = true;
      take(from, from + n);
      this.bodyLeft -= n;
      if (this.bodyLeft === 0) this.bodyArrived = true;
    }
    if (!this.bodyArrived && collect.length >= collect.limit) {
      // The rest of the body is not wanted: drop the connection rather than read it.
      this.spoilt = true;
      this.bodyArrived = true;
    }
  }

  /** After a read: hand on what is due, move to the other buffer when this one is full, and say whether to read on. */
  private afterRead(): boolean {
    if (this.phase === 'closed') return false;
    const now = Date.now();
    if (this.sink) {
      if (this.fill > this.regionStart && this.heldSince === 0) this.heldSince = now;
      const full = READ_BUFFER_BYTES - this.fill < MIN_READ_ROOM;
      if (full || now - this.heldSince > HOLD_MS) this.handOn();
    } else if (this.fill === this.regionStart && this.outstanding[this.current] === 0) {
      // Nothing of this buffer is kept: start it again from the top.
      this.fill = this.regionStart = 0;
    }
    if (READ_BUFFER_BYTES - this.fill < MIN_READ_ROOM) {
      // Without a sink the bytes are put aside (one region at most) until one comes.
      if (this.fill > this.regionStart && !this.held) {
        this.held = { index: this.current, start: this.regionStart, end: this.fill };
        this.regionStart = this.fill;
      }
      // Reading went on only while another buffer was free; only the data a TLS socket hands over
      // after a stop can fill this one while none is, and then the reading stays stopped here.
      const next = this.fill === this.regionStart ? this.freeBuffer(this.current) : undefined;
      if (next !== undefined) {
        this.current = next;
        this.fill = this.regionStart = 0;
      } else if (this.fill >= READ_BUFFER_BYTES) {
        this.destroy(new Error('internal error: no room left to read into'));
        return false;
      }
    }
    const able = this.canRead();
    if (!able) this.paused = true;
    return able;
  }

  private isFree(index: number): boolean {
    return this.outstanding[index] === 0 && this.held?.index !== index;
  }

  private freeBuffer(except: number): number | undefined {
    for (let i = 0; i < READ_BUFFERS; i++) if (i !== except && this.isFree(i)) return i;
    return undefined;
  }

  /**
   * Whether to read on: only while another buffer is free to move on to when the current one is
   * full (a TLS socket may still hand over some data after a stop, into the current buffer).
   */
  private canRead(): boolean {
    if (this.held && !this.sink) return false;
    return this.freeBuffer(this.current) !== undefined;
  }

  private resumeIfAble(): void {
    if (!this.paused || this.phase === 'closed' || !this.canRead()) return;
    this.paused = false;
    const leftover = this.leftover;
    this.leftover = undefined;
    if (leftover) this.onChunk(leftover);
    if (!this.paused) this.socket.resume();
  }

  /** Hands the held region and the current buffer's new bytes to the sink (without moving where reads land). */
  private handOn(): void {
    const sink = this.sink;
    if (!sink) return;
    this.heldSince = 0;
    // What lies past a body cut short is left out: from the open region first, then the held one.
    const dropOpen = Math.min(this.excess, this.fill - this.regionStart);
    if (this.held && this.excess > dropOpen) this.held.end -= Math.min(this.excess - dropOpen, this.held.end - this.held.start);
    this.excess = 0;
    if (this.held) {
      const held = this.held;
      this.held = undefined;
      if (held.end > held.start) this.lend(sink, held);
    }
    if (this.fill - dropOpen > this.regionStart)
      this.lend(sink, { index: this.current, start: this.regionStart, end: this.fill - dropOpen });
    this.regionStart = this.fill;
  }

  private lend(sink: BodySink, region: Region): void {
    this.outstanding[region.index]++;
    let returned = false;
    sink.data(this.buffers[region.index], region.start, region.end, () => {
      if (returned) return;
      returned = true;
      this.outstanding[region.index]--;
      this.resumeIfAble();
    });
  }

  private onEnd(): void {
    if (this.phase !== 'body' || this.framing.kind !== 'close') return;
    this.bodyArrived = true;
    this.spoilt = true; // the connection ends with the body
    if (this.collect) this.endBody();
    else if (this.sink) {
      this.handOn();
      this.endBody();
    }
  }

  /** The body is handed on whole: the connection is free for the next request, or closes. */
  private endBody(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    this.sink = undefined;
    this.unwatch();
    const reusable = keepsAlive(this.head as ResponseHead) && !this.spoilt && !this.ended;
    this.phase = reusable ? 'idle' : 'closed';
    if (!reusable) this.socket.destroy();
    waiter?.resolve();
  }

  private bodyWaiter(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiter = { resolve: () => resolve(), reject };
    });
  }

  /** The socket is gone: hand on what arrived, then fail whatever waits. */
  private finish(): void {
    if (this.phase === 'body' && this.sink) this.handOn();
    this.phase = 'closed';
    this.sink = undefined;
    this.unwatch();
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.failure ?? new Error('the connection was closed'));
  }
}

/**
 * `onread` for a TLS socket: not in the typings, but TLSSocket hands its options to net.Socket,
 * which reads the decrypted stream into the given buffer (Node.js 20 and 24 alike).
 */
function withOnread(options: tls.ConnectionOptions, onread: net.OnReadOpts): tls.ConnectionOptions {
  return { ...options, onread } as tls.ConnectionOptions;
}

function tlsOptions(url: URL): tls.ConnectionOptions {
  const host = bareHost(url.hostname);
  // SNI carries a name, never an address; the certificate is checked against either.
  return { host, port: portOf(url), servername: isIp(host) ? undefined : host, ALPNProtocols: ['http/1.1'] };
}

function proxyAuthorization(proxy: URL): string | undefined {
  if (!proxy.username && !proxy.password) return undefined;
  const user = decodeURIComponent(proxy.username);
  const password = decodeURIComponent(proxy.password);
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

/** Resolves once `socket` is connected (and its TLS handshake done); wraps a failure in a ConnectError. */
function connected(socket: net.Socket, secure: boolean, endpoint: string, viaProxy: boolean, tlsHost?: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const event = secure ? 'secureConnect' : 'connect';
    const onError = (error: Error) => {
      socket.off(event, onConnect);
      socket.destroy();
      reject(new ConnectError(error, endpoint, viaProxy, tlsHost));
    };
    const onClose = () => onError(new Error('the connection closed while opening'));
    const onConnect = () => {
      socket.off('error', onError);
      socket.off('close', onClose);
      resolve();
    };
    socket.once(event, onConnect);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
}

/** A CONNECT tunnel through `proxy` to `origin`; the proxy's refusal is a ProxyRefusedError. */
async function openTunnel(proxy: URL, origin: URL, track: (s: net.Socket) => void): Promise<net.Socket> {
  const endpoint = `${proxy.hostname}:${portOf(proxy)}`;
  const secure = proxy.protocol === 'https:';
  const socket = secure
    ? tls.connect({ host: bareHost(proxy.hostname), port: portOf(proxy), ...tlsOptions(proxy) })
    : net.connect({ host: bareHost(proxy.hostname), port: portOf(proxy) });
  track(socket);
  await connected(socket, secure, endpoint, true, secure ? proxy.hostname : undefined);
  const target = `${origin.hostname}:${portOf(origin)}`;
  const lines = [`CONNECT ${target} HTTP/1.1`, `Host: ${target}`];
  const auth = proxyAuthorization(proxy);
  if (auth) lines.push(`Proxy-Authorization: ${auth}`);
  socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  const parser = new HeadParser();
  const head = await new Promise<ResponseHead>((resolve, reject) => {
    const fail = (error: Error) => {
      cleanup();
      socket.destroy();
      reject(new ConnectError(error, endpoint, true));
    };
    const onClose = () => fail(new Error('the proxy closed the connection during CONNECT'));
    const onData = (chunk: Buffer) => {
      try {
        const at = parser.feed(chunk, 0, chunk.length);
        if (at === -1) return;
        cleanup();
        socket.pause();
        // The client speaks first in TLS: a proxy that sends more after its answer is broken.
        if (at < chunk.length) throw new ProtocolError('the proxy sent data after its answer to CONNECT');
        resolve(parser.parse());
      } catch (error) {
        fail(error as Error);
      }
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('error', fail);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.once('error', fail);
    socket.once('close', onClose);
  });
  if (head.status < 200 || head.status > 299) {
    socket.destroy();
    throw new ProxyRefusedError(head.status, head.reason, proxy, target);
  }
  return socket;
}

/** The response's `Content-Encoding`, lower-cased; undefined for none or `identity`. */
export function contentEncoding(head: ResponseHead): string | undefined {
  const value = headerValue(head, 'content-encoding')?.trim().toLowerCase();
  return value === undefined || value === '' || value === 'identity' ? undefined : value;
}
