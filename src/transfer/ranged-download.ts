import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ActionError } from '../errors.js';
import { displayUrl, formatBytes } from '../format.js';
import * as log from '../log.js';
import { explainHttpStatus, type RequestContext } from '../together/api.js';
import { type BodySink, contentEncoding, StallError } from './connection.js';
import { explainDiskError, isDiskError } from './disk-errors.js';
import { type Follower, readGrowing, WrittenPrefix, withFollower } from './follow.js';
import { type Answer, DownloadClient } from './http-client.js';
import { parseContentRange } from './http-head.js';
import { InOrderHasher } from './in-order-hash.js';
import { describeNetworkError } from './net-errors.js';
import { type Piece, PieceQueue, pieceLength, planPieces } from './pieces.js';
import type { ProbeResult } from './probe.js';
import { explainStorageStatus } from './probe.js';
import { ProgressReporter } from './progress.js';
import { backoffMs, isRetryableStatus, nextWaitMs, RetryableError, retryAfterMs } from './retry.js';

export const DEFAULT_CONNECTIONS = 6;
export const DEFAULT_STALL_TIMEOUT_SECONDS = 60;
/** Consecutive failures of one piece, without progress in between, before the download gives up. */
export const PIECE_ATTEMPTS = 6;

export interface RangedOptions {
  connections: number;
  stallTimeoutMs: number;
  /** The API's origin (`scheme://host:port`): only requests to it carry the API key. */
  apiOrigin: string;
}

export interface RangedResult {
  bytes: number;
  elapsedMs: number;
  sha256: string;
  /** How long the hash took to catch up after the last byte arrived. */
  hashTailMs: number;
  /** Bytes the hash read back from the file (they arrived ahead of the in-order frontier). */
  readBackBytes: number;
}

/**
 * Downloads the archive as byte ranges over parallel keep-alive connections, each read written
 * in place into `tempFile` at its offset straight from the connection's buffer. Each piece is
 * retried and resumed on its own from its last byte on disk; a connection that receives nothing
 * for the stall timeout is dropped and its piece resumed; the sha256 follows the in-order
 * frontier, so no pass over the file is needed afterwards.
 */
export async function downloadRanged(
  probe: ProbeResult & { total: number },
  apiKey: string,
  tempFile: string,
  options: RangedOptions,
  context: RequestContext,
  follower?: Follower,
): Promise<RangedResult> {
  const total = probe.total;
  const connections = Math.max(1, Math.min(options.connections, planPieces(total, options.connections).length));
  const planned = planPieces(total, options.connections).length;
  log.info(
    `Downloading ${formatBytes(total)} as ${planned} range${planned === 1 ? '' : 's'} over ${connections} connection${connections === 1 ? '' : 's'}`,
  );
  const dir = path.dirname(tempFile);
  const file = await fs.promises.open(tempFile, 'w+').catch(async (error: unknown) => {
    throw await diskFailure(error, dir, "creating the download's temp file");
  });
  const queue = new PieceQueue(total, options.connections);
  const hasher = new InOrderHasher(file.fd, total, () => queue.writtenPrefix());
  const prefix = new WrittenPrefix();
  const progress = new ProgressReporter(total);
  const client = new DownloadClient({ apiKey, apiOrigin: options.apiOrigin });
  const abort = new AbortController();
  /** Workers waiting for the window to move on. */
  const waiting = new Set<() => void>();
  const wakeAll = () => {
    for (const wake of waiting) wake();
    waiting.clear();
  };
  const onAbort = () => {
    client.close();
    wakeAll();
  };
  abort.signal.addEventListener('abort', onAbort);
  let received = 0;
  let diskFault: Error | undefined;

  const written = (bytes: number) => {
    received += bytes;
    progress.update(received);
    hasher.catchUp();
    prefix.grew(queue.writtenPrefix());
    wakeAll();
  };
  const onDiskFault = (error: Error) => {
    diskFault ??= error;
    abort.abort(error);
  };

  const nextPiece = async (): Promise<Piece | undefined> => {
    for (;;) {
      if (abort.signal.aborted) return undefined;
      const piece = queue.take();
      if (piece !== null) return piece;
      // The window is full: wait until more is on disk.
      await new Promise<void>((resolve) => waiting.add(resolve));
    }
  };

  const worker = async () => {
    for (let piece = await nextPiece(); piece; piece = await nextPiece()) await fetchPiece(piece);
  };

  const fetchPiece = async (piece: Piece) => {
    for (let failures = 0; ; ) {
      const before = piece.received;
      try {
        await fetchRange(client, probe, options, piece, { fd: file.fd, hasher, written, onDiskFault }, abort.signal, context);
        return;
      } catch (error) {
        if (diskFault) throw await diskFailure(diskFault, dir, 'writing the download');
        if (!(error instanceof RetryableError) || abort.signal.aborted) throw error;
        // Progress since the last failure means the connection works: start counting afresh.
        failures = piece.received > before ? 1 : failures + 1;
        if (failures >= PIECE_ATTEMPTS) {
          throw new ActionError(
            `The download from ${displayUrl(probe.url)} failed: bytes ${piece.start + piece.received}-${piece.end} still failed after ${PIECE_ATTEMPTS} attempts (${error.message}). Run the job again; the connection to the server keeps breaking.`,
          );
        }
        const { waitMs: wait, note } = nextWaitMs(error.waitMs, () => backoffMs(failures - 1));
        log.info(`Range ${piece.start + piece.received}-${piece.end}: ${error.message}; resuming in ${(wait / 1000).toFixed(1)} s${note}`);
        // Another piece's failure ends the download: stop waiting at once rather than start a request.
        await sleep(wait, undefined, { signal: abort.signal }).catch(() => undefined);
        if (abort.signal.aborted) throw new ActionError('aborted');
      }
    }
  };

  const download = async (): Promise<RangedResult> => {
    try {
      await file.truncate(total);
    } catch (error) {
      throw await diskFailure(error, dir, 'setting the size of the download');
    }
    // The first failure is the cause; the others are workers it aborted.
    let failure: { error: unknown } | undefined;
    await Promise.all(
      Array.from({ length: connections }, () =>
        worker().catch((error: unknown) => {
          failure ??= { error };
          abort.abort(error);
        }),
      ),
    );
    if (failure) throw failure.error;
    if (abort.signal.aborted) throw abort.signal.reason ?? new ActionError('aborted');
    const lastByteAt = Date.now();
    const elapsedMs = progress.finish(received);
    prefix.finish(total);
    const sha256 = await hasher.digest().catch((error: Error) => {
      throw new ActionError(`Computing the sha256 of the download failed: ${error.message}`);
    });
    return { bytes: received, elapsedMs, sha256, hashTailMs: Date.now() - lastByteAt, readBackBytes: hasher.readBack };
  };

  try {
    return await withFollower(
      follower,
      () => readGrowing(tempFile, prefix),
      prefix,
      (reason) => abort.abort(reason),
      download,
    );
  } finally {
    abort.abort();
    abort.signal.removeEventListener('abort', onAbort);
    client.close();
    await hasher.stop();
    await file.close();
  }
}

/** What a piece's bytes go through: the file, the hash, the count of bytes on disk. */
interface PieceSinkContext {
  fd: number;
  hasher: InOrderHasher;
  written: (bytes: number) => void;
  onDiskFault: (error: Error) => void;
}

/** Fetches what is missing of one piece. Throws RetryableError to retry. */
async function fetchRange(
  client: DownloadClient,
  probe: ProbeResult & { total: number },
  options: RangedOptions,
  piece: Piece,
  sinkContext: PieceSinkContext,
  signal: AbortSignal,
  context: RequestContext,
): Promise<void> {
  const from = piece.start + piece.received;
  let answer: Answer;
  try {
    // Every range starts at the API, so a signed storage URL it redirects to is always fresh.
    // A response head must come within the stall timeout, however slowly it trickles.
    answer = await client.get(probe.requestUrl, {
      headers: { Range: `bytes=${from}-${piece.end}`, Accept: 'application/octet-stream' },
      stallMs: options.stallTimeoutMs,
      deadlineMs: options.stallTimeoutMs,
      print: log.debug,
      signal,
    });
  } catch (error) {
    throw asRangeFailure(error, options);
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
    throw answer.hop.sendAuth ? explainHttpStatus(status, undefined, context, 1) : explainStorageStatus(status, answer.url, context);
  }
  const header = answer.header('content-range');
  const range = parseContentRange(header);
  if (!range || range.first !== from || range.last !== piece.end || (range.total !== undefined && range.total !== probe.total)) {
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
    log.debug(`Bytes ${from}-${piece.end} came with Content-Length ${framing.length}; reading ${wanted} bytes and dropping the connection`);
    answer.connection.limitBody(wanted);
  }

  const writer = new PieceWriter(piece, from, sinkContext);
  answer.connection.watch({ stallMs: options.stallTimeoutMs });
  let broke: unknown;
  try {
    await answer.readInto(writer);
  } catch (error) {
    broke = error;
  }
  // What arrived before a failure is good: it is written, so a retry resumes after it.
  await writer.drain();
  if (writer.failure) throw writer.failure;
  if (signal.aborted) throw new ActionError('aborted');
  // A piece that arrived whole is done, whatever happened to the connection after its last byte.
  if (piece.received === pieceLength(piece)) return;
  if (broke instanceof StallError) throw new RetryableError(`no data for ${options.stallTimeoutMs / 1000} s (stall-timeout)`);
  if (broke) throw new RetryableError(describeNetworkError(broke).message);
  throw new RetryableError(`the body ended early, ${pieceLength(piece) - piece.received} bytes short`);
}

function asRangeFailure(error: unknown, options: RangedOptions): unknown {
  if (error instanceof ActionError || error instanceof RetryableError) return error;
  if (error instanceof StallError) return new RetryableError(`no data for ${options.stallTimeoutMs / 1000} s (stall-timeout)`);
  const failure = describeNetworkError(error);
  if (!failure.retryable) return new ActionError(`The download failed: ${failure.message}.`);
  return new RetryableError(failure.message);
}

/**
 * A piece's bytes, written where they belong as the connection hands them over, each straight
 * from the connection's buffer. `piece.received` moves on only over bytes whose writes are done,
 * in order, so a retry resumes after the last byte on disk.
 */
class PieceWriter implements BodySink {
  failure?: Error;
  private next: number;
  /** Writes in the order they were handed out; `ok` is set once each finishes. */
  private readonly writes: Array<{ length: number; ok?: boolean }> = [];
  private pending = 0;
  private drained?: () => void;

  constructor(
    private readonly piece: Piece,
    from: number,
    private readonly context: PieceSinkContext,
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
    this.context.hasher.offer(offset, buf, start, start + length);
    const entry: { length: number; ok?: boolean } = { length };
    this.writes.push(entry);
    this.pending++;
    writeFully(this.context.fd, buf, start, length, offset, (error) => {
      this.pending--;
      done();
      entry.ok = !error;
      if (error) {
        this.failure ??= error;
        this.context.onDiskFault(error);
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
      this.context.written(bytes);
    }
    if (this.pending === 0) {
      const drained = this.drained;
      this.drained = undefined;
      drained?.();
    }
  }
}

/** `fs.write` until every byte is written (a write may be short). */
function writeFully(fd: number, buf: Buffer, start: number, length: number, position: number, callback: (error?: Error) => void): void {
  fs.write(fd, buf, start, length, position, (error, bytesWritten) => {
    if (error) callback(error);
    else if (bytesWritten < length) writeFully(fd, buf, start + bytesWritten, length - bytesWritten, position + bytesWritten, callback);
    else callback();
  });
}

async function diskFailure(error: unknown, dir: string, what: string): Promise<Error> {
  if (isDiskError(error)) return explainDiskError(error, 'path', dir, what);
  return new ActionError(
    `Writing the download to disk failed (${what} in ${dir}): ${(error as Error).message}. Check the free space and permissions of the destination.`,
    { cause: error },
  );
}
