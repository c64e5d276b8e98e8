import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { checkHeader, checkSafetensorsEntry, headerLength, MAX_HEADER_BYTES, SafetensorsError } from '../../src/archive/safetensors.js';
import { TarReader } from '../../src/archive/tar.js';
import { peftAdapterFiles, safetensors, safetensorsHead, type TensorSpec, weights } from '../support/archives.js';
import { tarOf } from '../support/tar-writer.js';

const BYTES: Record<string, number> = { BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F16: 2, BF16: 2, I32: 4, F32: 4, F64: 8, I64: 8 };

/** Checks `file` the way the content check does: as the only entry of a tar, handed over in pieces of `piece` bytes. */
async function check(file: Buffer, piece = 4096) {
  const tar = tarOf([{ name: 'model.safetensors', data: file }]);
  async function* pieces() {
    for (let i = 0; i < tar.length; i += piece) yield tar.subarray(i, i + piece);
  }
  const reader = new TarReader(pieces());
  const entry = await reader.next();
  assert.ok(entry);
  const facts = await checkSafetensorsEntry(reader, entry.size);
  assert.equal(await reader.next(), undefined, 'the rest of the file is skipped and the archive read to its end');
  return facts;
}

async function refuses(file: Buffer, message: RegExp, tensor?: string) {
  await assert.rejects(check(file), (error: unknown) => {
    assert.ok(error instanceof SafetensorsError, `expected a SafetensorsError, got ${String(error)}`);
    assert.match(error.message, message);
    assert.equal(error.tensor, tensor);
    return true;
  });
}

/** A file with these tensors and exactly their data. */
function fileOf(tensors: TensorSpec[], extraData = 0): Buffer {
  const data = tensors.reduce((n, t) => n + t.bytes, 0);
  return Buffer.concat([safetensorsHead(tensors), Buffer.alloc(data + extraData, 7)]);
}

/** A file whose header is exactly `json`. */
function rawFile(json: string, data = 0): Buffer {
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([head, Buffer.from(json), Buffer.alloc(data)]);
}

const tensor = fc.record({
  dtype: fc.constantFrom(...Object.keys(BYTES)),
  shape: fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 3 }),
});
const tensors = fc.uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 12 }), tensor), {
  maxLength: 6,
  selector: ([name]) => name,
});
const specsOf = (list: Array<[string, { dtype: string; shape: number[] }]>): TensorSpec[] =>
  list
    .filter(([name]) => name !== '__metadata__')
    .map(([name, t]) => ({ name, ...t, bytes: t.shape.reduce((a, b) => a * b, 1) * BYTES[t.dtype] }));

describe('the safetensors check', () => {
  test('the files the test archives use pass: F32 (the PEFT adapter) and BF16 weights of several megabytes', async () => {
    assert.equal((await check(peftAdapterFiles()['adapter_model.safetensors'])).tensors, 16);
    const big = weights(5 * 1024 * 1024 + 3, { tensorBytes: 1024 * 1024 });
    const facts = await check(big, 65_536 + 1);
    assert.equal(facts.tensors, 6);
    assert.equal(facts.dataBytes, big.length - 8 - Number(big.readBigUInt64LE(0)));
    assert.equal((await check(rawFile('{}'))).tensors, 0);
  });

  test('any file laid out as the library writes it passes, in pieces of any size', async () => {
    await fc.assert(
      fc.asyncProperty(tensors, fc.integer({ min: 1, max: 700 }), async (list, piece) => {
        const specs = specsOf(list);
        const facts = await check(fileOf(specs), piece);
        assert.equal(facts.tensors, specs.length);
        assert.deepEqual(facts.unknownDtypes, []);
      }),
    );
  });

  test('a file cut short or grown by any number of bytes fails, naming the last tensor', async () => {
    await fc.assert(
      fc.asyncProperty(
        tensors.filter((list) => specsOf(list).some((t) => t.bytes > 0)),
        fc.integer({ min: 1, max: 64 }),
        fc.boolean(),
        async (list, n, cut) => {
          const specs = specsOf(list);
          const whole = fileOf(specs);
          const file = cut ? whole.subarray(0, Math.max(8, whole.length - n)) : Buffer.concat([whole, Buffer.alloc(n)]);
          if (file.length === whole.length) return;
          await assert.rejects(check(file), (error: unknown) => {
            assert.ok(error instanceof SafetensorsError);
            if (cut && file.length > 8)
              assert.match(error.message, /past the end of the data section|header of \d+ bytes, but the file holds only/);
            if (!cut) assert.match(error.message, /bytes after the last tensor/);
            return true;
          });
        },
      ),
    );
  });

  test('a tensor whose offsets disagree with its dtype and shape fails, naming it', async () => {
    await fc.assert(
      fc.asyncProperty(
        tensors.filter((list) => list.length > 0),
        fc.nat(),
        fc.integer({ min: 1, max: 9 }),
        async (list, pick, extra) => {
          const specs = specsOf(list);
          if (specs.length === 0) return;
          const victim = specs[pick % specs.length];
          const lying = specs.map((t) => (t === victim ? { ...t, bytes: t.bytes + extra } : t));
          // The data is as long as the lying header says: only the dtype x shape comparison can catch it.
          await refuses(fileOf(lying), new RegExp(`takes .* but its data_offsets .* give ${victim.bytes + extra} bytes`), victim.name);
        },
      ),
    );
  });

  test('offsets outside the data section, gaps and overlaps fail, naming the tensor', async () => {
    const a = { dtype: 'F32', shape: [4], data_offsets: [0, 16] };
    await refuses(
      rawFile(JSON.stringify({ a, b: { dtype: 'F32', shape: [4], data_offsets: [16, 32] } }), 24),
      /"b" has data_offsets \[16, 32\], past the end of the data section \(24 bytes\)/,
      'b',
    );
    await refuses(
      rawFile(JSON.stringify({ a, b: { dtype: 'F32', shape: [1], data_offsets: [20, 24] } }), 24),
      /"b" starts at byte 20 .* "a", ends at 16/,
      'b',
    );
    await refuses(
      rawFile(JSON.stringify({ a, b: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }), 16),
      /"b" starts at byte 12 .* "a", ends at 16/,
      'b',
    );
    await refuses(
      rawFile(JSON.stringify({ b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }), 8),
      /"b" starts at byte 4 .* the data section starts at 0/,
      'b',
    );
    await refuses(
      rawFile(JSON.stringify({ a: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }), 8),
      /"a" has data_offsets \[8,4\], not \[begin, end\]/,
      'a',
    );
  });

  test('an unknown dtype skips only the byte-length comparison', async () => {
    const file = rawFile(
      JSON.stringify({ q: { dtype: 'Q4_K', shape: [32], data_offsets: [0, 18] }, f: { dtype: 'F16', shape: [3], data_offsets: [18, 24] } }),
      24,
    );
    assert.deepEqual((await check(file)).unknownDtypes, ['q']);
    const outside = rawFile(JSON.stringify({ q: { dtype: 'Q4_K', shape: [32], data_offsets: [0, 30] } }), 24);
    await refuses(outside, /past the end/, 'q');
  });

  test('sub-byte dtypes count bits', async () => {
    assert.equal((await check(rawFile(JSON.stringify({ f: { dtype: 'F4', shape: [2, 3], data_offsets: [0, 3] } }), 3))).tensors, 1);
    await refuses(rawFile(JSON.stringify({ f: { dtype: 'F4', shape: [3], data_offsets: [0, 2] } }), 2), /takes 12 bits/, 'f');
  });

  test('what is not a safetensors file fails before any tensor', async () => {
    await refuses(Buffer.from('abc'), /3 bytes long, too short/);
    const huge = Buffer.alloc(16);
    huge.writeBigUInt64LE(BigInt(MAX_HEADER_BYTES + 1));
    await refuses(huge, /more than the 100000000 the safetensors library reads/);
    huge.writeBigUInt64LE(2n ** 63n);
    await refuses(huge, /more than the 100000000/);
    huge.writeBigUInt64LE(9n);
    await refuses(huge, /header of 9 bytes, but the file holds only 8 bytes after them/);
    await refuses(rawFile('{"a": '), /not valid JSON/);
    await refuses(rawFile('[1,2]'), /not a JSON object/);
    await refuses(rawFile(Buffer.from([0x7b, 0xff, 0x7d]).toString('latin1')), /not valid JSON|not UTF-8/);
    await refuses(rawFile('{"__metadata__": {"format": 1}}'), /__metadata__ is not a map of names to strings/);
    await refuses(rawFile('{"t": {"shape": [1], "data_offsets": [0, 1]}}', 1), /"t" has no dtype/, 't');
    await refuses(rawFile('{"t": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}', 1), /"t" has no shape/, 't');
    await refuses(rawFile('{"t": [1]}', 1), /"t" is not described by a JSON object/, 't');
  });

  test('the header length is read from 8 little-endian bytes', () => {
    const first = Buffer.from([0x10, 0x02, 0, 0, 0, 0, 0, 0]);
    assert.equal(headerLength(first, 0x210 + 8), 0x210);
    assert.throws(() => headerLength(first, 0x210 + 7), SafetensorsError);
  });

  test('checkHeader agrees with the test helper that writes F32 files', () => {
    const file = safetensors({
      b: { dtype: 'F32', shape: [3], data: new Float32Array(3) },
      a: { dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
    });
    const n = Number(file.readBigUInt64LE(0));
    assert.equal(checkHeader(file.subarray(8, 8 + n), file.length - 8 - n).tensors, 2);
    assert.throws(() => checkHeader(file.subarray(8, 8 + n), file.length - 8 - n - 4), /past the end/);
  });
});
