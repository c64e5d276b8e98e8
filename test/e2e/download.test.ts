/**
 * End-to-end: the built dist/index.js against the fake Together API, one scenario per input row
 * and per failure the action must explain.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, beforeEach, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { makeArchive, peftAdapterFiles, sha256, weights } from '../support/archives.js';
import { type FakeJob, type FakeTogether, startFakeTogether } from '../support/fake-together.js';
import { actionRunner, assertFailed, assertSucceeded, FAST_RETRY, listFiles, SLOW_OPEN } from '../support/run-action.js';
import { loraJob, SAMPLE_JOB_ID, SAMPLE_SLUG } from '../support/sample-job.js';

const exec = promisify(execFile);
const KEY = 'tgp_v1_e2e-secret-Zq8xW3';
const LORA = SAMPLE_JOB_ID;
const FULL = 'ft-0b0b0b0b-1111-2222-3333-444455556666';
const RUNNING = 'ft-7a7a7a7a-aaaa-bbbb-cccc-ddddeeeeffff';
const HOSTILE = 'ft-dead0000-beef-4000-8000-000000000bad';
const SLUG = SAMPLE_SLUG;

let api: FakeTogether;
let adapter: Buffer;
let merged: Buffer;
let step10Adapter: Buffer;
let fullModel: Buffer;
let gzipAdapter: Buffer;

function jobs(): FakeJob[] {
  return [
    loraJob({
      checkpoints: [
        { step: 10, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
        { step: 20, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
        { step: 30, checkpoint_type: 'Final Adapter', checkpoint: 'adapter' },
        { step: 30, checkpoint_type: 'Final Merged', checkpoint: 'model' },
      ],
      archives: { adapter, merged, 'adapter@10': step10Adapter, 'merged@10': merged, 'adapter@20': adapter },
    }),
    {
      id: FULL,
      status: 'completed',
      model: 'Qwen/Qwen2.5-0.5B',
      model_output_name: 'org/Qwen2.5-0.5B-full',
      training_type: { type: 'Full' },
      checkpoints: [],
      archives: { model_output_path: fullModel },
    },
    {
      id: RUNNING,
      status: 'running',
      model_output_name: 'org/still-training',
      training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
      checkpoints: [{ step: 5, checkpoint_type: 'Intermediate', checkpoint: 'adapter' }],
      archives: { 'adapter@5': adapter },
    },
    {
      id: HOSTILE,
      status: 'completed',
      model_output_name: '../../etc/x/..\u0007\n\u001b[31mevil name\\..',
      training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
      archives: { merged: gzipAdapter },
    },
  ];
}

before(async () => {
  adapter = await makeArchive(peftAdapterFiles(), 'zstd');
  step10Adapter = await makeArchive(peftAdapterFiles({ seed: 10 }), 'zstd');
  merged = await makeArchive({ 'config.json': Buffer.from('{"model_type":"llama"}'), 'model.safetensors': weights(300_000) }, 'zstd', {
    topDir: 'merged',
  });
  fullModel = await makeArchive({ 'config.json': Buffer.from('{"model_type":"qwen2"}'), 'model.safetensors': weights(4096) }, 'zstd');
  gzipAdapter = await makeArchive(peftAdapterFiles({ seed: 3 }), 'gzip');
  api = await startFakeTogether({ apiKey: KEY, jobs: jobs() });
});

after(async () => {
  await api.close();
  removeRuns();
});

beforeEach(() => {
  api.setFaults({});
  api.requests.length = 0;
  api.jobs.clear();
  for (const job of jobs()) api.jobs.set(job.id, job);
});

/** Runs the action against the fake and checks what every run must satisfy. */
const { act, removeRuns } = actionRunner(KEY, () => ({ inputs: { 'api-key': KEY, 'base-url': api.url } }));

const succeeded = assertSucceeded;
const failed = assertFailed;

function downloads() {
  return api.requests.filter((r) => r.endpoint === 'download');
}

describe('a LoRA job', () => {
  test('checkpoint-type adapter saves the adapter under the default name with every output', async () => {
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter' });
    succeeded(run);
    const file = path.join(run.workspace, `${SLUG}-adapter.tar.zst`);
    assert.equal(run.outputs.path, file);
    assert.deepEqual(fs.readFileSync(file), adapter);
    assert.equal(run.outputs.size, String(adapter.length));
    assert.equal(run.outputs.sha256, sha256(adapter));
    assert.equal(run.outputs['checkpoint-type'], 'adapter');
    assert.equal(run.outputs.step, '');
    assert.deepEqual(listFiles(run.workspace), [`${SLUG}-adapter.tar.zst`]);

    // It is a real PEFT adapter the user can unpack.
    const out = path.join(run.scratch, 'unpacked');
    fs.mkdirSync(out);
    await exec('tar', ['--zstd', '-xf', file, '-C', out]);
    assert.deepEqual(fs.readdirSync(out).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')).peft_type, 'LORA');

    // The probe asked for two bytes, then the archive came in ranges, each with the checked id.
    const [probe, ...ranges] = downloads();
    assert.equal(probe.range, 'bytes=0-1');
    assert.ok(probe.bodyBytes <= 2, `the probe read ${probe.bodyBytes} bytes`);
    assert.ok(ranges.length >= 1);
    for (const r of ranges) {
      assert.deepEqual(r.query, { ft_id: LORA, checkpoint: 'adapter' });
      assert.match(r.range ?? '', /^bytes=\d+-\d+$/);
      assert.equal(r.headers.authorization, `Bearer ${KEY}`);
    }
    assert.equal(
      ranges.reduce((n, r) => n + r.bodyBytes, 0),
      adapter.length,
      'every byte was fetched exactly once',
    );

    // The log shows the plan, a closing progress line and the outputs.
    assert.match(run.stdout, /::group::Plan/);
    assert.match(run.stdout, new RegExp(`Size: .*\\(${adapter.length} bytes\\)`));
    assert.match(run.stdout, /100\.0%, .*\/s, done in/);
    assert.match(run.stdout, new RegExp(`sha256: ${sha256(adapter)}`));

    // The job summary is a table with every fact.
    for (const cell of [
      'Job',
      LORA,
      'Model',
      'Checkpoint type',
      'adapter',
      'Step',
      'final',
      'File',
      'Size',
      'SHA-256',
      sha256(adapter),
      'Time',
      'Speed',
    ]) {
      assert.ok(run.summary.includes(cell), `the summary lacks ${cell}`);
    }
    assert.match(run.summary, /<table>/);
  });

  test('checkpoint-type default means merged', async () => {
    const run = await act({ 'job-id': LORA });
    succeeded(run);
    assert.equal(run.outputs['checkpoint-type'], 'merged');
    assert.equal(path.basename(run.outputs.path), `${SLUG}.tar.zst`);
    assert.equal(run.outputs.sha256, sha256(merged));
    assert.equal(downloads().at(-1)?.query.checkpoint, 'merged');
  });

  test('checkpoint-type is case-insensitive', async () => {
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'MeRgEd' });
    succeeded(run);
    assert.equal(run.outputs['checkpoint-type'], 'merged');
  });

  test('an unknown checkpoint-type lists the valid ones, before any request', async () => {
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'lora' });
    failed(run, /checkpoint-type/, /default, merged, adapter/);
    assert.equal(api.requests.length, 0);
  });
});

describe('steps', () => {
  test('a step in job-id fetches that checkpoint under a step name', async () => {
    const run = await act({ 'job-id': `${LORA}:10`, 'checkpoint-type': 'adapter' });
    succeeded(run);
    assert.equal(path.basename(run.outputs.path), `${SLUG}-step-10-adapter.tar.zst`);
    assert.equal(run.outputs.step, '10');
    assert.equal(run.outputs.sha256, sha256(step10Adapter));
    assert.ok(api.requests.some((r) => r.endpoint === 'checkpoints'));
    assert.deepEqual(downloads().at(-1)?.query, { ft_id: LORA, checkpoint_step: '10', checkpoint: 'adapter' });
  });

  test('the step input does the same', async () => {
    const run = await act({ 'job-id': LORA, step: '10', 'checkpoint-type': 'adapter' });
    succeeded(run);
    assert.equal(run.outputs.step, '10');
    assert.equal(run.outputs.sha256, sha256(step10Adapter));
  });

  test('a checkpoint and the final model do not overwrite each other', async () => {
    const final = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter' });
    const step = await act({ 'job-id': LORA, step: '10', 'checkpoint-type': 'adapter' });
    assert.notEqual(path.basename(final.outputs.path), path.basename(step.outputs.path));
  });

  test('a different step in job-id and step is an error naming step, before any request', async () => {
    const run = await act({ 'job-id': `${LORA}:10`, step: '20' });
    failed(run, /`step`/, /disagrees/);
    assert.equal(api.requests.length, 0);
  });

  test('a step that does not exist lists the steps that do', async () => {
    const run = await act({ 'job-id': LORA, step: '15' });
    failed(run, /`step`/, /no checkpoint at step 15/, /10, 20, 30/);
    assert.equal(downloads().length, 0);
  });

  for (const bad of ['0', '-1', 'abc', '1.5']) {
    test(`step ${JSON.stringify(bad)} is rejected naming step, before any request`, async () => {
      const run = await act({ 'job-id': LORA, step: bad });
      failed(run, /`step`/, /positive integer/);
      assert.equal(api.requests.length, 0);
    });
  }

  test('a running job cannot give its final model, names its status and points at step', async () => {
    const run = await act({ 'job-id': RUNNING });
    failed(run, /status `running`/, /`step`/);
    assert.equal(downloads().length, 0);
  });

  test('a running job still gives a saved checkpoint', async () => {
    const run = await act({ 'job-id': `${RUNNING}:5`, 'checkpoint-type': 'adapter' });
    succeeded(run);
    assert.equal(run.outputs.sha256, sha256(adapter));
  });
});

describe('job-id', () => {
  for (const bad of [
    'fe94af08',
    'ft-abc def',
    'ft-abc/../../v1/files',
    'ft-abc?ft_id=other',
    'ft-abc%2F..',
    'ft-..',
    '../ft-abc',
    'ft-abc:1:2',
  ]) {
    test(`${JSON.stringify(bad)} is rejected naming job-id and the expected form, before any request`, async () => {
      const run = await act({ 'job-id': bad });
      failed(run, /`job-id`/, /ft-<id>/);
      assert.equal(api.requests.length, 0);
    });
  }

  test('a missing job-id is an error naming job-id', async () => {
    const run = await act({ 'job-id': '' });
    failed(run, /`job-id`/, /required/);
  });

  test('an unknown job (404) points at job-id', async () => {
    const run = await act({ 'job-id': 'ft-00000000-0000-0000-0000-000000000000' });
    failed(run, /HTTP 404/, /`job-id`/);
  });
});

describe('a full fine-tuning job', () => {
  test('default downloads the model with checkpoint=model_output_path', async () => {
    const run = await act({ 'job-id': FULL });
    succeeded(run);
    assert.equal(run.outputs['checkpoint-type'], 'model');
    assert.equal(path.basename(run.outputs.path), 'org--qwen2.5-0.5b-full.tar.zst');
    assert.equal(run.outputs.sha256, sha256(fullModel));
    assert.equal(downloads().at(-1)?.query.checkpoint, 'model_output_path');
  });

  for (const type of ['adapter', 'merged']) {
    test(`${type} fails saying a full job has no adapter`, async () => {
      const run = await act({ 'job-id': FULL, 'checkpoint-type': type });
      failed(run, /`checkpoint-type`/, /full fine-tuning job/, /no adapter/);
      assert.equal(downloads().length, 0);
    });
  }
});

describe('path', () => {
  test('an existing directory gets the file inside it', async () => {
    const run = await act({ 'job-id': LORA, path: 'models' }, { setup: (ws) => fs.mkdirSync(path.join(ws, 'models')) });
    succeeded(run);
    assert.equal(run.outputs.path, path.join(run.workspace, 'models', `${SLUG}.tar.zst`));
  });

  test('a value ending in / is a directory, created with its parents', async () => {
    const run = await act({ 'job-id': LORA, path: 'a/b/c/' });
    succeeded(run);
    assert.equal(run.outputs.path, path.join(run.workspace, 'a', 'b', 'c', `${SLUG}.tar.zst`));
    assert.ok(fs.existsSync(run.outputs.path));
  });

  test('anything else is the file path, parents created', async () => {
    const run = await act({ 'job-id': LORA, path: 'out/nested/my-model.tar.zst', 'checkpoint-type': 'adapter' });
    succeeded(run);
    assert.equal(run.outputs.path, path.join(run.workspace, 'out', 'nested', 'my-model.tar.zst'));
    assert.deepEqual(fs.readFileSync(run.outputs.path), adapter);
  });

  test('an absolute path is used as it is', async () => {
    let target = '';
    const run = await act(
      { 'job-id': LORA, path: '' },
      {
        setup: (ws) => {
          target = path.join(path.dirname(ws), 'elsewhere', 'abs.tar.zst');
        },
        env: {},
      },
    );
    succeeded(run);
    // Re-run with the absolute path now that the scratch directory is known.
    const abs = await act({ 'job-id': LORA, path: target });
    succeeded(abs);
    assert.equal(abs.outputs.path, target);
    assert.ok(fs.existsSync(target));
    fs.rmSync(path.dirname(target), { recursive: true, force: true });
  });

  test('an existing file at the target is replaced by a verified download', async () => {
    const run = await act(
      { 'job-id': LORA, path: 'model.tar.zst' },
      { setup: (ws) => fs.writeFileSync(path.join(ws, 'model.tar.zst'), 'old') },
    );
    succeeded(run);
    assert.deepEqual(fs.readFileSync(run.outputs.path), merged);
  });

  test('a failed download leaves an older file untouched, and nothing else', async () => {
    api.setFaults({ ignoreRange: true, cutBodyAfter: 1000, bodyAfterMs: 100 });
    const run = await act(
      { 'job-id': LORA, path: 'keep/model.tar.zst' },
      {
        nodeArgs: ['--import', FAST_RETRY],
        setup: (ws) => {
          fs.mkdirSync(path.join(ws, 'keep'));
          fs.writeFileSync(path.join(ws, 'keep', 'model.tar.zst'), 'old model');
        },
      },
    );
    failed(run, /failed after 3 attempts/);
    assert.equal(fs.readFileSync(path.join(run.workspace, 'keep', 'model.tar.zst'), 'utf8'), 'old model');
    assert.deepEqual(listFiles(run.workspace), ['keep/model.tar.zst']);
  });

  test('a failed download into new directories removes them again', async () => {
    api.setFaults({ ignoreRange: true, cutBodyAfter: 1000, bodyAfterMs: 100 });
    const run = await act({ 'job-id': LORA, path: 'new/dirs/' }, { nodeArgs: ['--import', FAST_RETRY] });
    failed(run, /failed after 3 attempts/);
    assert.deepEqual(fs.readdirSync(run.workspace), []);
  });

  test('a file in the way of the directory is an error naming path', async () => {
    const run = await act(
      { 'job-id': LORA, path: 'blocker/model.tar.zst' },
      { setup: (ws) => fs.writeFileSync(path.join(ws, 'blocker'), 'x') },
    );
    failed(run, /`path`/, /a file is in the way/);
  });
});

describe('api-key and base-url', () => {
  test('the key falls back to TOGETHER_API_KEY and the URL to TOGETHER_BASE_URL', async () => {
    const run = await act(
      { 'job-id': LORA, 'api-key': '', 'base-url': '' },
      { env: { TOGETHER_API_KEY: KEY, TOGETHER_BASE_URL: api.url } },
    );
    succeeded(run);
    assert.ok(api.requests.length >= 3);
    assert.ok(api.requests.every((r) => r.headers.authorization === `Bearer ${KEY}`));
  });

  test('the inputs win over the environment', async () => {
    const run = await act({ 'job-id': LORA }, { env: { TOGETHER_API_KEY: 'wrong-key', TOGETHER_BASE_URL: 'http://127.0.0.1:9/v1' } });
    succeeded(run);
  });

  test('no key at all fails before any request', async () => {
    const run = await act({ 'job-id': LORA, 'api-key': '' });
    failed(run, /`api-key`/, /TOGETHER_API_KEY/);
    assert.equal(api.requests.length, 0);
  });

  test('the key is masked before anything else is printed', async () => {
    const run = await act({ 'job-id': LORA });
    succeeded(run);
    assert.equal(run.stdout.split('\n')[0], `::add-mask::${KEY}`);
  });

  test('a rejected key (401) points at api-key and is not retried', async () => {
    const run = await act({ 'job-id': LORA, 'api-key': 'tgp_v1_wrong-key-xyz' });
    const error = failed(run, /HTTP 401/, /`api-key`/);
    assert.ok(!error.includes('tgp_v1_wrong-key-xyz'));
    assert.equal(api.requests.length, 1);
  });

  test('a 403 on the download points at api-key', async () => {
    api.setFaults({ queue: { download: [{ status: 403 }] } });
    const run = await act({ 'job-id': LORA });
    failed(run, /HTTP 403/, /`api-key`/);
  });

  test('an unreachable base-url says so with the attempts', async () => {
    const run = await act({ 'job-id': LORA, 'base-url': 'http://127.0.0.1:9/v1' });
    failed(run, /Could not reach the Together API/, /5 attempts/, /base-url/);
  });

  test('an invalid base-url is an error naming base-url', async () => {
    const run = await act({ 'job-id': LORA, 'base-url': 'ftp://example.com/v1' });
    failed(run, /`base-url`/);
  });
});

describe('transient failures', () => {
  test('a 429 with retry-after on the job lookup is waited out', async () => {
    api.setFaults({ queue: { job: [{ status: 429, headers: { 'retry-after': '0' } }] } });
    const run = await act({ 'job-id': LORA });
    succeeded(run);
    assert.deepEqual(
      api.requests.filter((r) => r.endpoint === 'job').map((r) => r.status),
      [429, 200],
    );
  });

  test('a 502 then success on the probe', async () => {
    api.setFaults({ queue: { download: [{ status: 502, headers: { 'retry-after-ms': '10' } }] } });
    const run = await act({ 'job-id': LORA });
    succeeded(run);
    assert.deepEqual(
      downloads().map((r) => r.status),
      [502, 206, 206],
    );
  });

  test('a persistent 503 ends with the number of attempts and the last status', async () => {
    const busy = { status: 503, headers: { 'retry-after-ms': '5' } };
    api.setFaults({ queue: { job: [busy, busy, busy, busy, busy, busy] } });
    const run = await act({ 'job-id': LORA });
    failed(run, /after 5 attempts/, /HTTP 503/);
    assert.equal(api.requests.filter((r) => r.endpoint === 'job').length, 5);
  });
});

describe('what the server sends', () => {
  test('a server that ignores Range: the probe stops reading, the download still works', async () => {
    const big = Buffer.concat([merged, Buffer.alloc(48 * 1024 * 1024, 1)]);
    api.jobs.get(LORA)!.archives.merged = big;
    api.setFaults({ ignoreRange: true });
    const run = await act({ 'job-id': LORA });
    succeeded(run);
    const [probe] = downloads();
    assert.equal(probe.status, 200);
    assert.ok(probe.bodyBytes < big.length / 4, `the probe let ${probe.bodyBytes} of ${big.length} bytes be sent`);
    assert.equal(run.outputs.sha256, sha256(big));
    assert.match(run.stdout, /Range requests: not honoured/);
  });

  test('a gzip archive is saved as .tar.gz', async () => {
    api.jobs.get(LORA)!.archives.adapter = gzipAdapter;
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter' });
    succeeded(run);
    assert.equal(path.basename(run.outputs.path), `${SLUG}-adapter.tar.gz`);
    assert.equal(run.outputs.sha256, sha256(gzipAdapter));
  });

  test('an HTML page instead of an archive is refused before downloading', async () => {
    api.jobs.get(LORA)!.archives.merged = Buffer.from('<!DOCTYPE html><html><body>Oops</body></html>');
    api.setFaults({ contentType: 'text/html' });
    const run = await act({ 'job-id': LORA });
    failed(run, /not a zstd or gzip archive/, /text\/html/);
    assert.equal(downloads().length, 1);
    assert.deepEqual(listFiles(run.workspace), []);
  });

  test('a model_output_name with /, .. and control characters still gives one file inside the directory', async () => {
    const run = await act({ 'job-id': HOSTILE, path: 'safe/', 'verify-contents': 'false' });
    succeeded(run);
    const name = path.basename(run.outputs.path);
    assert.equal(path.dirname(run.outputs.path), path.join(run.workspace, 'safe'));
    assert.match(name, /^[a-z0-9.@+-]+\.tar\.gz$/);
    assert.ok(!name.startsWith('.'));
    assert.deepEqual(listFiles(run.workspace), [`safe/${name}`]);
  });
});

const notProbe = (r: { range?: string }) => r.range !== 'bytes=0-1';

const MAIN_THREAD = ['--import', path.join(path.dirname(FAST_RETRY), 'receive-workers.mjs')];

for (const mode of [
  { name: 'parallel ranges', faults: {}, nodeArgs: [] as string[] },
  // The receive on the main thread (one core), which hashes what arrives in order as it comes.
  { name: 'parallel ranges, received on the main thread', faults: {}, nodeArgs: MAIN_THREAD, env: { RECEIVE_WORKERS: '0' } },
  // The body follows the headers after a pause, so a cut never comes before tool-cache's file is
  // open: that race has tests of its own below.
  { name: 'one stream (server ignores Range)', faults: { ignoreRange: true, bodyAfterMs: 100 }, nodeArgs: ['--import', FAST_RETRY] },
]) {
  const ranged = mode.name.startsWith('parallel ranges');
  const options = { nodeArgs: mode.nodeArgs, env: 'env' in mode ? mode.env : undefined };
  describe(`faults during the download: ${mode.name}`, () => {
    test('a 503 on the archive request is retried', async () => {
      api.setFaults({
        ...mode.faults,
        queue: { download: [{ status: 503, headers: { 'retry-after-ms': '10' }, when: ranged ? notProbe : 'whole' }] },
      });
      const run = await act({ 'job-id': LORA }, options);
      succeeded(run);
      assert.deepEqual(
        downloads().map((r) => r.status),
        ranged ? [206, 503, 206] : [200, 503, 200],
      );
      assert.equal(run.outputs.sha256, sha256(merged));
    });

    test(`a body cut short: ${ranged ? 'resumed where it stopped' : 'retried from the start, then a clear failure'}`, async () => {
      api.setFaults({ ...mode.faults, cutBodyAfter: 100_000 });
      const run = await act({ 'job-id': LORA }, options);
      if (ranged) {
        succeeded(run);
        assert.equal(run.outputs.sha256, sha256(merged));
        const wire = downloads()
          .slice(1)
          .reduce((n, r) => n + r.bodyBytes, 0);
        // Every response is cut after 100 kB: only resuming can finish, and little is sent twice
        // (what the server had in flight when it cut the connection).
        assert.ok(wire < merged.length * 1.5, `${wire} bytes on the wire for ${merged.length}`);
        assert.match(run.stdout, /resuming in/);
      } else {
        failed(run, /failed after 3 attempts/, /run the job again/);
        assert.deepEqual(listFiles(run.workspace), []);
        assert.equal(downloads().length, 4, 'the probe and three attempts');
      }
    });

    test(`a Content-Length larger than the body: ${ranged ? 'the range itself arrived whole' : 'a clear failure'}`, async () => {
      api.setFaults({ ...mode.faults, contentLength: (n) => n + 5000 });
      const run = await act({ 'job-id': LORA }, options);
      if (ranged) {
        succeeded(run);
        assert.equal(run.outputs.sha256, sha256(merged));
      } else {
        failed(run, /failed after 3 attempts/);
        assert.deepEqual(listFiles(run.workspace), []);
      }
    });

    test('a persistent failure ends with the attempts and leaves nothing', async () => {
      const busy = { status: 503, headers: { 'retry-after-ms': '1' }, when: ranged ? notProbe : ('whole' as const) };
      api.setFaults({ ...mode.faults, queue: { download: Array.from({ length: 10 }, () => busy) } });
      const run = await act({ 'job-id': LORA, path: 'out/' }, options);
      failed(run, ranged ? /after 6 attempts \(HTTP 503\)/ : /after 3 attempts.*HTTP 503/);
      assert.deepEqual(fs.readdirSync(run.workspace), []);
    });

    test('a 404 during the download is not retried', async () => {
      api.setFaults({ ...mode.faults, queue: { download: [{ status: 404, when: ranged ? notProbe : 'whole' }] } });
      const run = await act({ 'job-id': LORA }, options);
      failed(run, /HTTP 404/, /`job-id`/);
      assert.equal(downloads().length, 2);
    });
  });
}

/**
 * Whether this Node.js's `stream.pipeline` settles a failed pipeline before a write stream's
 * delayed open has finished (Node.js 20), so that the open can recreate a file tool-cache has just
 * removed; Node.js 24 waits for the open, and the race cannot happen.
 */
async function pipelineOutrunsDelayedOpen(): Promise<boolean> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pipeline-open-'));
  try {
    let opened = false;
    const slowFs = {
      open: (p: string, flags: string, mode: number, cb: (e: Error | null, fd?: number) => void) =>
        setTimeout(() => {
          opened = true;
          fs.open(p, flags, mode, cb);
        }, 100),
      write: fs.write,
      writev: fs.writev,
      close: fs.close,
    };
    const broken = new Readable({
      read() {
        this.destroy(new Error('broke'));
      },
    });
    await pipeline(broken, fs.createWriteStream(path.join(dir, 'f'), { fs: slowFs } as Parameters<typeof fs.createWriteStream>[1])).catch(
      () => undefined,
    );
    return !opened;
  } finally {
    setTimeout(() => fs.rmSync(dir, { recursive: true, force: true }), 500);
  }
}

describe('one stream: a response that breaks before tool-cache has its file open', () => {
  // In production tool-cache sleeps 10-20 s between attempts, long enough for a late open to
  // recreate the file it has just removed; here 1 s, and opens are 100 ms late.
  const slow = (times?: number) => ({
    nodeArgs: ['--import', FAST_RETRY, '--import', SLOW_OPEN],
    env: { TOOL_CACHE_RETRY_SECONDS: '1', SLOW_OPEN_MS: '100', SLOW_OPEN_TIMES: times?.toString() },
  });
  let race: boolean;
  before(async () => {
    race = await pipelineOutrunsDelayedOpen();
  });

  test('Node.js 20: tool-cache is started again over its leftover file; Node.js 24: tool-cache retries as usual; the download completes', async () => {
    api.setFaults({ ignoreRange: true, cutWholeOnceAfter: 1000 });
    const run = await act({ 'job-id': LORA }, slow(1));
    succeeded(run);
    assert.equal(run.outputs.sha256, sha256(merged));
    const restarted = /tool-cache will not retry over the empty file it left behind: removed it, starting again/;
    if (race) {
      assert.match(run.stdout, restarted);
    } else {
      // The open finished before the failure was reported: tool-cache removed the file and retried on its own.
      assert.doesNotMatch(run.stdout, restarted);
      assert.match(run.stdout, /Waiting 1 seconds before trying again/);
    }
    assert.equal(downloads().length, 3, 'the probe, the broken response, the one after it');
    assert.deepEqual(listFiles(run.workspace), [path.basename(run.outputs.path)]);
  });

  test('when every response breaks at once: three starts of tool-cache (Node.js 20) or its three attempts (Node.js 24), then a clear failure and nothing left', async () => {
    api.setFaults({ ignoreRange: true, cutBodyAfter: 1000 });
    const run = await act({ 'job-id': LORA, path: 'out/' }, slow());
    if (race) {
      failed(run, /3 times the response broke off before its first byte was saved/, /run the job again later/);
      assert.equal(downloads().length, 4, 'the probe and one real attempt per start');
    } else {
      failed(run, /failed after 3 attempts/, /run the job again/);
      assert.doesNotMatch(run.stdout, /starting again/);
      assert.equal(downloads().length, 4, "the probe and tool-cache's three attempts");
    }
    assert.deepEqual(fs.readdirSync(run.workspace), []);
  });
});

describe('parallel ranges', () => {
  for (const [where, options] of [
    ['on a receive worker', {}],
    ['on the main thread', { nodeArgs: MAIN_THREAD, env: { RECEIVE_WORKERS: '0' } }],
  ] as const) {
    test(`a larger archive is split over several connections and reassembled exactly, received ${where}`, async () => {
      const big = Buffer.concat([merged, randomBytes(40 * 1024 * 1024)]);
      api.jobs.get(LORA)!.archives.merged = big;
      const run = await act({ 'job-id': LORA, connections: '4' }, options);
      succeeded(run);
      assert.equal(run.outputs.sha256, sha256(big));
      assert.deepEqual(fs.readFileSync(run.outputs.path), big);
      const ranges = downloads().slice(1);
      assert.ok(ranges.length >= 4, `expected several ranges, got ${ranges.length}`);
      assert.match(run.stdout, /over 4 connections/);
    });
  }

  test('a range that fails for good ends the download with its own error, not the abort of the others', async () => {
    api.jobs.get(LORA)!.archives.merged = Buffer.concat([merged, randomBytes(40 * 1024 * 1024)]);
    // The last range fails at once; the other connections are busy and get aborted.
    api.setFaults({
      queue: { download: [{ status: 404, when: (r) => /^bytes=[1-9]\d*-\d+$/.test(r.range ?? '') }] },
      bytesPerSecond: 20 * 1024 * 1024,
    });
    const run = await act({ 'job-id': LORA, connections: '4' });
    failed(run, /HTTP 404/, /`job-id`/);
    assert.doesNotMatch(run.stdout, /::error::aborted/);
  });

  test('a 206 whose Content-Range starts at another offset than asked for fails the download', async () => {
    const big = Buffer.concat([merged, randomBytes(10 * 1024 * 1024)]);
    api.jobs.get(LORA)!.archives.merged = big;
    // The second range is answered from 4 KiB further on, with the right end and a matching length:
    // only its start says these are not the bytes asked for.
    const second = 'bytes=4194304-8388607';
    const first = 4194304 + 4096;
    api.setFaults({
      queue: {
        download: [
          {
            status: 206,
            when: (r) => r.range === second,
            headers: { 'content-range': `bytes ${first}-8388607/${big.length}`, 'content-type': 'application/octet-stream' },
            body: 'x'.repeat(8388607 + 1 - first),
          },
        ],
      },
    });
    const run = await act({ 'job-id': LORA, connections: '1' });
    failed(
      run,
      /answered bytes 4194304-8388607 with Content-Range "bytes 4198400-8388607\/\d+": the archive changed or the server misbehaves/,
    );
    assert.ok(
      downloads().some((r) => r.range === second && r.status === 206),
      'the shifted answer was served',
    );
    assert.deepEqual(listFiles(run.workspace), []);
  });

  test('a stalled connection is aborted after stall-timeout and its range retried', async () => {
    api.setFaults({ stallAfter: { bytes: 1000 } });
    const run = await act({ 'job-id': LORA, 'stall-timeout': '1' });
    succeeded(run);
    assert.match(run.stdout, /no data for 1 s \(stall-timeout\)/);
    assert.equal(run.outputs.sha256, sha256(merged));
  });

  test('connections: 1 takes the ranges one after another and still resumes', async () => {
    const big = Buffer.concat([merged, randomBytes(10 * 1024 * 1024)]);
    api.jobs.get(LORA)!.archives.merged = big;
    api.setFaults({ cutBodyAfter: 3 * 1024 * 1024 });
    const run = await act({ 'job-id': LORA, connections: '1' });
    succeeded(run);
    assert.equal(run.outputs.sha256, sha256(big));
    assert.match(run.stdout, /as 3 ranges over 1 connection\b/);
    assert.match(run.stdout, /resuming in/);
  });

  test('an invalid connections value names the input', async () => {
    const run = await act({ 'job-id': LORA, connections: '64' });
    failed(run, /`connections`/, /1 to 32/);
    assert.equal(api.requests.length, 0);
  });
});
