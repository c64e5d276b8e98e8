import { setMaxListeners } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ActionError } from '../errors.js';
import { displayUrl, formatBytes } from '../format.js';
import * as log from '../log.js';
import { explainHttpStatus, type RequestContext } from '../together/api.js';
import { explainDiskError, isDiskError } from './disk-errors.js';
import { type Follower, readGrowing, WrittenPrefix, withFollower } from './follow.js';
import { DownloadClient } from './http-client.js';
import { InOrderHasher } from './in-order-hash.js';
import { type Piece, PieceQueue, planPieces } from './pieces.js';
import type { ProbeResult } from './probe.js';
import { explainStorageStatus } from './probe.js';
import { ProgressReporter } from './progress.js';
import { DiskFault, DiskQueue, fetchRange, RangeStatusError, type RangeTarget } from './range-fetch.js';
import { ReceiveThread } from './receive-worker.js';
import { backoffMs, nextWaitMs, RetryableError } from './retry.js';
import { testHook } from './test-hooks.js';

export const DEFAULT_CONNECTIONS = 6;
export const DEFAULT_STALL_TIMEOUT_SECONDS = 60;
/** Consecutive failures of one piece, without progress in between, before the download gives up. */
export const PIECE_ATTEMPTS = 6;

export interface RangedOptions {
  connections: number;
  stallTimeoutMs: number;
  /** The API's origin (`scheme://host:port`): only requests to it carry the API key. */
  apiOrigin: string;
  /**
   * Worker threads that receive (0: the main thread receives, and hashes what arrives in order
   * as it comes). With workers the main thread only hashes, reading everything back.
   */
  receiveWorkers?: number;
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
  const disk = new DiskQueue(file.fd);
  const prefix = new WrittenPrefix();
  const progress = new ProgressReporter(total);
  const client = new DownloadClient({ apiKey, apiOrigin: options.apiOrigin });
  const target: RangeTarget = { requestUrl: probe.requestUrl, total, stallTimeoutMs: options.stallTimeoutMs };
  const workerCount = Math.min(connections, options.receiveWorkers ?? testHook('RECEIVE_WORKERS', defaultReceiveWorkers()));
  const threads = Array.from(
    { length: workerCount },
    () => new ReceiveThread({ fd: file.fd, apiKey, apiOrigin: options.apiOrigin, target }, log.debug),
  );
  if (workerCount > 0) log.debug(`Receiving on ${workerCount} worker thread${workerCount === 1 ? '' : 's'}`);
  const abort = new AbortController();
  // Each connection listens for the abort while it waits for an answer or a retry.
  setMaxListeners(4 * connections + 16, abort.signal);
  /** Workers waiting for the window to move on. */
  const waiting = new Set<() => void>();
  const wakeAll = () => {
    for (const wake of waiting) wake();
    waiting.clear();
  };
  const onAbort = () => {
    client.close();
    for (const thread of threads) thread.abort();
    wakeAll();
  };
  abort.signal.addEventListener('abort', onAbort);
  let received = 0;
  let diskFault: Error | undefined;
  let fellBack = false;

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

  /** One attempt at a piece, on this thread or on connection `slot`'s receive worker. */
  const attempt = (piece: Piece, slot: number): Promise<void> => {
    const thread = threads[slot % Math.max(1, threads.length)];
    if (thread?.usable) return thread.fetch(piece, written);
    if (thread && !fellBack) {
      fellBack = true;
      log.info('The receive worker stopped: the download goes on on the main thread.');
    }
    const sink = { disk, offer: hasher.offer.bind(hasher), written, onDiskFault };
    return fetchRange(client, target, piece, sink, abort.signal, log.debug);
  };

  const worker = async (slot: number) => {
    for (let piece = await nextPiece(); piece; piece = await nextPiece()) await fetchPiece(piece, slot);
  };

  const fetchPiece = async (piece: Piece, slot: number) => {
    for (let failures = 0; ; ) {
      const before = piece.received;
      try {
        await attempt(piece, slot);
        return;
      } catch (error) {
        if (diskFault) throw await diskFailure(diskFault, dir, 'writing the download');
        if (error instanceof DiskFault) throw await diskFailure(error.cause, dir, 'writing the download');
        if (error instanceof RangeStatusError) {
          throw error.sendAuth
            ? explainHttpStatus(error.status, undefined, context, 1)
            : explainStorageStatus(error.status, error.url, context);
        }
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
      Array.from({ length: connections }, (_, slot) =>
        worker(slot).catch((error: unknown) => {
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
    // The workers write through this descriptor: they end before it closes.
    await Promise.all(threads.map((thread) => thread.close()));
    await hasher.stop();
    await file.close();
  }
}

/**
 * One receive worker where there is a second core: the main thread then only hashes (reading
 * everything back), and the receive runs beside it; measured faster on two cores over HTTP and
 * HTTPS alike (docs/benchmark). On one core the threads would only take turns.
 */
function defaultReceiveWorkers(): number {
  return os.availableParallelism() >= 2 ? 1 : 0;
}

async function diskFailure(error: unknown, dir: string, what: string): Promise<Error> {
  if (isDiskError(error)) return explainDiskError(error, 'path', dir, what);
  return new ActionError(
    `Writing the download to disk failed (${what} in ${dir}): ${(error as Error).message}. Check the free space and permissions of the destination.`,
    { cause: error },
  );
}
