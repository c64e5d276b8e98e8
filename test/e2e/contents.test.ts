/**
 * End-to-end: the content check (`verify-contents`) through dist/index.js. Archives whose contents
 * disagree with what was asked for (the fake, like Together's API, sends the one archive it has for
 * a step whatever `checkpoint` says), weights cut short or with lying headers inside well-formed
 * archives of several megabytes, a shard index naming a missing shard; the outputs and the summary.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import * as zlib from 'node:zlib';
import { makeArchive, modelFiles, peftAdapterFiles, sha256, weights } from '../support/archives.js';
import { type FakeJob, type FakeTogether, startFakeTogether } from '../support/fake-together.js';
import { actionRunner, assertFailed, assertSucceeded, listFiles } from '../support/run-action.js';
import { loraJob, SAMPLE_JOB_ID } from '../support/sample-job.js';

const KEY = 'tgp_v1_contents-secret-Rt5yU2';
const MiB = 1024 * 1024;
const SHARD_2 = 'model-00002-of-00003.safetensors';

let api: FakeTogether;
let adapter: Buffer;
let mergedFiles: Record<string, Buffer>;
let merged: Buffer;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'together-contents-e2e-'));

function jobs(): FakeJob[] {
  return [
    loraJob({
      checkpoints: [
        { step: 60, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
        { step: 120, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
      ],
      // At a step the fake, like Together, sends what it has whatever `checkpoint` asks for.
      archives: { merged, adapter, 'merged@120': merged, 'adapter@60': adapter },
    }),
  ];
}

/** The merged model with `file` replaced (or removed, when `data` is undefined). */
function mergedWith(file: string, data: Buffer | undefined): Promise<Buffer> {
  const files = { ...mergedFiles };
  if (data === undefined) delete files[file];
  else files[file] = data;
  return makeArchive(files, 'zstd', { topDir: 'merged' });
}

/** A safetensors file with its JSON header edited (the edit must keep its length, padded with spaces). */
function withHeader(file: Buffer, edit: (header: Record<string, any>) => void): Buffer {
  const n = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8'));
  edit(header);
  const json = Buffer.from(JSON.stringify(header));
  assert.ok(json.length <= n, 'the edited header must fit');
  const out = Buffer.from(file);
  out.fill(0x20, 8, 8 + n);
  json.copy(out, 8);
  return out;
}

before(async () => {
  adapter = await makeArchive(
    peftAdapterFiles({ r: 16, baseModel: 'meta-llama/Meta-Llama-3.1-8B-Instruct', hidden: 256, layers: 4 }),
    'zstd',
  );
  // Three shards of about 3 MiB, each of 1 MiB tensors: headers and data cross every read boundary.
  mergedFiles = modelFiles({ shards: 3, weightBytes: 9 * MiB, tensorBytes: MiB });
  merged = await makeArchive(mergedFiles, 'zstd', { topDir: 'merged' });
  api = await startFakeTogether({ apiKey: KEY, jobs: jobs() });
});

after(async () => {
  await api.close();
  removeRuns();
  fs.rmSync(scratch, { recursive: true, force: true });
});

beforeEach(() => {
  api.setFaults({});
  api.requests.length = 0;
  api.jobs.clear();
  for (const job of jobs()) api.jobs.set(job.id, job);
});

const { act, removeRuns } = actionRunner(KEY, () => ({ inputs: { 'job-id': SAMPLE_JOB_ID, 'api-key': KEY, 'base-url': api.url } }));
const downloads = () => api.requests.filter((r) => r.endpoint === 'download');

/** A run that must leave an older file at the target untouched and nothing else. */
async function refusedKeepingOld(inputs: Record<string, string>, ...patterns: RegExp[]): Promise<string> {
  const run = await act(
    { path: 'models/model.tar.zst', connections: '4', ...inputs },
    {
      setup: (ws) => {
        fs.mkdirSync(path.join(ws, 'models'));
        fs.writeFileSync(path.join(ws, 'models', 'model.tar.zst'), 'the older model');
      },
    },
  );
  const error = assertFailed(run, ...patterns, /Nothing was saved/);
  assert.equal(fs.readFileSync(path.join(run.workspace, 'models', 'model.tar.zst'), 'utf8'), 'the older model');
  assert.deepEqual(listFiles(run.workspace), ['models/model.tar.zst'], 'no temp file is left');
  assert.ok(downloads().length >= 2, 'the archive was downloaded, then refused');
  return error;
}

describe('what was asked for against what came', () => {
  test('an adapter asked for at a step arrives as the merged model: the step fails and says why', async () => {
    await refusedKeepingOld(
      { step: '120', 'checkpoint-type': 'adapter' },
      /Together sent a merged model for step 120, not an adapter/,
      /the folder "merged\/" holds "config\.json", .*"model-00001-of-00003\.safetensors"/,
      /Together's API may ignore `checkpoint` when `checkpoint_step` is given/,
      /`checkpoint-type: merged` at step 120/,
      /verify-contents: false/,
    );
    assert.equal(downloads().at(-1)?.query.checkpoint, 'adapter');
  });

  test('a merged model asked for at a step arrives as the adapter', async () => {
    await refusedKeepingOld(
      { step: '60' },
      /Together sent an adapter for step 60, not a merged model/,
      /the archive root holds "adapter_config\.json", "adapter_model\.safetensors"/,
      /`checkpoint-type: adapter` at step 60/,
    );
  });

  test('what was asked for: an adapter with its base model and rank as outputs and in the summary', async () => {
    const run = await act({ step: '60', 'checkpoint-type': 'adapter' });
    assertSucceeded(run);
    assert.equal(run.outputs['base-model'], 'meta-llama/Meta-Llama-3.1-8B-Instruct');
    assert.equal(run.outputs['lora-rank'], '16');
    assert.equal(run.outputs.sha256, sha256(adapter));
    assert.match(
      run.stdout,
      /Contents: an adapter of "meta-llama\/Meta-Llama-3\.1-8B-Instruct", LoRA rank 16, at the archive root; 1 safetensors file whole \(32 tensors\); checked in/,
    );
    assert.match(
      run.summary,
      /<td>Contents<\/td><td>LoRA adapter \(rank 16, 1 weight file\); 1 safetensors file whole \(32 tensors\)<\/td>/,
    );
    assert.match(run.summary, /<td>Base model<\/td><td><code>meta-llama\/Meta-Llama-3\.1-8B-Instruct<\/code><\/td>/);
  });

  test('a merged model: its kind and architecture in the summary, no adapter outputs', async () => {
    const run = await act({ connections: '3' });
    assertSucceeded(run);
    assert.equal(run.outputs['base-model'], undefined);
    assert.equal(run.outputs['lora-rank'], undefined);
    assert.match(
      run.summary,
      /<td>Contents<\/td><td>merged model \(<code>LlamaForCausalLM<\/code>, 3 weight files\); 3 safetensors files whole \(9 tensors\)<\/td>/,
    );
    assert.doesNotMatch(run.summary, /Base model/);
  });

  test('verify-contents: false takes the archive as it is and says so in the summary', async () => {
    const run = await act({ step: '120', 'checkpoint-type': 'adapter', 'verify-contents': 'false' });
    assertSucceeded(run);
    assert.equal(run.outputs.sha256, sha256(merged));
    assert.equal(run.outputs['checkpoint-type'], 'adapter');
    assert.doesNotMatch(run.stdout, /Contents:/);
    assert.match(run.summary, /<td>Contents<\/td><td>not checked \(<code>verify-contents: false<\/code>\)<\/td>/);
  });

  test('verify-contents that is not a boolean fails naming it, before any request', async () => {
    const run = await act({ 'verify-contents': 'maybe' });
    assertFailed(run, /`verify-contents`/, /true.*false/);
    assert.equal(api.requests.length, 0);
  });

  test('a dry run checks nothing and downloads nothing', async () => {
    const run = await act({ step: '120', 'checkpoint-type': 'adapter', 'dry-run': 'true' });
    assertSucceeded(run);
    assert.equal(downloads().length, 1, 'the probe only');
    assert.doesNotMatch(run.stdout, /Contents:/);
  });
});

describe('whole weights', () => {
  test('a shard cut short inside a well-formed archive names the file and the tensor', async () => {
    const shard = mergedFiles[SHARD_2];
    api.jobs.get(SAMPLE_JOB_ID)!.archives.merged = await mergedWith(SHARD_2, shard.subarray(0, shard.length - 300_000));
    await refusedKeepingOld(
      {},
      /damaged weights file, "merged\/model-00002-of-00003\.safetensors" \(\d+ bytes\)/,
      /tensor "model\.layers\.1\.2\.weight" has data_offsets \[\d+, \d+\], past the end of the data section/,
      /Loading the model would fail/,
    );
  });

  test('a header whose shape and dtype disagree with the offsets', async () => {
    const lying = withHeader(mergedFiles[SHARD_2], (h) => {
      h['model.layers.1.1.weight'].shape = [1024, 511];
    });
    api.jobs.get(SAMPLE_JOB_ID)!.archives.merged = await mergedWith(SHARD_2, lying);
    await refusedKeepingOld(
      {},
      /tensor "model\.layers\.1\.1\.weight" is BF16 of shape \[1024, 511\], which takes 1046528 bytes, but its data_offsets \[\d+, \d+\] give 1048576 bytes/,
    );
  });

  test('a header whose offsets leave a gap', async () => {
    const lying = withHeader(mergedFiles[SHARD_2], (h) => {
      const t = h['model.layers.1.1.weight'];
      t.data_offsets = [t.data_offsets[0] + 2, t.data_offsets[1] + 2];
    });
    api.jobs.get(SAMPLE_JOB_ID)!.archives.merged = await mergedWith(SHARD_2, lying);
    await refusedKeepingOld(
      {},
      /tensor "model\.layers\.1\.1\.weight" starts at byte \d+ of the data section, but the tensor before it, "model\.layers\.1\.0\.weight", ends at \d+/,
    );
  });

  test('a data section longer than its tensors', async () => {
    api.jobs.get(SAMPLE_JOB_ID)!.archives.merged = await mergedWith(SHARD_2, Buffer.concat([mergedFiles[SHARD_2], Buffer.alloc(1000)]));
    await refusedKeepingOld(
      {},
      /its tensors end at byte \d+ of the data section, but the file holds \d+ bytes of data: 1000 bytes after the last tensor/,
    );
  });

  test('a shard index naming a shard the archive does not hold', async () => {
    api.jobs.get(SAMPLE_JOB_ID)!.archives.merged = await mergedWith(SHARD_2, undefined);
    await refusedKeepingOld(
      {},
      /"merged\/model\.safetensors\.index\.json" names 3 weight files, and 1 of them is not in the archive: "model-00002-of-00003\.safetensors"/,
    );
  });

  test('the same archives pass with verify-contents: false', async () => {
    api.jobs.get(SAMPLE_JOB_ID)!.archives.merged = await mergedWith(SHARD_2, undefined);
    assertSucceeded(await act({ 'verify-contents': 'false' }));
  });
});

describe('values from the archive', () => {
  test('a base model holding a newline and a workflow command is not passed on; the warning shows it escaped', async () => {
    const files = peftAdapterFiles({ baseModel: 'org/x\n::warning::forged' });
    api.jobs.get(SAMPLE_JOB_ID)!.archives.adapter = await makeArchive(files, 'zstd');
    const run = await act({ 'checkpoint-type': 'adapter' });
    assertSucceeded(run);
    assert.equal(run.outputs['base-model'], undefined);
    assert.equal(run.outputs['lora-rank'], '8');
    assert.ok(!run.stdout.split('\n').some((l) => l.startsWith('::warning::forged')));
    assert.match(
      run.stdout,
      /::warning::From the archive: base_model_name_or_path "org\/x\\n::warning::forged" was not passed on: it holds control characters/,
    );
    assert.doesNotMatch(run.summary, /Base model/);
  });

  test('HTML in a base model is an output as it is, and escaped in the summary', async () => {
    api.jobs.get(SAMPLE_JOB_ID)!.archives.adapter = await makeArchive(
      peftAdapterFiles({ baseModel: 'org/<img src=x onerror=alert(1)>' }),
      'zstd',
    );
    const run = await act({ 'checkpoint-type': 'adapter' });
    assertSucceeded(run);
    assert.equal(run.outputs['base-model'], 'org/<img src=x onerror=alert(1)>');
    assert.ok(run.summary.includes('<code>org/&#60;img src=x onerror=alert&#40;1&#41;&#62;</code>'), run.summary);
    assert.ok(!run.summary.includes('<img'));
  });
});

describe('the tool cache', () => {
  test('a hit is checked in the same read as its sha256; a cached archive of the wrong kind fails', async () => {
    const env = { RUNNER_TOOL_CACHE: fs.mkdtempSync(path.join(scratch, 'cache-')) };
    // Stored without the check: the merged model Together sent for an adapter at step 120.
    assertSucceeded(await act({ step: '120', 'checkpoint-type': 'adapter', cache: 'true', 'verify-contents': 'false' }, { env }));
    api.requests.length = 0;
    const run = await act({ step: '120', 'checkpoint-type': 'adapter', cache: 'true' }, { env });
    assertFailed(
      run,
      /Together sent a merged model for step 120, not an adapter/,
      /came from the runner's tool cache, stored there without the check; nothing was written/,
    );
    assert.deepEqual(downloads(), []);
    assert.deepEqual(listFiles(run.workspace), []);

    // A good entry: the check's line comes within the cache lookup, before the hit is reported.
    assertSucceeded(await act({ step: '60', 'checkpoint-type': 'adapter', cache: 'true' }, { env }));
    const hit = await act({ step: '60', 'checkpoint-type': 'adapter', cache: 'true' }, { env });
    assertSucceeded(hit);
    assert.equal(hit.outputs['cache-hit'], 'true');
    assert.equal(hit.outputs['lora-rank'], '16');
    const cacheGroup = hit.stdout.slice(
      hit.stdout.indexOf('::group::Cache'),
      hit.stdout.indexOf('::endgroup::', hit.stdout.indexOf('::group::Cache')),
    );
    assert.match(cacheGroup, /Contents: an adapter .*\n.*Cache hit: .*sha256 [0-9a-f]{64} checked/);
  });
});

describe('without zstd', () => {
  test('on a Node.js without zstd in node:zlib and no zstd program: a clear error naming verify-contents; else node:zlib checks', async () => {
    const bin = fs.mkdtempSync(path.join(scratch, 'bin-'));
    const run = await act({ 'checkpoint-type': 'adapter' }, { env: { PATH: bin } });
    if (typeof (zlib as { createZstdDecompress?: unknown }).createZstdDecompress === 'function') {
      assertSucceeded(run);
      assert.equal(run.outputs['lora-rank'], '16');
    } else {
      assertFailed(run, /Checking the archive's contents needs zstd/, /winget install Meta\.Zstandard/, /set `verify-contents: false`/);
      assert.deepEqual(listFiles(run.workspace), []);
    }
  });
});

test('the shards of the test model are real: several tensors each, data crossing 1 MiB boundaries', () => {
  const shard = mergedFiles[SHARD_2];
  assert.ok(shard.length > 2 * MiB);
  assert.equal(Object.keys(JSON.parse(shard.subarray(8, 8 + Number(shard.readBigUInt64LE(0))).toString())).length - 1, 3);
  assert.equal(weights(100_000).length, 100_000);
});
