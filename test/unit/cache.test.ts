import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import * as tc from '@actions/tool-cache';
import {
  CACHE_ARCH,
  CACHE_TOOL,
  type CacheKey,
  cacheVersion,
  findCachedArchive,
  parseCacheVersion,
  restoreFromCache,
  storeInCache,
} from '../../src/runner/cache.js';
import { sha256 } from '../support/archives.js';

const JOB = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';

describe('cache key encoding', () => {
  test('job id, step and checkpoint type become a semver prerelease', () => {
    assert.equal(cacheVersion({ jobId: JOB, checkpointType: 'merged' }), `0.0.0-${JOB}.final.merged`);
    assert.equal(cacheVersion({ jobId: JOB, step: 120, checkpointType: 'adapter' }), `0.0.0-${JOB}.step-120.adapter`);
    assert.equal(cacheVersion({ jobId: JOB, step: 1, checkpointType: 'model' }), `0.0.0-${JOB}.step-1.model`);
  });

  const keys: CacheKey[] = [
    { jobId: JOB, checkpointType: 'merged' },
    { jobId: JOB, step: 1, checkpointType: 'adapter' },
    { jobId: JOB, step: 10, checkpointType: 'adapter' },
    { jobId: JOB, step: 100, checkpointType: 'model' },
    { jobId: JOB, step: Number.MAX_SAFE_INTEGER, checkpointType: 'merged' },
    // Identifiers that would be invalid alone are safe behind `ft-`: never all digits.
    { jobId: 'ft-0', checkpointType: 'merged' },
    { jobId: 'ft-00', checkpointType: 'merged' },
    { jobId: 'ft-0123', step: 7, checkpointType: 'adapter' },
    { jobId: 'ft---', checkpointType: 'model' },
    { jobId: 'ft-ABC-def-9', step: 2, checkpointType: 'merged' },
  ];

  for (const key of keys) {
    test(`round trip and valid semver: ${JSON.stringify(key)}`, () => {
      const version = cacheVersion(key);
      assert.match(version, /^0\.0\.0-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$/, 'only [0-9A-Za-z-] and dots');
      for (const id of version.slice('0.0.0-'.length).split('.')) {
        assert.ok(id.length > 0, 'no empty identifier');
        assert.ok(!/^[0-9]+$/.test(id), `no all-digit identifier (leading zeros are invalid): ${id}`);
        assert.ok(!id.includes('_'));
      }
      assert.ok(tc.isExplicitVersion(version), `${version} is an explicit semver version for tool-cache`);
      assert.deepEqual(parseCacheVersion(version), key);
    });
  }

  test('distinct keys give distinct versions', () => {
    const versions = keys.map(cacheVersion);
    assert.equal(new Set(versions).size, versions.length);
    assert.notEqual(
      cacheVersion({ jobId: JOB, step: 1, checkpointType: 'merged' }),
      cacheVersion({ jobId: JOB, step: 1, checkpointType: 'adapter' }),
    );
  });

  for (const bad of ['', 'ft-', 'ft_abc', 'ft-a.b', 'ft-a b', 'ft-a+b', 'abc', 'ft-ä']) {
    test(`refuses job id ${JSON.stringify(bad)}`, () => assert.throws(() => cacheVersion({ jobId: bad, checkpointType: 'merged' })));
  }
  for (const bad of [0, -1, 1.5, Number.MAX_SAFE_INTEGER + 1]) {
    test(`refuses step ${bad}`, () => assert.throws(() => cacheVersion({ jobId: JOB, step: bad, checkpointType: 'merged' })));
  }
  test('refuses a version semver would find too long', () => {
    assert.throws(() => cacheVersion({ jobId: `ft-${'a'.repeat(260)}`, checkpointType: 'merged' }), /too long/);
  });
  test('parse refuses what it did not make', () => {
    for (const v of [
      '1.2.3',
      `0.0.0-${JOB}.step-0.merged`,
      `0.0.0-${JOB}.step-01.merged`,
      `0.0.0-${JOB}.final.lora`,
      `0.0.0-${JOB}.final`,
      `v0.0.0-${JOB}.final.merged`,
    ]) {
      assert.equal(parseCacheVersion(v), undefined, v);
    }
  });
});

describe('the tool cache, for real (temp RUNNER_TOOL_CACHE)', () => {
  let root: string;
  let work: string;
  const saved = process.env.RUNNER_TOOL_CACHE;
  const archive = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.from('pretend zstd archive')]);
  const key: CacheKey = { jobId: JOB, step: 10, checkpointType: 'adapter' };

  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'together-cache-unit-'));
  });
  after(() => {
    if (saved === undefined) delete process.env.RUNNER_TOOL_CACHE;
    else process.env.RUNNER_TOOL_CACHE = saved;
    fs.rmSync(root, { recursive: true, force: true });
  });
  beforeEach(() => {
    fs.rmSync(root, { recursive: true, force: true });
    work = path.join(root, 'work');
    process.env.RUNNER_TOOL_CACHE = path.join(root, 'tool-cache');
    fs.mkdirSync(work, { recursive: true });
    fs.mkdirSync(process.env.RUNNER_TOOL_CACHE);
  });

  async function stored(): Promise<string> {
    const file = path.join(work, 'model.tar.zst');
    fs.writeFileSync(file, archive);
    await storeInCache(key, file, { format: 'zstd', size: archive.length, sha256: sha256(archive) });
    return file;
  }

  test('what storeInCache writes, tc.find finds (store -> find round trip)', async () => {
    const file = await stored();
    const found = tc.find(CACHE_TOOL, cacheVersion(key), CACHE_ARCH);
    assert.equal(found, path.join(process.env.RUNNER_TOOL_CACHE as string, CACHE_TOOL, cacheVersion(key), CACHE_ARCH));
    assert.ok(fs.existsSync(`${found}.complete`));
    assert.deepEqual(fs.readdirSync(found).sort(), ['archive.tar.zst', 'together-download.json']);
    // One file system here: a hard link, not a second copy.
    assert.equal(fs.statSync(path.join(found, 'archive.tar.zst')).ino, fs.statSync(file).ino);
    assert.deepEqual(tc.findAllVersions(CACHE_TOOL, CACHE_ARCH), [cacheVersion(key)]);
    // Other keys are not found, and the default arch does not see it.
    assert.equal(tc.find(CACHE_TOOL, cacheVersion({ ...key, step: 20 }), CACHE_ARCH), '');
    assert.equal(tc.find(CACHE_TOOL, cacheVersion({ ...key, checkpointType: 'merged' }), CACHE_ARCH), '');
  });

  test('findCachedArchive: a hit carries what was stored, sha256 checked', async () => {
    await stored();
    const hit = await findCachedArchive(key);
    assert.ok(hit);
    assert.equal(hit.meta.sha256, sha256(archive));
    assert.equal(hit.meta.size, archive.length);
    assert.equal(hit.meta.format, 'zstd');
    assert.equal(await findCachedArchive({ ...key, step: undefined }), undefined);
  });

  test('restoreFromCache places the archive at the target (a hard link), with its facts', async () => {
    await stored();
    const hit = await findCachedArchive(key);
    assert.ok(hit);
    const target = path.join(work, 'out', 'restored.tar.zst');
    const restored = await restoreFromCache(hit, target);
    assert.deepEqual(fs.readFileSync(target), archive);
    assert.deepEqual(restored.verified, { size: archive.length, sha256: sha256(archive) });
    assert.deepEqual(fs.readdirSync(path.dirname(target)), ['restored.tar.zst']);
  });

  test('a changed archive in the cache is removed and counts as a miss', async () => {
    const file = await stored();
    // The cache holds a hard link: writing the workspace file in place changes the cached one too.
    fs.writeFileSync(file, Buffer.concat([archive.subarray(0, 4), Buffer.alloc(archive.length - 4, 0x21)]));
    assert.equal(await findCachedArchive(key), undefined);
    assert.equal(tc.find(CACHE_TOOL, cacheVersion(key), CACHE_ARCH), '');
    assert.ok(!fs.existsSync(path.join(process.env.RUNNER_TOOL_CACHE as string, CACHE_TOOL, cacheVersion(key), CACHE_ARCH)));
  });

  test('a dry run (verify: false) counts an unusable entry as a miss but leaves it in place', async () => {
    await stored();
    const dir = tc.find(CACHE_TOOL, cacheVersion(key), CACHE_ARCH);
    fs.appendFileSync(path.join(dir, 'archive.tar.zst'), 'more');
    assert.equal(await findCachedArchive(key, { verify: false }), undefined);
    assert.equal(tc.find(CACHE_TOOL, cacheVersion(key), CACHE_ARCH), dir);
    assert.equal(await findCachedArchive(key), undefined);
    assert.equal(tc.find(CACHE_TOOL, cacheVersion(key), CACHE_ARCH), '', 'a real run removes it');
  });

  test('metadata for another key in the folder is a miss', async () => {
    await stored();
    const dir = tc.find(CACHE_TOOL, cacheVersion(key), CACHE_ARCH);
    const metaFile = path.join(dir, 'together-download.json');
    fs.writeFileSync(metaFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(metaFile, 'utf8')), step: 11 }));
    assert.equal(await findCachedArchive(key), undefined);
  });

  test('a store over an interrupted one (no .complete marker) replaces it', async () => {
    const leftover = path.join(process.env.RUNNER_TOOL_CACHE as string, CACHE_TOOL, cacheVersion(key), CACHE_ARCH);
    fs.mkdirSync(leftover, { recursive: true });
    fs.writeFileSync(path.join(leftover, 'junk'), 'x');
    await stored();
    assert.deepEqual(fs.readdirSync(leftover).sort(), ['archive.tar.zst', 'together-download.json']);
    assert.deepEqual(fs.readdirSync(path.dirname(leftover)).sort(), [CACHE_ARCH, `${CACHE_ARCH}.complete`]);
  });

  test('without RUNNER_TOOL_CACHE: no hit, no store, no throw', async () => {
    delete process.env.RUNNER_TOOL_CACHE;
    assert.equal(await findCachedArchive(key), undefined);
    const file = path.join(work, 'model.tar.zst');
    fs.writeFileSync(file, archive);
    await storeInCache(key, file, { format: 'zstd', size: archive.length, sha256: sha256(archive) });
  });
});
