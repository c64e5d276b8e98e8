/**
 * End-to-end: unpacking as it happens on Ubuntu (GNU tar) and on macOS and Windows (bsdtar, here
 * Debian's libarchive-tools in place of `tar`): zstd streams into `tar -x -f -`, archives with a
 * 2 GiB window, and disk faults on small file systems of their own (a tmpfs: mounting one needs
 * root, or sudo without a password as on GitHub's Ubuntu runners).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { modelFiles, weights } from '../support/archives.js';
import { type FakeTogether, startFakeTogether } from '../support/fake-together.js';
import { actionRunner, assertFailed, assertSucceeded } from '../support/run-action.js';
import { loraJob, SAMPLE_JOB_ID, SAMPLE_SLUG } from '../support/sample-job.js';
import { tarOf } from '../support/tar-writer.js';

const KEY = 'tgp_v1_extract-secret-Ws3qL7';
const BSDTAR = '/usr/bin/bsdtar';
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'together-extract-e2e-'));
let api: FakeTogether;

/** Runs a command (async: the fake server lives in this process); resolves with its output, rejects on failure. */
function run(command: string, args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`${command} ${args.join(' ')}: exit ${code}: ${err}`)),
    );
    child.stdin?.end(input);
  });
}

/** Mounting and unmounting need root; elsewhere `sudo -n` (GitHub's runners allow it). */
function privileged(args: string[]): Promise<Buffer> {
  return process.getuid?.() === 0 ? run(args[0], args.slice(1)) : run('sudo', ['-n', ...args]);
}

interface SmallDisk {
  dir: string;
  remount(options: string): Promise<void>;
  unmount(): Promise<void>;
}

const disks: SmallDisk[] = [];

/** A tmpfs of `size` at a folder of its own. */
async function smallDisk(size: string): Promise<SmallDisk> {
  const dir = fs.mkdtempSync(path.join(scratch, 'disk-'));
  try {
    await privileged(['mount', '-t', 'tmpfs', '-o', `size=${size},mode=0777`, 'tmpfs', dir]);
  } catch (error) {
    throw new Error(`These tests mount a small tmpfs, which needs root or passwordless sudo: ${(error as Error).message}`);
  }
  let mounted = true;
  const disk = {
    dir,
    remount: async (options: string) => void (await privileged(['mount', '-o', `remount,${options}`, dir])),
    unmount: async () => {
      if (mounted) await privileged(['umount', dir]);
      mounted = false;
    },
  };
  disks.push(disk);
  return disk;
}

/** A .tar.zst made by `tar` from the files under `root`, compressed by zstd from a pipe, so its frame asks for a 2 GiB window. */
async function longWindowArchive(files: Record<string, Buffer>): Promise<Buffer> {
  const src = fs.mkdtempSync(path.join(scratch, 'src-'));
  for (const [name, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(src, 'merged', name)), { recursive: true });
    fs.writeFileSync(path.join(src, 'merged', name), data);
  }
  const tar = await run('tar', ['--sort=name', '--owner=0', '--group=0', '-cf', '-', '-C', src, 'merged']);
  return run('zstd', ['-q', '-c', '--long=31'], tar);
}

/** A model folder and `count` small files in a folder of its own, as a .tar.zst. */
async function manySmallFiles(count: number): Promise<Buffer> {
  const model = modelFiles({ weightBytes: 8192 });
  const entries = [
    { name: 'merged/', type: '5' },
    ...Object.entries(model).map(([name, data]) => ({ name: `merged/${name}`, data })),
    { name: 'merged/pieces/', type: '5' },
    ...Array.from({ length: count }, (_, i) => ({ name: `merged/pieces/${i}.txt`, data: Buffer.from('x') })),
  ];
  return run('zstd', ['-q', '-c', '-3'], tarOf(entries));
}

/** A PATH folder whose `tar` is `script` (a shell script; REALTAR names the tar it should run in the end). */
function tarShim(script: string, realTar: string): string {
  const bin = fs.mkdtempSync(path.join(scratch, 'bin-'));
  fs.writeFileSync(path.join(bin, 'tar'), `#!/bin/bash\nREALTAR=${realTar}\n${script}\nexec "$REALTAR" "$@"\n`, { mode: 0o755 });
  return `${bin}${path.delimiter}${process.env.PATH}`;
}

const GNU_TAR = (process.env.PATH ?? '')
  .split(path.delimiter)
  .map((d) => path.join(d, 'tar'))
  .find((p) => fs.existsSync(p)) as string;
const TARS = [
  ['GNU tar', GNU_TAR],
  ['bsdtar', BSDTAR],
] as const;

let files: Record<string, Buffer>;
let longWindow: Buffer;
let threeMiB: Buffer;

before(async () => {
  files = { ...modelFiles({ weightBytes: 5 * 1024 * 1024, shards: 2 }), 'extra/notes.txt': Buffer.from('notes\n') };
  longWindow = await longWindowArchive(files);
  threeMiB = await longWindowArchive({
    'config.json': Buffer.from('{"model_type":"llama"}'),
    'model.safetensors': weights(3 * 1024 * 1024),
  });
  api = await startFakeTogether({ apiKey: KEY, jobs: [loraJob({ archives: { merged: longWindow } })] });
});

after(async () => {
  await api.close();
  for (const disk of disks) await disk.unmount().catch(() => undefined);
  removeRuns();
  fs.rmSync(scratch, { recursive: true, force: true });
});

beforeEach(() => {
  api.jobs.get(SAMPLE_JOB_ID)!.archives.merged = longWindow;
});

const { act, removeRuns } = actionRunner(KEY, () => ({ inputs: { 'job-id': SAMPLE_JOB_ID, 'api-key': KEY, 'base-url': api.url } }));

/** Every entry below `dir`, relative. */
function listAll(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort();
}

describe('unpacking with GNU tar and with bsdtar', () => {
  for (const [name, tar] of TARS) {
    test(`${name}: an archive whose zstd frame asks for a 2 GiB window unpacks (zstd --long=31 feeds tar -x -f -)`, async () => {
      const result = await act({ extract: 'true' }, { env: { PATH: tarShim('', tar) } });
      assertSucceeded(result);
      assert.equal(result.outputs['model-dir'], path.join(result.workspace, SAMPLE_SLUG, 'merged'));
      for (const [file, data] of Object.entries(files))
        assert.deepEqual(fs.readFileSync(path.join(result.outputs['model-dir'], file)), data);
      assert.doesNotMatch(result.stdout, /cannot read zstd|Window size larger/);
      assert.deepEqual(fs.readdirSync(result.workspace).sort(), [SAMPLE_SLUG, `${SAMPLE_SLUG}.tar.zst`]);
    });
  }
});

describe('disk faults while unpacking', () => {
  test('12,000 one-byte files do not pass a space check meant for 12,000 bytes: each takes a block', async () => {
    const disk = await smallDisk('16m');
    api.jobs.get(SAMPLE_JOB_ID)!.archives.merged = await manySmallFiles(12_000);
    const result = await act({ extract: 'true', 'extract-path': path.join(disk.dir, 'model') });
    assertFailed(
      result,
      /Not enough disk space in /,
      /12\d{3} extracted files and \d+ folders need, counted in whole 4096-byte blocks/,
      /extract-path/,
    );
    assert.deepEqual(listAll(disk.dir), [], 'tar wrote nothing');
    assert.deepEqual(listAll(result.workspace), [`${SAMPLE_SLUG}.tar.zst`], 'the verified archive stays');
    await disk.unmount();
  });

  for (const [name, tar] of TARS) {
    test(`${name}: the disk filling up while tar writes is ENOSPC naming extract-path, the folder and its free space; nothing is left`, async () => {
      const disk = await smallDisk('24m');
      const filler = path.join(disk.dir, 'filler');
      // Something else fills the disk once the space check has passed, as another job on a shared runner would.
      const shim = tarShim(`case "$1" in -x) dd if=/dev/zero of=${filler} bs=1M count=64 2>/dev/null ;; esac`, tar);
      const result = await act({ extract: 'true', 'extract-path': path.join(disk.dir, 'model') }, { env: { PATH: shim } });
      const error = assertFailed(
        result,
        /ENOSPC: the disk is full while extracting the archive in /,
        /`extract-path`; 0 B \(0 bytes\) free/,
      );
      assert.ok(error.includes(disk.dir), error);
      assert.doesNotMatch(error, /exit code/);
      assert.deepEqual(listAll(disk.dir), ['filler'], 'no half-extracted folder');
      assert.deepEqual(listAll(result.workspace), [`${SAMPLE_SLUG}.tar.zst`]);
      await disk.unmount();
    });

    test(`${name}: a file over the file size limit is EFBIG naming extract-path, not "tar could not extract"`, async () => {
      api.jobs.get(SAMPLE_JOB_ID)!.archives.merged = threeMiB;
      // 1 MiB per file, and the signal that would kill tar ignored, so that the write fails with EFBIG.
      const shim = tarShim("ulimit -f 1024\ntrap '' XFSZ", tar);
      const result = await act({ extract: 'true', 'extract-path': 'model' }, { env: { PATH: shim } });
      assertFailed(
        result,
        /EFBIG: the file grew larger than the file system or a file size limit allows while extracting the archive/,
        /`extract-path`/,
      );
      assert.deepEqual(listAll(result.workspace), [`${SAMPLE_SLUG}.tar.zst`]);
    });
  }

  test('a read-only file system is EROFS naming extract-path', async () => {
    const disk = await smallDisk('8m');
    await disk.remount('ro');
    const result = await act({ extract: 'true', 'extract-path': path.join(disk.dir, 'model') });
    assertFailed(result, /EROFS: the file system is read-only/, /`extract-path`/);
    assert.deepEqual(listAll(disk.dir), []);
    await disk.unmount();
  });
});
