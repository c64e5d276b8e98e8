import * as fs from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import type { HttpClient } from '@actions/http-client';
import { ActionError } from '../errors.js';
import { displayUrl, formatBytes } from '../format.js';
import * as log from '../log.js';
import { explainHttpStatus, type RequestContext } from '../together/api.js';
import { explainStorageStatus, getFollowingRedirects, newHttpClient, type ProbeResult, totalFromContentRange } from './probe.js';
import { ProgressReporter } from './progress.js';
import { backoffMs, isRetryableStatus, nextWaitMs, RetryableError, retryAfterMs } from './retry.js';

export const DEFAULT_CONNECTIONS = 6;
export const DEFAULT_STALL_TIMEOUT_SECONDS = 60;
/** Consecutive failures of one piece, without progress in between, before the download gives up. */
export const PIECE_ATTEMPTS = 6;

const MIN_PIECE = 4 * 1024 * 1024;
const WRITE_BATCH = 512 * 1024;
const MAX_PIECE = 1024 * 1024 * 1024;

export interface RangedOptions {
  connections: number;
  stallTimeoutMs: number;
  /** The API's host name: only requests to it carry the API key. */
  apiHost: string;
}

export interface RangedResult {
  bytes: number;
  elapsedMs: number;
  sha256: string;
  /** How long the hash took to catch up after the last byte arrived. */
  hashTailMs: number;
}

interface Piece {
  start: number;
  end: number; // inclusive
  received: number;
}

/**
 * Splits `total` bytes into pieces: four per connection, so that a fast connection takes over work
 * when another is slow and the in-order hash never trails far behind, yet few enough that requests
 * stay rare (each new response starts slowly). A piece resumes from where it stopped, so its size
 * costs nothing on a failure.
 */
export function planPieces(total: number, connections: number): Piece[] {
  const size = Math.min(MAX_PIECE, Math.max(MIN_PIECE, Math.ceil(total / (connections * 4))));
  const pieces: Piece[] = [];
  for (let start = 0; start < total; start += size) {
    pieces.push({ start, end: Math.min(total, start + size) - 1, received: 0 });
  }
  return pieces;
}

/**
 * Downloads the archive as parallel byte ranges written in place into `tempFile`. Each piece is
 * retried and resumed on its own from where it stopped, a piece that receives nothing for the
 * stall timeout is aborted and retried, and the sha256 follows the written prefix of the file,
 * so no separate pass over it is needed afterwards.
 */
export async function downloadRanged(
  probe: ProbeResult & { total: number },
  apiKey: string,
  tempFile: string,
  options: RangedOptions,
  context: RequestContext,
): Promise<RangedResult> {
  const pieces = planPieces(probe.total, options.connections);
  const connections = Math.max(1, Math.min(options.connections, pieces.length));
  log.info(
    `Downloading ${formatBytes(probe.total)} as ${pieces.length} range${pieces.length === 1 ? '' : 's'} over ${connections} connection${connections === 1 ? '' : 's'}`,
  );
  // The socket timeout covers a server that never answers; our own stall timer, a little shorter,
  // covers a body that stops, and says so.
  const client = newHttpClient(options.stallTimeoutMs + 5000, { keepAlive: true, maxSockets: connections });
  const file = await fs.promises.open(tempFile, 'w');
  const progress = new ProgressReporter(probe.total);
  const hasher = new InOrderHasher(tempFile, pieces);
  const abort = new AbortController();
  let received = 0;
  let next = 0;

  const worker = async () => {
    const writer = new PieceWriter(file);
    while (!abort.signal.aborted && next < pieces.length) {
      const piece = pieces[next++];
      await fetchPiece(piece, writer, (bytes) => {
        received += bytes;
        progress.update(received);
        hasher.advance();
      });
    }
  };

  const fetchPiece = async (piece: Piece, writer: PieceWriter, onBytes: (n: number) => void) => {
    for (let failures = 0; ; ) {
      const before = piece.received;
      try {
        await fetchRange(client, probe, apiKey, options, piece, writer, onBytes, abort.signal, context);
        return;
      } catch (error) {
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

  try {
    await file.truncate(probe.total);
    // The first failure is the cause; the others are workers it aborted.
    let failure: { error: unknown } | undefined;
    await Promise.all(
      Array.from({ length: connections }, () =>
        worker().catch((error: unknown) => {
          failure ??= { error };
          abort.abort();
        }),
      ),
    );
    if (failure) throw failure.error;
    const lastByteAt = Date.now();
    const elapsedMs = progress.finish(received);
    const sha256 = await hasher.digest();
    return { bytes: received, elapsedMs, sha256, hashTailMs: Date.now() - lastByteAt };
  } finally {
    abort.abort();
    await hasher.stop();
    await file.close();
    client.dispose();
  }
}

/** Fetches what is missing of one piece, writing each chunk at its offset. Throws RetryableError to retry. */
async function fetchRange(
  client: HttpClient,
  probe: ProbeResult,
  apiKey: string,
  options: RangedOptions,
  piece: Piece,
  writer: PieceWriter,
  onBytes: (n: number) => void,
  signal: AbortSignal,
  context: RequestContext,
): Promise<void> {
  const from = piece.start + piece.received;
  let response: IncomingMessage;
  let answered: { url: string; sendAuth: boolean };
  try {
    // Every range starts at the API, so a signed storage URL it redirects to is always fresh.
    ({ response, ...answered } = await getFollowingRedirects(
      client,
      probe.requestUrl,
      { apiKey, apiHost: options.apiHost },
      { range: `bytes=${from}-${piece.end}` },
      log.debug,
    ));
  } catch (error) {
    if (error instanceof ActionError) throw error;
    throw new RetryableError(`network error: ${(error as Error).message}`);
  }
  const status = response.statusCode ?? 0;
  if (status !== 206) {
    response.resume();
    if (isRetryableStatus(status)) throw new RetryableError(`HTTP ${status}`, retryAfterMs(response.headers));
    if (status === 200) {
      throw new ActionError(
        `The server stopped honouring range requests (HTTP 200 for bytes ${from}-${piece.end}). Run the job again: when the server ignores ranges from the start, the archive is downloaded as one stream.`,
      );
    }
    throw answered.sendAuth ? explainHttpStatus(status, undefined, context, 1) : explainStorageStatus(status, answered.url, context);
  }
  const range = /^bytes\s+(\d+)-(\d+)\//i.exec(response.headers['content-range'] ?? '');
  const total = totalFromContentRange(response.headers['content-range']);
  if (!range || Number(range[1]) !== from || Number(range[2]) !== piece.end || (total !== undefined && total !== probe.total)) {
    response.destroy();
    throw new ActionError(
      `The server answered bytes ${from}-${piece.end} with Content-Range ${JSON.stringify(response.headers['content-range'] ?? '')}: the archive changed or the server misbehaves. Run the job again.`,
    );
  }

  writer.begin(piece, onBytes);

  let stalled = false;
  const onAbort = () => response.destroy();
  signal.addEventListener('abort', onAbort);
  const timer = setTimeout(() => {
    stalled = true;
    response.destroy();
  }, options.stallTimeoutMs);
  let broke: Error | undefined;
  try {
    await receive(response, piece, writer, () => timer.refresh());
  } catch (error) {
    broke = error as Error;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
  // What arrived before a failure is good: write it, so a retry resumes after it.
  await writer.drain();
  if (signal.aborted) throw new ActionError('aborted');
  // A piece that arrived whole is done, whatever happened to the connection after its last byte
  // (a server that announces more than the range and then drops the connection still delivered it).
  if (piece.start + piece.received > piece.end) return;
  if (stalled) throw new RetryableError(`no data for ${options.stallTimeoutMs / 1000} s (stall-timeout)`);
  if (broke) throw new RetryableError(`connection broke: ${broke.message}`);
  throw new RetryableError(`the body ended early, ${piece.end + 1 - piece.start - piece.received} bytes short`);
}

/**
 * Reads a response body into the writer. The stream stays in flowing mode, so the socket is read
 * while the disk writes (an async iterator would stop reading during every write); it pauses only
 * when both of the writer's buffers are taken.
 */
function receive(response: IncomingMessage, piece: Piece, writer: PieceWriter, onData: () => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // A chunk that found both buffers taken waits here, the response paused, until one is free.
    let waiting: Promise<void> = Promise.resolve();
    let settled = false;
    const settle = (error?: Error) => {
      if (settled) return;
      settled = true;
      if (error) reject(error);
      else waiting.then(resolve, reject);
    };
    const feed = (data: Buffer): void => {
      const rest = writer.push(data);
      if (!rest) return;
      response.pause();
      waiting = writer.writable().then(() => {
        feed(rest);
        if (!writer.blocked()) response.resume();
      });
      waiting.catch((error: Error) => settle(error));
    };
    response.on('data', (chunk: Buffer) => {
      onData();
      const room = piece.end + 1 - (piece.start + piece.received + writer.queued());
      feed(chunk.length > room ? chunk.subarray(0, room) : chunk);
      if (chunk.length >= room) {
        // Everything asked for is here; whatever else the server sends is not ours.
        response.destroy();
        settle();
      }
    });
    response.once('end', () => settle());
    response.once('error', (error) => settle(error));
    response.once('close', () => settle(response.complete ? undefined : new Error('the connection closed early')));
  });
}

/**
 * Writes a connection's data at its offset through two reusable buffers: one fills while the
 * other is written. Few system calls, and memory stays fixed however fast the data comes.
 */
class PieceWriter {
  private readonly buffers = [Buffer.allocUnsafe(WRITE_BATCH), Buffer.allocUnsafe(WRITE_BATCH)];
  private current = 0;
  private filled = 0;
  private inFlight = 0;
  private writing: Promise<void> | undefined;
  private failure: Error | undefined;
  private piece!: Piece;
  private onBytes!: (n: number) => void;

  constructor(private readonly file: fs.promises.FileHandle) {}

  begin(piece: Piece, onBytes: (n: number) => void): void {
    this.piece = piece;
    this.onBytes = onBytes;
    this.filled = 0;
  }

  /** Bytes received but not yet counted in `piece.received`. */
  queued(): number {
    return this.filled + this.inFlight;
  }

  /** True while both buffers are taken. */
  blocked(): boolean {
    return this.filled === WRITE_BATCH && this.writing !== undefined;
  }

  /** Copies `data` in; returns what did not fit while both buffers are taken. */
  push(data: Buffer): Buffer | undefined {
    for (let offset = 0; offset < data.length; ) {
      if (this.filled === WRITE_BATCH) {
        if (this.writing) return data.subarray(offset);
        this.startWrite();
      }
      const copied = data.copy(this.buffers[this.current], this.filled, offset);
      this.filled += copied;
      offset += copied;
    }
    if (this.filled === WRITE_BATCH && !this.writing) this.startWrite();
    return undefined;
  }

  /** Resolves once the buffer being written is free again. */
  async writable(): Promise<void> {
    await this.writing;
    if (this.failure) throw this.failure;
  }

  async drain(): Promise<void> {
    while (this.writing || this.filled > 0) {
      await this.writable();
      if (!this.writing && this.filled > 0) this.startWrite();
    }
    await this.writable();
  }

  private startWrite(): void {
    const { piece, onBytes } = this;
    const length = this.filled;
    this.inFlight = length;
    this.writing = this.file
      .write(this.buffers[this.current], 0, length, piece.start + piece.received)
      .then(
        () => {
          piece.received += length;
          onBytes(length);
        },
        (error: Error) => {
          this.failure = new ActionError(
            `Writing the download to disk failed: ${error.message}. Check the free space and permissions of the destination.`,
          );
        },
      )
      .finally(() => {
        this.writing = undefined;
        this.inFlight = 0;
      });
    this.current ^= 1;
    this.filled = 0;
  }
}

// The hash runs in a worker thread so that it uses a second core instead of slowing the
// receiving loop. Plain CommonJS source: a worker evaluated from a string needs no bundling.
const HASH_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
const fd = fs.openSync(workerData.file, 'r');
const hash = createHash('sha256');
const buffer = Buffer.allocUnsafe(4 * 1024 * 1024);
parentPort.on('message', (message) => {
  if (message.end !== undefined) {
    for (let pos = message.start; pos <= message.end; ) {
      const read = fs.readSync(fd, buffer, 0, Math.min(buffer.length, message.end + 1 - pos), pos);
      if (read === 0) throw new Error('short read at ' + pos);
      hash.update(buffer.subarray(0, read));
      pos += read;
    }
  } else {
    fs.closeSync(fd);
    parentPort.postMessage(hash.digest('hex'));
  }
});
`;

/**
 * Hashes the file in order, as far as it is written, while the rest is still downloading. Freshly
 * written data is still in the page cache, so this costs CPU on another core but hardly any disk
 * reads, and the hash is ready moments after the last byte.
 */
class InOrderHasher {
  private readonly worker: Worker;
  private next = 0;
  private hashedTo = 0;
  private readonly failed: Promise<never>;

  constructor(
    file: string,
    private readonly pieces: Piece[],
  ) {
    // The worker only hashes: a small heap keeps its share of the action's memory small.
    this.worker = new Worker(HASH_WORKER, {
      eval: true,
      workerData: { file },
      resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 2 },
    });
    this.failed = new Promise<never>((_, reject) => {
      this.worker.once('error', (error) => reject(new ActionError(`Computing the sha256 failed: ${error.message}`)));
    });
    this.failed.catch(() => undefined);
  }

  /** Hands the worker whatever lies written, in order, past what it already has. */
  advance(): void {
    while (this.next < this.pieces.length) {
      const piece = this.pieces[this.next];
      const written = piece.start + piece.received;
      if (written > this.hashedTo) {
        this.worker.postMessage({ start: this.hashedTo, end: written - 1 });
        this.hashedTo = written;
      }
      if (written <= piece.end) return;
      this.next++;
    }
  }

  async digest(): Promise<string> {
    if (this.next !== this.pieces.length) throw new Error('hash incomplete');
    const digest = new Promise<string>((resolve) => this.worker.once('message', resolve));
    this.worker.postMessage({});
    return Promise.race([digest, this.failed]);
  }

  async stop(): Promise<void> {
    await this.worker.terminate();
  }
}
