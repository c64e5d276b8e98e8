/**
 * The archive's SHA-256, computed during the download, in file order. Bytes that arrive at the
 * in-order frontier are hashed straight from the connection's buffer as they are handed to the
 * disk; bytes that arrived ahead of it are read back (recent, so from the page cache) in large
 * slices when the frontier reaches them. No worker thread, no second pass over the file.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';

const READ_BACK_BYTES = 1024 * 1024;

export class InOrderHasher {
  /** Bytes hashed so far: the frontier. */
  hashed = 0;
  /** Of those, bytes read back from the file rather than hashed from a connection's buffer. */
  readBack = 0;
  private readonly hash = createHash('sha256');
  private buffer?: Buffer;
  private reading = false;
  private failure?: Error;
  private onDone?: { resolve: (hex: string) => void; reject: (e: Error) => void };
  private digestHex?: string;
  private stopped = false;
  private idle?: () => void;

  /**
   * @param fd the file, open for reading
   * @param total its final size
   * @param writtenTo how many bytes from the start are on disk without a gap
   */
  constructor(
    private readonly fd: number,
    private readonly total: number,
    private readonly writtenTo: () => number,
  ) {}

  /** Bytes `buf[start, end)` are about to be written at `offset`: hashed now if they are next in order. */
  offer(offset: number, buf: Buffer, start: number, end: number): void {
    if (this.reading || offset !== this.hashed || end <= start) return;
    this.hash.update(buf.subarray(start, end));
    this.hashed += end - start;
    this.settleIfDone();
  }

  /** Something was written: read back what now lies on disk past the frontier. */
  catchUp(): void {
    if (this.reading || this.failure || this.digestHex || this.stopped) return;
    const to = this.writtenTo();
    if (to <= this.hashed) {
      this.settleIfDone();
      return;
    }
    this.reading = true;
    this.buffer ??= Buffer.allocUnsafe(READ_BACK_BYTES);
    const length = Math.min(READ_BACK_BYTES, to - this.hashed);
    const position = this.hashed;
    fs.read(this.fd, this.buffer, 0, length, position, (error, bytesRead) => {
      this.reading = false;
      if (this.stopped) {
        this.idle?.();
        return;
      }
      if (error || bytesRead === 0) {
        this.fail(error ?? new Error(`the file ended at ${position} bytes while hashing it`));
        return;
      }
      this.hash.update((this.buffer as Buffer).subarray(0, bytesRead));
      this.hashed += bytesRead;
      this.readBack += bytesRead;
      this.catchUp();
    });
  }

  /** The hex digest, once every byte is hashed. */
  digest(): Promise<string> {
    if (this.digestHex) return Promise.resolve(this.digestHex);
    if (this.failure) return Promise.reject(this.failure);
    const done = new Promise<string>((resolve, reject) => {
      this.onDone = { resolve, reject };
    });
    this.catchUp();
    return done;
  }

  /** Stops reading back; resolves once no read is under way, so that the file can be closed. */
  stop(): Promise<void> {
    this.stopped = true;
    if (!this.reading) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.idle = resolve;
    });
  }

  private settleIfDone(): void {
    if (this.hashed !== this.total || this.digestHex) return;
    this.digestHex = this.hash.digest('hex');
    this.buffer = undefined;
    this.onDone?.resolve(this.digestHex);
  }

  private fail(error: Error): void {
    this.failure = error;
    this.onDone?.reject(error);
  }
}
