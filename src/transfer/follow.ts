/**
 * The archive's bytes, in order, for a consumer that follows the download (the content check):
 * read back from the part of the temp file that is already written without a gap, in large
 * slices, as it grows. A consumer slower than the download lags behind, reading from the disk;
 * nothing is buffered for it beyond the slice it holds. The slices share one buffer: a slice is
 * the consumer's until it asks for the next one. A fresh buffer per slice cost the content check
 * about 0.7 CPU-s per GiB, mostly in garbage collection (a 1 GiB model archive, 2 cores).
 */
import * as fs from 'node:fs';

/** A consumer of the archive's bytes, given to `downloadArchive`. */
export type Follower = (archive: AsyncIterable<Buffer>) => Promise<void>;

export const FOLLOW_SLICE_BYTES = 4 * 1024 * 1024;

/** How far a file is known to be written, told by the download as it goes. */
export class WrittenPrefix {
  private available = 0;
  private final?: number;
  private failure?: Error;
  private wakers: Array<() => void> = [];

  /** Bytes `[0, bytes)` are on disk. */
  grew(bytes: number): void {
    if (bytes <= this.available) return;
    this.available = bytes;
    this.wake();
  }

  /** The download is complete at `total` bytes. */
  finish(total: number): void {
    this.available = total;
    this.final = total;
    this.wake();
  }

  /** The download failed: a reader waiting or reading on gets `error`. */
  fail(error: Error): void {
    this.failure ??= error;
    this.wake();
  }

  /** Resolves with how many bytes past `offset` are readable: 0 at the end, throws once the download failed. */
  async readable(offset: number): Promise<number> {
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.available > offset) return this.available - offset;
      if (this.final !== undefined && offset >= this.final) return 0;
      await new Promise<void>((resolve) => this.wakers.push(resolve));
    }
  }

  private wake(): void {
    const wakers = this.wakers;
    this.wakers = [];
    for (const wake of wakers) wake();
  }
}

/**
 * The bytes of `file` in order as `prefix` says they are written, each slice valid until the next
 * is asked for. The file is opened for each slice, so that nothing holds it open between reads (on
 * Windows an open file cannot be replaced).
 */
export async function* readGrowing(file: string, prefix: WrittenPrefix, sliceBytes = FOLLOW_SLICE_BYTES): AsyncGenerator<Buffer> {
  let offset = 0;
  let buffer: Buffer | undefined;
  for (;;) {
    const readable = await prefix.readable(offset);
    if (readable === 0) return;
    buffer ??= Buffer.allocUnsafe(sliceBytes);
    const slice = buffer.subarray(0, Math.min(sliceBytes, readable));
    const handle = await fs.promises.open(file, 'r');
    let got = 0;
    try {
      while (got < slice.length) {
        const { bytesRead } = await handle.read(slice, got, slice.length - got, offset + got);
        if (bytesRead === 0) throw new Error(`${file} ended at ${offset + got} bytes, before the ${offset + slice.length} already written`);
        got += bytesRead;
      }
    } finally {
      await handle.close();
    }
    offset += got;
    yield slice;
  }
}

/** How long a failed download waits for its follower to stop before it reports its own failure anyway. */
export const FOLLOWER_STOP_MS = 30_000;

/**
 * Runs `follower` alongside `download`: the result comes once both are done. A follower that
 * fails aborts the download (through `abort`) and its error is the one thrown; a download that
 * fails makes the follower's iterable throw, and the download's error is the one thrown.
 */
export async function withFollower<T>(
  follower: Follower | undefined,
  archive: () => AsyncIterable<Buffer>,
  prefix: WrittenPrefix,
  abort: (reason: Error) => void,
  download: () => Promise<T>,
): Promise<T> {
  if (!follower) return download();
  let followerError: { error: unknown } | undefined;
  const following = Promise.resolve()
    .then(() => follower(archive()))
    .catch((error: unknown) => {
      followerError = { error };
      abort(error instanceof Error ? error : new Error(String(error)));
    });
  let result: T;
  try {
    result = await download();
  } catch (error) {
    if (followerError) throw followerError.error;
    prefix.fail(error instanceof Error ? error : new Error(String(error)));
    // Let the follower see the failure and let go of the file, but not for ever.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([following, new Promise((resolve) => (timer = setTimeout(resolve, FOLLOWER_STOP_MS)))]);
    clearTimeout(timer);
    throw error;
  }
  await following;
  if (followerError) throw followerError.error;
  return result;
}
