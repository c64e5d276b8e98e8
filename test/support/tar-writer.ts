/**
 * Hand-made tar archives, header by header, for archives GNU tar would refuse to create: absolute
 * paths, `..`, links leading outside, devices. Compressed with the `zstd` program (async spawn).
 */
import { spawn } from 'node:child_process';

export interface RawEntry {
  name: string;
  /** Type flag: '0' file (default), '1' hard link, '2' symlink, '3' char device, '4' block device, '5' dir, '6' FIFO, 'x'/'g' pax, 'L' GNU long name... */
  type?: string;
  linkName?: string;
  data?: Buffer;
  /** Overrides the size written in the header (default: data length). */
  size?: number;
  mode?: number;
  /** ustar prefix field (POSIX long names). */
  prefix?: string;
  /** GNU magic ("ustar  \0") instead of POSIX ("ustar\0" "00"). */
  gnu?: boolean;
  /** Write the size field in GNU base-256 form. */
  base256Size?: boolean;
  /** Corrupt the checksum. */
  badChecksum?: boolean;
}

function octal(block: Buffer, offset: number, length: number, value: number): void {
  block.write(`${value.toString(8).padStart(length - 1, '0')}\0`, offset, length, 'latin1');
}

export function header(entry: RawEntry): Buffer {
  const block = Buffer.alloc(512);
  const name = Buffer.from(entry.name, 'utf8');
  if (name.length > 100) throw new Error(`name too long for a plain header: ${entry.name}`);
  name.copy(block, 0);
  const type = entry.type ?? '0';
  const size = entry.size ?? entry.data?.length ?? 0;
  octal(block, 100, 8, entry.mode ?? (type === '5' ? 0o755 : 0o644));
  octal(block, 108, 8, 0);
  octal(block, 116, 8, 0);
  if (entry.base256Size) {
    block[124] = 0x80;
    let v = BigInt(size);
    for (let i = 135; i > 124; i--) {
      block[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  } else {
    octal(block, 124, 12, size);
  }
  octal(block, 136, 12, 1_700_000_000);
  block.write(type, 156, 1, 'latin1');
  if (entry.linkName) Buffer.from(entry.linkName, 'utf8').copy(block, 157, 0, 100);
  if (entry.gnu) {
    block.write('ustar  \0', 257, 8, 'latin1');
  } else {
    block.write('ustar\0', 257, 6, 'latin1');
    block.write('00', 263, 2, 'latin1');
  }
  block.write('root', 265, 'latin1');
  block.write('root', 297, 'latin1');
  if (entry.prefix) Buffer.from(entry.prefix, 'utf8').copy(block, 345, 0, 155);
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  if (entry.badChecksum) sum += 1;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return block;
}

/** A pax extended header entry (`x`, or `g` for global) carrying `records`. */
export function pax(records: Record<string, string>, type: 'x' | 'g' = 'x'): RawEntry {
  let body = '';
  for (const [key, value] of Object.entries(records)) {
    const rest = ` ${key}=${value}\n`;
    let length = Buffer.byteLength(rest) + 1;
    while (String(length).length + Buffer.byteLength(rest) !== length) length = String(length).length + Buffer.byteLength(rest);
    body += `${length}${rest}`;
  }
  return { name: 'PaxHeaders/x', type, data: Buffer.from(body, 'utf8') };
}

/** A GNU long name (`L`) or long link name (`K`) entry. */
export function gnuLong(name: string, type: 'L' | 'K' = 'L'): RawEntry {
  return { name: '././@LongLink', type, data: Buffer.from(`${name}\0`, 'utf8'), gnu: true };
}

/** The tar bytes of `entries`, ending with two zero blocks unless `end` is false. */
export function tarOf(entries: RawEntry[], { end = true } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(header(entry));
    const data = entry.data ?? Buffer.alloc(0);
    if (data.length > 0) {
      parts.push(data);
      const pad = (512 - (data.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  if (end) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** Compresses with the zstd program: an async spawn, safe while servers run in this process. */
export function zstdCompress(data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('zstd', ['-q', '-c', '-3'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`zstd exited ${code}: ${err}`))));
    child.stdin.end(data);
  });
}

/** A .tar.zst of hand-made entries. */
export async function hostileArchive(entries: RawEntry[]): Promise<Buffer> {
  return zstdCompress(tarOf(entries));
}
