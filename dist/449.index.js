export const id = 449;
export const ids = [449];
export const modules = {

/***/ 83916:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   bD: () => (/* binding */ messageOf),
/* harmony export */   dz: () => (/* binding */ InputError),
/* harmony export */   lZ: () => (/* binding */ ActionError)
/* harmony export */ });
/**
 * An error whose message is written for the person reading the workflow log: it says what went
 * wrong and what to change. `run()` prints it as it is, without a stack trace.
 */
class ActionError extends Error {
    constructor(message, options) {
        super(message, options);
        this.name = 'ActionError';
    }
}
/** An input that fails validation; the message always starts with the input's name. */
class InputError extends ActionError {
    input;
    constructor(input, problem) {
        super(`Input \`${input}\`: ${problem}`);
        this.input = input;
        this.name = 'InputError';
    }
}
/** The text of anything thrown, Error or not. */
function messageOf(error) {
    if (error instanceof Error)
        return error.message || error.name;
    if (typeof error === 'string')
        return error;
    try {
        return JSON.stringify(error) ?? String(error);
    }
    catch {
        return String(error);
    }
}


/***/ }),

/***/ 16264:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   DB: () => (/* binding */ formatSpeed),
/* harmony export */   Qy: () => (/* binding */ displayUrl),
/* harmony export */   a3: () => (/* binding */ formatDuration),
/* harmony export */   z3: () => (/* binding */ formatBytes)
/* harmony export */ });
const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
/** `1536` -> `1.5 KiB`: binary units, one decimal from KiB up. */
function formatBytes(bytes) {
    let value = bytes;
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
        value /= 1024;
        unit++;
    }
    return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}
/** `3725` seconds -> `1h 02m 05s`; short durations stay short (`4s`, `2m 05s`). */
function formatDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0)
        return '?';
    const total = Math.round(seconds);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    const pad = (n) => String(n).padStart(2, '0');
    if (h > 0)
        return `${h}h ${pad(m)}m ${pad(s)}s`;
    if (m > 0)
        return `${m}m ${pad(s)}s`;
    return `${s}s`;
}
/** Bytes per second as `12.3 MiB/s`. */
function formatSpeed(bytesPerSecond) {
    return `${formatBytes(Math.max(0, Math.round(bytesPerSecond)))}/s`;
}
/** A URL safe to log: signed storage URLs carry their credentials in the query, so drop it. */
function displayUrl(url) {
    try {
        const parsed = new URL(url);
        return `${parsed.origin}${parsed.pathname}${parsed.search ? '?…' : ''}`;
    }
    catch {
        return '(invalid URL)';
    }
}


/***/ }),

/***/ 62895:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   Ne: () => (/* binding */ ProxyRefusedError),
/* harmony export */   R1: () => (/* binding */ contentEncoding),
/* harmony export */   T$: () => (/* binding */ ConnectError),
/* harmony export */   V6: () => (/* binding */ HttpConnection),
/* harmony export */   Xz: () => (/* binding */ StallError),
/* harmony export */   j3: () => (/* binding */ DeadlineError),
/* harmony export */   vh: () => (/* binding */ routeKey)
/* harmony export */ });
/* unused harmony exports READ_BUFFERS, READ_BUFFER_BYTES */
/* harmony import */ var node_net__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(77030);
/* harmony import */ var node_net__WEBPACK_IMPORTED_MODULE_0___default = /*#__PURE__*/__webpack_require__.n(node_net__WEBPACK_IMPORTED_MODULE_0__);
/* harmony import */ var node_tls__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(41692);
/* harmony import */ var node_tls__WEBPACK_IMPORTED_MODULE_1___default = /*#__PURE__*/__webpack_require__.n(node_tls__WEBPACK_IMPORTED_MODULE_1__);
/* harmony import */ var _http_head_js__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(45562);
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



/** Each connection's read buffers: one being read into, the others free or being written. */
const READ_BUFFERS = 3;
const READ_BUFFER_BYTES = 256 * 1024;
/**
 * A buffer with less room than this is handed on and the next one is read into. It is more than a
 * TLS socket can hand over after a stop (one read of ciphertext, 64 KiB, and a record).
 */
const MIN_READ_ROOM = 128 * 1024;
/** Bytes held in a buffer longer than this are handed on at the next read, so a slow body still reaches the disk. */
const HOLD_MS = 250;
function routeKey(route) {
    return `${route.proxy ? `${route.proxy.href} ` : ''}${route.origin.origin}`;
}
/** No byte for the stall timeout. */
class StallError extends Error {
    ms;
    constructor(ms) {
        super(`no data for ${ms / 1000} s`);
        this.ms = ms;
        this.name = 'StallError';
    }
}
/** The overall deadline passed. */
class DeadlineError extends Error {
    ms;
    constructor(ms) {
        super(`no complete answer within ${ms / 1000} s`);
        this.ms = ms;
        this.name = 'DeadlineError';
    }
}
/** The proxy refused to open a tunnel. */
class ProxyRefusedError extends Error {
    status;
    reason;
    proxy;
    target;
    constructor(status, reason, proxy, target) {
        super(`the proxy answered HTTP ${status}${reason ? ` ${reason}` : ''} to CONNECT ${target}`);
        this.status = status;
        this.reason = reason;
        this.proxy = proxy;
        this.target = target;
        this.name = 'ProxyRefusedError';
    }
}
/** A failure while opening a connection: `cause` is the system's or TLS's error. */
class ConnectError extends Error {
    cause;
    endpoint;
    viaProxy;
    tlsHost;
    constructor(cause, 
    /** `host:port` that was being reached (the proxy's, for `viaProxy`). */
    endpoint, viaProxy, tlsHost) {
        super(cause.message);
        this.cause = cause;
        this.endpoint = endpoint;
        this.viaProxy = viaProxy;
        this.tlsHost = tlsHost;
        this.name = 'ConnectError';
    }
}
const isIp = (host) => node_net__WEBPACK_IMPORTED_MODULE_0__.isIP(host.replace(/^\[|\]$/g, '')) !== 0;
const bareHost = (host) => host.replace(/^\[|\]$/g, '');
const portOf = (url) => Number(url.port || (url.protocol === 'https:' ? 443 : 80));
class HttpConnection {
    route;
    key;
    /** Requests this connection has carried. */
    requests = 0;
    /** Bytes read for the current response, head included. */
    responseBytes = 0;
    socket;
    buffers = Array.from({ length: READ_BUFFERS }, () => Buffer.allocUnsafe(READ_BUFFER_BYTES));
    /** Regions of each buffer the sink still holds. */
    outstanding = new Array(READ_BUFFERS).fill(0);
    // Node asks for the next read's buffer right after each read, so `current` and `fill` (where
    // the next read lands) change only inside `onRead`.
    current = 0;
    fill = 0;
    /** Where the bytes of the current buffer not yet handed on start. */
    regionStart = 0;
    /** A full buffer's body bytes that could not be handed on yet (no sink). */
    held;
    heldSince = 0;
    paused = false;
    phase = 'idle';
    parser = new _http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .HeadParser */ .uG();
    head;
    framing = { kind: 'none' };
    bodyLeft = 0;
    /** Every body byte has arrived (it may not all be handed on yet). */
    bodyArrived = false;
    chunked;
    sink;
    /** A copy of the body, for small bodies (`readSmallBody`). */
    collect;
    /** Bytes beyond the response, or a body cut off on purpose: the connection cannot carry another request. */
    spoilt = false;
    /** Bytes at the end of what is not handed on yet that lie past a body cut short by `limitBody`. */
    excess = 0;
    ended = false;
    failure;
    waiter;
    stall;
    deadline;
    /** In copy mode (TLS in a tunnel): what is left of a chunk that came while reading had to stop. */
    leftover;
    copyMode = false;
    constructor(route) {
        this.route = route;
        this.key = routeKey(route);
    }
    /** Opens a connection along `route`: TCP, a CONNECT tunnel through a proxy, TLS. */
    static async open(route, options) {
        const connection = new HttpConnection(route);
        await connection.connect(options);
        return connection;
    }
    get alive() {
        return this.phase !== 'closed' && !this.socket.destroyed && !this.ended;
    }
    /** Idle and able to carry another request. */
    get isReusable() {
        return this.alive && this.phase === 'idle' && !this.spoilt;
    }
    /** How the current response's body is framed. */
    get bodyFraming() {
        return this.framing;
    }
    /**
     * Sends a GET for `target` (origin-form, or absolute-form through an http proxy) and resolves
     * with the final response head (1xx heads are skipped). Timers set with `watch` apply.
     */
    async request(target, headers) {
        if (!this.alive)
            throw this.failure ?? new Error('the connection is closed');
        if (this.phase !== 'idle')
            throw new Error('a request is already under way on this connection');
        const viaHttpProxy = this.route.proxy !== undefined && target.protocol === 'http:';
        const path = `${target.pathname}${target.search}`;
        const lines = [`GET ${viaHttpProxy ? `${target.origin}${path}` : path} HTTP/1.1`, `Host: ${target.host}`];
        for (const [name, value] of headers)
            lines.push(`${name}: ${value}`);
        const auth = viaHttpProxy ? proxyAuthorization(this.route.proxy) : undefined;
        if (auth)
            lines.push(`Proxy-Authorization: ${auth}`);
        this.phase = 'head';
        this.head = undefined;
        this.bodyArrived = false;
        this.responseBytes = 0;
        this.requests++;
        const head = new Promise((resolve, reject) => {
            this.waiter = { resolve, reject };
        });
        this.socket.write(Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'));
        return (await head);
    }
    /**
     * A stall timer restarted at every read (`stallMs`) and an overall deadline (`deadlineMs` from
     * now) for what this connection does next; either destroys the connection when it fires.
     */
    watch({ stallMs, deadlineMs }) {
        this.unwatch();
        if (stallMs !== undefined)
            this.stall = setTimeout(() => this.destroy(new StallError(stallMs)), stallMs);
        if (deadlineMs !== undefined)
            this.deadline = setTimeout(() => this.destroy(new DeadlineError(deadlineMs)), Math.max(0, deadlineMs));
    }
    unwatch() {
        clearTimeout(this.stall);
        clearTimeout(this.deadline);
        this.stall = this.deadline = undefined;
    }
    /**
     * Takes the body to be `length` bytes, whatever its Content-Length said (a 206 whose Content-Range
     * is right but whose length is not). Bytes past it are not handed on, and the connection is not
     * used again.
     */
    limitBody(length) {
        if (this.phase !== 'body' || this.framing.kind !== 'length' || this.framing.length === length)
            return;
        const arrived = this.framing.length - this.bodyLeft;
        this.framing = { kind: 'length', length };
        this.bodyLeft = Math.max(0, length - arrived);
        this.excess = Math.max(0, arrived - length);
        this.spoilt = true;
        if (this.bodyLeft === 0)
            this.bodyArrived = true;
    }
    /**
     * Streams the body into `sink` without copying it; resolves once the last byte was handed on,
     * rejects when the connection fails first (after handing on every byte that arrived). Only a
     * length or the end of the connection may frame such a body: a chunked one is refused.
     */
    readBody(sink) {
        if (this.phase !== 'body')
            return this.failure ? Promise.reject(this.failure) : Promise.resolve();
        if (this.framing.kind === 'chunked')
            return Promise.reject(new _http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .ProtocolError */ .bd('a chunked body where a plain one was expected'));
        this.sink = sink;
        const finished = this.bodyWaiter();
        this.handOn();
        if (this.bodyArrived)
            this.endBody();
        this.resumeIfAble();
        return finished;
    }
    /**
     * Reads at most `limit` bytes of the body into memory (any framing). A longer body is cut off:
     * the connection is closed rather than read to its end. A body that breaks off after some bytes
     * still yields them.
     */
    async readSmallBody(limit) {
        if (this.phase !== 'body') {
            if (this.failure)
                throw this.failure;
            return Buffer.alloc(0);
        }
        const collect = { chunks: [], length: 0, limit };
        this.collect = collect;
        const finished = this.bodyWaiter();
        // Bytes that came before the collector: a plain body's are already counted against its length.
        const counted = this.framing.kind !== 'chunked';
        if (this.held)
            this.collectFrom(this.held.index, this.held.start, this.held.end, counted);
        this.held = undefined;
        this.collectFrom(this.current, this.regionStart, this.fill, counted);
        this.regionStart = this.fill;
        if (this.phase === 'body' && this.bodyArrived)
            this.endBody();
        this.resumeIfAble();
        try {
            await finished;
        }
        catch (error) {
            if (collect.length === 0)
                throw error;
        }
        finally {
            this.collect = undefined;
        }
        return Buffer.concat(collect.chunks, collect.length);
    }
    /** Ends the connection; a request under way fails with `error` (or "closed"). */
    destroy(error) {
        this.failure ??= error ?? new Error('the connection was closed');
        this.socket?.destroy();
        this.finish();
    }
    // --- opening ------------------------------------------------------------------------------
    async connect(options) {
        const { origin, proxy } = this.route;
        let opening;
        const timer = setTimeout(() => opening?.destroy(new Error(`no connection within ${options.timeoutMs / 1000} s`)), options.timeoutMs);
        const onAbort = () => opening?.destroy(new Error('aborted'));
        options.signal?.addEventListener('abort', onAbort);
        const onread = { buffer: () => this.nextView(), callback: (n) => this.onRead(n) };
        try {
            const secure = origin.protocol === 'https:';
            if (!proxy || !secure) {
                // Straight to the server, or plain http through a proxy (absolute-form requests to it).
                const peer = proxy ?? origin;
                const tlsToPeer = peer.protocol === 'https:';
                const host = bareHost(peer.hostname);
                opening = tlsToPeer
                    ? node_tls__WEBPACK_IMPORTED_MODULE_1__.connect(withOnread({ ...tlsOptions(peer), ca: options.ca }, onread))
                    : node_net__WEBPACK_IMPORTED_MODULE_0__.connect({ host, port: portOf(peer), onread });
                await connected(opening, tlsToPeer, `${peer.hostname}:${portOf(peer)}`, proxy !== undefined, tlsToPeer ? peer.hostname : undefined);
            }
            else {
                // https through a proxy: a CONNECT tunnel, then TLS with the server inside it.
                const tunnel = await openTunnel(proxy, origin, (s) => {
                    opening = s;
                });
                opening = node_tls__WEBPACK_IMPORTED_MODULE_1__.connect({ socket: tunnel, ...tlsOptions(origin), ca: options.ca });
                this.copyMode = true;
                await connected(opening, true, `${origin.hostname}:${portOf(origin)}`, false, origin.hostname);
            }
        }
        finally {
            clearTimeout(timer);
            options.signal?.removeEventListener('abort', onAbort);
        }
        this.socket = opening;
        this.socket.setNoDelay(true);
        if (this.copyMode) {
            this.socket.on('data', (chunk) => this.onChunk(chunk));
        }
        else {
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
    nextView() {
        return this.buffers[this.current].subarray(this.fill);
    }
    /** Copy mode: a chunk goes into the buffers as reads would have put it there. */
    onChunk(chunk) {
        for (let offset = 0; offset < chunk.length;) {
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
            if (this.phase === 'closed')
                return;
        }
    }
    /** One read of `n` bytes at `fill` of the current buffer. Returns false to stop reading for now. */
    onRead(n) {
        this.stall?.refresh();
        this.responseBytes += n;
        const start = this.fill;
        this.fill += n;
        try {
            this.consume(start);
        }
        catch (error) {
            this.destroy(error);
            return false;
        }
        return this.afterRead();
    }
    consume(start) {
        const buf = this.buffers[this.current];
        let from = start;
        if (this.phase === 'idle' || this.phase === 'closed') {
            this.spoilt = true;
            throw new _http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .ProtocolError */ .bd('the server sent data without a request');
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
                if (head.status === 101)
                    throw new _http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .ProtocolError */ .bd('the server switched protocols (HTTP 101)');
                continue; // 100 Continue, 103 Early Hints: the real answer follows.
            }
            this.startBody(head);
            this.regionStart = from;
            const waiter = this.waiter;
            this.waiter = undefined;
            waiter?.resolve(head);
        }
        if (this.phase !== 'body')
            return;
        if (this.collect) {
            this.collectFrom(this.current, from, this.fill);
            this.regionStart = this.fill;
            if (this.bodyArrived && this.phase === 'body')
                this.endBody();
            return;
        }
        if (this.framing.kind === 'chunked')
            return; // read by `readSmallBody` only
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
    startBody(head) {
        this.head = head;
        this.framing = (0,_http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .bodyFraming */ .NQ)(head);
        this.phase = 'body';
        this.chunked = this.framing.kind === 'chunked' ? new _http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .ChunkedDecoder */ .v$() : undefined;
        this.bodyLeft = this.framing.kind === 'length' ? this.framing.length : this.framing.kind === 'none' ? 0 : Number.POSITIVE_INFINITY;
        this.bodyArrived = this.bodyLeft === 0;
    }
    /** Copies body bytes `[from, to)` of a buffer into the collector, decoding chunks; `counted` bytes are already trimmed to the body. */
    collectFrom(index, from, to, counted = false) {
        const collect = this.collect;
        const buf = this.buffers[index];
        const take = (a, b) => {
            const n = Math.min(collect.limit - collect.length, b - a);
            if (n <= 0)
                return;
            collect.chunks.push(Buffer.from(buf.subarray(a, a + n)));
            collect.length += n;
        };
        if (counted) {
            take(from, to);
        }
        else if (this.chunked) {
            const { done, rest } = this.chunked.push(buf, from, to, take);
            if (done) {
                if (rest < to)
                    this.spoilt = true;
                this.bodyArrived = true;
            }
        }
        else {
            const n = Math.min(to - from, this.bodyLeft);
            if (to - from > this.bodyLeft)
                this.spoilt = true;
            take(from, from + n);
            this.bodyLeft -= n;
            if (this.bodyLeft === 0)
                this.bodyArrived = true;
        }
        if (!this.bodyArrived && collect.length >= collect.limit) {
            // The rest of the body is not wanted: drop the connection rather than read it.
            this.spoilt = true;
            this.bodyArrived = true;
        }
    }
    /** After a read: hand on what is due, move to the other buffer when this one is full, and say whether to read on. */
    afterRead() {
        if (this.phase === 'closed')
            return false;
        const now = Date.now();
        if (this.sink) {
            if (this.fill > this.regionStart && this.heldSince === 0)
                this.heldSince = now;
            const full = READ_BUFFER_BYTES - this.fill < MIN_READ_ROOM;
            if (full || now - this.heldSince > HOLD_MS)
                this.handOn();
        }
        else if (this.fill === this.regionStart && this.outstanding[this.current] === 0) {
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
            }
            else if (this.fill >= READ_BUFFER_BYTES) {
                this.destroy(new Error('internal error: no room left to read into'));
                return false;
            }
        }
        const able = this.canRead();
        if (!able)
            this.paused = true;
        return able;
    }
    isFree(index) {
        return this.outstanding[index] === 0 && this.held?.index !== index;
    }
    freeBuffer(except) {
        for (let i = 0; i < READ_BUFFERS; i++)
            if (i !== except && this.isFree(i))
                return i;
        return undefined;
    }
    /**
     * Whether to read on: only while another buffer is free to move on to when the current one is
     * full (a TLS socket may still hand over some data after a stop, into the current buffer).
     */
    canRead() {
        if (this.held && !this.sink)
            return false;
        return this.freeBuffer(this.current) !== undefined;
    }
    resumeIfAble() {
        if (!this.paused || this.phase === 'closed' || !this.canRead())
            return;
        this.paused = false;
        const leftover = this.leftover;
        this.leftover = undefined;
        if (leftover)
            this.onChunk(leftover);
        if (!this.paused)
            this.socket.resume();
    }
    /** Hands the held region and the current buffer's new bytes to the sink (without moving where reads land). */
    handOn() {
        const sink = this.sink;
        if (!sink)
            return;
        this.heldSince = 0;
        // What lies past a body cut short is left out: from the open region first, then the held one.
        const dropOpen = Math.min(this.excess, this.fill - this.regionStart);
        if (this.held && this.excess > dropOpen)
            this.held.end -= Math.min(this.excess - dropOpen, this.held.end - this.held.start);
        this.excess = 0;
        if (this.held) {
            const held = this.held;
            this.held = undefined;
            if (held.end > held.start)
                this.lend(sink, held);
        }
        if (this.fill - dropOpen > this.regionStart)
            this.lend(sink, { index: this.current, start: this.regionStart, end: this.fill - dropOpen });
        this.regionStart = this.fill;
    }
    lend(sink, region) {
        this.outstanding[region.index]++;
        let returned = false;
        sink.data(this.buffers[region.index], region.start, region.end, () => {
            if (returned)
                return;
            returned = true;
            this.outstanding[region.index]--;
            this.resumeIfAble();
        });
    }
    onEnd() {
        if (this.phase !== 'body' || this.framing.kind !== 'close')
            return;
        this.bodyArrived = true;
        this.spoilt = true; // the connection ends with the body
        if (this.collect)
            this.endBody();
        else if (this.sink) {
            this.handOn();
            this.endBody();
        }
    }
    /** The body is handed on whole: the connection is free for the next request, or closes. */
    endBody() {
        const waiter = this.waiter;
        this.waiter = undefined;
        this.sink = undefined;
        this.unwatch();
        const reusable = (0,_http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .keepsAlive */ .wq)(this.head) && !this.spoilt && !this.ended;
        this.phase = reusable ? 'idle' : 'closed';
        if (!reusable)
            this.socket.destroy();
        waiter?.resolve();
    }
    bodyWaiter() {
        return new Promise((resolve, reject) => {
            this.waiter = { resolve: () => resolve(), reject };
        });
    }
    /** The socket is gone: hand on what arrived, then fail whatever waits. */
    finish() {
        if (this.phase === 'body' && this.sink)
            this.handOn();
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
function withOnread(options, onread) {
    return { ...options, onread };
}
function tlsOptions(url) {
    const host = bareHost(url.hostname);
    // SNI carries a name, never an address; the certificate is checked against either.
    return { host, port: portOf(url), servername: isIp(host) ? undefined : host, ALPNProtocols: ['http/1.1'] };
}
function proxyAuthorization(proxy) {
    if (!proxy.username && !proxy.password)
        return undefined;
    const user = decodeURIComponent(proxy.username);
    const password = decodeURIComponent(proxy.password);
    return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}
/** Resolves once `socket` is connected (and its TLS handshake done); wraps a failure in a ConnectError. */
function connected(socket, secure, endpoint, viaProxy, tlsHost) {
    return new Promise((resolve, reject) => {
        const event = secure ? 'secureConnect' : 'connect';
        const onError = (error) => {
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
async function openTunnel(proxy, origin, track) {
    const endpoint = `${proxy.hostname}:${portOf(proxy)}`;
    const secure = proxy.protocol === 'https:';
    const socket = secure
        ? node_tls__WEBPACK_IMPORTED_MODULE_1__.connect({ host: bareHost(proxy.hostname), port: portOf(proxy), ...tlsOptions(proxy) })
        : node_net__WEBPACK_IMPORTED_MODULE_0__.connect({ host: bareHost(proxy.hostname), port: portOf(proxy) });
    track(socket);
    await connected(socket, secure, endpoint, true, secure ? proxy.hostname : undefined);
    const target = `${origin.hostname}:${portOf(origin)}`;
    const lines = [`CONNECT ${target} HTTP/1.1`, `Host: ${target}`];
    const auth = proxyAuthorization(proxy);
    if (auth)
        lines.push(`Proxy-Authorization: ${auth}`);
    socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
    const parser = new _http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .HeadParser */ .uG();
    const head = await new Promise((resolve, reject) => {
        const fail = (error) => {
            cleanup();
            socket.destroy();
            reject(new ConnectError(error, endpoint, true));
        };
        const onClose = () => fail(new Error('the proxy closed the connection during CONNECT'));
        const onData = (chunk) => {
            try {
                const at = parser.feed(chunk, 0, chunk.length);
                if (at === -1)
                    return;
                cleanup();
                socket.pause();
                // The client speaks first in TLS: a proxy that sends more after its answer is broken.
                if (at < chunk.length)
                    throw new _http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .ProtocolError */ .bd('the proxy sent data after its answer to CONNECT');
                resolve(parser.parse());
            }
            catch (error) {
                fail(error);
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
function contentEncoding(head) {
    const value = (0,_http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .headerValue */ .Z)(head, 'content-encoding')?.trim().toLowerCase();
    return value === undefined || value === '' || value === 'identity' ? undefined : value;
}


/***/ }),

/***/ 27095:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   sE: () => (/* binding */ DownloadClient)
/* harmony export */ });
/* unused harmony exports proxyFor, routeFor, Answer, ConnectionPool */
/* harmony import */ var _actions_http_client_lib_proxy__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(19783);
/* harmony import */ var _format_js__WEBPACK_IMPORTED_MODULE_4__ = __webpack_require__(16264);
/* harmony import */ var _connection_js__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(62895);
/* harmony import */ var _http_head_js__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(45562);
/* harmony import */ var _redirects_js__WEBPACK_IMPORTED_MODULE_3__ = __webpack_require__(95334);
/**
 * The download's HTTP client: GETs that follow redirects under the policy of `redirects.ts`, over
 * keep-alive connections (`connection.ts`) pooled by route, through the runner's proxy settings
 * (`https_proxy`, `http_proxy`, `no_proxy`, as `@actions/http-client` reads them). The probe, the
 * ranged download and the one-stream download's redirects all go through it, so an `http:` API
 * may send the archive to `https:` storage and back is never a problem.
 */





const USER_AGENT = 'together-download';
/** A redirect's own body is read (and dropped) up to this size, so its connection can be reused. */
const REDIRECT_BODY_LIMIT = 64 * 1024;
/** The proxy for `url` from the runner's environment, as http-client chooses it. */
function proxyFor(url) {
    const proxy = (0,_actions_http_client_lib_proxy__WEBPACK_IMPORTED_MODULE_0__/* .getProxyUrl */ .s)(url);
    // A plain URL: http-client's decodes its credentials, which are encoded again when used.
    return proxy ? new URL(proxy.href) : undefined;
}
function routeFor(url) {
    return { origin: new URL(url.origin), proxy: proxyFor(url) };
}
/** A response of the chain's last hop, on a connection of the pool. */
class Answer {
    head;
    hop;
    connection;
    pool;
    settled = false;
    constructor(head, hop, connection, pool) {
        this.head = head;
        this.hop = hop;
        this.connection = connection;
        this.pool = pool;
    }
    get status() {
        return this.head.status;
    }
    /** The URL that answered (after redirects). */
    get url() {
        return this.hop.url.href;
    }
    header(name) {
        return (0,_http_head_js__WEBPACK_IMPORTED_MODULE_2__/* .headerValue */ .Z)(this.head, name);
    }
    /** At most `limit` bytes of the body (the rest is not read); the connection goes back to the pool. */
    async readSmall(limit) {
        try {
            return await this.connection.readSmallBody(limit);
        }
        finally {
            this.release();
        }
    }
    /** The whole body, handed to `sink` without a copy; the connection goes back to the pool. */
    async readInto(sink) {
        try {
            await this.connection.readBody(sink);
        }
        finally {
            this.release();
        }
    }
    /** Drops the connection: the body is not wanted. */
    abandon() {
        this.connection.destroy();
        this.release();
    }
    release() {
        if (this.settled)
            return;
        this.settled = true;
        this.pool.release(this.connection);
    }
}
/** Keep-alive connections by route. */
class ConnectionPool {
    idle = new Map();
    active = new Set();
    async acquire(route, options) {
        const list = this.idle.get((0,_connection_js__WEBPACK_IMPORTED_MODULE_1__/* .routeKey */ .vh)(route));
        while (list && list.length > 0) {
            const connection = list.pop();
            if (connection.isReusable) {
                this.active.add(connection);
                return { connection, reused: true };
            }
            connection.destroy();
        }
        return { connection: await this.open(route, options), reused: false };
    }
    /** A new connection, never a kept-alive one. */
    async open(route, options) {
        const connection = await _connection_js__WEBPACK_IMPORTED_MODULE_1__/* .HttpConnection */ .V6.open(route, options);
        this.active.add(connection);
        return connection;
    }
    release(connection) {
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
    close() {
        for (const connection of this.active)
            connection.destroy();
        for (const list of this.idle.values())
            for (const connection of list)
                connection.destroy();
        this.active.clear();
        this.idle.clear();
    }
}
class DownloadClient {
    auth;
    pool = new ConnectionPool();
    constructor(auth) {
        this.auth = auth;
    }
    /** GETs `url`, following redirects; resolves with the first answer that is not a redirect. */
    async get(url, options) {
        const deadlineAt = options.deadlineMs === undefined ? undefined : Date.now() + options.deadlineMs;
        let hop = (0,_redirects_js__WEBPACK_IMPORTED_MODULE_3__/* .firstHop */ .Wk)(url, this.auth.apiOrigin);
        for (;;) {
            const answer = await this.send(hop, options, deadlineAt);
            const location = answer.header('location');
            if (!_redirects_js__WEBPACK_IMPORTED_MODULE_3__/* .REDIRECT_STATUSES */ .aq.has(answer.status) || location === undefined)
                return answer;
            await answer.readSmall(REDIRECT_BODY_LIMIT).catch(() => undefined);
            const next = (0,_redirects_js__WEBPACK_IMPORTED_MODULE_3__/* .nextHop */ .Fz)(hop, location, this.auth.apiOrigin);
            if (options.maskQuery && next.url.search.length > 1)
                options.maskQuery(next.url.search.slice(1));
            options.print(`Redirected (HTTP ${answer.status}) to ${(0,_format_js__WEBPACK_IMPORTED_MODULE_4__/* .displayUrl */ .Qy)(next.url.href)}`);
            hop = next;
        }
    }
    close() {
        this.pool.close();
    }
    async send(hop, options, deadlineAt) {
        const headers = [
            ['User-Agent', USER_AGENT],
            ['Accept-Encoding', 'identity'],
            ...Object.entries(options.headers),
        ];
        if (hop.sendAuth)
            headers.push(['Authorization', `Bearer ${this.auth.apiKey}`]);
        const route = routeFor(hop.url);
        for (let fresh = false;; fresh = true) {
            const left = deadlineAt === undefined ? undefined : deadlineAt - Date.now();
            if (left !== undefined && left <= 0)
                throw new _connection_js__WEBPACK_IMPORTED_MODULE_1__/* .DeadlineError */ .j3(options.deadlineMs);
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
            }
            catch (error) {
                this.pool.release(connection);
                // A kept-alive connection the server had just closed: try once more on a new one.
                const stale = reused && connection.responseBytes === 0 && !(error instanceof _connection_js__WEBPACK_IMPORTED_MODULE_1__/* .StallError */ .Xz) && !(error instanceof _connection_js__WEBPACK_IMPORTED_MODULE_1__/* .DeadlineError */ .j3);
                if (!stale || options.signal?.aborted)
                    throw error;
            }
            finally {
                options.signal?.removeEventListener('abort', onAbort);
            }
        }
    }
    async openFresh(route, timeoutMs, signal) {
        return this.pool.open(route, { timeoutMs, signal });
    }
}


/***/ }),

/***/ 45562:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   C5: () => (/* binding */ parseContentRange),
/* harmony export */   NQ: () => (/* binding */ bodyFraming),
/* harmony export */   Y: () => (/* binding */ contentLength),
/* harmony export */   Z: () => (/* binding */ headerValue),
/* harmony export */   bd: () => (/* binding */ ProtocolError),
/* harmony export */   uG: () => (/* binding */ HeadParser),
/* harmony export */   v$: () => (/* binding */ ChunkedDecoder),
/* harmony export */   wq: () => (/* binding */ keepsAlive)
/* harmony export */ });
/* unused harmony exports MAX_HEAD_BYTES, parseHead, headerRecord */
/**
 * A strict HTTP/1.1 response-head parser. The download reads its own sockets (one reused buffer
 * per connection, no copy of the body), so it needs no more of HTTP than a response head and the
 * body's framing; anything it does not understand is refused rather than guessed at.
 */
/** The most a response head may take: a storage server's heads are a few hundred bytes. */
const MAX_HEAD_BYTES = 64 * 1024;
/** A response that breaks HTTP/1.1 in a way the download will not work around. */
class ProtocolError extends Error {
    constructor(message) {
        super(message);
        this.name = 'ProtocolError';
    }
}
const CRLFCRLF = Buffer.from('\r\n\r\n');
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\r\n]*))?$/;
// RFC 9110 token characters for a field name.
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: a field value must not hold these
const BAD_VALUE = /[\u0000-\u0008\u000a-\u001f\u007f]/;
/**
 * Collects bytes until the end of a response head (`CRLF CRLF`). `feed` copies only the head's
 * own bytes, so the body bytes after it stay where they are, in the caller's buffer.
 */
class HeadParser {
    chunks = [];
    length = 0;
    /**
     * Takes `buf[start, end)`; returns the offset in `buf` just past the head, or -1 when the head
     * goes on. Throws a ProtocolError for a head over `MAX_HEAD_BYTES`.
     */
    feed(buf, start, end) {
        // The terminator may straddle two reads: look from up to 3 bytes before this one.
        const carry = Math.min(3, this.length);
        const tail = carry > 0 ? Buffer.concat([this.lastBytes(carry), buf.subarray(start, Math.min(end, start + 3))]) : undefined;
        let at = -1;
        if (tail) {
            const i = tail.indexOf(CRLFCRLF);
            if (i !== -1)
                at = start + i + 4 - carry;
        }
        if (at === -1) {
            const i = buf.subarray(start, end).indexOf(CRLFCRLF);
            if (i !== -1)
                at = start + i + 4;
        }
        const taken = at === -1 ? end : at;
        if (this.length + (taken - start) > MAX_HEAD_BYTES) {
            throw new ProtocolError(`the response head is larger than ${MAX_HEAD_BYTES / 1024} KiB`);
        }
        this.chunks.push(Buffer.from(buf.subarray(start, taken)));
        this.length += taken - start;
        return at;
    }
    /** The head collected so far, parsed; call it once `feed` returned an offset. */
    parse() {
        const text = Buffer.concat(this.chunks).toString('latin1');
        this.chunks = [];
        this.length = 0;
        return parseHead(text);
    }
    lastBytes(n) {
        const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
        this.chunks = [all];
        return all.subarray(all.length - n);
    }
}
/** Parses a complete head, `CRLF CRLF` included. */
function parseHead(text) {
    if (!text.endsWith('\r\n\r\n'))
        throw new ProtocolError('the response head is not terminated by an empty line');
    const lines = text.slice(0, -4).split('\r\n');
    const status = STATUS_LINE.exec(lines[0]);
    if (!status)
        throw new ProtocolError(`not an HTTP/1.1 status line: ${JSON.stringify(lines[0].slice(0, 80))}`);
    const headers = new Map();
    for (const line of lines.slice(1)) {
        if (line.includes('\n') || line.includes('\r'))
            throw new ProtocolError('a bare CR or LF in the response head');
        if (line.startsWith(' ') || line.startsWith('\t'))
            throw new ProtocolError('a folded header line (obsolete line folding)');
        const colon = line.indexOf(':');
        const name = colon > 0 ? line.slice(0, colon) : '';
        if (!FIELD_NAME.test(name))
            throw new ProtocolError(`a malformed header line: ${JSON.stringify(line.slice(0, 80))}`);
        const value = line.slice(colon + 1).trim();
        if (BAD_VALUE.test(value))
            throw new ProtocolError(`a control character in the ${name} header`);
        const key = name.toLowerCase();
        const list = headers.get(key);
        if (list)
            list.push(value);
        else
            headers.set(key, [value]);
    }
    return { version: `1.${status[1]}`, status: Number(status[2]), reason: status[3] ?? '', headers };
}
/** A header's value; repeated headers are joined with `, ` as RFC 9110 allows. */
function headerValue(head, name) {
    return head.headers.get(name)?.join(', ');
}
/** The headers as a plain object, the shape `retryAfterMs` and messages read. */
function headerRecord(head) {
    const out = {};
    for (const [name, values] of head.headers)
        out[name] = values.join(', ');
    return out;
}
function bodyFraming(head) {
    if ((head.status >= 100 && head.status < 200) || head.status === 204 || head.status === 304)
        return { kind: 'none' };
    const te = headerValue(head, 'transfer-encoding');
    if (te !== undefined) {
        const codings = te
            .split(',')
            .map((c) => c.trim().toLowerCase())
            .filter((c) => c !== '');
        if (codings.at(-1) === 'chunked') {
            if (codings.length > 1)
                throw new ProtocolError(`an unsupported Transfer-Encoding: ${JSON.stringify(te)}`);
            return { kind: 'chunked' };
        }
        throw new ProtocolError(`an unsupported Transfer-Encoding: ${JSON.stringify(te)}`);
    }
    const length = contentLength(head);
    if (length !== undefined)
        return { kind: 'length', length };
    return { kind: 'close' };
}
/** `Content-Length`, checked: digits only, repeated values equal. Undefined when absent. */
function contentLength(head) {
    const values = head.headers.get('content-length');
    if (!values)
        return undefined;
    const parts = values.flatMap((v) => v.split(',').map((p) => p.trim()));
    if (!parts.every((p) => /^\d{1,16}$/.test(p)) || new Set(parts).size !== 1) {
        throw new ProtocolError(`an invalid Content-Length: ${JSON.stringify(values.join(', '))}`);
    }
    return Number(parts[0]);
}
/** Whether the connection may carry another request after this response's body. */
function keepsAlive(head) {
    const tokens = (headerValue(head, 'connection') ?? '')
        .toLowerCase()
        .split(',')
        .map((t) => t.trim());
    if (head.version === '1.0')
        return tokens.includes('keep-alive');
    return !tokens.includes('close');
}
const CONTENT_RANGE = /^bytes (\d{1,16})-(\d{1,16})\/(\d{1,16}|\*)$/i;
/** Parses `Content-Range: bytes first-last/total`; undefined when absent or malformed. */
function parseContentRange(header) {
    const match = header ? CONTENT_RANGE.exec(header.trim()) : null;
    if (!match)
        return undefined;
    const first = Number(match[1]);
    const last = Number(match[2]);
    if (last < first)
        return undefined;
    return { first, last, total: match[3] === '*' ? undefined : Number(match[3]) };
}
/**
 * Decodes a chunked body in place: `push` returns the data slices of `buf[start, end)` (views
 * into it, no copy) and whether the body ended there (then `rest` is where the next response
 * would start).
 */
class ChunkedDecoder {
    state = 'size';
    size = 0;
    digits = 0;
    left = 0;
    trailerLine = 0;
    push(buf, start, end, out) {
        let i = start;
        while (i < end) {
            switch (this.state) {
                case 'size': {
                    const c = buf[i];
                    const digit = hexValue(c);
                    if (digit >= 0) {
                        if (++this.digits > 12)
                            throw new ProtocolError('a chunk size too large');
                        this.size = this.size * 16 + digit;
                    }
                    else if (c === 0x3b || c === 0x20 || c === 0x09) {
                        if (this.digits === 0)
                            throw new ProtocolError('a malformed chunk size');
                        this.state = 'ext';
                    }
                    else if (c === 0x0d) {
                        if (this.digits === 0)
                            throw new ProtocolError('a malformed chunk size');
                        this.state = 'size-lf';
                    }
                    else {
                        throw new ProtocolError('a malformed chunk size');
                    }
                    i++;
                    break;
                }
                case 'ext':
                    if (buf[i] === 0x0d)
                        this.state = 'size-lf';
                    else if (buf[i] === 0x0a)
                        throw new ProtocolError('a bare LF in a chunk header');
                    i++;
                    break;
                case 'size-lf':
                    if (buf[i] !== 0x0a)
                        throw new ProtocolError('a chunk header not ended by CRLF');
                    i++;
                    this.digits = 0;
                    if (this.size === 0) {
                        this.state = 'trailer';
                        this.trailerLine = 0;
                    }
                    else {
                        this.left = this.size;
                        this.state = 'data';
                    }
                    this.size = 0;
                    break;
                case 'data': {
                    const n = Math.min(this.left, end - i);
                    out(i, i + n);
                    this.left -= n;
                    i += n;
                    if (this.left === 0)
                        this.state = 'data-cr';
                    break;
                }
                case 'data-cr':
                    if (buf[i] !== 0x0d)
                        throw new ProtocolError('a chunk not followed by CRLF');
                    this.state = 'data-lf';
                    i++;
                    break;
                case 'data-lf':
                    if (buf[i] !== 0x0a)
                        throw new ProtocolError('a chunk not followed by CRLF');
                    this.state = 'size';
                    i++;
                    break;
                case 'trailer':
                    if (buf[i] === 0x0d)
                        this.state = 'trailer-lf';
                    else if (++this.trailerLine > 8192)
                        throw new ProtocolError('a chunked trailer line too long');
                    i++;
                    break;
                case 'trailer-lf':
                    if (buf[i] !== 0x0a)
                        throw new ProtocolError('a chunked trailer not ended by CRLF');
                    i++;
                    if (this.trailerLine === 0) {
                        this.state = 'done';
                        return { done: true, rest: i };
                    }
                    this.trailerLine = 0;
                    this.state = 'trailer';
                    break;
                case 'done':
                    return { done: true, rest: i };
            }
        }
        return { done: false, rest: end };
    }
}
function hexValue(c) {
    if (c >= 0x30 && c <= 0x39)
        return c - 0x30;
    if (c >= 0x61 && c <= 0x66)
        return c - 0x61 + 10;
    if (c >= 0x41 && c <= 0x46)
        return c - 0x41 + 10;
    return -1;
}


/***/ }),

/***/ 46142:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   g: () => (/* binding */ describeNetworkError)
/* harmony export */ });
/* harmony import */ var _format_js__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(16264);
/* harmony import */ var _connection_js__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(62895);
/* harmony import */ var _http_head_js__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(45562);
/**
 * What went wrong on the way to a server, in words a workflow author can act on: the host that
 * did not resolve, the address that refused, the certificate that is not trusted, the proxy's
 * answer. Each is also classed as worth another attempt or not.
 */



const UNTRUSTED = new Set([
    'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    'UNABLE_TO_GET_ISSUER_CERT',
    'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
    'SELF_SIGNED_CERT_IN_CHAIN',
    'DEPTH_ZERO_SELF_SIGNED_CERT',
    'CERT_UNTRUSTED',
    'CERT_SIGNATURE_FAILURE',
    'CERT_REJECTED',
]);
const CERTIFICATE_PROBLEMS = {
    CERT_HAS_EXPIRED: 'has expired',
    CERT_NOT_YET_VALID: 'is not valid yet',
    ERR_TLS_CERT_ALTNAME_INVALID: 'is not issued for that name',
};
const NOT_RESOLVED = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_NODATA', 'EAI_FAIL']);
/**
 * Describes an error from connecting, a broken connection or a response that breaks HTTP. A bare
 * system or TLS error (another library's) is described the same way; `host` then names the server.
 */
function describeNetworkError(error, host) {
    if (error instanceof _connection_js__WEBPACK_IMPORTED_MODULE_0__/* .ProxyRefusedError */ .Ne) {
        const proxy = (0,_format_js__WEBPACK_IMPORTED_MODULE_2__/* .displayUrl */ .Qy)(error.proxy.href).replace(/\/$/, '');
        const hint = error.status === 407
            ? ' The proxy wants credentials: put them in the proxy variable (`https_proxy: http://user:password@host:port`), or exempt the host with `no_proxy`.'
            : '';
        return {
            message: `the proxy ${proxy} refused to open a tunnel to ${error.target}: HTTP ${error.status}${error.reason ? ` ${error.reason}` : ''}.${hint}`,
            retryable: error.status >= 500 || error.status === 408 || error.status === 429,
        };
    }
    const bare = error;
    if (!(error instanceof _connection_js__WEBPACK_IMPORTED_MODULE_0__/* .ConnectError */ .T$) && bare?.code && isConnectCode(bare.code)) {
        return describeNetworkError(new _connection_js__WEBPACK_IMPORTED_MODULE_0__/* .ConnectError */ .T$(error, host ?? '?', false, host));
    }
    if (error instanceof _connection_js__WEBPACK_IMPORTED_MODULE_0__/* .ConnectError */ .T$) {
        const cause = error.cause;
        const code = cause.code ?? '';
        const through = error.viaProxy ? 'the proxy at ' : '';
        if (NOT_RESOLVED.has(code)) {
            const host = cause.hostname ?? error.endpoint.replace(/:\d+$/, '');
            return { message: `the host name ${host}${error.viaProxy ? ' (the proxy)' : ''} did not resolve (${code})`, retryable: true };
        }
        if (code === 'ECONNREFUSED') {
            const where = cause.address ? `${cause.address}:${cause.port}` : error.endpoint;
            return { message: `${through}${where} refused the connection (ECONNREFUSED)`, retryable: true };
        }
        if (UNTRUSTED.has(code)) {
            return {
                message: `the TLS certificate of ${error.tlsHost ?? error.endpoint} is not trusted (${code}: ${cause.message}). If the server uses a private certificate authority, point NODE_EXTRA_CA_CERTS at that authority's PEM file in the step's env`,
                retryable: false,
            };
        }
        if (CERTIFICATE_PROBLEMS[code]) {
            return {
                message: `the TLS certificate of ${error.tlsHost ?? error.endpoint} ${CERTIFICATE_PROBLEMS[code]} (${code}: ${cause.message})`,
                retryable: false,
            };
        }
        return { message: `could not connect to ${through}${error.endpoint}: ${cause.message}${code ? ` (${code})` : ''}`, retryable: true };
    }
    if (error instanceof _connection_js__WEBPACK_IMPORTED_MODULE_0__/* .StallError */ .Xz)
        return { message: `no data for ${error.ms / 1000} s`, retryable: true };
    if (error instanceof _connection_js__WEBPACK_IMPORTED_MODULE_0__/* .DeadlineError */ .j3)
        return { message: `no complete answer within ${error.ms / 1000} s`, retryable: true };
    if (error instanceof _http_head_js__WEBPACK_IMPORTED_MODULE_1__/* .ProtocolError */ .bd)
        return { message: `the response broke HTTP/1.1: ${error.message}`, retryable: true };
    return {
        message: `the connection broke: ${bare?.message ?? String(error)}${bare?.code && !bare.message?.includes(bare.code) ? ` (${bare.code})` : ''}`,
        retryable: true,
    };
}
/** Codes that come from reaching a server (its name, its address, its certificate), not from a connection that broke. */
function isConnectCode(code) {
    return NOT_RESOLVED.has(code) || code === 'ECONNREFUSED' || UNTRUSTED.has(code) || code in CERTIFICATE_PROBLEMS;
}


/***/ }),

/***/ 33284:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   D3: () => (/* binding */ planPieces),
/* harmony export */   Zc: () => (/* binding */ pieceLength),
/* harmony export */   wZ: () => (/* binding */ PieceQueue)
/* harmony export */ });
/* unused harmony exports MIN_PIECE, MAX_PIECE, pieceSize, windowSize */
/**
 * The pieces of a ranged download, handed out in file order within a sliding window. Connections
 * then write near one another, just past the in-order frontier: the bytes the hash has to read
 * back are recent (still in the page cache), and no write lands far past the last written byte
 * (NTFS fills such a gap with zeros inside that write, which can stall it for long).
 */
const MiB = 1024 * 1024;
const MIN_PIECE = 4 * MiB;
const MAX_PIECE = 64 * MiB;
const pieceLength = (piece) => piece.end + 1 - piece.start;
/**
 * About four pieces per connection, 4 to 64 MiB each: a piece is one request (two with the API's
 * redirect), so fewer is cheaper, while more keep the connections close together.
 */
function pieceSize(total, connections) {
    return Math.min(MAX_PIECE, Math.max(MIN_PIECE, Math.ceil(total / (connections * 4))));
}
/** How far past the first unfinished piece a new piece may start: twice what the connections hold. */
function windowSize(size, connections) {
    return 2 * connections * size;
}
class PieceQueue {
    total;
    connections;
    size;
    window;
    /** Every piece handed out so far, in file order. */
    pieces = [];
    nextStart = 0;
    /** Index of the first piece not yet wholly on disk. */
    firstOpen = 0;
    /** The size of the last pieces, once fewer bytes are left than the connections hold. */
    tailSize;
    constructor(total, connections, size = pieceSize(total, connections), window = windowSize(size, connections)) {
        this.total = total;
        this.connections = connections;
        this.size = size;
        this.window = window;
    }
    /** The next piece; `undefined` when every byte is handed out, `null` while the window is full. */
    take() {
        if (this.nextStart >= this.total)
            return undefined;
        if (this.nextStart >= this.firstUnfinished() + this.window)
            return null;
        const left = this.total - this.nextStart;
        // The last bytes are shared out evenly, so that the connections finish together.
        if (this.tailSize === undefined && left < this.connections * this.size) {
            this.tailSize = Math.min(this.size, Math.max(MIN_PIECE, Math.ceil(left / this.connections)));
        }
        const length = Math.min(left, this.tailSize ?? this.size);
        const piece = { start: this.nextStart, end: this.nextStart + length - 1, received: 0 };
        this.nextStart += length;
        this.pieces.push(piece);
        return piece;
    }
    /** The start of the first piece not yet on disk (the total once all are). */
    firstUnfinished() {
        this.advance();
        return this.firstOpen < this.pieces.length ? this.pieces[this.firstOpen].start : this.nextStart;
    }
    /** How many bytes from the file's start are on disk without a gap. */
    writtenPrefix() {
        this.advance();
        if (this.firstOpen < this.pieces.length) {
            const piece = this.pieces[this.firstOpen];
            return piece.start + piece.received;
        }
        return this.nextStart;
    }
    /** The piece holding `offset`, by binary search. */
    pieceAt(offset) {
        let lo = 0;
        let hi = this.pieces.length - 1;
        while (lo <= hi) {
            const mid = (lo + hi) >> 1;
            const piece = this.pieces[mid];
            if (offset < piece.start)
                hi = mid - 1;
            else if (offset > piece.end)
                lo = mid + 1;
            else
                return piece;
        }
        return undefined;
    }
    advance() {
        while (this.firstOpen < this.pieces.length && this.pieces[this.firstOpen].received === pieceLength(this.pieces[this.firstOpen])) {
            this.firstOpen++;
        }
    }
}
/** The pieces `PieceQueue` hands out for `total` bytes, ignoring the window: for tests and the log. */
function planPieces(total, connections) {
    const queue = new PieceQueue(total, connections, pieceSize(total, connections), Number.POSITIVE_INFINITY);
    while (queue.take()) {
        // take them all
    }
    return queue.pieces;
}


/***/ }),

/***/ 20931:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   YD: () => (/* binding */ DiskFault),
/* harmony export */   nE: () => (/* binding */ DiskQueue),
/* harmony export */   sA: () => (/* binding */ RangeStatusError),
/* harmony export */   sj: () => (/* binding */ fetchRange)
/* harmony export */ });
/* harmony import */ var node_fs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(73024);
/* harmony import */ var node_fs__WEBPACK_IMPORTED_MODULE_0___default = /*#__PURE__*/__webpack_require__.n(node_fs__WEBPACK_IMPORTED_MODULE_0__);
/* harmony import */ var _errors_js__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(83916);
/* harmony import */ var _connection_js__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(62895);
/* harmony import */ var _http_head_js__WEBPACK_IMPORTED_MODULE_3__ = __webpack_require__(45562);
/* harmony import */ var _net_errors_js__WEBPACK_IMPORTED_MODULE_4__ = __webpack_require__(46142);
/* harmony import */ var _pieces_js__WEBPACK_IMPORTED_MODULE_5__ = __webpack_require__(33284);
/* harmony import */ var _retryable_js__WEBPACK_IMPORTED_MODULE_6__ = __webpack_require__(19833);
/**
 * One attempt at one piece of a ranged download: the request (from the API again, through its
 * redirect), the checks of the answer against the range asked for, and the body written where it
 * belongs straight from the connection's buffers. It runs on the main thread or on a receive
 * worker alike, so it imports nothing that needs the job's context or the API client.
 */







/** An answer other than 206 that no retry cures: explained by the caller, who knows the job. */
class RangeStatusError extends Error {
    status;
    sendAuth;
    url;
    constructor(status, sendAuth, url) {
        super(`HTTP ${status}`);
        this.status = status;
        this.sendAuth = sendAuth;
        this.url = url;
        this.name = 'RangeStatusError';
    }
}
/** The disk refused a write: the download stops, whatever else happens. */
class DiskFault extends Error {
    cause;
    constructor(cause) {
        super(cause.message);
        this.cause = cause;
        this.name = 'DiskFault';
    }
}
/**
 * Fetches what is missing of `piece` once. Throws RetryableError to retry, RangeStatusError or
 * ActionError to stop, DiskFault when the disk refused a write.
 */
async function fetchRange(client, target, piece, sink, signal, print) {
    const from = piece.start + piece.received;
    let answer;
    try {
        // Every range starts at the API, so a signed storage URL it redirects to is always fresh.
        // A response head must come within the stall timeout, however slowly it trickles.
        answer = await client.get(target.requestUrl, {
            headers: { Range: `bytes=${from}-${piece.end}`, Accept: 'application/octet-stream' },
            stallMs: target.stallTimeoutMs,
            deadlineMs: target.stallTimeoutMs,
            print,
            signal,
        });
    }
    catch (error) {
        throw asRangeFailure(error, target);
    }
    const status = answer.status;
    if (status !== 206) {
        if ((0,_retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .isRetryableStatus */ .PS)(status)) {
            await answer.readSmall(64 * 1024).catch(() => undefined);
            throw new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw(`HTTP ${status}`, (0,_retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .retryAfterMs */ .Vs)(Object.fromEntries(answer.head.headers)));
        }
        answer.abandon();
        if (status === 200) {
            throw new _errors_js__WEBPACK_IMPORTED_MODULE_1__/* .ActionError */ .lZ(`The server stopped honouring range requests (HTTP 200 for bytes ${from}-${piece.end}). Run the job again: when the server ignores ranges from the start, the archive is downloaded as one stream.`);
        }
        throw new RangeStatusError(status, answer.hop.sendAuth, answer.url);
    }
    const header = answer.header('content-range');
    const range = (0,_http_head_js__WEBPACK_IMPORTED_MODULE_3__/* .parseContentRange */ .C5)(header);
    if (!range || range.first !== from || range.last !== piece.end || (range.total !== undefined && range.total !== target.total)) {
        answer.abandon();
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_1__/* .ActionError */ .lZ(`The server answered bytes ${from}-${piece.end} with Content-Range ${JSON.stringify(header ?? '')}: the archive changed or the server misbehaves. Run the job again.`);
    }
    const framing = answer.connection.bodyFraming;
    const encoding = (0,_connection_js__WEBPACK_IMPORTED_MODULE_2__/* .contentEncoding */ .R1)(answer.head);
    const wanted = piece.end + 1 - from;
    if (framing.kind !== 'length' || encoding !== undefined) {
        answer.abandon();
        const what = encoding !== undefined
            ? `Content-Encoding ${JSON.stringify(encoding)}`
            : framing.kind === 'chunked'
                ? 'a chunked body'
                : 'no Content-Length';
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_1__/* .ActionError */ .lZ(`The server answered bytes ${from}-${piece.end} with ${what}, not the ${wanted} plain bytes asked for: the server misbehaves. Run the job again; if it persists, report it to Together with the job id.`);
    }
    if (framing.length > wanted) {
        // The Content-Range is right, the length is too long: take the range, not what follows it.
        // (A length too short ends the body early: the rest is resumed.)
        print(`Bytes ${from}-${piece.end} came with Content-Length ${framing.length}; reading ${wanted} bytes and dropping the connection`);
        answer.connection.limitBody(wanted);
    }
    const writer = new PieceWriter(piece, from, sink);
    answer.connection.watch({ stallMs: target.stallTimeoutMs });
    let broke;
    try {
        await answer.readInto(writer);
    }
    catch (error) {
        broke = error;
    }
    // What arrived before a failure is good: it is written, so a retry resumes after it.
    await writer.drain();
    if (writer.failure)
        throw new DiskFault(writer.failure);
    if (signal.aborted)
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_1__/* .ActionError */ .lZ('aborted');
    // A piece that arrived whole is done, whatever happened to the connection after its last byte.
    if (piece.received === (0,_pieces_js__WEBPACK_IMPORTED_MODULE_5__/* .pieceLength */ .Zc)(piece))
        return;
    if (broke instanceof _connection_js__WEBPACK_IMPORTED_MODULE_2__/* .StallError */ .Xz)
        throw new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw(`no data for ${target.stallTimeoutMs / 1000} s (stall-timeout)`);
    if (broke)
        throw new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw((0,_net_errors_js__WEBPACK_IMPORTED_MODULE_4__/* .describeNetworkError */ .g)(broke).message);
    throw new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw(`the body ended early, ${(0,_pieces_js__WEBPACK_IMPORTED_MODULE_5__/* .pieceLength */ .Zc)(piece) - piece.received} bytes short`);
}
function asRangeFailure(error, target) {
    if (error instanceof _errors_js__WEBPACK_IMPORTED_MODULE_1__/* .ActionError */ .lZ || error instanceof _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw)
        return error;
    if (error instanceof _connection_js__WEBPACK_IMPORTED_MODULE_2__/* .StallError */ .Xz)
        return new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw(`no data for ${target.stallTimeoutMs / 1000} s (stall-timeout)`);
    const failure = (0,_net_errors_js__WEBPACK_IMPORTED_MODULE_4__/* .describeNetworkError */ .g)(error);
    if (!failure.retryable)
        return new _errors_js__WEBPACK_IMPORTED_MODULE_1__/* .ActionError */ .lZ(`The download failed: ${failure.message}.`);
    return new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw(failure.message);
}
/**
 * The file's writes, one at a time. Concurrent writes to one file do not go faster: on ext4 they
 * queue for the inode's lock, spinning on it (a quarter of the CPU time of four writers, measured
 * with perf), while one write at a time keeps up with a connection of several GB/s.
 */
class DiskQueue {
    fd;
    queue = [];
    busy = false;
    constructor(fd) {
        this.fd = fd;
    }
    write(buf, start, length, position, done) {
        this.queue.push({ buf, start, length, position, done });
        if (!this.busy)
            this.next();
    }
    next() {
        const job = this.queue.shift();
        if (!job) {
            this.busy = false;
            return;
        }
        this.busy = true;
        writeFully(this.fd, job.buf, job.start, job.length, job.position, (error) => {
            job.done(error);
            this.next();
        });
    }
}
/**
 * A piece's bytes, written where they belong as the connection hands them over, each straight
 * from the connection's buffer. `piece.received` moves on only over bytes whose writes are done,
 * in order, so a retry resumes after the last byte on disk.
 */
class PieceWriter {
    piece;
    sink;
    failure;
    next;
    /** Writes in the order they were handed out; `ok` is set once each finishes. */
    writes = [];
    pending = 0;
    drained;
    constructor(piece, from, sink) {
        this.piece = piece;
        this.sink = sink;
        this.next = from;
    }
    data(buf, start, end, done) {
        const length = Math.min(end - start, this.piece.end + 1 - this.next);
        if (length <= 0 || this.failure) {
            done();
            return;
        }
        const offset = this.next;
        this.next += length;
        this.sink.offer?.(offset, buf, start, start + length);
        const entry = { length };
        this.writes.push(entry);
        this.pending++;
        this.sink.disk.write(buf, start, length, offset, (error) => {
            this.pending--;
            done();
            entry.ok = !error;
            if (error) {
                this.failure ??= error;
                this.sink.onDiskFault(error);
            }
            this.settle();
        });
    }
    /** Resolves once every write handed out has finished. */
    drain() {
        if (this.pending === 0)
            return Promise.resolve();
        return new Promise((resolve) => {
            this.drained = resolve;
        });
    }
    settle() {
        let bytes = 0;
        while (this.writes.length > 0 && this.writes[0].ok === true)
            bytes += this.writes.shift().length;
        if (bytes > 0) {
            this.piece.received += bytes;
            this.sink.written(bytes);
        }
        if (this.pending === 0) {
            const drained = this.drained;
            this.drained = undefined;
            drained?.();
        }
    }
}
/** `fs.write` until every byte is written (a write may be short). */
function writeFully(fd, buf, start, length, position, callback) {
    node_fs__WEBPACK_IMPORTED_MODULE_0__.write(fd, buf, start, length, position, (error, bytesWritten) => {
        if (error)
            callback(error);
        else if (bytesWritten < length)
            writeFully(fd, buf, start + bytesWritten, length - bytesWritten, position + bytesWritten, callback);
        else
            callback();
    });
}


/***/ }),

/***/ 84449:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

__webpack_require__.r(__webpack_exports__);
/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   RECEIVE_WORKER: () => (/* binding */ RECEIVE_WORKER),
/* harmony export */   ReceiveThread: () => (/* binding */ ReceiveThread),
/* harmony export */   isReceiveSetup: () => (/* binding */ isReceiveSetup),
/* harmony export */   runReceiveWorker: () => (/* binding */ runReceiveWorker)
/* harmony export */ });
/* harmony import */ var node_path__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(76760);
/* harmony import */ var node_path__WEBPACK_IMPORTED_MODULE_0___default = /*#__PURE__*/__webpack_require__.n(node_path__WEBPACK_IMPORTED_MODULE_0__);
/* harmony import */ var node_url__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(73136);
/* harmony import */ var node_url__WEBPACK_IMPORTED_MODULE_1___default = /*#__PURE__*/__webpack_require__.n(node_url__WEBPACK_IMPORTED_MODULE_1__);
/* harmony import */ var node_worker_threads__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(75919);
/* harmony import */ var node_worker_threads__WEBPACK_IMPORTED_MODULE_2___default = /*#__PURE__*/__webpack_require__.n(node_worker_threads__WEBPACK_IMPORTED_MODULE_2__);
/* harmony import */ var _errors_js__WEBPACK_IMPORTED_MODULE_3__ = __webpack_require__(83916);
/* harmony import */ var _http_client_js__WEBPACK_IMPORTED_MODULE_4__ = __webpack_require__(27095);
/* harmony import */ var _range_fetch_js__WEBPACK_IMPORTED_MODULE_5__ = __webpack_require__(20931);
/* harmony import */ var _retryable_js__WEBPACK_IMPORTED_MODULE_6__ = __webpack_require__(19833);
/**
 * A receive worker: a thread of its own that runs connections of a ranged download (`fetchRange`,
 * writing straight into the shared file descriptor), so that the main thread keeps only the
 * SHA-256 (read back, in order, from the file). It re-enters the action's own bundle, whose entry
 * then loads only this module: the worker carries the HTTP client, not the API client.
 */







const RECEIVE_WORKER = 'together-download receive worker';
function isReceiveSetup(data) {
    return typeof data === 'object' && data !== null && data.role === RECEIVE_WORKER;
}
/** The worker's side: fetch the pieces the main thread hands over, report what is on disk. */
function runReceiveWorker(setup) {
    const port = node_worker_threads__WEBPACK_IMPORTED_MODULE_2__.parentPort;
    if (!port)
        throw new Error('not a worker');
    const send = (message) => port.postMessage(message);
    let abort = new AbortController();
    const client = new _http_client_js__WEBPACK_IMPORTED_MODULE_4__/* .DownloadClient */ .sE({ apiKey: setup.apiKey, apiOrigin: setup.apiOrigin });
    const disk = new _range_fetch_js__WEBPACK_IMPORTED_MODULE_5__/* .DiskQueue */ .nE(setup.fd);
    let diskFault;
    port.on('message', (message) => {
        if (message.type === 'abort') {
            abort.abort();
            client.close();
            abort = new AbortController();
            return;
        }
        const { id, piece } = message;
        const sink = {
            disk,
            written: (bytes) => send({ type: 'written', id, bytes }),
            onDiskFault: (error) => {
                diskFault ??= error;
            },
        };
        (0,_range_fetch_js__WEBPACK_IMPORTED_MODULE_5__/* .fetchRange */ .sj)(client, setup.target, piece, sink, abort.signal, (line) => send({ type: 'log', line })).then(() => send({ type: 'done', id }), (error) => send({ type: 'done', id, failure: serialize(diskFault ? new _range_fetch_js__WEBPACK_IMPORTED_MODULE_5__/* .DiskFault */ .YD(diskFault) : error) }));
    });
}
function serialize(error) {
    if (error instanceof _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw)
        return { kind: 'retry', message: error.message, waitMs: error.waitMs };
    if (error instanceof _range_fetch_js__WEBPACK_IMPORTED_MODULE_5__/* .RangeStatusError */ .sA)
        return { kind: 'status', status: error.status, sendAuth: error.sendAuth, url: error.url };
    if (error instanceof _errors_js__WEBPACK_IMPORTED_MODULE_3__/* .ActionError */ .lZ)
        return { kind: 'action', message: error.message };
    if (error instanceof _range_fetch_js__WEBPACK_IMPORTED_MODULE_5__/* .DiskFault */ .YD) {
        const { message, code, errno, syscall, path } = error.cause;
        return { kind: 'disk', message, code, errno, syscall, path };
    }
    return { kind: 'other', message: error instanceof Error ? error.message : String(error) };
}
function deserialize(failure) {
    switch (failure.kind) {
        case 'retry':
            return new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw(failure.message, failure.waitMs);
        case 'status':
            return new _range_fetch_js__WEBPACK_IMPORTED_MODULE_5__/* .RangeStatusError */ .sA(failure.status, failure.sendAuth, failure.url);
        case 'action':
            return new _errors_js__WEBPACK_IMPORTED_MODULE_3__/* .ActionError */ .lZ(failure.message);
        case 'disk': {
            const { message, ...fields } = failure;
            return new _range_fetch_js__WEBPACK_IMPORTED_MODULE_5__/* .DiskFault */ .YD(Object.assign(new Error(message), fields));
        }
        default:
            return new Error(failure.message);
    }
}
/**
 * The bundle's entry next to this code (`dist/index.js`), or, when run from source (the unit
 * tests), a small script that registers tsx in the worker and loads `src/index.ts`.
 */
function entry() {
    const here = (0,node_url__WEBPACK_IMPORTED_MODULE_1__.fileURLToPath)(import.meta.url);
    if (!here.endsWith('.ts'))
        return { file: node_path__WEBPACK_IMPORTED_MODULE_0__.join(node_path__WEBPACK_IMPORTED_MODULE_0__.dirname(here), 'index.js') };
    const source = (0,node_url__WEBPACK_IMPORTED_MODULE_1__.pathToFileURL)(node_path__WEBPACK_IMPORTED_MODULE_0__.join(node_path__WEBPACK_IMPORTED_MODULE_0__.dirname(here), '..', 'index.ts')).href;
    return { file: `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(source)}); });`, eval: true };
}
/** The main thread's side: one receive worker. */
class ReceiveThread {
    worker;
    nextId = 0;
    pending = new Map();
    failure;
    constructor(setup, print) {
        const { file, eval: evaluate } = entry();
        this.worker = new node_worker_threads__WEBPACK_IMPORTED_MODULE_2__.Worker(file, {
            eval: evaluate,
            workerData: { ...setup, role: RECEIVE_WORKER },
            // It allocates little (the bytes go through fixed buffers): a small heap keeps the action's memory small.
            resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 48 },
        });
        this.worker.on('message', (message) => {
            if (message.type === 'log')
                return print(message.line);
            const job = this.pending.get(message.id);
            if (!job)
                return;
            if (message.type === 'written') {
                job.piece.received += message.bytes;
                job.written(message.bytes);
                return;
            }
            this.pending.delete(message.id);
            if (message.failure)
                job.reject(deserialize(message.failure));
            else
                job.resolve();
        });
        // A worker that fails leaves its pieces to be retried (on the main thread: see `usable`).
        this.worker.on('error', (error) => this.fail(new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw(`the receive worker failed (${error.message})`)));
        this.worker.on('exit', () => this.fail(new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw('the receive worker stopped')));
    }
    /** False once the worker has failed or ended. */
    get usable() {
        return this.failure === undefined;
    }
    /** One attempt at `piece` on the worker; `written` is told each run of bytes put on disk. */
    fetch(piece, written) {
        if (this.failure)
            return Promise.reject(this.failure);
        const id = this.nextId++;
        return new Promise((resolve, reject) => {
            this.pending.set(id, { piece, resolve, reject, written });
            this.worker.postMessage({ type: 'fetch', id, piece: { ...piece } });
        });
    }
    abort() {
        this.worker.postMessage({ type: 'abort' });
    }
    async close() {
        this.failure ??= new _retryable_js__WEBPACK_IMPORTED_MODULE_6__/* .RetryableError */ .dw('the receive worker was closed');
        await this.worker.terminate();
    }
    fail(error) {
        this.failure ??= error;
        for (const job of this.pending.values())
            job.reject(this.failure);
        this.pending.clear();
    }
}


/***/ }),

/***/ 95334:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   Fz: () => (/* binding */ nextHop),
/* harmony export */   Wk: () => (/* binding */ firstHop),
/* harmony export */   aq: () => (/* binding */ REDIRECT_STATUSES)
/* harmony export */ });
/* unused harmony export MAX_REDIRECTS */
/* harmony import */ var _errors_js__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(83916);
/* harmony import */ var _format_js__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(16264);
/**
 * The redirect policy of every download request. The API key belongs to the API's origin
 * (scheme, host and port): it goes only there, and never again once a redirect chain has left
 * that origin, even to a hop that comes back. Every hop is `http:` or `https:`, and `https` never
 * goes down to `http`.
 */


const MAX_REDIRECTS = 10;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** The first hop of a chain: the API's own URL. */
function firstHop(url, apiOrigin) {
    const parsed = new URL(url);
    requireHttp(parsed);
    const onApi = parsed.origin === apiOrigin;
    return { url: parsed, sendAuth: onApi, leftApiOrigin: !onApi, redirects: 0, relativeRedirect: false };
}
/** The hop a redirect's `Location` leads to, or an ActionError that says why it is refused. */
function nextHop(current, location, apiOrigin) {
    if (current.redirects >= MAX_REDIRECTS) {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .ActionError */ .lZ(`The download redirected more than ${MAX_REDIRECTS} times; last hop: ${(0,_format_js__WEBPACK_IMPORTED_MODULE_1__/* .displayUrl */ .Qy)(current.url.href)}.`);
    }
    let next;
    try {
        next = new URL(location, current.url);
    }
    catch {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .ActionError */ .lZ(`The download redirected to a malformed URL (from ${(0,_format_js__WEBPACK_IMPORTED_MODULE_1__/* .displayUrl */ .Qy)(current.url.href)}).`);
    }
    requireHttp(next);
    if (current.url.protocol === 'https:' && next.protocol === 'http:') {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .ActionError */ .lZ(`The download redirected from https to plain http (${(0,_format_js__WEBPACK_IMPORTED_MODULE_1__/* .displayUrl */ .Qy)(next.href)}); refusing to continue without TLS.`);
    }
    next.hash = '';
    const leftApiOrigin = current.leftApiOrigin || next.origin !== apiOrigin;
    return {
        url: next,
        sendAuth: !leftApiOrigin,
        leftApiOrigin,
        redirects: current.redirects + 1,
        relativeRedirect: current.relativeRedirect || !/^[a-z][a-z0-9+.-]*:/i.test(location.trim()),
    };
}
function requireHttp(url) {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .ActionError */ .lZ(`The download redirected to an unsupported URL scheme (${url.protocol}); only http and https are followed.`);
    }
}


/***/ }),

/***/ 19833:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   PS: () => (/* binding */ isRetryableStatus),
/* harmony export */   Vs: () => (/* binding */ retryAfterMs),
/* harmony export */   dw: () => (/* binding */ RetryableError)
/* harmony export */ });
/**
 * What makes a failure worth another attempt, without the retry loop (which logs): a receive
 * worker needs these, and no more.
 */
/** Statuses worth another try: throttling, timeouts and the transient server errors. */
function isRetryableStatus(status) {
    return status === 408 || status === 429 || status >= 500;
}
/**
 * How long the server asked us to wait, from `retry-after-ms` or `retry-after` (seconds or an
 * HTTP date). Undefined when it did not ask or the value is unusable.
 */
function retryAfterMs(headers, now = Date.now()) {
    const header = (name) => {
        const value = headers[name];
        return Array.isArray(value) ? value[0] : value;
    };
    const ms = Number(header('retry-after-ms'));
    if (header('retry-after-ms') !== undefined && Number.isFinite(ms) && ms >= 0)
        return ms;
    const after = header('retry-after');
    if (after === undefined)
        return undefined;
    const seconds = Number(after);
    if (after.trim() !== '' && Number.isFinite(seconds) && seconds >= 0)
        return seconds * 1000;
    const date = Date.parse(after);
    return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}
/** A failure that another attempt may cure; `waitMs` is what the server asked for, if anything. */
class RetryableError extends Error {
    waitMs;
    status;
    constructor(message, waitMs, status) {
        super(message);
        this.waitMs = waitMs;
        this.status = status;
        this.name = 'RetryableError';
    }
}


/***/ })

};
