/**
 * Keeping downloaded archives in the runner's tool cache (`RUNNER_TOOL_CACHE`), so that a
 * self-hosted runner downloads a checkpoint once. A checkpoint never changes once written, so an
 * entry needs no revalidation with Together; its sha256 is still checked on every hit.
 *
 * Layout (tool-cache's own, so `tc.find` finds it):
 *   $RUNNER_TOOL_CACHE/together-model/0.0.0-<job id>.<final|step-N>.<type>/any/
 *     archive.tar.zst           the archive (a hard link to the download when on one file system)
 *     together-download.json    what it is: key, format, size, sha256
 *   $RUNNER_TOOL_CACHE/together-model/0.0.0-<...>/any.complete
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tc from '@actions/tool-cache';
import { Feed } from '../archive/feed.js';
import type { ArchiveFormat } from '../archive/format.js';
import { ARCHIVE_EXTENSIONS } from '../archive/naming.js';
import { formatBytes, formatDuration } from '../format.js';
import * as log from '../log.js';
import type { FetchedType } from '../together/checkpoint.js';
import {
  makeDirectories,
  prepareDirectory,
  requireFreeSpace,
  type SpaceNeed,
  tempPathFor,
  trackTempFile,
} from '../transfer/destination.js';
import { explainDiskError, isDiskError } from '../transfer/disk-errors.js';
import { renameWithRetry } from '../transfer/rename.js';
import { hashFile } from '../transfer/verify.js';

export const CACHE_TOOL = 'together-model';
/** A model is the same on every architecture; one fixed arch keeps store and lookup in step. */
export const CACHE_ARCH = 'any';
const META_FILE = 'together-download.json';
/** semver refuses longer versions, and tool-cache would then never find the entry. */
const MAX_VERSION_LENGTH = 256;

export interface CacheKey {
  jobId: string;
  /** undefined for the final model. */
  step?: number;
  checkpointType: FetchedType;
}

export interface CacheMeta {
  jobId: string;
  step: number | null;
  checkpointType: FetchedType;
  format: ArchiveFormat;
  size: number;
  sha256: string;
  /** The archive's file name inside the cache folder. */
  file: string;
  storedAt: string;
}

export interface CachedArchive {
  /** The tool-cache folder of this entry. */
  dir: string;
  /** The archive inside it. */
  archive: string;
  meta: CacheMeta;
  version: string;
}

const JOB_ID = /^ft-[0-9A-Za-z-]+$/;
const TYPES: readonly FetchedType[] = ['merged', 'adapter', 'model'];

/**
 * The key as a semver version tool-cache can find: `0.0.0-<job id>.<final|step-N>.<type>`. Each
 * prerelease identifier holds only [0-9A-Za-z-], none is empty and none is all digits (so none can
 * have a forbidden leading zero), and the three are separated by dots.
 */
export function cacheVersion(key: CacheKey): string {
  if (!JOB_ID.test(key.jobId))
    throw new Error(`cannot cache job id ${JSON.stringify(key.jobId)}: only ft- followed by letters, digits and - is supported`);
  if (key.step !== undefined && !(Number.isSafeInteger(key.step) && key.step > 0)) throw new Error(`cannot cache step ${key.step}`);
  if (!TYPES.includes(key.checkpointType)) throw new Error(`cannot cache checkpoint type ${JSON.stringify(key.checkpointType)}`);
  const version = `0.0.0-${key.jobId}.${key.step === undefined ? 'final' : `step-${key.step}`}.${key.checkpointType}`;
  if (version.length > MAX_VERSION_LENGTH)
    throw new Error(`the job id is too long to be a tool-cache version (${version.length} > ${MAX_VERSION_LENGTH} characters)`);
  return version;
}

/** The inverse of `cacheVersion`; undefined for anything it did not make. */
export function parseCacheVersion(version: string): CacheKey | undefined {
  const match = /^0\.0\.0-(ft-[0-9A-Za-z-]+)\.(?:final|step-([1-9][0-9]*))\.(merged|adapter|model)$/.exec(version);
  if (!match) return undefined;
  const step = match[2] === undefined ? undefined : Number(match[2]);
  if (step !== undefined && !Number.isSafeInteger(step)) return undefined;
  return step === undefined
    ? { jobId: match[1], checkpointType: match[3] as FetchedType }
    : { jobId: match[1], step, checkpointType: match[3] as FetchedType };
}

function describeKey(key: CacheKey): string {
  return `${key.jobId}, ${key.step === undefined ? 'final model' : `step ${key.step}`}, ${key.checkpointType}`;
}

/** The tool cache's root, or undefined (with a warning, once: at the lookup) when not on a runner. */
function cacheRoot({ warn = true } = {}): string | undefined {
  const root = process.env.RUNNER_TOOL_CACHE;
  if (!root && warn) {
    log.warning(
      '`cache: true` needs the runner tool cache, but RUNNER_TOOL_CACHE is not set (this is not a GitHub Actions runner). Downloading without the cache.',
    );
  }
  return root || undefined;
}

/** A record is a few hundred bytes; anything much larger was not written by this action. */
const MAX_META_BYTES = 64 * 1024;

/**
 * The first symbolic link on the way from the cache root down to `target` (the root itself may be
 * one: runners link it), or undefined. An entry reached through a link could lie anywhere on the
 * disk, so such an entry is neither used nor written.
 */
export function linkOnTheWay(root: string, target: string): string | undefined {
  const relative = path.relative(root, target);
  if (relative.startsWith('..') || path.isAbsolute(relative)) return target;
  let current = root;
  for (const part of relative.split(path.sep).filter(Boolean)) {
    current = path.join(current, part);
    if (fs.lstatSync(current, { throwIfNoEntry: false })?.isSymbolicLink()) return current;
  }
  return undefined;
}

/** Why `file` cannot be one of an entry's files (it must be a regular file, not a link, a FIFO or a folder), or undefined. */
function notARegularFile(file: string, maxBytes?: number): string | undefined {
  const stat = fs.lstatSync(file, { throwIfNoEntry: false });
  if (stat === undefined) return `${path.basename(file)} is missing`;
  if (!stat.isFile()) return `${path.basename(file)} is not a regular file`;
  if (maxBytes !== undefined && stat.size > maxBytes) return `${path.basename(file)} is ${stat.size} bytes, more than a record holds`;
  return undefined;
}

function readMeta(dir: string, key: CacheKey): CacheMeta | string {
  let meta: Partial<CacheMeta>;
  const odd = notARegularFile(path.join(dir, META_FILE), MAX_META_BYTES);
  if (odd) return odd;
  try {
    meta = JSON.parse(fs.readFileSync(path.join(dir, META_FILE), 'utf8')) as Partial<CacheMeta>;
  } catch (error) {
    return `its ${META_FILE} cannot be read (${(error as Error).message})`;
  }
  const sameKey = meta.jobId === key.jobId && (meta.step ?? undefined) === key.step && meta.checkpointType === key.checkpointType;
  if (!sameKey) return `it belongs to ${meta.jobId}/${meta.step ?? 'final'}/${meta.checkpointType}`;
  if (meta.format !== 'zstd' && meta.format !== 'gzip') return 'its format is unknown';
  if (typeof meta.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(meta.sha256)) return 'it has no sha256';
  if (!Number.isSafeInteger(meta.size) || (meta.size as number) < 0) return 'it has no size';
  if (typeof meta.file !== 'string' || path.basename(meta.file) !== meta.file || meta.file.startsWith('.')) return 'it names no archive';
  return meta as CacheMeta;
}

/** Removes an entry: the marker first, so that nobody finds a half-removed folder. */
async function evict(dir: string): Promise<void> {
  await fs.promises.rm(`${dir}.complete`, { force: true });
  await fs.promises.rm(dir, { recursive: true, force: true });
}

/** A second check of a cached archive, given its bytes in the same read that checks its sha256. */
export type CacheInspector = (archive: AsyncIterable<Buffer>, format: ArchiveFormat) => Promise<void>;

/** The sha256 of `file`, and what `inspect` made of the same bytes (its error, if it failed). */
async function hashAndInspect(
  file: string,
  format: ArchiveFormat,
  inspect?: CacheInspector,
): Promise<{ sha256: string; failure?: unknown }> {
  if (!inspect) return { sha256: (await hashFile(file)).sha256 };
  const hash = createHash('sha256');
  const feed = new Feed();
  const inspected = inspect(feed, format).then(
    () => ({ failure: undefined as unknown }),
    (failure: unknown) => ({ failure }),
  );
  try {
    for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) {
      hash.update(chunk as Buffer);
      await feed.push(chunk as Buffer);
    }
  } finally {
    feed.end();
  }
  return { sha256: hash.digest('hex'), ...(await inspected) };
}

/**
 * The cached archive for `key`, or undefined on a miss. A hit has its sha256 checked against what
 * was stored (unless `verify` is false, for a dry run); an entry that fails any check counts as a
 * miss, with a warning, and is removed (a dry run leaves it). `inspect` reads the archive in the
 * same pass as the sha256; when it fails on an archive whose sha256 is right, its error is thrown.
 */
export async function findCachedArchive(
  key: CacheKey,
  { verify = true, inspect }: { verify?: boolean; inspect?: CacheInspector } = {},
): Promise<CachedArchive | undefined> {
  if (!cacheRoot()) return undefined;
  let version: string;
  try {
    version = cacheVersion(key);
  } catch (error) {
    log.warning(`Not using the tool cache: ${(error as Error).message}.`);
    return undefined;
  }
  const dir = tc.find(CACHE_TOOL, version, CACHE_ARCH);
  if (!dir) {
    log.info(`Cache miss: ${describeKey(key)} is not in the runner's tool cache (${CACHE_TOOL} ${version})`);
    return undefined;
  }
  const link = linkOnTheWay(cacheRoot({ warn: false }) as string, dir);
  if (link !== undefined) {
    log.warning(
      `Not using the tool-cache entry ${dir}: ${link} is a symbolic link, so the entry could be anywhere on the disk. Remove the link; downloading instead.`,
    );
    return undefined;
  }
  const reject = async (why: string) => {
    if (!verify) {
      // A dry run writes nothing, not even a removal.
      log.warning(`The tool-cache entry ${dir} is unusable: ${why}. A run without \`dry-run\` removes it and downloads again.`);
      return undefined;
    }
    log.warning(`The tool-cache entry ${dir} is unusable: ${why}. It was removed; downloading again.`);
    await evict(dir);
    return undefined;
  };
  const meta = readMeta(dir, key);
  if (typeof meta === 'string') return reject(meta);
  const archive = path.join(dir, meta.file);
  const oddArchive = notARegularFile(archive);
  if (oddArchive) return reject(oddArchive);
  const size = fs.statSync(archive, { throwIfNoEntry: false })?.size;
  if (size !== meta.size) return reject(size === undefined ? 'its archive is missing' : `its archive has ${size} bytes, not ${meta.size}`);
  if (verify) {
    const started = Date.now();
    const actual = await hashAndInspect(archive, meta.format, inspect);
    if (actual.sha256 !== meta.sha256) return reject(`its archive's sha256 is ${actual.sha256}, not the ${meta.sha256} stored with it`);
    if (actual.failure !== undefined) throw actual.failure;
    log.info(
      `Cache hit: ${describeKey(key)}, ${formatBytes(meta.size)}, sha256 ${meta.sha256} checked in ${formatDuration((Date.now() - started) / 1000)}`,
    );
  } else {
    log.info(`Cache hit: ${describeKey(key)}, ${formatBytes(meta.size)}, sha256 ${meta.sha256} (not re-checked in a dry run)`);
  }
  log.info(`Cached at ${archive}`);
  return { dir, archive, meta, version };
}

/**
 * A hard link when both paths are on one file system (no second copy of many GB), else a copy
 * (after checking that it fits).
 */
async function linkOrCopy(source: string, dest: string, size: number, need?: SpaceNeed): Promise<'hard link' | 'copy'> {
  try {
    await fs.promises.link(source, dest);
    return 'hard link';
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOENT') throw error;
  }
  await requireFreeSpace(path.dirname(dest), size, need);
  await fs.promises.copyFile(source, dest);
  return 'copy';
}

/**
 * Puts the cached archive at `target` (through a temp file beside it, as a download would), and
 * returns what a download would: how long it took, and the archive's size and sha256.
 */
export async function restoreFromCache(
  cached: CachedArchive,
  target: string,
): Promise<{ download: { elapsedMs: number }; verified: { size: number; sha256: string } }> {
  const started = Date.now();
  const directory = await prepareDirectory(path.dirname(target));
  const temp = tempPathFor(target);
  const removeTemp = trackTempFile(temp);
  let placed = false;
  try {
    const how = await linkOrCopy(cached.archive, temp, cached.meta.size).catch(async (error: unknown) => {
      throw isDiskError(error)
        ? await explainDiskError(error, 'path', path.dirname(target), 'copying the archive from the tool cache')
        : error;
    });
    await renameWithRetry(temp, target);
    placed = true;
    log.info(`Saved ${target} from the tool cache (${how}); nothing was downloaded`);
    return { download: { elapsedMs: Date.now() - started }, verified: { size: cached.meta.size, sha256: cached.meta.sha256 } };
  } finally {
    await removeTemp();
    if (!placed) await directory.removeIfCreated();
  }
}

/**
 * Stores a verified download in the tool cache. Failing to store is a warning, never a failure:
 * the download itself is good.
 */
export async function storeInCache(
  key: CacheKey,
  archive: string,
  facts: { format: ArchiveFormat; size: number; sha256: string },
): Promise<void> {
  const root = cacheRoot({ warn: false });
  if (!root) return;
  let removeStaging: (() => Promise<void>) | undefined;
  try {
    const version = cacheVersion(key);
    const versionDir = path.join(root, CACHE_TOOL, version);
    const dir = path.join(versionDir, CACHE_ARCH);
    const link = linkOnTheWay(root, dir);
    if (link !== undefined) {
      log.warning(
        `Not storing the archive in the tool cache: ${link} is a symbolic link, so the entry would be written wherever it points. Remove the link. The download itself is fine.`,
      );
      return;
    }
    if (fs.existsSync(`${dir}.complete`)) {
      log.info(`Already in the tool cache: ${dir}`);
      return;
    }
    await makeDirectories(versionDir);
    const staging = path.join(versionDir, `.${CACHE_ARCH}.${randomBytes(6).toString('hex')}.partial`);
    removeStaging = trackTempFile(staging);
    await fs.promises.mkdir(staging);
    const file = `archive${ARCHIVE_EXTENSIONS[facts.format]}`;
    const how = await linkOrCopy(archive, path.join(staging, file), facts.size, {
      what: 'a copy of the archive needs',
      advice: 'set `cache: false`',
    });
    const meta: CacheMeta = {
      jobId: key.jobId,
      step: key.step ?? null,
      checkpointType: key.checkpointType,
      format: facts.format,
      size: facts.size,
      sha256: facts.sha256,
      file,
      storedAt: new Date().toISOString(),
    };
    await fs.promises.writeFile(path.join(staging, META_FILE), `${JSON.stringify(meta, null, 2)}\n`);
    // A folder without its marker is a leftover of an interrupted store: replace it.
    await fs.promises.rm(dir, { recursive: true, force: true });
    await renameWithRetry(staging, dir);
    await fs.promises.writeFile(`${dir}.complete`, '');
    log.info(`Stored in the tool cache (${how}): ${dir}`);
  } catch (error) {
    const why = isDiskError(error)
      ? (await explainDiskError(error, 'cache', root, 'storing the archive in the tool cache')).message
      : (error as Error).message;
    log.warning(`Could not store the archive in the tool cache: ${why} The download itself is fine; the next run downloads it again.`);
  } finally {
    await removeStaging?.();
  }
}
