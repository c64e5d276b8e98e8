import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import * as zlib from 'node:zlib';
import { type Asked, ContentsError, checkContents, MAX_CONFIG_BYTES } from '../../src/archive/contents.js';
import { nodeZstd, withDecompressed, type ZstdDecoder } from '../../src/archive/decompress.js';
import { Feed } from '../../src/archive/feed.js';
import { readTarEntries } from '../../src/archive/tar.js';
import { makeArchive, modelFiles, peftAdapterFiles, weights } from '../support/archives.js';
import { tarOf, zstdCompress } from '../support/tar-writer.js';

/** The zstd decoders this Node.js can run: the program always, node:zlib's where it exists. */
const DECODERS: ZstdDecoder[] = nodeZstd() ? ['node', 'program'] : ['program'];

/** Hands `data` over in pieces of `piece` bytes, recording whether the reader stopped early. */
function source(data: Buffer, piece = 64 * 1024) {
  const state = { read: 0, closed: false };
  const iterable: AsyncIterable<Buffer> = {
    [Symbol.asyncIterator]() {
      let offset = 0;
      return {
        next: async () => {
          if (offset >= data.length) return { value: undefined, done: true };
          const value = data.subarray(offset, offset + piece);
          offset += value.length;
          state.read = offset;
          return { value, done: false };
        },
        return: async () => {
          state.closed = true;
          return { value: undefined, done: true };
        },
      };
    },
  };
  return { iterable, state };
}

const MERGED: Asked = { fetched: 'merged', step: 120 };
const ADAPTER: Asked = { fetched: 'adapter', step: 120 };

async function contentsOf(archive: Buffer, asked: Asked, zstd?: ZstdDecoder, format: 'zstd' | 'gzip' = 'zstd') {
  return checkContents(source(archive).iterable, format, asked, { zstd });
}

async function refused(archive: Buffer, asked: Asked, ...patterns: RegExp[]) {
  await assert.rejects(contentsOf(archive, asked), (error: unknown) => {
    assert.ok(error instanceof ContentsError, `expected a ContentsError, got ${String(error)}`);
    for (const p of patterns) assert.match(error.message, p);
    return true;
  });
}

describe('what the archive holds', () => {
  for (const zstd of DECODERS) {
    test(`an adapter at the root, and a sharded merged model in one folder, decoded by ${zstd === 'node' ? 'node:zlib' : 'the zstd program'}`, async () => {
      const adapter = await contentsOf(await makeArchive(peftAdapterFiles({ r: 16, baseModel: 'org/base' }), 'zstd'), ADAPTER, zstd);
      assert.deepEqual(
        [adapter.kind, adapter.folder, adapter.baseModel, adapter.loraRank, adapter.weights, adapter.safetensors.files],
        ['adapter', '', 'org/base', 16, ['adapter_model.safetensors'], 1],
      );
      const merged = await contentsOf(
        await makeArchive(modelFiles({ shards: 3, weightBytes: 6 * 1024 * 1024 }), 'zstd', { topDir: 'm' }),
        MERGED,
        zstd,
      );
      assert.deepEqual(
        [merged.kind, merged.folder, merged.architecture, merged.weights.length, merged.safetensors.files],
        ['merged', 'm', 'LlamaForCausalLM', 3, 3],
      );
    });
  }

  test('gzip archives, and a full model', async () => {
    const report = await contentsOf(await makeArchive(modelFiles(), 'gzip'), { fetched: 'model' }, undefined, 'gzip');
    assert.equal(report.kind, 'model');
  });

  test('a merged model where an adapter was asked for at a step says so, and why', async () => {
    await refused(
      await makeArchive(modelFiles(), 'zstd', { topDir: 'merged' }),
      ADAPTER,
      /^Together sent a merged model for step 120, not an adapter: the folder "merged\/" holds "config\.json"/,
      /may ignore `checkpoint` when `checkpoint_step` is given/,
      /`checkpoint-type: merged` at step 120/,
      /verify-contents: false/,
    );
  });

  test('an adapter where a merged or full model was asked for', async () => {
    const adapter = await makeArchive(peftAdapterFiles(), 'zstd');
    await refused(adapter, MERGED, /^Together sent an adapter for step 120, not a merged model/, /`checkpoint-type: adapter`/);
    await refused(
      adapter,
      { fetched: 'model' },
      /^Together sent an adapter as the final checkpoint, not a full model/,
      /report it to Together/,
    );
  });

  test('neither kind: what the folder holds is listed', async () => {
    await refused(
      await makeArchive({ 'README.md': Buffer.from('hi'), 'weights.bin': Buffer.alloc(8) }, 'zstd', { topDir: 'x' }),
      MERGED,
      /is not a merged model: a merged model needs config\.json and weights .* the folder "x\/" holds "README\.md", "weights\.bin"/,
    );
    await refused(
      await makeArchive({ 'config.json': Buffer.from('{}'), 'training_args.bin': Buffer.alloc(8) }, 'zstd'),
      MERGED,
      /needs config\.json and weights/,
    );
    await refused(
      await zstdCompress(tarOf([])),
      ADAPTER,
      /is not an adapter: an adapter needs adapter_config\.json .* the archive root holds no files/,
    );
  });

  test('the model folder is the one top-level folder; files elsewhere do not count', async () => {
    await refused(
      await makeArchive({ 'a/config.json': Buffer.from('{}'), 'a/model.safetensors': weights(1000), 'b/x': Buffer.from('') }, 'zstd'),
      MERGED,
      /the archive root holds no files \(and the folders "a\/", "b\/"\)/,
    );
  });

  test('sharded weights: the index must name files that are there, and must be there', async () => {
    const files = modelFiles({ shards: 3, weightBytes: 3 * 1024 * 1024 });
    const { 'model-00002-of-00003.safetensors': _missing, ...withoutOne } = files;
    await refused(
      await makeArchive(withoutOne, 'zstd'),
      MERGED,
      /"model\.safetensors\.index\.json" names 3 weight files, and 1 of them is not in the archive: "model-00002-of-00003\.safetensors"/,
    );
    const { 'model.safetensors.index.json': _index, ...noIndex } = files;
    await refused(await makeArchive(noIndex, 'zstd'), MERGED, /sharded weights .* but no index file/);
    await refused(
      await makeArchive({ ...files, 'model.safetensors.index.json': Buffer.from('{"metadata": {}}') }, 'zstd'),
      MERGED,
      /has no weight_map/,
    );
  });

  test('configs: refused when too large or not JSON objects', async () => {
    const adapter = peftAdapterFiles();
    await refused(
      await makeArchive({ ...adapter, 'adapter_config.json': Buffer.alloc(MAX_CONFIG_BYTES + 1, 0x20) }, 'zstd'),
      ADAPTER,
      /is 1048577 bytes, more than .* it is not a model config/,
    );
    await refused(
      await makeArchive({ ...adapter, 'adapter_config.json': Buffer.from('{"r": 8,') }, 'zstd'),
      ADAPTER,
      /"adapter_config\.json" is not valid JSON/,
    );
    await refused(
      await makeArchive({ ...modelFiles(), 'config.json': Buffer.from('[1]') }, 'zstd'),
      MERGED,
      /"config\.json" is not a JSON object/,
    );
  });

  test('values for outputs: control characters and odd ranks are refused with a note, not passed on', async () => {
    const config = (extra: Record<string, unknown>) => Buffer.from(JSON.stringify({ peft_type: 'LORA', ...extra }));
    const files = peftAdapterFiles();
    const report = await contentsOf(
      await makeArchive({ ...files, 'adapter_config.json': config({ base_model_name_or_path: 'org/x\n::warning::y', r: 8.5 }) }, 'zstd'),
      ADAPTER,
    );
    assert.equal(report.baseModel, undefined);
    assert.equal(report.loraRank, undefined);
    assert.equal(report.notes.length, 2);
    assert.match(report.notes[0], /base_model_name_or_path "org\/x\\n::warning::y" was not passed on: it holds control characters/);
    assert.match(report.notes[1], /r "8\.5" was not passed on: it is not a positive integer/);
    const html = await contentsOf(
      await makeArchive({ ...files, 'adapter_config.json': config({ base_model_name_or_path: '<b>org/x</b>', r: 4 }) }, 'zstd'),
      ADAPTER,
    );
    assert.equal(html.baseModel, '<b>org/x</b>', 'HTML is text in an output; the summary escapes it');
    assert.equal(html.loraRank, 4);
  });

  test('a damaged safetensors file anywhere in the archive fails, naming the file and the tensor', async () => {
    const good = weights(3 * 1024 * 1024, { tensorBytes: 1024 * 1024 });
    const cut = good.subarray(0, good.length - 1000);
    await refused(
      await makeArchive({ ...peftAdapterFiles(), 'extra/model.safetensors': cut }, 'zstd'),
      ADAPTER,
      /damaged weights file, "extra\/model\.safetensors" \(3144728 bytes\): tensor "model\.layers\.2\.weight" has data_offsets \[\d+, \d+\], past the end of the data section/,
    );
  });

  test('not an archive at all', async () => {
    await refused(
      Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(5000)]),
      MERGED,
      /cannot be read as a zstd-compressed tar: zstd could not decompress it/,
    );
    await refused(await zstdCompress(randomBytes(5000)), MERGED, /cannot be read as a zstd-compressed tar: .* tar header/);
    await assert.rejects(
      contentsOf(zlib.gzipSync(randomBytes(100)).subarray(0, 50), MERGED, undefined, 'gzip'),
      /cannot be read as a gzip-compressed tar/,
    );
  });
});

describe('decompressing as the bytes come', () => {
  for (const zstd of DECODERS) {
    const name = zstd === 'node' ? 'node:zlib' : 'the zstd program';

    test(`${name}: the rest after the end of the tar is read and dropped, junk included`, async () => {
      const archive = await makeArchive(modelFiles(), 'zstd');
      const { iterable, state } = source(Buffer.concat([archive, randomBytes(3 * 1024 * 1024)]), 100_000);
      const report = await checkContents(iterable, 'zstd', MERGED, { zstd });
      assert.equal(report.kind, 'merged');
      assert.equal(state.read, archive.length + 3 * 1024 * 1024, 'whoever feeds it can finish');
    });

    test(`${name}: a failure stops the reading at once`, async () => {
      const archive = await makeArchive({ 'a.safetensors': Buffer.alloc(100) }, 'zstd');
      const { iterable, state } = source(Buffer.concat([archive, randomBytes(8 * 1024 * 1024)]), 1000);
      await assert.rejects(checkContents(iterable, 'zstd', MERGED, { zstd }), /damaged weights file/);
      assert.ok(state.closed, 'the source was closed');
      assert.ok(state.read < 2 * 1024 * 1024, `read ${state.read} bytes before stopping`);
    });

    test(`${name}: a zstd stream cut short is the decoder's error, not a truncated tar`, async () => {
      const archive = await makeArchive(modelFiles({ weightBytes: 2 * 1024 * 1024 }), 'zstd');
      await assert.rejects(
        checkContents(source(archive.subarray(0, archive.length - 100_000)).iterable, 'zstd', MERGED, { zstd }),
        /cannot be read as a zstd-compressed tar: zstd could not decompress it/,
      );
    });

    test(`${name}: a decoder that gives up while the source still waits for bytes does not hang the check`, async () => {
      // An HTML page where the archive should be: the decoder refuses its first bytes and ends its
      // output while the download is still writing the rest.
      const page = Buffer.from('<!DOCTYPE html><html><body>Access denied</body></html>'.padEnd(3 * 1024 * 1024, ' '));
      let rest: () => void = () => undefined;
      const more = new Promise<void>((resolve) => {
        rest = resolve;
      });
      // The program closes its output at the bad magic but reads on until its input ends: the
      // check must end that input rather than wait for it.
      async function* slowly() {
        yield page.subarray(0, 1000);
        await more;
        yield page.subarray(1000, 300_000);
        await new Promise((resolve) => setTimeout(resolve, 500));
        yield page.subarray(300_000);
      }
      const check = checkContents(slowly(), 'zstd', MERGED, { zstd });
      setTimeout(rest, 300);
      let timer: NodeJS.Timeout | undefined;
      const verdict = await Promise.race([
        check.then(
          () => 'passed',
          (error: Error) => error.message,
        ),
        new Promise<string>((resolve) => (timer = setTimeout(() => resolve('still waiting after 10 s'), 10_000))),
      ]);
      clearTimeout(timer);
      assert.match(verdict, /cannot be read as a zstd-compressed tar/);
    });

    test(`${name}: a source that reuses one buffer for every chunk is read right`, async () => {
      const archive = await makeArchive(modelFiles({ weightBytes: 3 * 1024 * 1024 }), 'zstd');
      // Chunks smaller than a stream takes without pushing back: the pump must still wait for each.
      const buffer = Buffer.alloc(8000);
      async function* oneBuffer() {
        for (let offset = 0; offset < archive.length; offset += buffer.length) {
          // What the decoder has not taken by the time the next chunk is asked for is lost.
          buffer.fill(0xa5);
          const n = archive.copy(buffer, 0, offset, offset + buffer.length);
          yield buffer.subarray(0, n);
        }
      }
      const report = await checkContents(oneBuffer(), 'zstd', MERGED, { zstd });
      assert.equal(report.kind, 'merged');
      assert.equal(report.safetensors.files, 1);
    });

    test(`${name}: the source's own error comes through as it is`, async () => {
      const archive = await makeArchive(modelFiles({ weightBytes: 2 * 1024 * 1024 }), 'zstd');
      async function* broken() {
        yield archive.subarray(0, 100_000);
        throw new Error('the connection broke');
      }
      await assert.rejects(checkContents(broken(), 'zstd', MERGED, { zstd }), /^Error: the connection broke$/);
    });
  }

  test('the tar entries a decoder hands out are those tar lists, for both formats', async () => {
    const files = { 'a/x': randomBytes(700_000), 'a/y': Buffer.from('y') };
    for (const format of ['zstd', 'gzip'] as const) {
      const archive = await makeArchive(files, format);
      const names = await withDecompressed(
        source(archive, 777).iterable,
        format,
        async (tar) => {
          const out: string[] = [];
          for await (const e of readTarEntries(tar)) out.push(`${e.name}:${e.size}`);
          return out;
        },
        { need: 'x', advice: 'y' },
      );
      assert.deepEqual(names, ['a/:0', 'a/x:700000', 'a/y:1']);
    }
  });
});

describe('a feed', () => {
  test("hands every chunk on in order, at the reader's pace, and lets go when the reader stops", async () => {
    const feed = new Feed();
    const got: string[] = [];
    const reader = (async () => {
      for await (const chunk of feed) {
        got.push(chunk.toString());
        if (got.length === 3) break;
      }
    })();
    for (const text of ['a', 'b', 'c', 'd', 'e']) await feed.push(Buffer.from(text));
    feed.end();
    await reader;
    assert.deepEqual(got, ['a', 'b', 'c']);
    assert.ok(feed.stopped);
  });

  test('ends the reader when the writer ends', async () => {
    const feed = new Feed();
    const reader = (async () => {
      const got: string[] = [];
      for await (const chunk of feed) got.push(chunk.toString());
      return got;
    })();
    await feed.push(Buffer.from('x'));
    feed.end();
    assert.deepEqual(await reader, ['x']);
  });
});
