/**
 * A strict HTTP/1.1 response-head parser. The download reads its own sockets (one reused buffer
 * per connection, no copy of the body), so it needs no more of HTTP than a response head and the
 * body's framing; anything it does not understand is refused rather than guessed at.
 */

/** The most a response head may take: a storage server's heads are a few hundred bytes. */
export const MAX_HEAD_BYTES = 64 * 1024;

export interface ResponseHead {
  /** `1.0` or `1.1`. */
  version: string;
  status: number;
  reason: string;
  /** Header values by lower-case name, in the order received. */
  headers: Map<string, string[]>;
}

/** A response that breaks HTTP/1.1 in a way the download will not work around. */
export class ProtocolError extends Error {
  constructor(message: string) {
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
export class HeadParser {
  private chunks: Buffer[] = [];
  private length = 0;

  /**
   * Takes `buf[start, end)`; returns the offset in `buf` just past the head, or -1 when the head
   * goes on. Throws a ProtocolError for a head over `MAX_HEAD_BYTES`.
   */
  feed(buf: Buffer, start: number, end: number): number {
    // The terminator may straddle two reads: look from up to 3 bytes before this one.
    const carry = Math.min(3, this.length);
    const tail = carry > 0 ? Buffer.concat([this.lastBytes(carry), buf.subarray(start, Math.min(end, start + 3))]) : undefined;
    let at = -1;
    if (tail) {
      const i = tail.indexOf(CRLFCRLF);
      if (i !== -1) at = start + i + 4 - carry;
    }
    if (at === -1) {
      const i = buf.subarray(start, end).indexOf(CRLFCRLF);
      if (i !== -1) at = start + i + 4;
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
  parse(): ResponseHead {
    const text = Buffer.concat(this.chunks).toString('latin1');
    this.chunks = [];
    this.length = 0;
    return parseHead(text);
  }

  private lastBytes(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    this.chunks = [all];
    return all.subarray(all.length - n);
  }
}

/** Parses a complete head, `CRLF CRLF` included. */
export function parseHead(text: string): ResponseHead {
  if (!text.endsWith('\r\n\r\n')) throw new ProtocolError('the response head is not terminated by an empty line');
  const lines = text.slice(0, -4).split('\r\n');
  const status = STATUS_LINE.exec(lines[0]);
  if (!status) throw new ProtocolError(`not an HTTP/1.1 status line: ${JSON.stringify(lines[0].slice(0, 80))}`);
  const headers = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    if (line.includes('\n') || line.includes('\r')) throw new ProtocolError('a bare CR or LF in the response head');
    if (line.startsWith(' ') || line.startsWith('\t')) throw new ProtocolError('a folded header line (obsolete line folding)');
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!FIELD_NAME.test(name)) throw new ProtocolError(`a malformed header line: ${JSON.stringify(line.slice(0, 80))}`);
    const value = line.slice(colon + 1).trim();
    if (BAD_VALUE.test(value)) throw new ProtocolError(`a control character in the ${name} header`);
    const key = name.toLowerCase();
    const list = headers.get(key);
    if (list) list.push(value);
    else headers.set(key, [value]);
  }
  return { version: `1.${status[1]}`, status: Number(status[2]), reason: status[3] ?? '', headers };
}

/** A header's value; repeated headers are joined with `, ` as RFC 9110 allows. */
export function headerValue(head: ResponseHead, name: string): string | undefined {
  return head.headers.get(name)?.join(', ');
}

/** The headers as a plain object, the shape `retryAfterMs` and messages read. */
export function headerRecord(head: ResponseHead): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, values] of head.headers) out[name] = values.join(', ');
  return out;
}

/** How the body of a response to a GET is delimited (RFC 9112, section 6.3). */
export type Framing = { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' } | { kind: 'close' };

export function bodyFraming(head: ResponseHead): Framing {
  if ((head.status >= 100 && head.status < 200) || head.status === 204 || head.status === 304) return { kind: 'none' };
  const te = headerValue(head, 'transfer-encoding');
  if (te !== undefined) {
    const codings = te
      .split(',')
      .map((c) => c.trim().toLowerCase())
      .filter((c) => c !== '');
    if (codings.at(-1) === 'chunked') {
      if (codings.length > 1) throw new ProtocolError(`an unsupported Transfer-Encoding: ${JSON.stringify(te)}`);
      return { kind: 'chunked' };
    }
    throw new ProtocolError(`an unsupported Transfer-Encoding: ${JSON.stringify(te)}`);
  }
  const length = contentLength(head);
  if (length !== undefined) return { kind: 'length', length };
  return { kind: 'close' };
}

/** `Content-Length`, checked: digits only, repeated values equal. Undefined when absent. */
export function contentLength(head: ResponseHead): number | undefined {
  const values = head.headers.get('content-length');
  if (!values) return undefined;
  const parts = values.flatMap((v) => v.split(',').map((p) => p.trim()));
  if (!parts.every((p) => /^\d{1,16}$/.test(p)) || new Set(parts).size !== 1) {
    throw new ProtocolError(`an invalid Content-Length: ${JSON.stringify(values.join(', '))}`);
  }
  return Number(parts[0]);
}

/** Whether the connection may carry another request after this response's body. */
export function keepsAlive(head: ResponseHead): boolean {
  const tokens = (headerValue(head, 'connection') ?? '')
    .toLowerCase()
    .split(',')
    .map((t) => t.trim());
  if (head.version === '1.0') return tokens.includes('keep-alive');
  return !tokens.includes('close');
}

export interface ContentRange {
  first: number;
  last: number;
  /** Undefined for `*`. */
  total?: number;
}

const CONTENT_RANGE = /^bytes (\d{1,16})-(\d{1,16})\/(\d{1,16}|\*)$/i;

/** Parses `Content-Range: bytes first-last/total`; undefined when absent or malformed. */
export function parseContentRange(header: string | undefined): ContentRange | undefined {
  const match = header ? CONTENT_RANGE.exec(header.trim()) : null;
  if (!match) return undefined;
  const first = Number(match[1]);
  const last = Number(match[2]);
  if (last < first) return undefined;
  return { first, last, total: match[3] === '*' ? undefined : Number(match[3]) };
}

/**
 * Decodes a chunked body in place: `push` returns the data slices of `buf[start, end)` (views
 * into it, no copy) and whether the body ended there (then `rest` is where the next response
 * would start).
 */
export class ChunkedDecoder {
  private state: 'size' | 'ext' | 'size-lf' | 'data' | 'data-cr' | 'data-lf' | 'trailer' | 'trailer-lf' | 'done' = 'size';
  private size = 0;
  private digits = 0;
  private left = 0;
  private trailerLine = 0;

  push(buf: Buffer, start: number, end: number, out: (from: number, to: number) => void): { done: boolean; rest: number } {
    let i = start;
    while (i < end) {
      switch (this.state) {
        case 'size': {
          const c = buf[i];
          const digit = hexValue(c);
          if (digit >= 0) {
            if (++this.digits > 12) throw new ProtocolError('a chunk size too large');
            this.size = this.size * 16 + digit;
          } else if (c === 0x3b || c === 0x20 || c === 0x09) {
            if (this.digits === 0) throw new ProtocolError('a malformed chunk size');
            this.state = 'ext';
          } else if (c === 0x0d) {
            if (this.digits === 0) throw new ProtocolError('a malformed chunk size');
            this.state = 'size-lf';
          } else {
            throw new ProtocolError('a malformed chunk size');
          }
          i++;
          break;
        }
        case 'ext':
          if (buf[i] === 0x0d) this.state = 'size-lf';
          else if (buf[i] === 0x0a) throw new ProtocolError('a bare LF in a chunk header');
          i++;
          break;
        case 'size-lf':
          if (buf[i] !== 0x0a) throw new ProtocolError('a chunk header not ended by CRLF');
          i++;
          this.digits = 0;
          if (this.size === 0) {
            this.state = 'trailer';
            this.trailerLine = 0;
          } else {
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
          if (this.left === 0) this.state = 'data-cr';
          break;
        }
        case 'data-cr':
          if (buf[i] !== 0x0d) throw new ProtocolError('a chunk not followed by CRLF');
          this.state = 'data-lf';
          i++;
          break;
        case 'data-lf':
          if (buf[i] !== 0x0a) throw new ProtocolError('a chunk not followed by CRLF');
          this.state = 'size';
          i++;
          break;
        case 'trailer':
          if (buf[i] === 0x0d) this.state = 'trailer-lf';
          else if (++this.trailerLine > 8192) throw new ProtocolError('a chunked trailer line too long');
          i++;
          break;
        case 'trailer-lf':
          if (buf[i] !== 0x0a) throw new ProtocolError('a chunked trailer not ended by CRLF');
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

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}
