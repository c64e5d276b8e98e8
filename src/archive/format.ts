export type ArchiveFormat = 'zstd' | 'gzip';

const MAGIC: Record<ArchiveFormat, readonly number[]> = {
  zstd: [0x28, 0xb5, 0x2f, 0xfd],
  gzip: [0x1f, 0x8b],
};

/**
 * The archive format that `bytes` begins with. A prefix shorter than the magic number is matched
 * as far as it goes, so the two bytes of a `Range: bytes=0-1` probe are enough to tell them apart.
 */
export function sniffFormat(bytes: Uint8Array, { partial = false } = {}): ArchiveFormat | undefined {
  for (const format of Object.keys(MAGIC) as ArchiveFormat[]) {
    const magic = MAGIC[format];
    const length = partial ? Math.min(magic.length, bytes.length) : magic.length;
    if (length === 0 || bytes.length < length) continue;
    if (magic.slice(0, length).every((byte, i) => bytes[i] === byte)) return format;
  }
  return undefined;
}

/** Hex of the first bytes, for error messages about unexpected content. */
export function describeBytes(bytes: Uint8Array): string {
  const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
  const text = Buffer.from(bytes.subarray(0, 16)).toString('latin1');
  if (/^\s*</.test(text)) return `${head} (looks like HTML or XML, not an archive)`;
  if (/^\s*[{[]/.test(text)) return `${head} (looks like JSON, not an archive)`;
  return head || '(no bytes)';
}
