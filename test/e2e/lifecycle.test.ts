/**
 * End-to-end: wait, extract, cache and dry-run, with the built dist/index.js against its own fake
 * Together API, crafted hostile archives and a real tool cache folder shared between runs.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import * as zlib from 'node:zlib';
import { makeArchive, peftAdapterFiles, sha256, weights, withShardIndex } from '../support/archives.js';
import { type FakeJob, type FakeTogether, startFakeTogether } from '../support/fake-together.js';
import { actionRunner, assertFailed, assertSucceeded, listFiles } from '../support/run-action.js';
import { SAMPLE_JOB_ID, SAMPLE_MODEL, SAMPLE_OUTPUT_NAME, SAMPLE_SLUG } from '../support/sample-job.js';
import { hostileArchive, type RawEntry } from '../support/tar-writer.js';

const KEY = 'tgp_v1_lifecycle-secret-Hn4kP9';
const LORA = SAMPLE_JOB_ID;
const TRAINING = 'ft-7a7a7a7a-aaaa-bbbb-cccc-ddddeeeeffff';
const SLUG = SAMPLE_SLUG;

let api: FakeTogether;
let merged: Buffer;
let adapter: Buffer;
let step10: Buffer;
let gzipAdapter: Buffer;
let mergedFiles: Record<string, Buffer>;
const scratchDirs: string[] = [];

function jobs(): FakeJob[] {
  return [
    {
      id: LORA,
      status: 'completed',
      model: SAMPLE_MODEL,
      model_output_name: SAMPLE_OUTPUT_NAME,
      training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
      checkpoints: [
        { step: 10, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
        { step: 30, checkpoint_type: 'Final Merged', checkpoint: 'model' },
      ],
      archives: { merged, adapter, 'adapter@10': step10 },
    },
    {
      id: TRAINING,
      status: 'running',
      model_output_name: 'org/training-now',
      training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
      checkpoints: [{ step: 5, checkpoint_type: 'Intermediate', checkpoint: 'adapter' }],
      archives: { merged, 'adapter@5': adapter },
    },
  ];
}

before(async () => {
  mergedFiles = withShardIndex({
    'config.json': Buffer.from('{"model_type":"llama"}'),
    'model-00001-of-00002.safetensors': weights(200_000),
    'model-00002-of-00002.safetensors': weights(120_000),
    'tokenizer.json': Buffer.from('{"version":"1.0"}'),
  });
  merged = await makeArchive(mergedFiles, 'zstd', { topDir: 'merged' });
  adapter = await makeArchive(peftAdapterFiles(), 'zstd');
  step10 = await makeArchive(peftAdapterFiles({ seed: 10 }), 'zstd');
  gzipAdapter = await makeArchive(peftAdapterFiles({ seed: 3 }), 'gzip');
  api = await startFakeTogether({ apiKey: KEY, jobs: jobs() });
});

after(async () => {
  await api.close();
  removeRuns();
  for (const dir of scratchDirs) fs.rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  api.setFaults({});
  api.requests.length = 0;
  api.jobs.clear();
  for (const job of jobs()) api.jobs.set(job.id, job);
});

function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `together-lifecycle-${prefix}-`));
  scratchDirs.push(dir);
  return dir;
}

/** Every entry below `dir`, folders included, relative. */
function listAll(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort();
}

/** Runs the action against the fake and checks what every run must satisfy. */
const { act, removeRuns } = actionRunner(KEY, () => ({ inputs: { 'api-key': KEY, 'base-url': api.url } }));

const succeeded = assertSucceeded;
const failed = assertFailed;

const downloads = () => api.requests.filter((r) => r.endpoint === 'download');
const jobRequests = () => api.requests.filter((r) => r.endpoint === 'job');

/** A 200 the fake serves before its real answer: the job as it was while still training. */
const jobWhileRunning = (id: string) => ({
  status: 200,
  body: JSON.stringify({ id, status: 'running', training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 } }),
});
const checkpointsWhile = (steps: number[]) => ({
  status: 200,
  body: JSON.stringify({ data: steps.map((step) => ({ step, checkpoint_type: 'Intermediate', checkpoint: 'adapter' })) }),
});
const checkpointRequests = () => api.requests.filter((r) => r.endpoint === 'checkpoints');

describe('wait', () => {
  test('polls a running job until it completes, one line per status change, then downloads; the lookup reuses the last poll', async () => {
    // Two polls see it running, the third completed: the fake changes nothing on a timer of its own.
    api.jobs.get(TRAINING)!.status = 'completed';
    api.setFaults({ queue: { job: [jobWhileRunning(TRAINING), jobWhileRunning(TRAINING)] } });
    const run = await act({ 'job-id': TRAINING, wait: 'true' });
    succeeded(run);
    assert.match(run.stdout, /::group::Wait/);
    assert.match(run.stdout, /\[\d+s\] status: running/);
    assert.match(run.stdout, /\[[1-9]\d*s\] status: completed/);
    assert.equal((run.stdout.match(/status: running/g) ?? []).length, 1, 'one line per change, not per poll');
    assert.equal(jobRequests().length, 3, 'three polls, and no lookup after them');
    assert.equal(checkpointRequests().length, 1, 'the checkpoints, once, for the outputs');
    const [first, second, third] = jobRequests().map((r) => r.at);
    assert.ok(second - first >= 1900 && third - second >= 2900, `polls ${second - first} and ${third - second} ms apart: 2 s, then 3 s`);
    assert.equal(run.outputs.sha256, sha256(merged));
  });

  test('with a step: waits until that checkpoint is listed, then downloads it without asking again', async () => {
    const job = api.jobs.get(TRAINING)!;
    job.checkpoints!.push({ step: 10, checkpoint_type: 'Intermediate', checkpoint: 'adapter' });
    job.archives['adapter@10'] = step10;
    api.setFaults({ queue: { checkpoints: [checkpointsWhile([5])] } });
    const run = await act({ 'job-id': `${TRAINING}:10`, 'checkpoint-type': 'adapter', wait: 'true' });
    succeeded(run);
    assert.match(run.stdout, /checkpoints saved: 5\n/);
    assert.match(run.stdout, /the checkpoint at step 10 is listed/);
    assert.equal(run.outputs.step, '10');
    assert.equal(run.outputs.sha256, sha256(step10));
    assert.equal(run.outputs.steps, '[5,10]');
    assert.equal(api.jobs.get(TRAINING)!.status, 'running', 'the job itself never completed');
    assert.equal(jobRequests().length, 2, 'two polls, no lookup after them');
    assert.equal(checkpointRequests().length, 2, 'two polls, no listing after them');
  });

  test('step latest: waits until a checkpoint is listed, then fetches the highest', async () => {
    const job = api.jobs.get(TRAINING)!;
    job.checkpoints = [
      { step: 8, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
      { step: 4, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
    ];
    job.archives = { 'adapter@8': step10, 'adapter@4': adapter };
    api.setFaults({ queue: { checkpoints: [checkpointsWhile([])] } });
    const run = await act({ 'job-id': TRAINING, step: 'latest', 'checkpoint-type': 'adapter', wait: 'true' });
    succeeded(run);
    assert.match(run.stdout, /Waiting up to 2h 00m 00s for job .* to list a checkpoint \(step: latest\)/);
    assert.match(run.stdout, /a checkpoint \(step: latest\) is listed/);
    assert.equal(run.outputs.step, '8');
    assert.equal(run.outputs.sha256, sha256(step10));
    assert.equal(jobRequests().length, 2);
    assert.equal(checkpointRequests().length, 2);
  });

  for (const status of ['error', 'user_error', 'cancelled']) {
    test(`a job that ends ${status} fails with its last error event`, async () => {
      const job = api.jobs.get(TRAINING)!;
      job.status = status;
      job.events = [
        { type: 'job_start', level: 'info', message: 'Training started' },
        { type: 'job_error', level: 'error', message: 'Training data has 12 malformed lines' },
      ];
      const run = await act({ 'job-id': TRAINING, wait: 'true' });
      failed(run, new RegExp(`status \`${status}\``), /Together says: Training data has 12 malformed lines/);
      assert.equal(api.requests.filter((r) => r.endpoint === 'events').length, 1);
      assert.equal(downloads().length, 0);
    });
  }

  test('at the timeout it fails with the last status (decimal minutes)', async () => {
    api.jobs.get(TRAINING)!.status = 'queued';
    const started = Date.now();
    const run = await act({ 'job-id': TRAINING, wait: 'true', 'wait-timeout-minutes': '0.05' });
    failed(run, /still `queued` after waiting 3s/, /wait-timeout-minutes/);
    assert.ok(Date.now() - started < 10_000);
    assert.ok(jobRequests().length >= 2 && jobRequests().length <= 4, `${jobRequests().length} polls in 3 s`);
    assert.equal(downloads().length, 0);
  });

  test('a completed job needs no waiting', async () => {
    const run = await act({ 'job-id': LORA, wait: 'true' });
    succeeded(run);
    // One poll, and the lookup reuses it: there was no second poll, so there was no wait between
    // polls, however long the first one took on a loaded machine.
    assert.match(run.stdout, /\[\d+s\] status: completed\n\[\d+s\] the job is completed/);
    assert.equal(jobRequests().length, 1);
    assert.doesNotMatch(run.stdout, /status: (?!completed)/);
  });

  for (const bad of ['abc', '0', '-5', '1e2']) {
    test(`wait-timeout-minutes ${JSON.stringify(bad)} fails naming the input, before any request`, async () => {
      const run = await act({ 'job-id': TRAINING, wait: 'true', 'wait-timeout-minutes': bad });
      failed(run, /`wait-timeout-minutes`/, /positive number of minutes/);
      assert.equal(api.requests.length, 0);
    });
  }

  test('wait that is not a boolean fails naming it', async () => {
    const run = await act({ 'job-id': TRAINING, wait: 'yes' });
    failed(run, /`wait`/, /true.*false/);
    assert.equal(api.requests.length, 0);
  });
});

describe('extract', () => {
  test('unpacks beside the archive; model-dir is inside the one top-level folder; the summary lists the largest files', async () => {
    const run = await act({ 'job-id': LORA, extract: 'true', path: 'models/' });
    succeeded(run);
    const archive = path.join(run.workspace, 'models', `${SLUG}.tar.zst`);
    const dir = path.join(run.workspace, 'models', SLUG);
    assert.equal(run.outputs.path, archive);
    assert.equal(run.outputs['model-dir'], path.join(dir, 'merged'));
    for (const [name, data] of Object.entries(mergedFiles)) assert.deepEqual(fs.readFileSync(path.join(dir, 'merged', name)), data);
    assert.ok(fs.existsSync(archive), 'keep-archive defaults to true');
    assert.match(run.stdout, /::group::Extract/);
    assert.match(run.stdout, /Checked \d+ entries: no absolute paths/);
    // Largest first, with sizes, paths inside the folder.
    const first = run.summary.indexOf('merged/model-00001-of-00002.safetensors');
    const second = run.summary.indexOf('merged/model-00002-of-00002.safetensors');
    assert.ok(first > 0 && second > first, `largest files in order:\n${run.summary}`);
    assert.match(run.summary, /195\.3 KiB \(200000 bytes\)/);
    assert.ok(run.summary.includes('Model folder'));
    assert.equal(run.outputs['cache-hit'], undefined, 'cache-hit is only set with cache: true');
  });

  test('an archive with its files at the root: model-dir is the folder itself', async () => {
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', extract: 'true' });
    succeeded(run);
    const dir = path.join(run.workspace, `${SLUG}-adapter`);
    assert.equal(run.outputs['model-dir'], dir);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
  });

  test('extract-path, relative to the workspace; an older folder there is replaced', async () => {
    const run = await act(
      { 'job-id': LORA, 'checkpoint-type': 'adapter', extract: 'true', 'extract-path': 'adapters/latest' },
      {
        setup: (ws) => {
          fs.mkdirSync(path.join(ws, 'adapters', 'latest'), { recursive: true });
          fs.writeFileSync(path.join(ws, 'adapters', 'latest', 'stale-shard.safetensors'), 'old');
        },
      },
    );
    succeeded(run);
    const dir = path.join(run.workspace, 'adapters', 'latest');
    assert.equal(run.outputs['model-dir'], dir);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
  });

  test('keep-archive false removes the archive once unpacked; path still names where it was', async () => {
    const run = await act({ 'job-id': LORA, extract: 'true', 'keep-archive': 'false' });
    succeeded(run);
    assert.equal(run.outputs.path, path.join(run.workspace, `${SLUG}.tar.zst`));
    assert.ok(!fs.existsSync(run.outputs.path));
    assert.equal(run.outputs.sha256, sha256(merged));
    assert.deepEqual(
      listFiles(run.workspace).sort(),
      Object.keys(mergedFiles)
        .map((f) => `${SLUG}/merged/${f}`)
        .sort(),
    );
    assert.match(run.stdout, /Removed the archive/);
    assert.ok(run.summary.includes('keep-archive: false'));
  });

  test('a gzip archive is unpacked too', async () => {
    api.jobs.get(LORA)!.archives.adapter = gzipAdapter;
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', extract: 'true' });
    succeeded(run);
    assert.equal(run.outputs['model-dir'], path.join(run.workspace, `${SLUG}-adapter`));
    assert.ok(fs.existsSync(path.join(run.outputs['model-dir'], 'adapter_config.json')));
  });

  test('with bsdtar as tar (macOS, Windows): zstd streams into `tar -x -f -`, no temp tar is written', async () => {
    const bin = tempDir('bin');
    const log = path.join(bin, 'tar.log');
    fs.writeFileSync(path.join(bin, 'tar'), `#!/bin/sh\necho "$*" >> "${log}"\nexec /usr/bin/bsdtar "$@"\n`, { mode: 0o755 });
    const run = await act({ 'job-id': LORA, extract: 'true' }, { env: { PATH: `${bin}${path.delimiter}${process.env.PATH}` } });
    succeeded(run);
    const calls = fs.readFileSync(log, 'utf8').trim().split('\n');
    assert.equal(calls[0], '--version');
    assert.match(calls[1], /^-x -f - -C \S+$/, 'bsdtar reads the tar from its stdin, with no GNU options');
    assert.doesNotMatch(run.stdout, /cannot read zstd|tar\.partial/);
    for (const [name, data] of Object.entries(mergedFiles))
      assert.deepEqual(fs.readFileSync(path.join(run.outputs['model-dir'], name)), data);
  });

  test('without zstd on PATH: node:zlib unpacks where this Node.js has zstd, else a clear error naming Windows installers', async () => {
    const bin = tempDir('nozstd');
    const realTar = (process.env.PATH ?? '')
      .split(path.delimiter)
      .map((d) => path.join(d, 'tar'))
      .find((p) => fs.existsSync(p));
    fs.symlinkSync(realTar as string, path.join(bin, 'tar'));
    const run = await act({ 'job-id': LORA, extract: 'true', 'verify-contents': 'false' }, { env: { PATH: bin } });
    if (typeof (zlib as { createZstdDecompress?: unknown }).createZstdDecompress === 'function') {
      succeeded(run);
      assert.match(run.stdout, /The `zstd` program is not on PATH: decompressing with node:zlib/);
      for (const [name, data] of Object.entries(mergedFiles))
        assert.deepEqual(fs.readFileSync(path.join(run.outputs['model-dir'], name)), data);
    } else {
      failed(run, /Extracting the archive needs zstd/, /apt-get install -y zstd/, /winget install Meta\.Zstandard/, /extract: false/);
      assert.deepEqual(listAll(run.workspace), [`${SLUG}.tar.zst`]);
    }
  });

  test('a corrupt archive (zstd magic, then garbage) fails cleanly, nothing extracted', async () => {
    api.jobs.get(LORA)!.archives.merged = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(5000)]);
    const run = await act({ 'job-id': LORA, extract: 'true', 'verify-contents': 'false' });
    failed(run, /could not be read as a tar archive/, /Nothing was extracted/);
    assert.deepEqual(listAll(run.workspace), [`${SLUG}.tar.zst`]);
  });

  const hostile: Array<[string, RawEntry[], RegExp]> = [
    [
      'an absolute path',
      [
        { name: 'merged/', type: '5' },
        { name: '/tmp/together-e2e-pwned', data: Buffer.from('x') },
      ],
      /"\/tmp\/together-e2e-pwned" has an absolute path/,
    ],
    [
      'a .. entry',
      [
        { name: 'merged/config.json', data: Buffer.from('{}') },
        { name: '../escaped.txt', data: Buffer.from('x') },
      ],
      /"\.\.\/escaped\.txt" has a "\.\." component/,
    ],
    [
      'a symlink to /etc',
      [
        { name: 'merged/', type: '5' },
        { name: 'merged/etc', type: '2', linkName: '/etc' },
        { name: 'merged/etc/cron.d/x', data: Buffer.from('x') },
      ],
      /"merged\/etc" is a symbolic link to "\/etc", outside the folder/,
    ],
    [
      'a symlink to ../../x',
      [{ name: 'merged/up', type: '2', linkName: '../../x' }],
      /"merged\/up" is a symbolic link to "\.\.\/\.\.\/x", outside the folder/,
    ],
    ['a hard link to ../x', [{ name: 'merged/h', type: '1', linkName: '../x' }], /"merged\/h" is a hard link to "\.\.\/x"/],
    ['a device', [{ name: 'merged/dev', type: '3' }], /character device/],
  ];
  for (const [what, entries, reason] of hostile) {
    test(`an archive with ${what} is refused before anything is written`, async () => {
      api.jobs.get(LORA)!.archives.merged = await hostileArchive(entries);
      const run = await act({ 'job-id': LORA, extract: 'true', 'verify-contents': 'false' });
      failed(run, /The archive is not safe to unpack/, reason, /Nothing was extracted/);
      // Only the downloaded archive: no extraction folder, no partial folder, nothing beside the workspace.
      assert.deepEqual(listAll(run.workspace), [`${SLUG}.tar.zst`]);
      assert.deepEqual(fs.readdirSync(run.scratch).sort(), ['output', 'summary', 'temp', 'tool-cache', 'workspace']);
      assert.ok(!fs.existsSync('/tmp/together-e2e-pwned'));
    });
  }

  test('extract-path "." (the workspace) is refused before downloading', async () => {
    const run = await act({ 'job-id': LORA, extract: 'true', 'extract-path': '.' });
    failed(run, /`extract-path`/, /holds the workspace/);
    assert.equal(downloads().length, 1, 'only the probe');
  });

  test('extract-path without extract, and keep-archive false without extract, name the input', async () => {
    failed(await act({ 'job-id': LORA, 'extract-path': 'x' }), /`extract-path`/, /extract: true/);
    failed(await act({ 'job-id': LORA, 'keep-archive': 'false' }), /`keep-archive`/, /extract: true/);
    assert.equal(api.requests.length, 0);
  });
});

describe('cache', () => {
  test('a miss downloads and stores; the next run downloads nothing, sets cache-hit and checks the sha256', async () => {
    const toolCache = tempDir('tool-cache');
    const env = { RUNNER_TOOL_CACHE: toolCache };
    const first = await act({ 'job-id': LORA, cache: 'true' }, { env });
    succeeded(first);
    assert.equal(first.outputs['cache-hit'], 'false');
    assert.ok(downloads().length >= 2, 'probe and download');
    const entry = path.join(toolCache, 'together-model', `0.0.0-${LORA}.final.merged`);
    assert.deepEqual(listAll(path.join(toolCache, 'together-model')), [
      `0.0.0-${LORA}.final.merged`,
      `0.0.0-${LORA}.final.merged/any`,
      `0.0.0-${LORA}.final.merged/any.complete`,
      `0.0.0-${LORA}.final.merged/any/archive.tar.zst`,
      `0.0.0-${LORA}.final.merged/any/together-download.json`,
    ]);
    const meta = JSON.parse(fs.readFileSync(path.join(entry, 'any', 'together-download.json'), 'utf8'));
    assert.equal(meta.sha256, sha256(merged));
    assert.equal(
      fs.statSync(path.join(entry, 'any', 'archive.tar.zst')).ino,
      fs.statSync(first.outputs.path).ino,
      'a hard link, not a copy',
    );

    api.requests.length = 0;
    const second = await act({ 'job-id': LORA, cache: 'true', path: 'elsewhere/' }, { env });
    succeeded(second);
    assert.equal(second.outputs['cache-hit'], 'true');
    assert.deepEqual(downloads(), [], 'zero download or probe requests');
    assert.deepEqual(fs.readFileSync(second.outputs.path), merged);
    assert.equal(second.outputs.path, path.join(second.workspace, 'elsewhere', `${SLUG}.tar.zst`));
    assert.equal(second.outputs.sha256, sha256(merged));
    assert.equal(second.outputs.size, String(merged.length));
    assert.match(second.stdout, /Cache hit: .*sha256 [0-9a-f]{64} checked/);
    assert.match(second.stdout, /nothing was downloaded/);
    assert.ok(second.summary.includes('runner tool cache (nothing downloaded)'));
  });

  test('the key includes step and checkpoint type; a hit also serves extract with keep-archive false', async () => {
    const toolCache = tempDir('tool-cache');
    const env = { RUNNER_TOOL_CACHE: toolCache };
    succeeded(await act({ 'job-id': LORA, step: '10', 'checkpoint-type': 'adapter', cache: 'true' }, { env }));
    api.requests.length = 0;
    const other = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', cache: 'true' }, { env });
    assert.equal(other.outputs['cache-hit'], 'false', 'the final adapter is another entry');
    assert.equal(other.outputs.sha256, sha256(adapter));
    api.requests.length = 0;
    const hit = await act(
      { 'job-id': `${LORA}:10`, 'checkpoint-type': 'adapter', cache: 'true', extract: 'true', 'keep-archive': 'false' },
      { env },
    );
    succeeded(hit);
    assert.equal(hit.outputs['cache-hit'], 'true');
    assert.deepEqual(downloads(), []);
    assert.ok(!fs.existsSync(hit.outputs.path));
    assert.deepEqual(fs.readdirSync(hit.outputs['model-dir']).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    const cached = path.join(toolCache, 'together-model', `0.0.0-${LORA}.step-10.adapter`, 'any', 'archive.tar.zst');
    assert.deepEqual(fs.readFileSync(cached), step10, 'removing the local archive leaves the cached one');
  });

  test('a cached archive that changed is dropped with a warning and downloaded again', async () => {
    const toolCache = tempDir('tool-cache');
    const env = { RUNNER_TOOL_CACHE: toolCache };
    succeeded(await act({ 'job-id': LORA, cache: 'true' }, { env }));
    const cached = path.join(toolCache, 'together-model', `0.0.0-${LORA}.final.merged`, 'any', 'archive.tar.zst');
    const tampered = Buffer.from(merged);
    tampered[tampered.length - 1] ^= 0xff;
    fs.rmSync(cached);
    fs.writeFileSync(cached, tampered);
    api.requests.length = 0;
    const run = await act({ 'job-id': LORA, cache: 'true' }, { env });
    succeeded(run);
    assert.equal(run.outputs['cache-hit'], 'false');
    assert.match(run.stdout, /::warning::The tool-cache entry .* is unusable: its archive's sha256 is/);
    assert.ok(downloads().length >= 2);
    assert.equal(run.outputs.sha256, sha256(merged));
    assert.deepEqual(fs.readFileSync(cached), merged, 'stored again, correct this time');
  });

  test('without RUNNER_TOOL_CACHE: a warning, a normal download, cache-hit false', async () => {
    const run = await act({ 'job-id': LORA, cache: 'true' }, { env: { RUNNER_TOOL_CACHE: undefined } });
    succeeded(run);
    assert.equal(run.outputs['cache-hit'], 'false');
    assert.match(run.stdout, /::warning::`cache: true` needs the runner tool cache/);
  });
});

describe('dry-run', () => {
  test('resolves job, type, step, size and file name with the 2-byte probe only; writes nothing', async () => {
    const run = await act({ 'job-id': `${LORA}:10`, 'checkpoint-type': 'adapter', path: 'models/', 'dry-run': 'true' });
    succeeded(run);
    assert.deepEqual(run.outputs, {
      path: path.join(run.workspace, 'models', `${SLUG}-step-10-adapter.tar.zst`),
      size: String(step10.length),
      'checkpoint-type': 'adapter',
      step: '10',
      checkpoints: JSON.stringify([
        { step: 10, checkpoint_type: 'Intermediate', created_at: '2024-07-26T19:41:17.456Z' },
        { step: 30, checkpoint_type: 'Final Merged', created_at: '2024-07-26T19:41:17.456Z' },
      ]),
      steps: '[10,30]',
    });
    const [probe, ...rest] = downloads();
    assert.equal(probe.range, 'bytes=0-1');
    assert.ok(probe.bodyBytes <= 2);
    assert.deepEqual(rest, [], 'no download beyond the probe');
    assert.deepEqual(listAll(run.workspace), []);
    assert.match(run.stdout, /::group::Plan/);
    assert.match(run.stdout, /Destination: .*-step-10-adapter\.tar\.zst/);
    assert.match(run.stdout, /dry-run: the plan above is complete; nothing was downloaded or written/);
    assert.match(run.summary, /dry-run/);
    assert.ok(!run.summary.includes('SHA-256'));
  });

  test('with extract: prints where it would unpack, creates nothing, sets no model-dir', async () => {
    const run = await act({ 'job-id': LORA, extract: 'true', 'extract-path': 'model', 'dry-run': 'true' });
    succeeded(run);
    assert.match(run.stdout, /Extract into: .*\/workspace\/model/);
    assert.equal(run.outputs['model-dir'], undefined);
    assert.deepEqual(listAll(run.workspace), []);
    assert.ok(run.summary.includes('Extract into'));
  });

  test('with a cache hit: no request to the download endpoint at all, cache-hit true', async () => {
    const toolCache = tempDir('tool-cache');
    succeeded(await act({ 'job-id': LORA, cache: 'true' }, { env: { RUNNER_TOOL_CACHE: toolCache } }));
    api.requests.length = 0;
    const run = await act({ 'job-id': LORA, cache: 'true', 'dry-run': 'true' }, { env: { RUNNER_TOOL_CACHE: toolCache } });
    succeeded(run);
    assert.deepEqual(downloads(), []);
    assert.equal(run.outputs['cache-hit'], 'true');
    assert.equal(run.outputs.size, String(merged.length));
    assert.deepEqual(listAll(run.workspace), []);
  });

  test('a job that is not finished fails the dry run as it would fail the real one', async () => {
    const run = await act({ 'job-id': TRAINING, 'dry-run': 'true' });
    failed(run, /not finished yet/);
  });
});
