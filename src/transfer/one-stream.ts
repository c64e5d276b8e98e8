/**
 * The one-stream download, for a server that ignores range requests: `@actions/tool-cache` fetches
 * the archive (it honours the runner's proxy settings and retries on its own), while the action
 * keeps what tool-cache cannot:
 * - the redirects are resolved by the probe under the action's policy (the key only to the API's
 *   origin, never down from https), and tool-cache gets only the final URL, whose query is
 *   registered as a secret before tool-cache can print it; a redirect tool-cache meets itself is
 *   held to the same policy (`tool-cache-hops.ts`);
 * - a disk fault stops tool-cache at once instead of three downloads 10-20 s apart;
 * - the sha256 follows the file as it grows, and a retried attempt must send the same bytes.
 */
import { createHash } from 'node:crypto';
import fsCallbacks, * as fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import * as path from 'node:path';
import * as tc from '@actions/tool-cache';
import { ActionError } from '../errors.js';
import { displayUrl } from '../format.js';
import * as log from '../log.js';
import { explainHttpStatus, type RequestContext } from '../together/api.js';
import { trackTempFile } from './destination.js';
import { explainDiskError, isDiskError } from './disk-errors.js';
import { type Follower, readGrowing, WrittenPrefix, withFollower } from './follow.js';
import { describeNetworkError } from './net-errors.js';
import { explainStorageStatus, type ProbeResult } from './probe.js';
import { ProgressReporter } from './progress.js';
import { renameWithRetry } from './rename.js';
import { guardToolCacheHops } from './tool-cache-hops.js';

/** tool-cache makes this many attempts itself. */
export const TOOL_CACHE_ATTEMPTS = 3;
/** How often tool-cache is started again after it refused to go on over its own leftover file. */
const LEFTOVER_RESTARTS = 2;
const POLL_MS = 200;
const SLICE_BYTES = 4 * 1024 * 1024;

export interface OneStreamResult {
  bytes: number;
  elapsedMs: number;
  sha256: string;
}

/** Downloads the archive into `tempFile` with tool-cache. */
export async function downloadWithToolCache(
  probe: ProbeResult,
  apiKey: string,
  tempFile: string,
  context: RequestContext,
  follower?: Follower,
): Promise<OneStreamResult> {
  // tool-cache writes into a folder of its own. When a response breaks before tool-cache's file is
  // open, the open can finish after tool-cache removed the file for its next attempt (Node.js 20;
  // Node.js 24's stream.pipeline waits for the open): the file is back, every later attempt
  // refuses to start ("already exists"), and the file would outlive the run. Such a refusal is
  // recognised below, and a late open into the removed folder fails instead.
  const folder = `${tempFile}.d`;
  const dir = path.dirname(tempFile);
  const removeFolder = trackTempFile(folder);
  const file = path.join(folder, 'archive');
  const prefix = new WrittenPrefix();
  const progress = new ProgressReporter(probe.total);
  const hasher = new GrowingFileHasher(file, prefix, (bytes) => progress.update(bytes));
  const guard = interceptWrites(file);
  const hops = guardToolCacheHops(probe.sendAuth ? new URL(probe.url).origin : undefined, (reason) => new StopToolCache(reason));
  hasher.failed.catch((error: Error) => guard.stop(error));
  const auth = probe.sendAuth ? `Bearer ${apiKey}` : undefined;
  try {
    await fs.promises.mkdir(folder).catch(async (error: unknown) => {
      throw isDiskError(error) ? await explainDiskError(error, 'path', dir, "creating the download's temp folder") : error;
    });
    const download = async (): Promise<OneStreamResult> => {
      hasher.start();
      for (let restarts = 0; ; restarts++) {
        try {
          await withRedactedOutput(() =>
            Promise.race([tc.downloadTool(probe.url, file, auth, { accept: 'application/octet-stream' }), hasher.failed, guard.stopped]),
          );
          break;
        } catch (error) {
          if (!isLeftoverRefusal(error, file)) throw await explainDownloadError(error, probe, context, dir);
          if (restarts === LEFTOVER_RESTARTS) {
            throw new ActionError(
              `The download from ${displayUrl(probe.url)} failed: ${restarts + 1} times the response broke off before its first byte was saved. The server accepts the request but does not send the archive; run the job again later.`,
              { cause: error },
            );
          }
          log.info(
            'A response broke off before its first byte was saved, and tool-cache will not retry over the empty file it left behind: removed it, starting again.',
          );
          await fs.promises.rm(file, { force: true });
        }
      }
      const { bytes, sha256 } = await hasher.finish();
      prefix.finish(bytes);
      return { bytes, sha256, elapsedMs: progress.finish(bytes) };
    };
    const result = await withFollower(
      follower,
      () => readGrowing(file, prefix),
      prefix,
      (reason) => guard.stop(reason),
      download,
    );
    await renameWithRetry(file, tempFile);
    return result;
  } finally {
    guard.restore();
    hops.restore();
    await hasher.stop();
    await removeFolder();
  }
}

/** tool-cache's refusal to start an attempt because the file from a failed one is still there. */
function isLeftoverRefusal(error: unknown, file: string): boolean {
  return error instanceof Error && error.message === `Destination file path ${file} already exists`;
}

/**
 * Stops tool-cache without a retry: it retries every failure but an HTTP status below 500 (other
 * than 408 and 429), so a stop is dressed as one.
 */
class StopToolCache extends tc.HTTPError {
  constructor(readonly reason: Error) {
    super(499);
    this.message = reason.message;
  }
}

/**
 * Watches the write stream tool-cache opens for `file`: a disk fault on it (or `stop`) ends
 * tool-cache's download at once. tool-cache offers no hook of its own, so `fs.createWriteStream`
 * is wrapped for this one path while the download runs; the stream gets an `fs` of its own
 * (the documented `fs` option) whose calls turn disk faults into a StopToolCache.
 */
function interceptWrites(file: string): { stop: (reason: Error) => void; stopped: Promise<never>; restore: () => void } {
  const original = fsCallbacks.createWriteStream;
  let stream: fs.WriteStream | undefined;
  let stopReason: Error | undefined;
  let rejectStopped!: (error: Error) => void;
  const stopped = new Promise<never>((_, reject) => {
    rejectStopped = reject;
  });
  stopped.catch(() => undefined);
  const convert = (error: NodeJS.ErrnoException | null): NodeJS.ErrnoException | null =>
    error && isDiskError(error) ? new StopToolCache(error) : error;
  // Every callback argument is passed on: a WriteStream reads the buffer back from the third on a short write.
  type Callback = (e: NodeJS.ErrnoException | null, ...rest: unknown[]) => void;
  const pass =
    (cb: Callback) =>
    (e: NodeJS.ErrnoException | null, ...rest: unknown[]) =>
      cb(convert(e), ...rest);
  const streamFs = {
    open: (p: fs.PathLike, flags: fs.OpenMode, mode: fs.Mode, cb: Callback) => fsCallbacks.open(p, flags, mode, pass(cb)),
    write: (fd: number, buf: Buffer, offset: number, length: number, position: number | null, cb: Callback) =>
      fsCallbacks.write(fd, buf, offset, length, position, pass(cb)),
    writev: (fd: number, buffers: NodeJS.ArrayBufferView[], position: number | null, cb: Callback) =>
      fsCallbacks.writev(fd, buffers, position, pass(cb)),
    close: (fd: number, cb: Callback) => fsCallbacks.close(fd, pass(cb)),
  };
  fsCallbacks.createWriteStream = function createWriteStream(this: unknown, p: fs.PathLike, options?: unknown) {
    if (p !== file) return original.call(this, p, options as Parameters<typeof original>[1]);
    const base = typeof options === 'string' ? { encoding: options as BufferEncoding } : ((options as object | undefined) ?? {});
    stream = original.call(this, p, { ...base, fs: streamFs } as Parameters<typeof original>[1]);
    if (stopReason) stream.destroy(new StopToolCache(stopReason));
    return stream;
  } as typeof original;
  syncBuiltinESMExports();
  return {
    stop(reason) {
      stopReason ??= reason;
      stream?.destroy(new StopToolCache(reason));
      rejectStopped(new StopToolCache(reason));
    },
    stopped,
    restore() {
      fsCallbacks.createWriteStream = original;
      syncBuiltinESMExports();
    },
  };
}

/**
 * tool-cache and its http-client print through @actions/core on their own (retry lines, debug
 * lines quoting the URL). While they run, stdout passes through the same redaction as every line
 * of ours, so the signed URL's query (registered by the probe) never shows, even off a runner.
 */
async function withRedactedOutput<T>(run: () => Promise<T>): Promise<T> {
  const write = process.stdout.write;
  process.stdout.write = function redactedWrite(this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]) {
    const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : chunk;
    return (write as (...args: unknown[]) => boolean).call(this, typeof text === 'string' ? log.redact(stripQueries(text)) : text, ...rest);
  } as typeof process.stdout.write;
  try {
    return await run();
  } finally {
    process.stdout.write = write;
  }
}

/** Error text with the query of every URL or path it quotes replaced by `?…`. */
export function stripQueries(text: string): string {
  return text.replace(/((?:\b[a-z][a-z0-9+.-]*:\/\/|\/)[^\s?#"'<>]*)\?[^\s"'<>]*/gi, '$1?…');
}

async function explainDownloadError(error: unknown, probe: ProbeResult, context: RequestContext, dir: string): Promise<unknown> {
  if (error instanceof StopToolCache) {
    const reason = error.reason as NodeJS.ErrnoException;
    return isDiskError(reason) ? explainDiskError(reason, 'path', dir, 'writing the download') : reason;
  }
  if (error instanceof ActionError) return error;
  if (error instanceof tc.HTTPError && error.httpStatusCode !== undefined) {
    const status = error.httpStatusCode;
    const attempts = status >= 500 || status === 408 || status === 429 ? TOOL_CACHE_ATTEMPTS : 1;
    return probe.sendAuth ? explainHttpStatus(status, undefined, context, attempts) : explainStorageStatus(status, probe.url, context);
  }
  const message = describeNetworkError(error, new URL(probe.url).hostname).message;
  return new ActionError(
    `The download from ${displayUrl(probe.url)} failed after ${TOOL_CACHE_ATTEMPTS} attempts: ${stripQueries(message)}. The connection broke or the server stopped sending; run the job again.`,
    { cause: error },
  );
}

/**
 * Hashes tool-cache's file as it grows, so the sha256 is ready with the last byte, and tells how
 * far it is written. When tool-cache starts an attempt again, the new file must begin with the
 * same bytes as the one hashed so far (checked once it is that long), or the download fails.
 */
class GrowingFileHasher {
  readonly failed: Promise<never>;
  private hash = createHash('sha256');
  private hashed = 0;
  private inode?: number;
  private timer?: NodeJS.Timeout;
  private busy?: Promise<void>;
  private rejectFailed!: (error: Error) => void;
  private failure?: Error;
  private readonly buffer = Buffer.allocUnsafe(SLICE_BYTES);

  constructor(
    private readonly file: string,
    private readonly prefix: WrittenPrefix,
    private readonly onSize: (bytes: number) => void,
  ) {
    this.failed = new Promise<never>((_, reject) => {
      this.rejectFailed = reject;
    });
    this.failed.catch(() => undefined);
  }

  start(): void {
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  /** tool-cache is done: hash the rest. */
  async finish(): Promise<{ bytes: number; sha256: string }> {
    clearInterval(this.timer);
    await this.busy;
    await this.catchUp(true);
    if (this.failure) throw this.failure;
    return { bytes: this.hashed, sha256: this.hash.digest('hex') };
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.busy;
  }

  private poll(): void {
    if (this.busy || this.failure) return;
    this.busy = this.catchUp(false)
      .catch((error: Error) => {
        this.failure = error;
        this.rejectFailed(error);
      })
      .finally(() => {
        this.busy = undefined;
      });
  }

  private async catchUp(final: boolean): Promise<void> {
    const stat = await fs.promises.stat(this.file).catch(() => undefined);
    if (!stat) {
      if (final) throw new ActionError(`tool-cache reported the download done, but ${this.file} is missing.`);
      return;
    }
    this.onSize(stat.size);
    if (this.inode !== undefined && stat.ino !== this.inode && this.hashed > 0) {
      // A new attempt: it must repeat the bytes already hashed (and followed).
      if (stat.size < this.hashed) {
        if (final)
          throw new ActionError("The archive came out shorter on tool-cache's next attempt than on the one before. Run the job again.");
        return;
      }
      const again = createHash('sha256');
      await this.readRange(0, this.hashed, (bytes) => again.update(bytes));
      if (again.digest('hex') !== this.hash.copy().digest('hex')) {
        throw new ActionError(
          `The server sent different bytes when tool-cache tried again (the first ${this.hashed} bytes differ): the archive changed during the download. Run the job again.`,
        );
      }
    }
    this.inode = stat.ino;
    if (stat.size > this.hashed) {
      await this.readRange(this.hashed, stat.size, (bytes) => {
        this.hash.update(bytes);
        this.hashed += bytes.length;
      });
      this.prefix.grew(this.hashed);
    }
  }

  private async readRange(from: number, to: number, take: (bytes: Buffer) => void): Promise<void> {
    const handle = await fs.promises.open(this.file, 'r');
    try {
      for (let at = from; at < to; ) {
        const { bytesRead } = await handle.read(this.buffer, 0, Math.min(SLICE_BYTES, to - at), at);
        if (bytesRead === 0) throw new ActionError(`${this.file} ended at ${at} bytes while it was being hashed.`);
        take(this.buffer.subarray(0, bytesRead));
        at += bytesRead;
      }
    } finally {
      await handle.close();
    }
  }
}
