/**
 * End-to-end: what the action may replace and where it may write. Only a regular file at the
 * target is replaced (a FIFO, a device, a socket, a link or a folder is refused before anything is
 * downloaded), a tool-cache entry reached through a symbolic link is neither used nor written, and
 * a tool cache that refuses writes is a warning that names `cache`, never a failed download.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { makeArchive, peftAdapterFiles, sha256 } from '../support/archives.js';
import { type FakeTogether, startFakeTogether } from '../support/fake-together.js';
import { actionRunner, assertFailed, assertSucceeded } from '../support/run-action.js';
import { SAMPLE_JOB_ID, SAMPLE_MODEL, SAMPLE_OUTPUT_NAME, SAMPLE_SLUG } from '../support/sample-job.js';

const KEY = 'tgp_v1_targets-secret-Wm3q';
let api: FakeTogether;
let adapter: Buffer;
const scratch: string[] = [];
const cleanups: Array<() => void> = [];

before(async () => {
  adapter = await makeArchive(peftAdapterFiles(), 'zstd');
  api = await startFakeTogether({
    apiKey: KEY,
    jobs: [
      {
        id: SAMPLE_JOB_ID,
        status: 'completed',
        model: SAMPLE_MODEL,
        model_output_name: SAMPLE_OUTPUT_NAME,
        training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
        archives: { adapter, merged: adapter },
      },
    ],
  });
});

after(async () => {
  await api.close();
  removeRuns();
  for (const cleanup of cleanups.reverse()) cleanup();
  for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  api.requests.length = 0;
});

const { act, removeRuns } = actionRunner(KEY, () => ({
  inputs: { 'api-key': KEY, 'base-url': api.url, 'job-id': SAMPLE_JOB_ID, 'checkpoint-type': 'adapter' },
}));

function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `together-targets-${prefix}-`));
  scratch.push(dir);
  return dir;
}

const ADAPTER_NAME = `${SAMPLE_SLUG}-adapter.tar.zst`;
const downloads = () => api.requests.filter((r) => r.endpoint === 'download');

describe('only a regular file is replaced', () => {
  test('a FIFO named by `path` is refused before any request, and left as it was', async () => {
    const run = await act(
      { path: 'model.tar.zst' },
      {
        setup: (ws) => {
          execFileSync('mkfifo', [path.join(ws, 'model.tar.zst')]);
        },
      },
    );
    assertFailed(run, /Input `path`: .*model\.tar\.zst exists and is a FIFO \(named pipe\)/, /remove it, or give another `path`/);
    assert.deepEqual(api.requests, [], 'no request at all');
    assert.ok(fs.lstatSync(path.join(run.workspace, 'model.tar.zst')).isFIFO(), 'the FIFO is still there');
  });

  test('a device named by `path` is refused before any request', async () => {
    const run = await act({ path: '/dev/null' });
    assertFailed(run, /Input `path`: \/dev\/null exists and is a character device/);
    assert.deepEqual(api.requests, []);
  });

  test('a socket named by `path` is refused before any request', async () => {
    const dir = tempDir('socket');
    const socketPath = path.join(dir, 'model.tar.zst');
    const server = net.createServer().listen(socketPath);
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const run = await act({ path: socketPath });
      assertFailed(run, /exists and is a socket/);
      assert.deepEqual(api.requests, []);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test('a symbolic link named by `path` is refused: the link is not replaced, its target not written', async () => {
    const dir = tempDir('link');
    const elsewhere = path.join(dir, 'elsewhere.tar.zst');
    fs.writeFileSync(elsewhere, 'keep me');
    const run = await act({ path: 'model.tar.zst' }, { setup: (ws) => fs.symlinkSync(elsewhere, path.join(ws, 'model.tar.zst')) });
    assertFailed(run, /exists and is a symbolic link/);
    assert.deepEqual(api.requests, []);
    assert.equal(fs.readFileSync(elsewhere, 'utf8'), 'keep me');
  });

  test('a folder where the default file name would go is refused before the download, and left as it was', async () => {
    const run = await act(
      { path: 'models/' },
      {
        setup: (ws) => {
          fs.mkdirSync(path.join(ws, 'models', ADAPTER_NAME), { recursive: true });
          fs.writeFileSync(path.join(ws, 'models', ADAPTER_NAME, 'inside'), 'x');
        },
      },
    );
    assertFailed(run, new RegExp(`${ADAPTER_NAME.replace(/[.+]/g, '\\$&')} exists and is a directory`));
    assert.ok(
      downloads().every((r) => r.range === 'bytes=0-1'),
      'at most the 2-byte probe: the name depends on the job and the format',
    );
    assert.equal(fs.readFileSync(path.join(run.workspace, 'models', ADAPTER_NAME, 'inside'), 'utf8'), 'x');
  });

  test('a regular file there is replaced, once the new one is verified', async () => {
    const run = await act({ path: 'model.tar.zst' }, { setup: (ws) => fs.writeFileSync(path.join(ws, 'model.tar.zst'), 'old') });
    assertSucceeded(run);
    assert.equal(sha256(fs.readFileSync(path.join(run.workspace, 'model.tar.zst'))), sha256(adapter));
  });
});

const ENTRY = `0.0.0-${SAMPLE_JOB_ID}.final.adapter`;

/** A tool-cache entry for the adapter, written by hand as the action would, in `root`. */
function plantEntry(root: string, archive: Buffer): string {
  const dir = path.join(root, 'together-model', ENTRY, 'any');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'archive.tar.zst'), archive);
  const meta = {
    jobId: SAMPLE_JOB_ID,
    step: null,
    checkpointType: 'adapter',
    format: 'zstd',
    size: archive.length,
    sha256: sha256(archive),
    file: 'archive.tar.zst',
    storedAt: '2026-01-01T00:00:00.000Z',
  };
  fs.writeFileSync(path.join(dir, 'together-download.json'), JSON.stringify(meta));
  fs.writeFileSync(`${dir}.complete`, '');
  return dir;
}

/** Every file below `dir` with its size, to show nothing was written there. */
function snapshot(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).map((f) => `${f}:${fs.lstatSync(path.join(dir, f)).size}`).sort();
}

describe('the tool cache', () => {
  for (const level of ['together-model', ENTRY, 'any'] as const) {
    test(`an entry reached through a symbolic link (${level === ENTRY ? 'the version folder' : level}) is neither used nor written`, async () => {
      const toolCache = tempDir('tool-cache');
      const outside = tempDir('outside');
      // The planted entry serves other bytes than Together: using it would be visible.
      const planted = Buffer.concat([adapter, Buffer.from('planted')]);
      plantEntry(outside, planted);
      const parts = ['together-model', ENTRY, 'any'];
      const depth = parts.indexOf(level);
      fs.mkdirSync(path.join(toolCache, ...parts.slice(0, depth)), { recursive: true });
      fs.symlinkSync(path.join(outside, ...parts.slice(0, depth + 1)), path.join(toolCache, ...parts.slice(0, depth + 1)));
      if (level === 'any') fs.writeFileSync(path.join(toolCache, 'together-model', ENTRY, 'any.complete'), '');
      const before = snapshot(outside);

      const run = await act({ cache: 'true' }, { env: { RUNNER_TOOL_CACHE: toolCache } });
      assertSucceeded(run);
      assert.equal(run.outputs['cache-hit'], 'false');
      assert.equal(run.outputs.sha256, sha256(adapter), 'downloaded from Together, not taken from the link');
      assert.match(run.stdout, /::warning::Not using the tool-cache entry .* is a symbolic link/);
      assert.match(run.stdout, /::warning::Not storing the archive in the tool cache: .* is a symbolic link/);
      assert.deepEqual(snapshot(outside), before, 'nothing was written through the link');
    });
  }

  test('an entry whose record is a FIFO is unusable, not a hang', async () => {
    const toolCache = tempDir('tool-cache');
    const dir = plantEntry(toolCache, adapter);
    fs.rmSync(path.join(dir, 'together-download.json'));
    execFileSync('mkfifo', [path.join(dir, 'together-download.json')]);
    const run = await act({ cache: 'true', 'dry-run': 'true' }, { env: { RUNNER_TOOL_CACHE: toolCache }, timeoutMs: 20_000 });
    assertSucceeded(run);
    assert.match(run.stdout, /::warning::The tool-cache entry .* is unusable: together-download\.json is not a regular file/);
  });

  test('a read-only tool cache: the download succeeds, the warning names `cache`, the folder and its free space', async (t) => {
    const toolCache = tempDir('tool-cache-ro');
    mountReadOnly(toolCache);
    const run = await act({ cache: 'true' }, { env: { RUNNER_TOOL_CACHE: toolCache } });
    assertSucceeded(run);
    assert.equal(run.outputs.sha256, sha256(adapter));
    assert.match(
      run.stdout,
      /::warning::Could not store the archive in the tool cache: EROFS: the file system is read-only, .* in .*tool-cache-ro.* \(`cache`; .* free\)\. Set `cache: false`\./,
    );
    t.diagnostic('the tool cache was a read-only bind mount');
  });
});

/** Makes `dir` a read-only bind mount of itself for the rest of the file (the tests run as root). */
function mountReadOnly(dir: string): void {
  try {
    execFileSync('mount', ['--bind', dir, dir]);
    execFileSync('mount', ['-o', 'remount,bind,ro', dir]);
  } catch (error) {
    throw new Error(`this test needs to mount a read-only bind mount (root with CAP_SYS_ADMIN): ${(error as Error).message}`);
  }
  cleanups.push(() => spawn('umount', [dir]).once('error', () => undefined));
}
