import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { registerSecret } from '../../src/log.js';
import { explainHttpStatus } from '../../src/together/api.js';
import { resolveDestination } from '../../src/transfer/destination.js';
import { DownloadClient } from '../../src/transfer/http-client.js';
import { MAX_PIECE, MIN_PIECE, PieceQueue, planPieces } from '../../src/transfer/pieces.js';
import { downloadUrl, totalFromContentRange } from '../../src/transfer/probe.js';
import { backoffMs, MAX_SERVER_WAIT_MS, nextWaitMs, retryAfterMs } from '../../src/transfer/retry.js';

test('downloadUrl encodes every parameter through the query', () => {
  assert.equal(
    downloadUrl('https://api.together.ai/v1', { jobId: 'ft-abc', step: 10, checkpoint: 'adapter' }),
    'https://api.together.ai/v1/finetune/download?ft_id=ft-abc&checkpoint_step=10&checkpoint=adapter',
  );
  assert.equal(
    downloadUrl('http://127.0.0.1:1/v1', { jobId: 'ft-abc', checkpoint: 'merged' }),
    'http://127.0.0.1:1/v1/finetune/download?ft_id=ft-abc&checkpoint=merged',
  );
});

test('totalFromContentRange', () => {
  assert.equal(totalFromContentRange('bytes 0-1/12345'), 12345);
  assert.equal(totalFromContentRange('bytes 0-1/*'), undefined);
  assert.equal(totalFromContentRange('garbage'), undefined);
  assert.equal(totalFromContentRange(undefined), undefined);
});

test('retryAfterMs reads retry-after-ms, seconds and dates', () => {
  assert.equal(retryAfterMs({ 'retry-after-ms': '250' }), 250);
  assert.equal(retryAfterMs({ 'retry-after': '3' }), 3000);
  assert.equal(retryAfterMs({ 'retry-after': new Date(10_000).toUTCString() }, 4000), 6000);
  assert.equal(retryAfterMs({ 'retry-after': 'soon' }), undefined);
  assert.equal(retryAfterMs({}), undefined);
});

test('backoff grows exponentially with full jitter and a cap', () => {
  assert.equal(
    backoffMs(0, { baseMs: 500, capMs: 30_000 }, () => 1),
    500,
  );
  assert.equal(
    backoffMs(3, { baseMs: 500, capMs: 30_000 }, () => 1),
    4000,
  );
  assert.equal(
    backoffMs(20, { baseMs: 500, capMs: 30_000 }, () => 1),
    30_000,
  );
  assert.equal(
    backoffMs(5, { baseMs: 500, capMs: 30_000 }, () => 0),
    0,
  );
});

test('HTTP errors name the input to fix', () => {
  const context = { what: 'probing the download', jobId: 'ft-a' };
  assert.match(explainHttpStatus(401, undefined, context, 1).message, /`api-key`/);
  assert.match(explainHttpStatus(403, undefined, context, 1).message, /`api-key`/);
  assert.match(explainHttpStatus(404, undefined, context, 1).message, /`job-id`/);
  assert.match(explainHttpStatus(404, undefined, { ...context, step: 4 }, 1).message, /`step`/);
  assert.match(explainHttpStatus(503, 'busy', context, 5).message, /after 5 attempts.*HTTP 503.*busy/);
});

test('resolveDestination: directory, trailing slash, file, default', () => {
  const ws = fs.mkdtempSync(path.join(os.tmpdir(), 'dest-'));
  try {
    fs.mkdirSync(path.join(ws, 'models'));
    assert.deepEqual(resolveDestination('', ws), { dir: ws });
    assert.deepEqual(resolveDestination('models', ws), { dir: path.join(ws, 'models') });
    assert.deepEqual(resolveDestination('new/', ws), { dir: path.join(ws, 'new') });
    assert.deepEqual(resolveDestination('a/b.tar.zst', ws), { dir: path.join(ws, 'a'), name: 'b.tar.zst' });
    assert.deepEqual(resolveDestination('/abs/x.tar.zst', ws), { dir: '/abs', name: 'x.tar.zst' });
  } finally {
    fs.rmSync(ws, { recursive: true });
  }
});

test('planPieces: about four pieces per connection, 4 to 64 MiB, covering every byte once, in order', () => {
  const MiB = 1024 * 1024;
  for (const [total, connections] of [
    [2 * 1024 * MiB, 6],
    [140 * 1024 * MiB, 6],
    [3 * MiB, 6],
    [100 * MiB + 7, 4],
    [10 * MiB, 6],
    [1, 1],
  ] as const) {
    const pieces = planPieces(total, connections);
    assert.equal(pieces[0].start, 0);
    assert.equal(pieces.at(-1)?.end, total - 1);
    for (let i = 1; i < pieces.length; i++) assert.equal(pieces[i].start, pieces[i - 1].end + 1);
    assert.ok(pieces.every((p) => p.received === 0));
    const sizes = pieces.map((p) => p.end + 1 - p.start);
    assert.ok(
      sizes.every((n) => n <= MAX_PIECE),
      `${total}: a piece over 64 MiB`,
    );
    // Only the last pieces, shared out for the connections to finish together, or a small total may be under 4 MiB.
    assert.ok(
      sizes.slice(0, -1).every((n) => n >= Math.min(MIN_PIECE, total)),
      `${total}: ${sizes}`,
    );
    if (total === 2 * 1024 * MiB)
      assert.ok(pieces.length >= connections * 4 && pieces.length <= connections * 6, `${pieces.length} pieces`);
    if (total === 140 * 1024 * MiB) assert.ok(sizes.slice(0, -connections).every((n) => n === MAX_PIECE));
    if (total === 10 * MiB) assert.equal(pieces.length, 3, 'no piece under 4 MiB but the last');
  }
});

test('PieceQueue hands out pieces only within the window past the first unfinished one', () => {
  const MiB = 1024 * 1024;
  const queue = new PieceQueue(100 * MiB, 2, 4 * MiB, 16 * MiB);
  const taken = [queue.take(), queue.take(), queue.take(), queue.take()];
  assert.ok(taken.every((p) => p));
  assert.equal(queue.take(), null, 'the window (16 MiB past byte 0) is full');
  assert.equal(queue.writtenPrefix(), 0);
  // The second piece done does not move the window: the first is still open.
  const [first, second] = taken as NonNullable<(typeof taken)[number]>[];
  second.received = 4 * MiB;
  assert.equal(queue.take(), null);
  assert.equal(queue.writtenPrefix(), 0);
  first.received = 3 * MiB;
  assert.equal(queue.writtenPrefix(), 3 * MiB);
  first.received = 4 * MiB;
  assert.equal(queue.writtenPrefix(), 8 * MiB, 'the first two pieces on disk without a gap');
  assert.equal(queue.firstUnfinished(), 8 * MiB);
  assert.equal(queue.take()?.start, 16 * MiB);
  assert.equal(queue.pieceAt(17 * MiB)?.start, 16 * MiB);
});

test('a server may ask for a wait of at most 60 s, and the cap is said', () => {
  assert.deepEqual(
    nextWaitMs(1500, () => 7),
    { waitMs: 1500, note: ' (as the server asked)' },
  );
  assert.deepEqual(
    nextWaitMs(undefined, () => 7),
    { waitMs: 7, note: '' },
  );
  const capped = nextWaitMs(3_600_000, () => 7);
  assert.equal(capped.waitMs, MAX_SERVER_WAIT_MS);
  assert.equal(MAX_SERVER_WAIT_MS, 60_000);
  assert.match(capped.note, /the server asked for 3600 s; 60 s is the most this action waits/);
});

test('the download client masks the query of every URL it is redirected to, when asked', async () => {
  // A redirect to another port (a storage host), then a relative one on that host.
  const storage = http.createServer((req, res) => {
    if (req.url?.startsWith('/first')) {
      res.writeHead(307, { location: '/second?sig=relative-secret' }).end();
    } else {
      res.writeHead(200, { 'content-length': '2' }).end('ok');
    }
  });
  await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
  const storagePort = (storage.address() as AddressInfo).port;
  const api = http.createServer((_req, res) => {
    res.writeHead(302, { location: `http://127.0.0.1:${storagePort}/first?X-Signature=absolute-secret` }).end();
  });
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
  const apiOrigin = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  const apiUrl = `${apiOrigin}/v1/finetune/download?ft_id=ft-abc`;

  const commands: string[] = [];
  const lines: string[] = [];
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    if (String(chunk).startsWith('::')) {
      commands.push(String(chunk).trim());
      return true;
    }
    return (write as (...args: unknown[]) => boolean).call(process.stdout, chunk, ...rest);
  }) as typeof process.stdout.write;
  const client = new DownloadClient({ apiKey: 'k', apiOrigin });
  try {
    const answer = await client.get(apiUrl, { headers: {}, stallMs: 5000, maskQuery: registerSecret, print: (l) => lines.push(l) });
    assert.equal((await answer.readSmall(10)).toString(), 'ok');
    assert.equal(answer.url, `http://127.0.0.1:${storagePort}/second?sig=relative-secret`);
    assert.equal(answer.hop.sendAuth, false);
    assert.equal(answer.hop.relativeRedirect, true);
  } finally {
    process.stdout.write = write;
    client.close();
    api.close();
    storage.close();
  }
  assert.deepEqual(commands, ['::add-mask::X-Signature=absolute-secret', '::add-mask::sig=relative-secret']);
  assert.deepEqual(lines, [
    `Redirected (HTTP 302) to http://127.0.0.1:${storagePort}/first?…`,
    `Redirected (HTTP 307) to http://127.0.0.1:${storagePort}/second?…`,
  ]);
});
