/**
 * End-to-end: `upload-artifact` with the built dist/index.js, against the fake Together API, the fake
 * GitHub Actions results service (Twirp) and a real Azurite blob store that receives the upload.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { parse } from 'yaml';
import { makeArchive, peftAdapterFiles, sha256, weights } from '../support/archives.js';
import { type Azurite, startAzurite } from '../support/azurite.js';
import { type ArtifactRecord, type FakeResults, startFakeResults } from '../support/fake-results.js';
import { type FakeJob, type FakeTogether, startFakeTogether } from '../support/fake-together.js';
import { type ActionRun, actionRunner, errorsOf, listFiles, ROOT } from '../support/run-action.js';
import { loraJob, SAMPLE_JOB_ID, SAMPLE_SLUG } from '../support/sample-job.js';

const KEY = 'tgp_v1_artifact-e2e-secret-Pw7kQ2';
const LORA = SAMPLE_JOB_ID;
const SLUG = SAMPLE_SLUG;
const MERGED_NAME = `${SLUG}.tar.zst`;
const ADAPTER_NAME = `${SLUG}-adapter.tar.zst`;
const DAY_MS = 24 * 60 * 60 * 1000;

let api: FakeTogether;
let azurite: Azurite;
let results: FakeResults;
/** Over 8 MiB, so the blob upload takes more than one block. */
let merged: Buffer;
let adapter: Buffer;

function jobs(): FakeJob[] {
  return [
    loraJob({
      checkpoints: [
        { step: 30, checkpoint_type: 'Final Adapter', checkpoint: 'adapter' },
        { step: 30, checkpoint_type: 'Final Merged', checkpoint: 'model' },
      ],
      archives: { adapter, merged },
    }),
  ];
}

before(async () => {
  adapter = await makeArchive(peftAdapterFiles(), 'zstd');
  const small = await makeArchive({ 'config.json': Buffer.from('{"model_type":"llama"}'), 'model.safetensors': weights(200_000) }, 'zstd', {
    topDir: 'merged',
  });
  merged = Buffer.concat([small, randomBytes(9 * 1024 * 1024)]);
  [api, azurite] = await Promise.all([startFakeTogether({ apiKey: KEY, jobs: jobs() }), startAzurite()]);
  results = await startFakeResults(azurite);
});

after(async () => {
  await Promise.all([api?.close(), results?.close()]);
  await azurite?.stop();
  removeRuns();
});

beforeEach(() => {
  api.setFaults({});
  api.requests.length = 0;
  api.jobs.clear();
  for (const job of jobs()) api.jobs.set(job.id, job);
  // One results service for the whole file; each test starts with no artifact in "the run".
  results.setFaults({});
  results.requests.length = 0;
  results.artifacts.length = 0;
});

/** The environment a runner gives a node action: a runtime token and the results service. */
function runnerEnv(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return { ACTIONS_RUNTIME_TOKEN: results.token, ACTIONS_RESULTS_URL: results.url, ...extra };
}

/** Every directory below `dir` (relative), hidden ones included. */
/**
 * Runs the action with upload-artifact (unless the inputs say otherwise) against the fakes, and
 * checks what every run must satisfy: no API key or runtime token in the log, no temp files, no
 * staging directory, no stack trace.
 */
const { act, removeRuns } = actionRunner(
  KEY,
  () => ({ inputs: { 'api-key': KEY, 'base-url': api.url, 'upload-artifact': 'true' }, env: runnerEnv() }),
  (run) => assertNoTokenLeak(run, results.token),
);

/** The runtime token may only appear on `::add-mask::` lines. */
function assertNoTokenLeak(run: ActionRun, token: string): void {
  // The signature alone is not secret enough to matter; the payload carries the run's scopes.
  const payload = token.split('.')[1];
  for (const needle of [token, payload]) {
    const lines = run.stdout.split('\n').filter((l) => !l.startsWith('::add-mask::'));
    assert.ok(!lines.some((l) => l.includes(needle)), 'the runtime token leaked into stdout');
    assert.ok(!run.stderr.includes(needle), 'the runtime token leaked into stderr');
    assert.ok(!JSON.stringify(run.outputs).includes(needle), 'the runtime token leaked into the outputs');
    assert.ok(!run.summary.includes(needle), 'the runtime token leaked into the summary');
  }
}

function succeeded(run: ActionRun): void {
  assert.equal(run.code, 0, `the action failed:\n${run.stdout}\n${run.stderr}`);
}

function oneError(run: ActionRun, patterns: RegExp[]): string {
  assert.equal(run.code, 1, `expected a failure:\n${run.stdout}`);
  const errors = errorsOf(run);
  assert.equal(errors.split('\n').length, 1, `exactly one error line, got:\n${errors}`);
  for (const p of patterns) assert.match(errors, p);
  return errors;
}

/** A failure before anything was downloaded: no outputs, no file. */
function failed(run: ActionRun, ...patterns: RegExp[]): string {
  const errors = oneError(run, patterns);
  assert.deepEqual(run.outputs, {}, 'a run that failed before the download sets no outputs');
  assert.deepEqual(listFiles(run.workspace), [], 'nothing is written before the download');
  return errors;
}

/** A failed upload after a good download: the file stays at `path`, its outputs are set, no artifact outputs. */
function failedAfterDownload(run: ActionRun, archive: Buffer, ...patterns: RegExp[]): string {
  const errors = oneError(run, patterns);
  const file = path.join(run.workspace, MERGED_NAME);
  assert.equal(run.outputs.path, file);
  assert.equal(run.outputs.size, String(archive.length));
  assert.equal(run.outputs.sha256, sha256(archive));
  assert.deepEqual(fs.readFileSync(file), archive, 'the downloaded file is kept at its path');
  assert.deepEqual(listFiles(run.workspace), [MERGED_NAME]);
  for (const name of ['artifact-id', 'artifact-url', 'artifact-digest'])
    assert.equal(run.outputs[name], undefined, `${name} must not be set`);
  assertDownloadedOnce(archive);
  return errors;
}

function downloads() {
  return api.requests.filter((r) => r.endpoint === 'download');
}

/** Requests for the archive's body, as opposed to the 2-byte probe. */
function wholeDownloads() {
  return downloads().filter((r) => r.range !== 'bytes=0-1');
}

/** The archive's bytes crossed the wire once (in one stream or in ranges), never twice. */
function assertDownloadedOnce(archive: Buffer): void {
  const bytes = wholeDownloads().reduce((sum, r) => sum + r.bodyBytes, 0);
  assert.equal(bytes, archive.length, 'the archive was downloaded exactly once');
}

/** Nothing but the 2-byte probe reached the download endpoint. */
function assertNotDownloaded(): void {
  assert.deepEqual(wholeDownloads(), [], 'the archive must not be downloaded');
  for (const probe of downloads()) assert.ok(probe.bodyBytes <= 2, `the probe read ${probe.bodyBytes} bytes`);
}

function createRequests(): Array<Record<string, unknown>> {
  return results.requests.filter((r) => r.method === 'CreateArtifact').map((r) => r.body as Record<string, unknown>);
}

function only(artifacts: ArtifactRecord[]): ArtifactRecord {
  assert.equal(artifacts.length, 1, `one artifact, got ${artifacts.map((a) => a.name).join(', ')}`);
  return artifacts[0];
}

/** expires_at is `days` days from when the run happened (give or take a DST hour and the run time). */
function assertExpiresIn(expiresAt: unknown, days: number, startedAt: number): void {
  assert.equal(typeof expiresAt, 'string', 'CreateArtifact carries expires_at');
  const at = Date.parse(expiresAt as string);
  const slack = 60 * 60 * 1000 + 60_000;
  assert.ok(
    at >= startedAt + days * DAY_MS - slack && at <= Date.now() + days * DAY_MS + slack,
    `expires_at ${expiresAt as string} is not ${days} days ahead`,
  );
}

describe('upload-artifact', () => {
  test('uploads the file under its own name: outputs, digest, blob, summary, local file kept', async () => {
    const run = await act({ 'job-id': LORA });
    succeeded(run);
    const file = path.join(run.workspace, MERGED_NAME);

    // The local file is where `path` says, unchanged, and alone.
    assert.equal(run.outputs.path, file);
    assert.equal(run.outputs.size, String(merged.length));
    assert.equal(run.outputs.sha256, sha256(merged));
    assert.deepEqual(fs.readFileSync(file), merged);
    assert.deepEqual(listFiles(run.workspace), [MERGED_NAME]);

    // What the service recorded: one finalized artifact, named after the file, the real bytes in Azurite.
    const artifact = only(results.artifacts);
    assert.equal(artifact.name, MERGED_NAME);
    assert.ok(artifact.finalized);
    assert.equal(artifact.size, merged.length);
    assert.equal(artifact.hash, `sha256:${sha256(merged)}`);
    assert.equal(sha256(await azurite.readBlob(artifact.container, artifact.blob)), sha256(merged));
    assert.ok(
      results.requests.every((r) => r.authorized),
      'every results request carried the runtime token',
    );
    // One un-zipped file (version 7, no .zip), no expiry asked for.
    const [create] = createRequests();
    assert.equal(create.version, 7);
    assert.equal(create.expires_at, undefined);

    // Outputs.
    assert.equal(run.outputs['artifact-id'], String(artifact.id));
    assert.equal(run.outputs['artifact-url'], `https://github.com/octo-org/models/actions/runs/4242/artifacts/${artifact.id}`);
    assert.equal(run.outputs['artifact-digest'], sha256(merged));
    assert.equal(run.outputs['artifact-digest'], run.outputs.sha256);

    // The summary links to the artifact.
    assert.ok(run.summary.includes(`href="${run.outputs['artifact-url']}"`), `the summary lacks the artifact link:\n${run.summary}`);
    assert.ok(run.summary.includes(MERGED_NAME));
    assert.match(run.stdout, /::group::Artifact/);
    assertDownloadedOnce(merged);
  });

  test('artifact-name names the artifact; the file keeps its own name', async () => {
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', 'artifact-name': 'my-model-v1' });
    succeeded(run);
    const file = path.join(run.workspace, ADAPTER_NAME);
    assert.equal(run.outputs.path, file);
    assert.deepEqual(fs.readFileSync(file), adapter);
    assert.deepEqual(listFiles(run.workspace), [ADAPTER_NAME], 'only the file, under its own name');

    const artifact = only(results.artifacts);
    assert.equal(artifact.name, 'my-model-v1');
    assert.equal(createRequests()[0].name, 'my-model-v1');
    assert.equal(sha256(await azurite.readBlob(artifact.container, artifact.blob)), sha256(adapter));
    assert.equal(run.outputs['artifact-id'], String(artifact.id));
    assert.equal(run.outputs['artifact-digest'], sha256(adapter));
    assert.ok(run.summary.includes('my-model-v1'));
  });

  test('an artifact-name with surrounding spaces is trimmed', async () => {
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', 'artifact-name': '  spaced name  ' });
    succeeded(run);
    assert.equal(only(results.artifacts).name, 'spaced name');
  });

  test('a GHE.com server is supported and gives the artifact URL on that host', async () => {
    const run = await act(
      { 'job-id': LORA, 'checkpoint-type': 'adapter', 'artifact-name': 'on-ghe-com' },
      { env: runnerEnv({ GITHUB_SERVER_URL: 'https://octo.ghe.com' }) },
    );
    succeeded(run);
    const artifact = only(results.artifacts);
    assert.equal(run.outputs['artifact-url'], `https://octo.ghe.com/octo-org/models/actions/runs/4242/artifacts/${artifact.id}`);
  });
});

describe('every feature at once', () => {
  test('extract, cache and upload-artifact together set every output action.yml declares', async () => {
    const declared = Object.keys((parse(fs.readFileSync(path.join(ROOT, 'action.yml'), 'utf8')) as { outputs: object }).outputs);
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', extract: 'true', cache: 'true' });
    assert.equal(run.code, 0, run.stdout);
    assert.deepEqual(Object.keys(run.outputs).sort(), [...declared].sort());
    assert.equal(run.outputs['cache-hit'], 'false');
    assert.ok(fs.existsSync(path.join(run.outputs['model-dir'], 'adapter_config.json')));
    assert.equal(run.outputs['artifact-digest'], run.outputs.sha256);
  });
});

describe('retention-days', () => {
  test('5 asks for an expiry 5 days ahead', async () => {
    const startedAt = Date.now();
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', 'retention-days': '5' });
    succeeded(run);
    assertExpiresIn(createRequests()[0].expires_at, 5, startedAt);
    assertExpiresIn(only(results.artifacts).expiresAt, 5, startedAt);
    assert.ok(!run.stdout.includes('::warning::'), 'no warning when the repository allows it');
  });

  test('the repository limit (GITHUB_RETENTION_DAYS=3) caps it, with the library warning in the log', async () => {
    const startedAt = Date.now();
    const run = await act(
      { 'job-id': LORA, 'checkpoint-type': 'adapter', 'retention-days': '5' },
      { env: runnerEnv({ GITHUB_RETENTION_DAYS: '3' }) },
    );
    succeeded(run);
    assert.match(
      run.stdout,
      /^::warning::Retention days cannot be greater than the maximum allowed retention set within the repository\. Using 3 instead\.$/m,
    );
    assertExpiresIn(createRequests()[0].expires_at, 3, startedAt);
  });

  test('90 is accepted', async () => {
    const startedAt = Date.now();
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', 'retention-days': '90' });
    succeeded(run);
    assertExpiresIn(createRequests()[0].expires_at, 90, startedAt);
  });
});

describe('inputs checked before any request', () => {
  for (const bad of ['a/b', 'a\\b', 'x:y', 'who?', 'star*', 'pipe|', '<tag>', 'say "hi"', 'line\nbreak', 'carriage\rreturn']) {
    test(`artifact-name ${JSON.stringify(bad)} is rejected naming artifact-name`, async () => {
      const run = await act({ 'job-id': LORA, 'artifact-name': bad });
      failed(run, /`artifact-name`/, /" : < > \| \* \? \\ \//);
      assert.equal(api.requests.length, 0, 'no request to Together');
      assert.equal(results.requests.length, 0, 'no request to the results service');
    });
  }

  for (const bad of ['0', '91', '-1', '1.5', 'abc', '7d', '1e1']) {
    test(`retention-days ${JSON.stringify(bad)} is rejected naming retention-days`, async () => {
      const run = await act({ 'job-id': LORA, 'retention-days': bad });
      failed(run, /`retention-days`/, /1 to 90/);
      assert.equal(api.requests.length, 0, 'no request to Together');
      assert.equal(results.requests.length, 0, 'no request to the results service');
    });
  }

  test('upload-artifact that is not a boolean names the input', async () => {
    const run = await act({ 'job-id': LORA, 'upload-artifact': 'yes' });
    failed(run, /Input `upload-artifact`: "yes" is not a boolean/);
    assert.equal(api.requests.length, 0);
    assert.equal(results.requests.length, 0);
  });
});

// These checks need the job's file name (for the default artifact name), so they come after the job
// lookup and the 2-byte probe, but before the archive is downloaded.
describe('refused before the archive is downloaded', () => {
  test('outside GitHub Actions (no ACTIONS_RUNTIME_TOKEN) it says a workflow run is needed', async () => {
    const run = await act({ 'job-id': LORA }, { env: { ACTIONS_RUNTIME_TOKEN: undefined, ACTIONS_RESULTS_URL: undefined } });
    failed(run, /needs a GitHub Actions workflow run/, /ACTIONS_RUNTIME_TOKEN/, /`upload-artifact: false`/);
    assert.equal(api.requests.length, 0, 'checked before any request to Together');
    assert.equal(results.requests.length, 0);
  });

  test('a token without ACTIONS_RESULTS_URL is refused the same way', async () => {
    const run = await act({ 'job-id': LORA }, { env: runnerEnv({ ACTIONS_RESULTS_URL: undefined }) });
    failed(run, /needs a GitHub Actions workflow run/);
    assert.equal(api.requests.length, 0, 'checked before any request to Together');
  });

  test('GitHub Enterprise Server says the artifact service is not available there', async () => {
    const run = await act({ 'job-id': LORA }, { env: runnerEnv({ GITHUB_SERVER_URL: 'https://ghe.example.com' }) });
    failed(run, /not available on GitHub Enterprise Server/, /ghe\.example\.com/, /`upload-artifact: false`/);
    assert.equal(api.requests.length, 0, 'checked before any request to Together');
    assert.equal(results.requests.length, 0);
  });

  test('a file name that cannot be an artifact name, with no artifact-name, points at artifact-name', async () => {
    const run = await act({ 'job-id': LORA, path: 'weights:v1.tar.zst' });
    failed(run, /`artifact-name`/, /weights:v1\.tar\.zst/);
    assertNotDownloaded();
    assert.equal(results.requests.length, 0);
  });

  // `.` and `..` pass the service's character rules, but an un-zipped artifact is named like a file.
  for (const name of ['.', '..', ' .. ']) {
    test(`artifact-name ${JSON.stringify(name)} is refused naming artifact-name`, async () => {
      const run = await act({ 'job-id': LORA, 'artifact-name': name });
      failed(run, /`artifact-name`/, /cannot name an artifact/);
      assertNotDownloaded();
      assert.equal(results.requests.length, 0);
    });
  }

  test('a name of three dots is fine', async () => {
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', 'artifact-name': '...' });
    succeeded(run);
    assert.equal(only(results.artifacts).name, '...');
    assert.deepEqual(listFiles(run.workspace), [ADAPTER_NAME]);
  });

  test('the same file name is fine when artifact-name is given', async () => {
    const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', path: 'weights:v1.tar.zst', 'artifact-name': 'weights-v1' });
    succeeded(run);
    assert.equal(run.outputs.path, path.join(run.workspace, 'weights:v1.tar.zst'));
    assert.equal(only(results.artifacts).name, 'weights-v1');
  });
});

describe('a failed upload keeps the download', () => {
  test('a name already used in the run (409) says so and points at artifact-name', async () => {
    const first = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', 'artifact-name': 'dup-model' });
    succeeded(first);
    const [original] = results.artifacts;
    api.requests.length = 0;

    const run = await act({ 'job-id': LORA, 'artifact-name': 'dup-model' });
    failedAfterDownload(run, merged, /already exists/, /dup-model/, /`artifact-name`/);
    // The first artifact is untouched, and no second one was made.
    assert.deepEqual(
      results.artifacts.map((a) => a.name),
      ['dup-model'],
    );
    assert.equal(sha256(await azurite.readBlob(original.container, original.blob)), sha256(adapter));
    assert.equal(createRequests().length, 2);
  });

  test('a full storage quota says so', async () => {
    results.setFaults({ quotaExceeded: true });
    const run = await act({ 'job-id': LORA });
    failedAfterDownload(run, merged, /storage quota/, /full/);
    assert.equal(results.artifacts.length, 0);
  });

  test('a digest from the service that differs from the sha256 fails the run', async () => {
    const wrong = 'f'.repeat(64);
    results.setFaults({ finalizeHashOverride: `sha256:${wrong}` });
    const run = await act({ 'job-id': LORA });
    failedAfterDownload(run, merged, /sha256/, new RegExp(wrong), new RegExp(sha256(merged)));
  });

  test('a service that stores no digest fails the run: the upload cannot be confirmed', async () => {
    results.setFaults({ finalizeHashOverride: '' });
    const run = await act({ 'job-id': LORA });
    failedAfterDownload(run, merged, /reports sha256 \(none\)/, new RegExp(sha256(merged)));
  });

  test("@github/local-action's stand-in, which stores no digest, gets a warning instead", async () => {
    results.setFaults({ finalizeHashOverride: '' });
    const run = await act({ 'job-id': LORA }, { env: { ...runnerEnv(), LOCAL_ACTION_ARTIFACT_PATH: 'local-artifacts' } });
    succeeded(run);
    assert.match(run.stdout, /^::warning::The local stand-in for the artifact service .* stores no sha256/m);
    assert.equal(run.outputs['artifact-digest'], '');
    assert.equal(run.outputs.sha256, sha256(merged));
  });

  test('an ok:false from the service fails with a clear message', async () => {
    results.setFaults({ createNotOk: true });
    const run = await act({ 'job-id': LORA });
    failedAfterDownload(run, merged, /Uploading artifact .* failed/, /kept at the `path` output/);
  });
});

describe('upload-artifact false', () => {
  test('as the runner passes the default: no request to the results service, no artifact outputs', async () => {
    const run = await act({ 'job-id': LORA, 'upload-artifact': 'false' });
    succeeded(run);
    assert.equal(results.requests.length, 0);
    assert.deepEqual(Object.keys(run.outputs).sort(), ['checkpoint-type', 'checkpoints', 'path', 'sha256', 'size', 'step', 'steps']);
    assert.ok(!run.summary.includes('Artifact'));
    assert.ok(!run.stdout.includes('::group::Artifact'));
  });

  test('an input left out entirely (a local run) means false', async () => {
    const run = await act({ 'job-id': LORA }, { env: runnerEnv({ 'INPUT_UPLOAD-ARTIFACT': undefined }) });
    succeeded(run);
    assert.equal(results.requests.length, 0);
    assert.equal(run.outputs['artifact-id'], undefined);
  });

  test('ignores artifact-name and needs no runner token', async () => {
    const run = await act(
      { 'job-id': LORA, 'upload-artifact': 'false', 'artifact-name': 'unused' },
      { env: { ACTIONS_RUNTIME_TOKEN: undefined, ACTIONS_RESULTS_URL: undefined, GITHUB_SERVER_URL: 'https://ghe.example.com' } },
    );
    succeeded(run);
    assert.equal(results.requests.length, 0);
  });
});
