import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { checkContents } from '../src/archive/contents.js';
import { makeArchive, makeLargeArchiveFile, peftAdapterFiles, safetensors } from './support/archives.js';
import { type FakeJob, type FakeTogether, startFakeTogether } from './support/fake-together.js';

const API_KEY = 'test-key-0123456789abcdef';
const LORA_ID = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';
const FULL_ID = 'ft-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const RUNNING_ID = 'ft-11111111-2222-4333-8444-555555555555';
const auth = { authorization: `Bearer ${API_KEY}` };

/** Deterministic bytes that start with the zstd magic. */
function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  if (n >= 4) Buffer.from([0x28, 0xb5, 0x2f, 0xfd]).copy(b);
  return b;
}

const merged = bytes(100_000, 1);
const adapter = bytes(5_000, 2);
const step10 = bytes(3_000, 3);
const fullModel = bytes(7_777, 4);

function jobs(largeFile?: string): FakeJob[] {
  return [
    {
      id: LORA_ID,
      status: 'completed',
      training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16, lora_dropout: 0.05, lora_trainable_modules: 'all-linear' },
      model: 'meta-llama/Meta-Llama-3.1-8B-Instruct-Reference',
      model_output_name: 'user@example.com/Meta-Llama-3.1-8B-Instruct-Reference-my_suffix-abc123',
      checkpoints: [
        { step: 10, checkpoint_type: 'Intermediate' },
        { step: 20, checkpoint_type: 'Final Merged', checkpoint: 'model' },
        { step: 20, checkpoint_type: 'Final Adapter', checkpoint: 'adapter' },
      ],
      events: [
        { type: 'job_start', message: 'Training started' },
        { type: 'job_complete', message: 'Job completed', level: 'info', created_at: '2024-07-26T19:41:17Z' },
      ],
      archives: {
        merged,
        adapter,
        'adapter@10': step10,
        ...(largeFile ? { 'merged@10': { file: largeFile } } : {}),
      },
    },
    { id: FULL_ID, status: 'completed', archives: { model_output_path: fullModel } },
    {
      id: RUNNING_ID,
      status: 'running',
      training_type: { type: 'Full' },
      checkpoints: [{ step: 5, checkpoint_type: 'Intermediate' }],
      archives: { 'model_output_path@5': step10 },
    },
  ];
}

async function json(res: Response): Promise<any> {
  return res.json();
}

function runTar(args: string[], input: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('tar', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`tar exited ${code}: ${err}`))));
    p.stdin.end(input);
  });
}

function runTarBuffer(args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawn('tar', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`tar exited ${code}`))));
    p.stdin.end(input);
  });
}

function parseSafetensors(buf: Buffer): { header: Record<string, any>; dataStart: number } {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, any>;
  return { header, dataStart: 8 + n };
}

describe('fake Together API', () => {
  let fake: FakeTogether;
  let tmp: string;
  let largeFile: string;
  const LARGE = 3 * 1024 * 1024 + 12_345;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'fake-together-test-'));
    largeFile = join(tmp, 'large.tar.zst');
    await makeLargeArchiveFile(largeFile, LARGE);
    fake = await startFakeTogether({ apiKey: API_KEY, jobs: jobs(largeFile) });
  });
  after(async () => {
    await fake?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  const dl = (q: string) => `${fake.url}/finetune/download?${q}`;

  test('url points at /v1 on loopback', () => {
    assert.equal(fake.url, `http://127.0.0.1:${fake.port}/v1`);
  });

  test('401 with the spec error body without a key and with a wrong key', async () => {
    for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: API_KEY }] as Array<Record<string, string>>) {
      for (const path of [`/fine-tunes/${LORA_ID}`, `/finetune/download?ft_id=${LORA_ID}&checkpoint=merged`]) {
        const res = await fetch(fake.url + path, { headers });
        assert.equal(res.status, 401);
        assert.ok(res.headers.get('cf-ray'), 'cf-ray header');
        const body = await json(res);
        assert.equal(body.error.type, 'invalid_request_error');
        assert.equal(body.error.code, 'invalid_api_key');
        assert.equal(body.error.param, null);
        assert.match(body.error.message, /^Invalid API key provided/);
      }
    }
    assert.equal(fake.requests.at(-1)!.status, 401);
  });

  test('job JSON uses the spec field names', async () => {
    const res = await fetch(`${fake.url}/fine-tunes/${LORA_ID}`, { headers: auth });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /application\/json/);
    assert.ok(res.headers.get('cf-ray'));
    const job = await json(res);
    assert.equal(job.id, LORA_ID);
    assert.equal(job.status, 'completed');
    assert.equal(job.model, 'meta-llama/Meta-Llama-3.1-8B-Instruct-Reference');
    assert.equal(job.model_output_name, 'user@example.com/Meta-Llama-3.1-8B-Instruct-Reference-my_suffix-abc123');
    assert.deepEqual(job.training_type, {
      type: 'Lora',
      lora_r: 8,
      lora_alpha: 16,
      lora_dropout: 0.05,
      lora_trainable_modules: 'all-linear',
    });
    assert.equal(job.n_checkpoints, 1);
    assert.equal(typeof job.n_epochs, 'number');
    assert.ok(!Number.isNaN(Date.parse(job.created_at)));
    assert.ok(!Number.isNaN(Date.parse(job.updated_at)));

    const full = await json(await fetch(`${fake.url}/fine-tunes/${FULL_ID}`, { headers: auth }));
    assert.equal(full.status, 'completed');
    assert.ok(!('training_type' in full), 'training_type omitted for a job without one');
    assert.equal(typeof full.model_output_name, 'string');
  });

  test('checkpoints list', async () => {
    const res = await fetch(`${fake.url}/fine-tunes/${LORA_ID}/checkpoints`, { headers: auth });
    assert.equal(res.status, 200);
    const { data } = await json(res);
    assert.equal(data.length, 3);
    assert.deepEqual(
      data.map((c: any) => [c.step, c.checkpoint_type, c.checkpoint]),
      [
        [10, 'Intermediate', undefined],
        [20, 'Final Merged', 'model'],
        [20, 'Final Adapter', 'adapter'],
      ],
    );
    for (const c of data) {
      assert.equal(typeof c.path, 'string');
      assert.ok(c.path.length > 0);
      assert.ok(!Number.isNaN(Date.parse(c.created_at)));
    }
    assert.ok(!('checkpoint' in data[0]));
  });

  test('events list carries the required FineTuneEvent fields', async () => {
    const res = await fetch(`${fake.url}/fine-tunes/${LORA_ID}/events`, { headers: auth });
    assert.equal(res.status, 200);
    const { data } = await json(res);
    assert.equal(data.length, 2);
    const required = [
      'object',
      'created_at',
      'message',
      'type',
      'param_count',
      'token_count',
      'total_steps',
      'wandb_url',
      'step',
      'checkpoint_path',
      'model_path',
      'training_offset',
      'hash',
    ];
    for (const e of data) for (const k of required) assert.ok(k in e, `event field ${k}`);
    assert.equal(data[0].object, 'fine-tune-event');
    assert.equal(data[0].type, 'job_start');
    assert.equal(data[0].level, 'info');
    assert.equal(data[1].created_at, '2024-07-26T19:41:17Z');
  });

  test('unknown job and unknown path are 404 with an error body', async () => {
    for (const path of [
      '/fine-tunes/ft-00000000-0000-4000-8000-000000000000',
      '/fine-tunes/ft-x/checkpoints',
      '/finetune/download?ft_id=ft-nope&checkpoint=merged',
      '/no/such/path',
    ]) {
      const res = await fetch(fake.url + path, { headers: auth });
      assert.equal(res.status, 404, path);
      assert.ok(res.headers.get('cf-ray'));
      const body = await json(res);
      assert.equal(typeof body.error.message, 'string');
      assert.equal(typeof body.error.type, 'string');
    }
  });

  test('Range bytes=0-1 gives 206 with Content-Range', async () => {
    const res = await fetch(dl(`ft_id=${LORA_ID}&checkpoint=merged`), { headers: { ...auth, range: 'bytes=0-1' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get('content-range'), `bytes 0-1/${merged.length}`);
    assert.equal(res.headers.get('content-length'), '2');
    assert.equal(res.headers.get('accept-ranges'), 'bytes');
    const body = Buffer.from(await res.arrayBuffer());
    assert.deepEqual(body, Buffer.from([0x28, 0xb5]));
    const rec = fake.requests.at(-1)!;
    assert.equal(rec.range, 'bytes=0-1');
    assert.equal(rec.status, 206);
    assert.equal(rec.bodyBytes, 2);
    assert.equal(rec.endpoint, 'download');
  });

  test('open-ended and suffix ranges', async () => {
    let res = await fetch(dl(`ft_id=${LORA_ID}&checkpoint=merged`), { headers: { ...auth, range: 'bytes=99990-' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get('content-range'), `bytes 99990-99999/100000`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), merged.subarray(99990));
    res = await fetch(dl(`ft_id=${LORA_ID}&checkpoint=merged`), { headers: { ...auth, range: 'bytes=-5' } });
    assert.equal(res.status, 206);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), merged.subarray(-5));
    // end past the size is clamped
    res = await fetch(dl(`ft_id=${LORA_ID}&checkpoint=merged`), { headers: { ...auth, range: 'bytes=99998-200000' } });
    assert.equal(res.headers.get('content-range'), `bytes 99998-99999/100000`);
    assert.equal((await res.arrayBuffer()).byteLength, 2);
  });

  test('no Range gives 200 with the full body and Content-Length', async () => {
    const before = fake.bytesSent();
    const res = await fetch(dl(`ft_id=${LORA_ID}&checkpoint=merged`), { headers: auth });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(merged.length));
    assert.equal(res.headers.get('content-type'), 'application/octet-stream');
    assert.equal(res.headers.get('accept-ranges'), 'bytes');
    const body = Buffer.from(await res.arrayBuffer());
    assert.ok(body.equals(merged));
    assert.equal(fake.bytesSent() - before, merged.length);
    assert.equal(fake.requests.at(-1)!.bodyBytes, merged.length);
  });

  test('download selects the archive by checkpoint and step', async () => {
    const get = async (q: string) => {
      const res = await fetch(dl(q), { headers: auth });
      return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
    };
    assert.ok((await get(`ft_id=${LORA_ID}&checkpoint=adapter`)).body.equals(adapter));
    assert.ok((await get(`ft_id=${FULL_ID}&checkpoint=model_output_path`)).body.equals(fullModel));
    // exact `${checkpoint}@${step}` key
    assert.ok((await get(`ft_id=${LORA_ID}&checkpoint_step=10&checkpoint=adapter`)).body.equals(step10));
    // the only archive for the step is served whatever checkpoint says
    assert.ok((await get(`ft_id=${RUNNING_ID}&checkpoint_step=5`)).body.equals(step10));
    assert.ok((await get(`ft_id=${RUNNING_ID}&checkpoint_step=5&checkpoint=merged`)).body.equals(step10));

    // not completed, no step: 400
    let r = await get(`ft_id=${RUNNING_ID}&checkpoint=model_output_path`);
    assert.equal(r.status, 400);
    assert.match(JSON.parse(r.body.toString()).error.message, /not completed/);
    // no such final archive: 400
    r = await get(`ft_id=${FULL_ID}&checkpoint=adapter`);
    assert.equal(r.status, 400);
    assert.equal(JSON.parse(r.body.toString()).error.type, 'invalid_request_error');
    // unknown step: 404
    r = await get(`ft_id=${LORA_ID}&checkpoint_step=999&checkpoint=adapter`);
    assert.equal(r.status, 404);
    assert.match(JSON.parse(r.body.toString()).error.message, /999/);
    // known step with two archives and no matching checkpoint: 400
    r = await get(`ft_id=${LORA_ID}&checkpoint_step=10`);
    assert.equal(r.status, 400);
    // invalid checkpoint value: 400
    r = await get(`ft_id=${LORA_ID}&checkpoint=bogus`);
    assert.equal(r.status, 400);
  });

  test('unsatisfiable range is 416 with Content-Range bytes */total', async () => {
    const res = await fetch(dl(`ft_id=${LORA_ID}&checkpoint=merged`), {
      headers: { ...auth, range: `bytes=${merged.length}-` },
    });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get('content-range'), `bytes */${merged.length}`);
    await res.arrayBuffer();
  });

  test('file-backed archive: full body and ranges match the file', async () => {
    const file = await readFile(largeFile);
    assert.equal(file.length, LARGE);
    assert.deepEqual(file.subarray(0, 4), Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    const q = `ft_id=${LORA_ID}&checkpoint_step=10&checkpoint=merged`;
    for (const [a, b] of [
      [0, 1],
      [1_000_000, 2_500_000],
      [LARGE - 10, LARGE - 1],
    ]) {
      const res = await fetch(dl(q), { headers: { ...auth, range: `bytes=${a}-${b}` } });
      assert.equal(res.status, 206);
      assert.equal(res.headers.get('content-range'), `bytes ${a}-${b}/${LARGE}`);
      assert.equal(res.headers.get('content-length'), String(b - a + 1));
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(file.subarray(a, b + 1)));
    }
    const res = await fetch(dl(q), { headers: auth });
    assert.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(createHash('sha256').update(body).digest('hex'), createHash('sha256').update(file).digest('hex'));
  });

  test('HEAD on download gives headers only', async () => {
    const res = await fetch(dl(`ft_id=${LORA_ID}&checkpoint=merged`), { method: 'HEAD', headers: auth });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(merged.length));
    assert.equal(fake.requests.at(-1)!.bodyBytes, 0);
  });
});

/** A GET carrying a body, as the metrics spec has it (fetch refuses to send one). */
function getWithBody(url: string, body: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const headers = { ...auth, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    const req = http.request(url, { method: 'GET', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('fake Together API metrics', () => {
  let fake: FakeTogether;
  const SNAPSHOTS: Array<Record<string, number>> = [
    { 'train/loss': 0.5, 'train/learning_rate': 0.0001, 'train/global_step': 7 },
    { 'train/loss': 0.45, 'train/learning_rate': 0.00009, 'train/global_step': 14 },
    { 'eval/loss': 0.6, 'train/global_step': 14 },
    { 'train/loss': 0.4, 'train/global_step': 21 },
  ];
  const url = (id = LORA_ID) => `${fake.url}/fine-tunes/${id}/metrics`;

  before(async () => {
    const [lora, ...rest] = jobs();
    fake = await startFakeTogether({ apiKey: API_KEY, jobs: [{ ...lora, metrics: SNAPSHOTS }, ...rest] });
  });
  after(async () => {
    await fake?.close();
  });

  test('without a body: every snapshot, in the order logged, as {"metrics": [...]}', async () => {
    const res = await fetch(url(), { headers: auth });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /application\/json/);
    assert.deepEqual(await json(res), { metrics: SNAPSHOTS });
    assert.equal(fake.requests.at(-1)!.endpoint, 'metrics');
    assert.equal(fake.requests.at(-1)!.body, '');
  });

  test('a job without metrics has an empty list', async () => {
    assert.deepEqual(await json(await fetch(url(FULL_ID), { headers: auth })), { metrics: [] });
  });

  test('the body filters by global step and by when a snapshot was logged, bounds included', async () => {
    assert.deepEqual((await getWithBody(url(), '{}')).body, { metrics: SNAPSHOTS });
    assert.deepEqual((await getWithBody(url(), '{"global_step_from": 14, "global_step_to": 14}')).body, { metrics: SNAPSHOTS.slice(1, 3) });
    assert.deepEqual((await getWithBody(url(), '{"global_step_from": 15}')).body, { metrics: SNAPSHOTS.slice(3) });
    // The fake's jobs log one snapshot a second from their start (2024-07-26T18:04:05.123Z).
    const window = '{"logged_at_from": "2024-07-26T18:04:06.123Z", "logged_at_to": "2024-07-26T18:04:07.123Z"}';
    assert.deepEqual((await getWithBody(url(), window)).body, { metrics: SNAPSHOTS.slice(1, 3) });
    assert.equal(fake.requests.at(-1)!.body, window);
  });

  test('a body that is not JSON is the spec 400; an unknown job is 404', async () => {
    const bad = await getWithBody(url(), '{global_step_from');
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.type, 'invalid_request_error');
    assert.equal((await getWithBody(url(), '[1]')).status, 400);
    const unknown = await fetch(url('ft-00000000-0000-0000-0000-000000000000'), { headers: auth });
    assert.equal(unknown.status, 404);
    assert.match((await json(unknown)).error.message, /not found/);
  });

  test('it can be made to fail through the queue, and needs the key', async () => {
    fake.setFaults({ queue: { metrics: [{ status: 500 }] } });
    assert.equal((await fetch(url())).status, 401);
    const res = await fetch(url(), { headers: auth });
    assert.equal(res.status, 500);
    assert.equal((await json(res)).error.type, 'server_error');
    assert.equal((await fetch(url(), { headers: auth })).status, 200);
    fake.setFaults({});
  });
});

describe('fake Together API hostile modes', () => {
  let fake: FakeTogether;
  before(async () => {
    const [lora, ...rest] = jobs();
    fake = await startFakeTogether({
      apiKey: API_KEY,
      jobs: [{ ...lora, served: { id: 'ft-x\n::warning::x', status: 'weird' } }, ...rest],
    });
  });
  after(async () => {
    await fake?.close();
  });

  test('served fields replace the generated ones in the job document', async () => {
    const job = await json(await fetch(`${fake.url}/fine-tunes/${LORA_ID}`, { headers: auth }));
    assert.equal(job.id, 'ft-x\n::warning::x');
    assert.equal(job.status, 'weird');
    assert.equal(job.model, 'meta-llama/Meta-Llama-3.1-8B-Instruct-Reference');
  });

  test('echoKey repeats the presented key twice in every JSON error message, and only there', async () => {
    fake.setFaults({ echoKey: true, queue: { events: [{ status: 400 }] } });
    const error = await json(await fetch(`${fake.url}/fine-tunes/${LORA_ID}/events`, { headers: auth }));
    assert.equal(error.error.message.split(API_KEY).length - 1, 2, error.error.message);
    const unknown = await json(await fetch(`${fake.url}/fine-tunes/ft-nope`, { headers: auth }));
    assert.equal(unknown.error.message.split(API_KEY).length - 1, 2);
    const ok = await fetch(`${fake.url}/fine-tunes/${LORA_ID}`, { headers: auth });
    assert.ok(!(await ok.text()).includes(API_KEY));
    fake.setFaults({});
  });
});

describe('fake Together API faults', () => {
  let fake: FakeTogether;
  const q = `ft_id=${LORA_ID}&checkpoint=merged`;
  const dl = () => `${fake.url}/finetune/download?${q}`;

  before(async () => {
    fake = await startFakeTogether({ apiKey: API_KEY, jobs: jobs() });
  });
  after(async () => {
    await fake?.close();
  });

  test('ignoreRange answers 200 with the full body', async () => {
    fake.setFaults({ ignoreRange: true });
    const res = await fetch(dl(), { headers: { ...auth, range: 'bytes=0-1' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-range'), null);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(merged));
  });

  test('queued 503 then success; queue is per endpoint and consumed after auth', async () => {
    fake.setFaults({ queue: { download: [{ status: 503, headers: { 'retry-after': '1' } }] } });
    // a 401 is a 401 and does not consume the queue
    assert.equal((await fetch(dl())).status, 401);
    // other endpoints are unaffected
    assert.equal((await fetch(`${fake.url}/fine-tunes/${LORA_ID}`, { headers: auth })).status, 200);
    let res = await fetch(dl(), { headers: auth });
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.ok(res.headers.get('cf-ray'));
    const body = await json(res);
    assert.deepEqual(body, { error: { message: 'Service unavailable', type: 'server_error', param: null, code: null } });
    res = await fetch(dl(), { headers: auth });
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(merged));
  });

  test('queued reset destroys the socket, custom reply bodies are sent as given', async () => {
    fake.setFaults({ queue: { job: ['reset', { status: 429, body: '{"error":{"message":"slow down","type":"rate_limit"}}' }] } });
    await assert.rejects(fetch(`${fake.url}/fine-tunes/${LORA_ID}`, { headers: auth }));
    const r429 = await fetch(`${fake.url}/fine-tunes/${LORA_ID}`, { headers: auth });
    assert.equal(r429.status, 429);
    assert.equal((await json(r429)).error.message, 'slow down');
    assert.equal((await fetch(`${fake.url}/fine-tunes/${LORA_ID}`, { headers: auth })).status, 200);
    const statuses = fake.requests.slice(-3).map((r) => r.status);
    assert.deepEqual(statuses, [0, 429, 200]);
  });

  test('cutBodyAfter cuts the body short', async () => {
    fake.setFaults({ cutBodyAfter: 1000 });
    const before = fake.bytesSent();
    const res = await fetch(dl(), { headers: auth });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(merged.length));
    await assert.rejects(res.arrayBuffer());
    assert.equal(fake.bytesSent() - before, 1000);
    assert.equal(fake.requests.at(-1)!.bodyBytes, 1000);

    // also applies to 206 responses; a range shorter than the cut is complete
    const r2 = await fetch(dl(), { headers: { ...auth, range: 'bytes=10-19' } });
    assert.deepEqual(Buffer.from(await r2.arrayBuffer()), merged.subarray(10, 20));
  });

  test('cutWholeOnceAfter cuts only the first response without Range, once', async () => {
    fake.setFaults({ cutWholeOnceAfter: 1000 });
    const ranged = await fetch(dl(), { headers: { ...auth, range: 'bytes=0-4999' } });
    assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), merged.subarray(0, 5000));
    const first = await fetch(dl(), { headers: auth });
    await assert.rejects(first.arrayBuffer());
    assert.equal(fake.requests.at(-1)!.bodyBytes, 1000);
    const second = await fetch(dl(), { headers: auth });
    assert.deepEqual(Buffer.from(await second.arrayBuffer()), merged);
  });

  test('bodyAfterMs sends the headers at once and the body after the pause', async () => {
    fake.setFaults({ bodyAfterMs: 1500 });
    const t0 = Date.now();
    const res = await fetch(dl(), { headers: auth });
    const headersAt = Date.now() - t0;
    const body = Buffer.from(await res.arrayBuffer());
    const bodyAt = Date.now() - t0;
    assert.deepEqual(body, merged);
    assert.ok(bodyAt >= 1490, `body after ${bodyAt} ms`);
    assert.ok(bodyAt - headersAt >= 1000, `headers after ${headersAt} ms, body after ${bodyAt} ms`);
  });
  test('contentLength lies: larger announced length ends in a broken body', async () => {
    fake.setFaults({ contentLength: (n) => n + 100 });
    const res = await fetch(dl(), { headers: auth });
    assert.equal(res.headers.get('content-length'), String(merged.length + 100));
    await assert.rejects(res.arrayBuffer());
    assert.equal(fake.requests.at(-1)!.bodyBytes, merged.length);

    // smaller on a 206: the client sees a short body while Content-Range tells the truth
    fake.setFaults({ contentLength: (n) => n - 5 });
    const r2 = await fetch(dl(), { headers: { ...auth, range: 'bytes=0-99' } });
    assert.equal(r2.status, 206);
    assert.equal(r2.headers.get('content-range'), `bytes 0-99/${merged.length}`);
    assert.equal(r2.headers.get('content-length'), '95');
    assert.equal((await r2.arrayBuffer()).byteLength, 95);
  });

  test('noContentLength sends chunked, contentType overrides the type', async () => {
    fake.setFaults({ noContentLength: true, contentType: 'application/zstd' });
    const res = await fetch(dl(), { headers: auth });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), null);
    assert.equal(res.headers.get('transfer-encoding'), 'chunked');
    assert.equal(res.headers.get('content-type'), 'application/zstd');
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(merged));
  });

  test('bytesPerSecond throttles the download', async () => {
    fake.setFaults({ bytesPerSecond: 20_000 });
    const t0 = Date.now();
    const res = await fetch(dl(), { headers: { ...auth, range: 'bytes=0-9999' } });
    const body = Buffer.from(await res.arrayBuffer());
    const elapsed = Date.now() - t0;
    assert.ok(body.equals(merged.subarray(0, 10_000)));
    assert.ok(elapsed >= 400, `10 kB at 20 kB/s took ${elapsed} ms`);
  });

  test('close() returns while a download hangs', async () => {
    const slow = await startFakeTogether({ apiKey: API_KEY, jobs: jobs(), faults: { bytesPerSecond: 100 } });
    try {
      const res = await fetch(`${slow.url}/finetune/download?${q}`, { headers: auth });
      assert.equal(res.status, 200);
      const reading = res.arrayBuffer();
      const t0 = Date.now();
      await slow.close();
      assert.ok(Date.now() - t0 < 2000);
      await assert.rejects(reading);
    } finally {
      await slow.close();
    }
  });
});

describe('fake Together API redirect to a storage host', () => {
  let api: FakeTogether;
  let storage: FakeTogether;

  before(async () => {
    storage = await startFakeTogether({ apiKey: API_KEY, jobs: jobs(), host: '127.0.0.2', requireNoAuth: true });
    api = await startFakeTogether({
      apiKey: API_KEY,
      jobs: jobs(),
      faults: { redirectTo: `http://127.0.0.2:${storage.port}` },
    });
  });
  after(async () => {
    await api?.close();
    await storage?.close();
  });

  test('302 to the storage host, which refuses Authorization and serves without it', async () => {
    const path = `/v1/finetune/download?ft_id=${LORA_ID}&checkpoint=adapter`;
    const res = await fetch(`http://127.0.0.1:${api.port}${path}`, { headers: auth, redirect: 'manual' });
    assert.equal(res.status, 302);
    const location = res.headers.get('location')!;
    assert.equal(location, `http://127.0.0.2:${storage.port}${path}`);
    assert.equal(storage.url, `http://127.0.0.2:${storage.port}/v1`);

    const withAuth = await fetch(location, { headers: auth });
    assert.equal(withAuth.status, 400);
    assert.match((await json(withAuth)).error.message, /Authorization header must not be sent/);
    assert.equal(storage.requests.at(-1)!.headers.authorization, auth.authorization);

    const ok = await fetch(location, { headers: { range: 'bytes=0-99' } });
    assert.equal(ok.status, 206);
    assert.deepEqual(Buffer.from(await ok.arrayBuffer()), adapter.subarray(0, 100));
    assert.equal(storage.bytesSent(), 100);
    // non-download routes on the storage instance still need the key
    assert.equal((await fetch(`${storage.url}/fine-tunes/${LORA_ID}`)).status, 401);
  });
});

describe('archives', () => {
  test('safetensors output parses back and offsets cover the data', () => {
    const a = new Float32Array([1, 2, 3, 4, 5, 6]);
    const b = new Float32Array([-0.5, 0.25, 1e-3]);
    const buf = safetensors({ 'w.b': { dtype: 'F32', shape: [3], data: b }, 'w.a': { dtype: 'F32', shape: [2, 3], data: a } });
    const { header, dataStart } = parseSafetensors(buf);
    assert.equal(dataStart % 8, 0);
    assert.deepEqual(header.__metadata__, { format: 'pt' });
    const tensors = Object.entries(header).filter(([k]) => k !== '__metadata__');
    assert.equal(tensors.length, 2);
    const spans = tensors.map(([, t]) => t.data_offsets as [number, number]).sort((x, y) => x[0] - y[0]);
    assert.equal(spans[0][0], 0);
    for (let i = 1; i < spans.length; i++) assert.equal(spans[i][0], spans[i - 1][1]);
    assert.equal(spans.at(-1)![1], buf.length - dataStart);
    const read = (name: string) => {
      const t = header[name];
      const [s, e] = t.data_offsets;
      const out: number[] = [];
      for (let p = dataStart + s; p < dataStart + e; p += 4) out.push(buf.readFloatLE(p));
      return { shape: t.shape, dtype: t.dtype, values: out };
    };
    assert.deepEqual(read('w.a'), { shape: [2, 3], dtype: 'F32', values: [1, 2, 3, 4, 5, 6] });
    assert.deepEqual(read('w.b'), { shape: [3], dtype: 'F32', values: Array.from(b) });
    assert.throws(() => safetensors({ x: { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) } }));
  });

  test('peftAdapterFiles is a deterministic PEFT LoRA adapter', () => {
    const files = peftAdapterFiles({ r: 4, alpha: 8, hidden: 16, layers: 2, seed: 7, baseModel: 'org/base' });
    assert.deepEqual(Object.keys(files).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    const cfg = JSON.parse(files['adapter_config.json'].toString());
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.task_type, 'CAUSAL_LM');
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 8);
    assert.equal(cfg.base_model_name_or_path, 'org/base');
    assert.ok(Array.isArray(cfg.target_modules) && cfg.target_modules.includes('q_proj'));
    const { header, dataStart } = parseSafetensors(files['adapter_model.safetensors']);
    const a = header['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'];
    const b = header['base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight'];
    assert.deepEqual(a.shape, [4, 16]);
    assert.deepEqual(b.shape, [16, 4]);
    assert.equal(a.data_offsets[1] - a.data_offsets[0], 4 * 16 * 4);
    const nonZero = files['adapter_model.safetensors'].subarray(dataStart).some((x) => x !== 0);
    assert.ok(nonZero);
    assert.ok(
      files['adapter_model.safetensors'].equals(
        peftAdapterFiles({ r: 4, alpha: 8, hidden: 16, layers: 2, seed: 7, baseModel: 'org/base' })['adapter_model.safetensors'],
      ),
    );
    assert.ok(
      !files['adapter_model.safetensors'].equals(
        peftAdapterFiles({ r: 4, alpha: 8, hidden: 16, layers: 2, seed: 8, baseModel: 'org/base' })['adapter_model.safetensors'],
      ),
    );
  });

  test('makeArchive produces real tar.zst and tar.gz archives', async () => {
    const files = { ...peftAdapterFiles(), 'sub/readme.txt': Buffer.from('hello\n') };
    const zst = await makeArchive(files, 'zstd');
    assert.deepEqual(zst.subarray(0, 4), Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    const list = (await runTar(['--zstd', '-tf', '-'], zst)).split('\n').filter(Boolean).sort();
    assert.deepEqual(list, ['adapter_config.json', 'adapter_model.safetensors', 'sub/', 'sub/readme.txt']);
    const content = await runTar(['--zstd', '-xOf', '-', 'sub/readme.txt'], zst);
    assert.equal(content, 'hello\n');

    const gz = await makeArchive({ 'config.json': Buffer.from('{}') }, 'gzip', { topDir: 'model' });
    assert.deepEqual(gz.subarray(0, 2), Buffer.from([0x1f, 0x8b]));
    const gzList = (await runTar(['-tzf', '-'], gz)).split('\n').filter(Boolean).sort();
    assert.deepEqual(gzList, ['model/', 'model/config.json']);
  });

  test('makeLargeArchiveFile writes a real model archive of exactly the size, with weights that differ block by block', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'large-archive-test-'));
    try {
      const size = 12 * 1024 * 1024 + 4096 * 3 + 17;
      const p = join(dir, 'x.tar.zst');
      await makeLargeArchiveFile(p, size);
      const buf = await readFile(p);
      assert.equal(buf.length, size);
      assert.deepEqual(buf.subarray(0, 4), Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
      // A model folder with its config, shard index and whole safetensors shards.
      const report = await checkContents(createReadStream(p), 'zstd', { fetched: 'merged' });
      assert.equal(report.folder, 'model');
      assert.deepEqual(report.weights, ['model-00001-of-00001.safetensors']);
      assert.equal(report.safetensors.files, 1);
      // The reused random block differs through the stamped counters: no two 4 KiB pieces of the weights are equal.
      const shard = await runTarBuffer(['--zstd', '-xOf', '-', 'model/model-00001-of-00001.safetensors'], buf);
      const data = shard.subarray(8 + Number(shard.readBigUInt64LE(0)));
      const pieces = new Set<string>();
      for (let i = 0; i + 4096 <= data.length; i += 4096) pieces.add(data.subarray(i, i + 4096).toString('base64'));
      assert.equal(pieces.size, Math.floor(data.length / 4096));
      assert.ok(pieces.size > 2048, 'more pieces than one random block holds');
      await assert.rejects(makeLargeArchiveFile(join(dir, 'tiny'), 3), /64 KiB or more/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
