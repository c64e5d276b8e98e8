/**
 * Hands the chunks one reader reads to a second reader, in order, so that two checks share one
 * read of a file (the tool cache's sha256 and the content check). The second reader sets the pace:
 * `push` resolves once it has taken the chunk, or at once when it has stopped reading.
 */
export class Feed implements AsyncIterable<Buffer> {
  private chunk?: Buffer;
  private ended = false;
  private closed = false;
  private taken?: () => void;
  private waiting?: (result: IteratorResult<Buffer>) => void;

  /** Hands `chunk` on; resolves once the reader has it, or at once when the reader has stopped. */
  push(chunk: Buffer): Promise<void> {
    if (this.closed || this.ended) return Promise.resolve();
    if (this.waiting) {
      const deliver = this.waiting;
      this.waiting = undefined;
      deliver({ value: chunk, done: false });
      return Promise.resolve();
    }
    this.chunk = chunk;
    return new Promise((resolve) => {
      this.taken = resolve;
    });
  }

  /** No more chunks. */
  end(): void {
    this.ended = true;
    this.waiting?.({ value: undefined, done: true });
    this.waiting = undefined;
  }

  /** True once the reader has stopped reading. */
  get stopped(): boolean {
    return this.closed;
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: () => {
        if (this.chunk !== undefined) {
          const value = this.chunk;
          this.chunk = undefined;
          this.release();
          return Promise.resolve({ value, done: false });
        }
        if (this.ended || this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          this.waiting = resolve;
        });
      },
      return: () => {
        this.closed = true;
        this.chunk = undefined;
        this.release();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  private release(): void {
    const taken = this.taken;
    this.taken = undefined;
    taken?.();
  }
}
