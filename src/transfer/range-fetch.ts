/**
 * One attempt at one piece of a ranged download: the request (from the API again, through its
 * redirect), the checks of the answer against the range asked for, and the body written where it
 * belongs straight from the connection's buffers. It runs on the main thread or on a receive
 * worker alike, so it imports nothing that needs the job's context or the API client.
 */
import * as fs from 'node:fs';
import { ActionError } from '../errors.js';
import { type BodySink, contentEncoding, StallError } from './connection.js';
import type { Answer, DownloadClient } from './http-client.js';
import { parseContentRange } from './http-head.js';
import { describeNetworkError } from './net-errors.js';
import { type Piece, pieceLength } from './pieces.js';
import { isRetryableStatus, RetryableError, retryAfterMs } from './retryable.js';

export interface RangeTarget {
  /** The API's download URL: every range starts there. */
  requestUrl: string;
  total: number;
  stallTimeoutMs: number;
}

/** What a piece's bytes go through: the file, the in-order hash, the count of bytes on disk. */
export interface RangeSink {
  disk: DiskQueue;
  /** Offers bytes about to be written at an offset to the in-order hash (main thread only). */
  offer?: (offset: number, buf: Buffer, start: number, end: number) => void;
  written: (bytes: number) => void;
  onDiskFault: (error: Error) => void;
}

/** An answer other than 206 that no retry cures: explained by the caller, who knows the job. */
export class RangeStatusError extends Error {
  constructor(
    readonly status: number,
    readonly sendAuth: boolean,
    readonly url: string,
  ) {
    super(`HTTP ${status}`);
    this.name = 'RangeStatusError';
  }
}

/** The disk refused a write: the download stops, whatever else happens. */
export class DiskFault extends Error {
  constructor(readonly cause: NodeJS.ErrnoException) {
    super(cause.message);
    this.name = 'DiskFault';
  }
}

/**
 * Fetches what is missing of `piece` once. Throws RetryableError to retry, RangeStatusError or
 * ActionError to stop, DiskFault when the disk refused a write.
 */
export async function fetchRange(
  client: DownloadClient,
  target: RangeTarget,
  piece: Piece,
  sink: RangeSink,
  signal: AbortSignal,
  print: (line: string) => void,
): Promise<void> {
  const from = piece.start + piece.received;
  let answer: Answer;
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
  } catch (error) {
    throw asRangeFailure(error, target);
  }
  const status = answer.status;
  if (status !== 206) {
    if (isRetryableStatus(status)) {
      await answer.readSmall(64 * 1024).catch(() => undefined);
      throw new RetryableError(`HTTP ${status}`, retryAfterMs(Object.fromEntries(answer.head.headers)));
    }
    answer.abandon();
    if (status === 200) {
      throw new ActionError(
        `The server stopped honouring range requests (HTTP 200 for bytes ${from}-${piece.end}). Run the job again: when the server ignores ranges from the start, the archive is downloaded as one stream.`,
      );
    }
    throw new RangeStatusError(status, answer.hop.sendAuth, answer.url);
  }
  const header = answer.header('content-range');
  const range = parseContentRange(header);
  if (!range || range.first !== from || range.last !== piece.end || (range.total !== undefined && range.total !== target.total)) {
    answer.abandon();
    throw new ActionError(
      `The server answered bytes ${from}-${piece.end} with Content-Range ${JSON.stringify(header ?? '')}: the archive changed or the server misbehaves. Run the job again.`,
    );
  }
  const framing = answer.connection.bodyFraming;
  const encoding = contentEncoding(answer.head);
  const wanted = piece.end + 1 - from;
  if (framing.kind !== 'length' || encoding !== undefined) {
    answer.abandon();
    const what =
      encoding !== undefined
        ? `Content-Encoding ${JSON.stringify(encoding)}`
        : framing.kind === 'chunked'
          ? 'a chunked body'
          : 'no Content-Length';
    throw new ActionError(
      `The server answered bytes ${from}-${piece.end} with ${what}, not the ${wanted} plain bytes asked for: the server misbehaves. Run the job again; if it persists, report it to Together with the job id.`,
    );
  }
  if (framing.length > wanted) {
    // The Content-Range is right, the length is too long: take the range, not what follows it.
    // (A length too short ends the body early: the rest is resumed.)
    print(`Bytes ${from}-${piece.end} came with Content-Length ${framing.length}; reading ${wanted} bytes and dropping the connection`);
    answer.connection.limitBody(wanted);
  }

  const writer = new PieceWriter(piece, from, sink);
  answer.connection.watch({ stallMs: target.stallTimeoutMs });
  let broke: unknown;
  try {
    await answer.readInto(writer);
  } catch (error) {
    broke = error;
  }
  // What arrived before a failure is good: it is written, so a retry resumes after it.
  await writer.drain();
  if (writer.failure) throw new DiskFault(writer.failure);
  if (signal.aborted) throw new ActionError('aborted');
  // A piece that arrived whole is done, whatever happened to the connection after its last byte.
  if (piece.received === pieceLength(piece)) return;
  if (broke instanceof StallError) throw new RetryableError(`no data for ${target.stallTimeoutMs / 1000} s (stall-timeout)`);
  if (broke) throw new RetryableError(describeNetworkError(broke).message);
  throw new RetryableError(`the body ended early, ${pieceLength(piece) - piece.received} bytes short`);
}

function asRangeFailure(error: unknown, target: RangeTarget): unknown {
  if (error instanceof ActionError || error instanceof RetryableError) return error;
  if (error instanceof StallError) return new RetryableError(`no data for ${target.stallTimeoutMs / 1000} s (stall-timeout)`);
  const failure = describeNetworkError(error);
  if (!failure.retryable) return new ActionError(`The download failed: ${failure.message}.`);
  return new RetryableError(failure.message);
}

/**
 * The file's writes, one at a time. Concurrent writes to one file do not go faster: on ext4 they
 * queue for the inode's lock, spinning on it (a quarter of the CPU time of four writers, measured
 * with perf), while one write at a time keeps up with a connection of several GB/s.
 */
export class DiskQueue {
  private readonly queue: Array<{
    buf: Buffer;
    start: number;
    length: number;
    position: number;
    done: (error?: NodeJS.ErrnoException) => void;
  }> = [];
  private busy = false;

  constructor(private readonly fd: number) {}

  write(buf: Buffer, start: number, length: number, position: number, done: (error?: NodeJS.ErrnoException) => void): void {
    this.queue.push({ buf, start, length, position, done });
    if (!this.busy) this.next();
  }

  private next(): void {
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
class PieceWriter implements BodySink {
  failure?: NodeJS.ErrnoException;
  private next: number;
  /** Writes in the order they were handed out; `ok` is set once each finishes. */
  private readonly writes: Array<{ length: number; ok?: boolean }> = [];
  private pending = 0;
  private drained?: () => void;

  constructor(
    private readonly piece: Piece,
    from: number,
    private readonly sink: RangeSink,
  ) {
    this.next = from;
  }

  data(buf: Buffer, start: number, end: number, done: () => void): void {
    const length = Math.min(end - start, this.piece.end + 1 - this.next);
    if (length <= 0 || this.failure) {
      done();
      return;
    }
    const offset = this.next;
    this.next += length;
    this.sink.offer?.(offset, buf, start, start + length);
    const entry: { length: number; ok?: boolean } = { length };
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
  drain(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.drained = resolve;
    });
  }

  private settle(): void {
    let bytes = 0;
    while (this.writes.length > 0 && this.writes[0].ok === true) bytes += (this.writes.shift() as { length: number }).length;
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
function writeFully(
  fd: number,
  buf: Buffer,
  start: number,
  length: number,
  position: number,
  callback: (error?: NodeJS.ErrnoException) => void,
): void {
  fs.write(fd, buf, start, length, position, (error, bytesWritten) => {
    if (error) callback(error);
    else if (bytesWritten < length) writeFully(fd, buf, start + bytesWritten, length - bytesWritten, position + bytesWritten, callback);
    else callback();
  });
}
