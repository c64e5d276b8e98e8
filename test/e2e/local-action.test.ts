/**
 * The action's src/ run by @github/local-action (`npm run local-action`), as the README's local
 * debugging section does, against the fake Together API: every feature at once, artifact upload
 * included, through local-action's stand-ins for @actions/core and @actions/artifact.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeArchive, peftAdapterFiles, sha256 } from '../support/archives.js';
import { type FakeTogether, startFakeTogether } from '../support/fake-together.js';
import { ROOT } from '../support/run-action.js';
import { SAMPLE_JOB_ID, SAMPLE_SLUG, sampleLoraJob } from '../support/sample-job.js';

const KEY = 'local-action-key';
let api: FakeTogether;
let adapter: Buffer;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'local-action-'));

before(async () => {
  adapter = await makeArchive(peftAdapterFiles(), 'zstd');
  api = await startFakeTogether({ apiKey: KEY, jobs: [sampleLoraJob(adapter)] });
});
after(async () => {
  await api.close();
  fs.rmSync(scratch, { recursive: true, force: true });
});

/** Writes an env file like .env.example with `settings`, runs `npm run local-action` with it. */
function localAction(settings: Record<string, string>): Promise<{ code: number | null; stdout: string; outputs: Record<string, string> }> {
  const dir = fs.mkdtempSync(path.join(scratch, 'run-'));
  const env = {
    'INPUT_JOB-ID': SAMPLE_JOB_ID,
    'INPUT_CHECKPOINT-TYPE': 'adapter',
    'INPUT_API-KEY': KEY,
    'INPUT_BASE-URL': api.url,
    INPUT_PATH: 'models/',
    GITHUB_WORKSPACE: path.join(dir, 'workspace'),
    RUNNER_TEMP: path.join(dir, 'temp'),
    RUNNER_TOOL_CACHE: path.join(dir, 'tool-cache'),
    GITHUB_STEP_SUMMARY: path.join(dir, 'summary.md'),
    ...settings,
  };
  const envFile = path.join(dir, 'env');
  fs.writeFileSync(
    envFile,
    Object.entries(env)
      .map(([k, v]) => `${k}=${v}\n`)
      .join(''),
  );
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'scripts', 'local-action.mjs'), envFile], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stdout += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const outputs = Object.fromEntries([...stdout.matchAll(/^::set-output name=([\w-]+)::(.*)$/gm)].map((m) => [m[1], m[2]]));
      resolve({ code, stdout, outputs });
    });
  });
}

describe('@github/local-action runs src/ against the fake API', { timeout: 180_000 }, () => {
  test('wait, extract, cache and artifact upload at once, then a cache hit', async () => {
    const artifacts = path.join(scratch, 'artifacts');
    const settings = {
      INPUT_WAIT: 'true',
      INPUT_EXTRACT: 'true',
      INPUT_CACHE: 'true',
      'INPUT_UPLOAD-ARTIFACT': 'true',
      LOCAL_ACTION_WORKSPACE: path.join(scratch, 'workspace'),
      LOCAL_ACTION_ARTIFACT_PATH: artifacts,
      ACTIONS_RUNTIME_TOKEN: 'local',
      ACTIONS_RESULTS_URL: 'http://127.0.0.1:1/',
      GITHUB_SERVER_URL: 'https://github.com',
      GITHUB_REPOSITORY: 'local/together-download',
      GITHUB_RUN_ID: '1',
      RUNNER_TOOL_CACHE: path.join(scratch, 'tool-cache'),
    };
    const run = await localAction(settings);
    assert.equal(run.code, 0, run.stdout);
    assert.doesNotMatch(run.stdout, /^::error::/m, run.stdout);
    assert.equal(run.outputs.sha256, sha256(adapter));
    assert.equal(run.outputs.size, String(adapter.length));
    assert.equal(run.outputs['cache-hit'], 'false');
    assert.ok(fs.existsSync(path.join(run.outputs['model-dir'], 'adapter_config.json')), 'extracted');
    assert.equal(run.outputs['artifact-id'], '1');
    assert.match(run.stdout, /^::warning::The local stand-in for the artifact service .* stores no sha256/m);
    assert.deepEqual(fs.readdirSync(artifacts), [`${SAMPLE_SLUG}-adapter.tar.zst.zip`]);

    const again = await localAction({ ...settings, 'INPUT_UPLOAD-ARTIFACT': 'false' });
    assert.equal(again.code, 0, again.stdout);
    assert.doesNotMatch(again.stdout, /^::error::/m, again.stdout);
    assert.equal(again.outputs['cache-hit'], 'true');
    assert.equal(again.outputs.sha256, sha256(adapter));
  });
});
