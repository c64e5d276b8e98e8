/**
 * Tests of the test fakes themselves (Azurite + fake results service), driven
 * by the real @actions/artifact client.
 */

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { DefaultArtifactClient, InvalidResponseError, UsageError } from '@actions/artifact';
import { BlockBlobClient } from '@azure/storage-blob';
import { type Azurite, startAzurite } from './support/azurite.js';
import { type FakeResults, runtimeToken, startFakeResults } from './support/fake-results.js';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const SERVICE = 'github.actions.results.api.v1.ArtifactService';

const ENV_KEYS = ['ACTIONS_RUNTIME_TOKEN', 'ACTIONS_RESULTS_URL', 'GITHUB_SERVER_URL'] as const;
const savedEnv: Partial<Record<(typeof ENV_KEYS)[number], string>> = {};

let azurite: Azurite;
let fake: FakeResults;
let tmp: string;

async function makeFile(name: string, bytes: number): Promise<{ file: string; data: Buffer }> {
  const data = randomBytes(bytes);
  const file = path.join(tmp, name);
  await writeFile(file, data);
  return { file, data };
}

async function twirp(
  method: string,
  body: unknown,
  token: string = fake.token,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${fake.url}/twirp/${SERVICE}/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('artifact fakes (Azurite + fake results service)', () => {
  before(async () => {
    for (const k of ENV_KEYS) savedEnv[k] = process.env[k];
    // An http://127.0.0.1 server URL would make the client throw GHESNotSupportedError.
    delete process.env.GITHUB_SERVER_URL;
    azurite = await startAzurite();
    tmp = await mkdtemp(path.join(os.tmpdir(), 'artifact-fakes-'));
  });

  after(async () => {
    await azurite?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
    for (const k of ENV_KEYS) {
      if (savedEnv[k] === undefined) delete process.env[k];
      else process.env[k] = savedEnv[k];
    }
  });

  beforeEach(async () => {
    fake = await startFakeResults(azurite);
    process.env.ACTIONS_RUNTIME_TOKEN = fake.token;
    process.env.ACTIONS_RESULTS_URL = fake.url;
  });

  afterEach(async () => {
    await fake.close();
  });

  it('uploads a file un-archived: blob, digest and record all agree', async () => {
    const { file, data } = await makeFile('model-weights.safetensors', 3 * 1024 * 1024 + 17);
    const client = new DefaultArtifactClient();
    const res = await client.uploadArtifact('ignored-with-skipArchive', [file], tmp, {
      skipArchive: true,
    });

    const expected = sha256(data);
    assert.equal(res.size, data.length);
    assert.equal(res.digest, expected);
    assert.equal(res.id, 1000);

    assert.equal(fake.artifacts.length, 1);
    const rec = fake.artifacts[0]!;
    assert.equal(rec.name, 'model-weights.safetensors');
    assert.equal(rec.finalized, true);
    assert.equal(rec.size, data.length);
    assert.equal(rec.hash, `sha256:${expected}`);
    assert.equal(rec.mimeType, 'application/octet-stream');

    const stored = await azurite.readBlob(rec.container, rec.blob);
    assert.equal(stored.length, data.length);
    assert.equal(sha256(stored), expected);
    assert.deepEqual(await azurite.listBlobs(rec.container), [rec.blob]);

    assert.deepEqual(
      fake.requests.map((r) => [r.method, r.authorized]),
      [
        ['CreateArtifact', true],
        ['FinalizeArtifact', true],
      ],
    );
  });

  it('rejects a second upload of the same name with 409 Conflict', async () => {
    const { file } = await makeFile('dup.bin', 1024);
    const client = new DefaultArtifactClient();
    await client.uploadArtifact('dup.bin', [file], tmp, { skipArchive: true });
    await assert.rejects(client.uploadArtifact('dup.bin', [file], tmp, { skipArchive: true }), (err: Error) => {
      assert.match(err.message, /\(409\) Conflict/);
      assert.match(err.message, /already exists/);
      return true;
    });
    assert.equal(fake.requests.filter((r) => r.method === 'CreateArtifact').length, 2);
    assert.equal(fake.artifacts.length, 1);
  });

  it('reports a full storage quota so that the client raises its UsageError', async () => {
    const { file } = await makeFile('quota.bin', 1024);
    fake.setFaults({ quotaExceeded: true });
    // @actions/artifact 6.2.1 throws UsageError inside the Twirp layer, but
    // ArtifactHttpClient.request() re-wraps every error as a plain
    // `Error("Failed to CreateArtifact: " + message)`, so what reaches the
    // caller is NOT `instanceof UsageError`; only the message survives.
    await assert.rejects(new DefaultArtifactClient().uploadArtifact('quota.bin', [file], tmp, { skipArchive: true }), (err: Error) => {
      assert.equal(err.message, `Failed to CreateArtifact: ${new UsageError().message}`);
      assert.match(err.message, /storage quota has been hit/);
      return true;
    });
    assert.equal(fake.requests.length, 1, 'UsageError must not be retried');
    assert.equal(fake.artifacts.length, 0);
  });

  it('answers createNotOk with ok:false (InvalidResponseError) and createStatus with that status', async () => {
    const { file } = await makeFile('faults.bin', 1024);
    const client = new DefaultArtifactClient();
    fake.setFaults({ createNotOk: true });
    await assert.rejects(client.uploadArtifact('faults.bin', [file], tmp, { skipArchive: true }), InvalidResponseError);
    fake.setFaults({ createStatus: { status: 400, code: 'invalid_argument', msg: 'bad name' } });
    await assert.rejects(client.uploadArtifact('faults.bin', [file], tmp, { skipArchive: true }), /\(400\) Bad Request: bad name/);
    assert.throws(() => fake.setFaults({ createStatus: { status: 503, code: 'unavailable', msg: 'x' } }));
    assert.equal(fake.requests.length, 2);
  });

  it('rejects a token for another run/job with 401 unauthenticated', async () => {
    const { file } = await makeFile('badtoken.bin', 1024);
    process.env.ACTIONS_RUNTIME_TOKEN = runtimeToken('other-run', 'other-job');
    await assert.rejects(
      new DefaultArtifactClient().uploadArtifact('badtoken.bin', [file], tmp, {
        skipArchive: true,
      }),
      /\(401\) Unauthorized/,
    );
    assert.deepEqual(
      fake.requests.map((r) => [r.method, r.authorized]),
      [['CreateArtifact', false]],
    );
    assert.equal(fake.artifacts.length, 0);

    const ids = {
      workflow_run_backend_id: fake.runId,
      workflow_job_run_backend_id: fake.jobId,
      name: 'x.bin',
      version: 7,
    };
    // right token, wrong ids in the body
    const wrongBody = await twirp('CreateArtifact', { ...ids, workflow_job_run_backend_id: 'nope' });
    assert.equal(wrongBody.status, 401);
    assert.equal(wrongBody.json.code, 'unauthenticated');
    // scope with an extra colon part is not the exact scope
    const extra = await twirp('CreateArtifact', ids, runtimeToken(fake.runId, `${fake.jobId}:extra`));
    assert.equal(extra.status, 401);
    // not a JWT at all
    const garbage = await twirp('CreateArtifact', ids, 'not-a-jwt');
    assert.equal(garbage.status, 401);
    assert.equal(fake.artifacts.length, 0);
  });

  it('hands out a real SAS: Azurite refuses a tampered signature', async () => {
    const created = await twirp('CreateArtifact', {
      workflow_run_backend_id: fake.runId,
      workflow_job_run_backend_id: fake.jobId,
      name: 'sas.bin',
      version: 7,
    });
    assert.equal(created.status, 200);
    const signed = String(created.json.signed_upload_url);
    assert.ok(signed.startsWith(`${azurite.blobEndpoint}/`), signed);

    const url = new URL(signed);
    const sig = url.searchParams.get('sig')!;
    url.searchParams.set('sig', Buffer.from(sig, 'base64').reverse().toString('base64'));
    await assert.rejects(
      new BlockBlobClient(url.toString(), undefined, { retryOptions: { maxTries: 1 } }).upload('x', 1),
      (err: { statusCode?: number }) => err.statusCode === 403,
    );

    await new BlockBlobClient(signed).upload('hello', 5);
    // size must match the blob for FinalizeArtifact
    const bad = await twirp('FinalizeArtifact', {
      workflow_run_backend_id: fake.runId,
      workflow_job_run_backend_id: fake.jobId,
      name: 'sas.bin',
      size: '6',
    });
    assert.equal(bad.status, 400);
    const unknown = await twirp('FinalizeArtifact', {
      workflow_run_backend_id: fake.runId,
      workflow_job_run_backend_id: fake.jobId,
      name: 'nope.bin',
      size: '5',
    });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.code, 'not_found');
    const ok = await twirp('FinalizeArtifact', {
      workflow_run_backend_id: fake.runId,
      workflow_job_run_backend_id: fake.jobId,
      name: 'sas.bin',
      size: '5',
    });
    assert.deepEqual(ok, { status: 200, json: { ok: true, artifact_id: '1000' } });
  });

  it('lists, overrides the finalize hash, and deletes (freeing the name)', async () => {
    const { file } = await makeFile('listed.bin', 2048);
    const client = new DefaultArtifactClient();
    fake.setFaults({ finalizeHashOverride: 'sha256:0000' });
    const up = await client.uploadArtifact('listed.bin', [file], tmp, { skipArchive: true });
    assert.equal(fake.artifacts[0]!.hash, 'sha256:0000');

    const { artifacts } = await client.listArtifacts();
    assert.equal(artifacts.length, 1);
    assert.equal(artifacts[0]!.name, 'listed.bin');
    assert.equal(artifacts[0]!.id, up.id);
    assert.equal(artifacts[0]!.size, 2048);
    assert.equal(artifacts[0]!.digest, 'sha256:0000');

    fake.setFaults({});
    const del = await client.deleteArtifact('listed.bin');
    assert.equal(del.id, up.id);
    assert.equal(fake.artifacts.length, 0);

    const again = await client.uploadArtifact('listed.bin', [file], tmp, { skipArchive: true });
    assert.equal(again.id, (up.id ?? 0) + 1);
    assert.equal(fake.artifacts[0]!.hash, `sha256:${again.digest}`);
  });
});
