import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { explainHttpStatus } from '../../src/together/api.js';
import { resolveDestination } from '../../src/transfer/destination.js';
import { downloadUrl, getFollowingRedirects, newHttpClient, totalFromContentRange } from '../../src/transfer/probe.js';
import { planPieces } from '../../src/transfer/ranged-download.js';
import { backoffMs, retryAfterMs } from '../../src/transfer/retry.js';

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

test('planPieces: four pieces per connection, at least 4 MiB, covering every byte once', () => {
  const MiB = 1024 * 1024;
  for (const [total, connections] of [
    [2 * 1024 * MiB, 6],
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
    if (total >= 4 * MiB * connections * 4) assert.equal(pieces.length, connections * 4);
    else assert.ok(pieces.slice(0, -1).every((p) => p.end - p.start + 1 === 4 * MiB));
    if (total === 10 * MiB) assert.equal(pieces.length, 3, 'fewer, larger pieces rather than any under 4 MiB');
  }
});

test('getFollowingRedirects masks the query of every URL it is redirected to', async () => {
  // A redirect to another port (a storage host), then a relative one on that host.
  const storage = http.createServer((req, res) => {
    if (req.url?.startsWith('/first')) {
      res.writeHead(307, { location: '/second?sig=relative-secret' }).end();
    } else {
      res.writeHead(200).end('ok');
    }
  });
  await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
  const storagePort = (storage.address() as AddressInfo).port;
  const api = http.createServer((_req, res) => {
    res.writeHead(302, { location: `http://127.0.0.1:${storagePort}/first?X-Signature=absolute-secret` }).end();
  });
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
  const apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}/v1/finetune/download?ft_id=ft-abc`;

  const commands: string[] = [];
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    if (String(chunk).startsWith('::')) {
      commands.push(String(chunk).trim());
      return true;
    }
    return (write as (...args: unknown[]) => boolean).call(process.stdout, chunk, ...rest);
  }) as typeof process.stdout.write;
  const client = newHttpClient(5000);
  try {
    const { response, url } = await getFollowingRedirects(client, apiUrl, { apiKey: 'k', apiHost: 'api.example' }, {}, () => {});
    response.resume();
    assert.equal(url, `http://127.0.0.1:${storagePort}/second?sig=relative-secret`);
  } finally {
    process.stdout.write = write;
    client.dispose();
    api.close();
    storage.close();
  }
  assert.deepEqual(commands, ['::add-mask::X-Signature=absolute-secret', '::add-mask::sig=relative-secret']);
});
