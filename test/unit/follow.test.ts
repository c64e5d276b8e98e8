/**
 * `downloadArchive`'s `follow` hook, on both paths: a consumer that follows the download gets the
 * archive's bytes in order, lags when it is slow, stops the download when it fails, and sees the
 * download's own failure.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { downloadArchive } from '../../src/transfer/download.js';
import { probeArchive } from '../../src/transfer/probe.js';

const KEY = 'follow-test-key';
const ZSTD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const archive = Buffer.concat([ZSTD, randomBytes(11 * 1024 * 1024 + 12_345)]);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const context = { what: 'downloading the archive', jobId: 'ft-follow' };

let server: http.Server;
let url: string;
let mode: { ignoreRange: boolean; failRangesFrom?: number; bytesPerSecond?: number } = { ignoreRange: false };
let dir: string;

before(async () => {
  (globalThis as Record<string, unknown>).TEST_DOWNLOAD_TOOL_RETRY_MIN_SECONDS = 0;
  (globalThis as Record<string, unknown>).TEST_DOWNLOAD_TOOL_RETRY_MAX_SECONDS = 0;
  server = http.createServer(async (req, res) => {
    const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
    if (m && !mode.ignoreRange) {
      const [a, b] = [Number(m[1]), Math.min(Number(m[2]), archive.length - 1)];
      if (mode.failRangesFrom !== undefined && a >= mode.failRangesFrom) {
        res.writeHead(404, { 'content-length': '2' }).end('{}');
        return;
      }
      res.writeHead(206, { 'content-length': b - a + 1, 'content-range': `bytes ${a}-${b}/${archive.length}` });
      const body = archive.subarray(a, b + 1);
      if (!mode.bytesPerSecond) return res.end(body);
      for (let p = 0; p < body.length && !res.destroyed; p += 64 * 1024) {
        res.write(body.subarray(p, p + 64 * 1024));
        await sleep((64 * 1024 * 1000) / mode.bytesPerSecond);
      }
      return res.end();
    }
    res.writeHead(200, { 'content-length': archive.length });
    res.end(archive);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/finetune/download?ft_id=ft-follow`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

beforeEach(() => {
  mode = { ignoreRange: false };
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'follow-'));
});

let settings = { apiKey: KEY, apiOrigin: '', connections: 3, stallTimeoutMs: 10_000, receiveWorkers: 0 };

async function download(follow?: (archive: AsyncIterable<Buffer>) => Promise<void>) {
  const probe = await probeArchive(url, KEY, context);
  const temp = path.join(dir, 'archive.partial');
  try {
    const result = await downloadArchive(probe, { ...settings, apiOrigin: new URL(url).origin }, temp, context, follow);
    return { result, file: fs.readFileSync(temp) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

for (const path of ['ranged, received on the main thread', 'ranged, received on a worker', 'one stream'] as const) {
  describe(`follow, ${path}`, () => {
    beforeEach(() => {
      mode.ignoreRange = path === 'one stream';
      settings = { ...settings, receiveWorkers: path === 'ranged, received on a worker' ? 1 : 0 };
    });

    test('a consumer that hashes what it gets sees the archive, in order, once', async () => {
      let calls = 0;
      let digest = '';
      let slices = 0;
      const { result, file } = await download(async (bytes) => {
        calls++;
        const hash = createHash('sha256');
        for await (const slice of bytes) {
          hash.update(slice);
          slices++;
        }
        digest = hash.digest('hex');
      });
      assert.equal(calls, 1);
      assert.equal(digest, sha(archive));
      assert.equal(result.sha256, sha(archive));
      assert.ok(file.equals(archive));
      assert.ok(slices >= 3, `the bytes came in ${slices} slices of at most 4 MiB`);
    });

    test('a slow consumer lags behind the download and still gets every byte, the slices in one buffer', async () => {
      const copies: Buffer[] = [];
      const buffers = new Set<ArrayBufferLike>();
      let consumerDone = false;
      const { result } = await download(async (bytes) => {
        for await (const slice of bytes) {
          copies.push(Buffer.from(slice));
          buffers.add(slice.buffer);
          await sleep(150);
        }
        consumerDone = true;
      });
      assert.ok(consumerDone, 'the download resolved only after the consumer');
      assert.ok(copies.length >= 2, `the bytes came in ${copies.length} slices`);
      assert.ok(Buffer.concat(copies).equals(archive));
      assert.equal(buffers.size, 1, 'the slices share one buffer');
      assert.equal(result.sha256, sha(archive));
    });

    test('a consumer that fails aborts the download with its error', async () => {
      if (path !== 'one stream') mode.bytesPerSecond = 4 * 1024 * 1024;
      const failure = new Error('the content check refused the archive');
      await assert.rejects(
        download(async (bytes) => {
          for await (const _ of bytes) throw failure;
        }),
        (error: unknown) => error === failure,
      );
    });
  });
}

test('a download that fails makes the consumer see it, and its own error is the one reported', async () => {
  mode.failRangesFrom = 4 * 1024 * 1024;
  let seen: unknown;
  await assert.rejects(
    download(async (bytes) => {
      try {
        for await (const _ of bytes) {
          // read on
        }
      } catch (error) {
        seen = error;
        throw new Error('the consumer gave up');
      }
    }),
    /HTTP 404/,
  );
  assert.match(String(seen), /HTTP 404/);
});
