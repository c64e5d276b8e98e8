/**
 * The pieces of a ranged download, handed out in file order within a sliding window. Connections
 * then write near one another, just past the in-order frontier: the bytes the hash has to read
 * back are recent (still in the page cache), and no write lands far past the last written byte
 * (NTFS fills such a gap with zeros inside that write, which can stall it for long).
 */

const MiB = 1024 * 1024;
export const MIN_PIECE = 4 * MiB;
export const MAX_PIECE = 64 * MiB;

export interface Piece {
  start: number;
  /** Inclusive. */
  end: number;
  /** Bytes from `start` that are on disk. */
  received: number;
}

export const pieceLength = (piece: Piece) => piece.end + 1 - piece.start;

/**
 * About four pieces per connection, 4 to 64 MiB each: a piece is one request (two with the API's
 * redirect), so fewer is cheaper, while more keep the connections close together.
 */
export function pieceSize(total: number, connections: number): number {
  return Math.min(MAX_PIECE, Math.max(MIN_PIECE, Math.ceil(total / (connections * 4))));
}

/** How far past the first unfinished piece a new piece may start: twice what the connections hold. */
export function windowSize(size: number, connections: number): number {
  return 2 * connections * size;
}

export class PieceQueue {
  /** Every piece handed out so far, in file order. */
  readonly pieces: Piece[] = [];
  private nextStart = 0;
  /** Index of the first piece not yet wholly on disk. */
  private firstOpen = 0;
  /** The size of the last pieces, once fewer bytes are left than the connections hold. */
  private tailSize?: number;

  constructor(
    readonly total: number,
    readonly connections: number,
    readonly size = pieceSize(total, connections),
    readonly window = windowSize(size, connections),
  ) {}

  /** The next piece; `undefined` when every byte is handed out, `null` while the window is full. */
  take(): Piece | null | undefined {
    if (this.nextStart >= this.total) return undefined;
    if (this.nextStart >= this.firstUnfinished() + this.window) return null;
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
  firstUnfinished(): number {
    this.advance();
    return this.firstOpen < this.pieces.length ? this.pieces[this.firstOpen].start : this.nextStart;
  }

  /** How many bytes from the file's start are on disk without a gap. */
  writtenPrefix(): number {
    this.advance();
    if (this.firstOpen < this.pieces.length) {
      const piece = this.pieces[this.firstOpen];
      return piece.start + piece.received;
    }
    return this.nextStart;
  }

  /** The piece holding `offset`, by binary search. */
  pieceAt(offset: number): Piece | undefined {
    let lo = 0;
    let hi = this.pieces.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const piece = this.pieces[mid];
      if (offset < piece.start) hi = mid - 1;
      else if (offset > piece.end) lo = mid + 1;
      else return piece;
    }
    return undefined;
  }

  private advance(): void {
    while (this.firstOpen < this.pieces.length && this.pieces[this.firstOpen].received === pieceLength(this.pieces[this.firstOpen])) {
      this.firstOpen++;
    }
  }
}

/** The pieces `PieceQueue` hands out for `total` bytes, ignoring the window: for tests and the log. */
export function planPieces(total: number, connections: number): Piece[] {
  const queue = new PieceQueue(total, connections, pieceSize(total, connections), Number.POSITIVE_INFINITY);
  while (queue.take()) {
    // take them all
  }
  return queue.pieces;
}
