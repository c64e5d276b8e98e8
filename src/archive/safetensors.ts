/**
 * The check of a `.safetensors` file as it streams past: 8 bytes of header length N (little-endian),
 * N bytes of JSON header ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}),
 * then the data section, whose tensors must follow one another from its first byte to its last, as
 * the safetensors library requires when it loads the file. Only the header is held in memory (at most
 * what the library itself accepts); the tensor data is skipped.
 */
import type { TarReader } from './tar.js';

/** The library refuses longer headers (`MAX_HEADER_SIZE` in safetensors' tensor.rs). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Bits per element of the dtypes the safetensors library knows. */
const DTYPE_BITS: Record<string, number> = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  I64: 64,
  U64: 64,
  F64: 64,
  C64: 64,
};

/** What a file that passed holds. */
export interface SafetensorsFacts {
  tensors: number;
  /** Bytes of tensor data. */
  dataBytes: number;
  /** Tensors whose dtype the check does not know: their byte length was not compared with their shape. */
  unknownDtypes: string[];
}

/** A file that is not a whole safetensors file; `tensor` is the tensor at fault, when one is. */
export class SafetensorsError extends Error {
  constructor(
    message: string,
    readonly tensor?: string,
  ) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

const shown = (name: string) => JSON.stringify(name.length > 120 ? `${name.slice(0, 120)}…` : name);

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** The header's length from the file's first 8 bytes, checked against the file's size. */
export function headerLength(first8: Buffer, fileSize: number): number {
  if (fileSize < 8 || first8.length < 8) {
    throw new SafetensorsError(
      `it is ${fileSize} bytes long, too short for a safetensors file (its first 8 bytes give the header's length)`,
    );
  }
  const n = first8.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      `its first 8 bytes give a header of ${n} bytes, more than the ${MAX_HEADER_BYTES} the safetensors library reads: this is not a safetensors file, or it is corrupt`,
    );
  }
  if (Number(n) > fileSize - 8) {
    throw new SafetensorsError(`its first 8 bytes give a header of ${n} bytes, but the file holds only ${fileSize - 8} bytes after them`);
  }
  return Number(n);
}

function parseHeader(header: Buffer): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(header);
  } catch {
    throw new SafetensorsError('its header is not UTF-8 text');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new SafetensorsError(`its header is not valid JSON (${(error as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new SafetensorsError('its header is not a JSON object');
  return json as Record<string, unknown>;
}

function tensorInfo(name: string, value: unknown): TensorInfo {
  const fault = (what: string) => new SafetensorsError(`tensor ${shown(name)} ${what}`, name);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw fault('is not described by a JSON object');
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string') throw fault('has no dtype');
  if (!Array.isArray(shape) || !shape.every(isCount)) throw fault('has no shape (a list of non-negative integers)');
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
    throw fault(`has data_offsets ${JSON.stringify(offsets)}, not [begin, end] with begin <= end`);
  }
  return { name, dtype, shape: shape as number[], begin: offsets[0] as number, end: offsets[1] as number };
}

/**
 * Checks a parsed header against the size of the data section that follows it: every tensor is
 * described in full, lies inside the data section, has as many bytes as its dtype and shape say,
 * and the tensors cover the data section exactly, one after the other.
 */
export function checkHeader(header: Buffer, dataBytes: number): SafetensorsFacts {
  const json = parseHeader(header);
  const tensors: TensorInfo[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === '__metadata__') {
      const ok =
        value !== null && typeof value === 'object' && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');
      if (!ok) throw new SafetensorsError('its __metadata__ is not a map of names to strings, which the safetensors library refuses');
      continue;
    }
    tensors.push(tensorInfo(name, value));
  }
  const unknownDtypes: string[] = [];
  for (const t of tensors) {
    const bits = DTYPE_BITS[t.dtype];
    if (bits === undefined) {
      unknownDtypes.push(t.name);
      continue;
    }
    const bitsNeeded = t.shape.reduce((n, d) => n * BigInt(d), 1n) * BigInt(bits);
    const length = t.end - t.begin;
    if (bitsNeeded !== BigInt(length) * 8n) {
      throw new SafetensorsError(
        `tensor ${shown(t.name)} is ${t.dtype} of shape [${t.shape.join(', ')}], which takes ${bitsNeeded % 8n === 0n ? `${bitsNeeded / 8n} bytes` : `${bitsNeeded} bits`}, but its data_offsets [${t.begin}, ${t.end}] give ${length} bytes`,
        t.name,
      );
    }
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let end = 0;
  let previous: TensorInfo | undefined;
  for (const t of tensors) {
    if (t.end > dataBytes) {
      throw new SafetensorsError(
        `tensor ${shown(t.name)} has data_offsets [${t.begin}, ${t.end}], past the end of the data section (${dataBytes} bytes): the file is cut short, or its header lies`,
        t.name,
      );
    }
    if (t.begin !== end) {
      const after = previous ? `the tensor before it, ${shown(previous.name)}, ends at ${end}` : 'the data section starts at 0';
      throw new SafetensorsError(
        `tensor ${shown(t.name)} starts at byte ${t.begin} of the data section, but ${after}: tensors must follow one another without gaps or overlaps`,
        t.name,
      );
    }
    end = t.end;
    previous = t;
  }
  if (end !== dataBytes) {
    throw new SafetensorsError(
      `its tensors end at byte ${end} of the data section, but the file holds ${dataBytes} bytes of data: ${dataBytes - end} bytes after the last tensor${previous ? ` (${shown(previous.name)})` : ''}, so the header does not describe the file`,
      previous?.name,
    );
  }
  return { tensors: tensors.length, dataBytes, unknownDtypes };
}

/**
 * Checks the safetensors file that is the tar reader's current entry (`size` bytes), reading only
 * its header; the data is left for the reader to skip.
 */
export async function checkSafetensorsEntry(tar: TarReader, size: number): Promise<SafetensorsFacts> {
  const n = headerLength(await tar.read(8), size);
  return checkHeader(await tar.read(n), size - 8 - n);
}
