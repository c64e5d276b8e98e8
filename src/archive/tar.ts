/**
 * Reads the headers of a tar stream (ustar, GNU and pax) without extracting anything: what each
 * entry is called, what kind it is, where a link points and how big it is. File data is handed out
 * piece by piece to whoever asks for it, and skipped otherwise, never buffered, so an archive of any
 * size is read in constant memory.
 */

export const BLOCK = 512;

/** The most a GNU long name or pax header may hold; real ones are a few hundred bytes. */
const MAX_METADATA_BYTES = 1024 * 1024;

export interface TarEntry {
  /** The name as the archive gives it (pax `path` and GNU long names applied). */
  name: string;
  /** The type flag: '0' file, '1' hard link, '2' symlink, '3'/'4' devices, '5' directory, '6' FIFO, ... */
  type: string;
  /** Link target (pax `linkpath` and GNU long link names applied); '' for other entries. */
  linkName: string;
  /** Bytes of data that follow the header. */
  size: number;
  mode: number;
  /** pax keys seen for this entry (per-entry and global), for checks on what tar would honour. */
  paxKeys: string[];
}

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarFormatError';
  }
}

/** Pulls exact byte counts out of an async stream of chunks. */
class ByteReader {
  private readonly chunks: Buffer[] = [];
  private length = 0;
  private done = false;
  /** Total bytes consumed, for error messages. */
  offset = 0;

  constructor(private readonly source: AsyncIterator<Uint8Array>) {}

  private async fill(n: number): Promise<void> {
    while (this.length < n && !this.done) {
      const next = await this.source.next();
      if (next.done) {
        this.done = true;
      } else if (next.value.length > 0) {
        const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
        this.chunks.push(chunk);
        this.length += chunk.length;
      }
    }
  }

  /** Exactly `n` bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const take = Math.min(n, this.length);
    const out = Buffer.alloc(take);
    let written = 0;
    while (written < take) {
      const head = this.chunks[0];
      const part = Math.min(head.length, take - written);
      head.copy(out, written, 0, part);
      written += part;
      if (part === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(part);
    }
    this.length -= take;
    this.offset += take;
    return out;
  }

  /** Drops `n` bytes; false when the stream ended first. */
  async skip(n: number): Promise<boolean> {
    let left = n;
    while (left > 0) {
      if (this.length === 0) {
        await this.fill(1);
        if (this.length === 0) return false;
      }
      const head = this.chunks[0];
      const part = Math.min(head.length, left);
      if (part === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(part);
      this.length -= part;
      this.offset += part;
      left -= part;
    }
    return true;
  }

  /** The next bytes as they came, at most `max` of them, without copying; empty at the end of the stream. */
  async chunk(max: number): Promise<Buffer> {
    if (this.length === 0) await this.fill(1);
    if (this.length === 0) return Buffer.alloc(0);
    const head = this.chunks[0];
    const part = Math.min(head.length, max);
    if (part === head.length) this.chunks.shift();
    else this.chunks[0] = head.subarray(part);
    this.length -= part;
    this.offset += part;
    return head.subarray(0, part);
  }
}

function cString(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? field.length : end).toString('utf8');
}

/** An octal number field, or GNU's base-256 form (high bit set) used for sizes of 8 GiB and more. */
export function parseNumber(block: Buffer, start: number, length: number): number {
  const field = block.subarray(start, start + length);
  if (field.length > 0 && (field[0] & 0x80) !== 0) {
    if ((field[0] & 0x40) !== 0) throw new TarFormatError('a negative number in a tar header');
    let value = field[0] & 0x3f;
    for (let i = 1; i < field.length; i++) {
      value = value * 256 + field[i];
      if (!Number.isSafeInteger(value)) throw new TarFormatError('a number too large in a tar header');
    }
    return value;
  }
  const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`a malformed number ${JSON.stringify(text)} in a tar header`);
  const value = parseInt(text, 8);
  if (!Number.isSafeInteger(value)) throw new TarFormatError('a number too large in a tar header');
  return value;
}

function checksumMatches(block: Buffer): boolean {
  const stored = parseNumber(block, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : block[i];
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  return stored === unsigned || stored === signed;
}

/** Parses pax extended header records: `<length> <key>=<value>\n`, repeated. */
export function parsePax(data: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // padding
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw new TarFormatError('a malformed pax header record');
    const lengthText = data.subarray(pos, space).toString('latin1');
    const length = /^[0-9]+$/.test(lengthText) ? Number(lengthText) : NaN;
    if (!Number.isSafeInteger(length) || length <= space - pos + 1 || pos + length > data.length) {
      throw new TarFormatError('a malformed pax header record');
    }
    const record = data.subarray(space + 1, pos + length);
    if (record[record.length - 1] !== 0x0a) throw new TarFormatError('a malformed pax header record');
    const text = record.subarray(0, record.length - 1).toString('utf8');
    const eq = text.indexOf('=');
    if (eq <= 0) throw new TarFormatError('a malformed pax header record');
    records.set(text.slice(0, eq), text.slice(eq + 1));
    pos += length;
  }
  return records;
}

function paxSize(value: string): number {
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n)) throw new TarFormatError(`a malformed pax size ${JSON.stringify(value)}`);
  return n;
}

/**
 * A tar stream, entry by entry. `next()` gives the next entry (metadata entries, GNU long names
 * `L`/`K` and pax `x`/`g`, are applied to the entry they describe and not given themselves);
 * between two calls the entry's data can be read with `read`/`chunk`, and whatever is not read is
 * skipped. Stops at the end-of-archive blocks or at the end of the stream on an entry boundary; a
 * stream cut inside an entry, a bad header checksum or malformed metadata throws a TarFormatError.
 */
export class TarReader {
  private readonly reader: ByteReader;
  private readonly globals = new Map<string, string>();
  private current?: TarEntry;
  /** Data bytes of the current entry not read yet, and the padding after them. */
  private left = 0;
  private pad = 0;
  private ended = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.reader = new ByteReader(source[Symbol.asyncIterator]());
  }

  /** Bytes of the current entry's data not read yet. */
  get remaining(): number {
    return this.left;
  }

  /** The next entry, or undefined at the end of the archive. */
  async next(): Promise<TarEntry | undefined> {
    if (this.ended) return undefined;
    if (this.current !== undefined) {
      const name = this.current.name;
      this.current = undefined;
      if (!(await this.reader.skip(this.left + this.pad))) {
        throw new TarFormatError(`the archive ends inside the data of ${JSON.stringify(name)}: it is truncated`);
      }
      this.left = 0;
      this.pad = 0;
    }
    const entry = await this.readHeader();
    if (entry === undefined) {
      this.ended = true;
      return undefined;
    }
    // Only these carry data after the header; links, directories and devices do not, whatever size says.
    const hasData = entry.type === '0' || entry.type === '7' || !'123456'.includes(entry.type);
    this.current = entry;
    this.left = hasData ? entry.size : 0;
    this.pad = hasData ? padding(entry.size) : 0;
    return entry;
  }

  /** The next piece of the current entry's data, at most `max` bytes, as it came; empty at the entry's end. */
  async chunk(max = Number.POSITIVE_INFINITY): Promise<Buffer> {
    if (this.left === 0) return Buffer.alloc(0);
    const piece = await this.reader.chunk(Math.min(max, this.left));
    if (piece.length === 0) this.truncated();
    this.left -= piece.length;
    return piece;
  }

  /** Exactly `n` bytes of the current entry's data (fewer only when the entry holds fewer). */
  async read(n: number): Promise<Buffer> {
    const take = Math.min(n, this.left);
    const data = await this.reader.read(take);
    if (data.length < take) this.truncated();
    this.left -= take;
    return data;
  }

  private truncated(): never {
    throw new TarFormatError(`the archive ends inside the data of ${JSON.stringify(this.current?.name ?? '')}: it is truncated`);
  }

  private async metadata(size: number, what: string): Promise<Buffer> {
    if (size > MAX_METADATA_BYTES) throw new TarFormatError(`a ${what} of ${size} bytes, more than any real archive has`);
    const data = await this.reader.read(size);
    if (data.length < size || !(await this.reader.skip(padding(size)))) throw new TarFormatError(`the archive ends inside a ${what}`);
    return data;
  }

  /** Reads headers up to the next real entry; undefined at the end of the archive. */
  private async readHeader(): Promise<TarEntry | undefined> {
    const reader = this.reader;
    let pax = new Map<string, string>();
    let paxSeen = false;
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      const block = await reader.read(BLOCK);
      if (block.length === 0) return undefined; // Ended on an entry boundary without end-of-archive blocks: tar accepts that.
      if (block.length < BLOCK) throw new TarFormatError(`the archive ends inside a header (at byte ${reader.offset})`);
      if (block.every((b) => b === 0)) {
        // End of archive: two zero blocks. A lone zero block followed by more headers is read
        // differently by different tars, so it is refused rather than guessed at.
        const next = await reader.read(BLOCK);
        if (next.length === 0 || next.every((b) => b === 0)) return undefined;
        throw new TarFormatError(`a lone zero block at byte ${reader.offset - 2 * BLOCK} is followed by more entries`);
      }
      if (!checksumMatches(block)) {
        throw new TarFormatError(
          `the header at byte ${reader.offset - BLOCK} has a bad checksum: this is not a tar archive, or it is corrupt`,
        );
      }
      const type = String.fromCharCode(block[156] || 0x30);
      const headerSize = parseNumber(block, 124, 12);

      if (type === 'L' || type === 'K') {
        // Two of them for one entry: tars disagree on which one counts.
        if ((type === 'L' ? longName : longLink) !== undefined) throw new TarFormatError('two GNU long names for one entry');
        const name = cString(await this.metadata(headerSize, 'GNU long name'), 0, headerSize);
        if (type === 'L') longName = name;
        else longLink = name;
        continue;
      }
      if (type === 'x' || type === 'g') {
        const records = parsePax(await this.metadata(headerSize, 'pax header'));
        if (type === 'g') {
          // A global name, link or size would apply to every later entry; tar implementations
          // disagree on honouring them, so a listing could not be trusted to match the extraction.
          const key = ['path', 'linkpath', 'size'].find((k) => records.has(k));
          if (key) throw new TarFormatError(`a global pax header sets \`${key}\` for every entry, which this action does not accept`);
          for (const [k, v] of records) this.globals.set(k, v);
        } else {
          if (paxSeen) throw new TarFormatError('two pax headers for one entry');
          pax = records;
          paxSeen = true;
        }
        continue;
      }

      const magic = block.subarray(257, 263).toString('latin1');
      // POSIX ustar ("ustar\0") splits long names into prefix + name; GNU ("ustar  ") uses that space otherwise.
      const prefix = magic === 'ustar\0' ? cString(block, 345, 155) : '';
      const headerName = cString(block, 0, 100);
      const attrs = new Map([...this.globals, ...pax]);
      const name = attrs.get('path') ?? longName ?? (prefix ? `${prefix}/${headerName}` : headerName);
      const linkName = attrs.get('linkpath') ?? longLink ?? cString(block, 157, 100);
      const size = attrs.has('size') ? paxSize(attrs.get('size') as string) : headerSize;
      return { name, type, linkName, size, mode: parseNumber(block, 100, 8), paxKeys: [...attrs.keys()] };
    }
  }
}

/** The entries of a tar stream, in order, their data skipped (see TarReader). */
export async function* readTarEntries(source: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry> {
  const tar = new TarReader(source);
  for (let entry = await tar.next(); entry !== undefined; entry = await tar.next()) yield entry;
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}
