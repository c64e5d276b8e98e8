/**
 * Unpacking a downloaded archive safely: every entry is listed and checked first (no absolute
 * paths, no `..`, no links leading outside the folder, no devices, no control characters), the
 * free space is checked in the file system's blocks, and only then is the archive decompressed
 * and streamed into `tar -x -f -` (no temp tar on disk, the same archives read on every platform),
 * into a hidden folder that is moved into place at the end.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { ActionError, InputError } from '../errors.js';
import { formatBytes, formatDuration } from '../format.js';
import * as log from '../log.js';
import { prepareDirectory, requireFreeSpace, tempPathFor, trackTempFile } from '../transfer/destination.js';
import { explainDiskError, freeSpace, isDiskError } from '../transfer/disk-errors.js';
import { renameWithRetry } from '../transfer/rename.js';
import { nodeZstd, withDecompressed, type ZstdDecoder, ZstdMissingError } from './decompress.js';
import { type ArchiveListing, EntryValidator, type ExtractedFile, UnsafeArchiveError } from './entries.js';
import type { ArchiveFormat } from './format.js';
import { windowsSafe } from './naming.js';
import { readTarEntries, TarFormatError } from './tar.js';

export type { ArchiveListing, ExtractedFile };

/** How many of the largest files the job summary lists. */
export const LARGEST_FILES = 20;

export interface Extracted {
  /** The extraction folder. */
  dir: string;
  /** Where the model is: inside the one top-level folder when there is one, else `dir`. */
  modelDir: string;
  listing: ArchiveListing;
  elapsedMs: number;
}
// ---------------------------------------------------------------------------------------------
// Where to extract

const ARCHIVE_SUFFIX = /\.(tar\.zst|tar\.zstd|tzst|tar\.gz|tgz)$/i;

/** The longest default extraction folder name, so that the model's paths stay short enough for Windows. */
export const MAX_FOLDER_NAME = 128;

/**
 * `model.tar.zst` -> `model`; a name without an archive suffix gets `-extracted` appended. No
 * trailing dots or spaces (Windows would strip them), no device name, at most MAX_FOLDER_NAME
 * characters.
 */
export function folderNameFor(archiveName: string): string {
  const stripped = archiveName.replace(ARCHIVE_SUFFIX, '');
  const name = stripped === archiveName || stripped === '' ? `${archiveName}-extracted` : stripped;
  return windowsSafe(name.slice(0, MAX_FOLDER_NAME)) || 'extracted';
}

/** The real path of `p`, following symlinks of the part that exists. */
function realPathOf(p: string): string {
  const rest: string[] = [];
  let current = path.resolve(p);
  for (;;) {
    try {
      return path.join(fs.realpathSync.native(current), ...rest.reverse());
    } catch {
      const parent = path.dirname(current);
      if (parent === current) return path.resolve(p);
      rest.push(path.basename(current));
      current = parent;
    }
  }
}

function isInside(child: string, parent: string): boolean {
  const relative = path.relative(parent, child);
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/**
 * The extraction folder: `extract-path` (relative to the workspace), or beside the archive a folder
 * named after it. The folder is replaced as a whole, so it must not hold the workspace, the archive
 * or the runner's own folders.
 */
export function resolveExtractDir(input: string, archive: string, workspace: string, env: NodeJS.ProcessEnv = process.env): string {
  if (input.includes('\0')) throw new InputError('extract-path', 'contains a NUL character.');
  const chosen = input === '' ? path.join(path.dirname(archive), folderNameFor(path.basename(archive))) : path.resolve(workspace, input);
  const dir = realPathOf(chosen);
  const stat = fs.statSync(dir, { throwIfNoEntry: false });
  if (stat && !stat.isDirectory()) {
    throw new InputError('extract-path', `${dir} is a file, not a folder. Give a folder to extract into.`);
  }
  const guarded: Array<[string | undefined, string]> = [
    [workspace, 'the workspace'],
    [archive, 'the archive itself'],
    [env.RUNNER_TOOL_CACHE, "the runner's tool cache"],
    [env.RUNNER_TEMP, "the runner's temp folder"],
  ];
  for (const [guardedPath, what] of guarded) {
    if (guardedPath && isInside(realPathOf(guardedPath), dir)) {
      throw new InputError(
        'extract-path',
        `${dir} holds ${what}. The extraction folder is replaced as a whole, so give a folder of its own, e.g. \`models/my-model\`.`,
      );
    }
  }
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Listing

const EXTRACTING = { need: 'Extracting the archive', advice: 'set `extract: false` and unpack the archive yourself' };

export interface ExtractOptions {
  /** Force a zstd decoder (tests). By default the `zstd` program where it is on PATH, else node:zlib's. */
  zstd?: ZstdDecoder;
}

/** Lists and checks every entry of the archive without writing anything. */
export async function listArchive(file: string, format: ArchiveFormat, options: ExtractOptions = {}): Promise<ArchiveListing> {
  const source = fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
  return withDecompressed(
    source,
    format,
    async (tar) => {
      const validator = new EntryValidator();
      for await (const entry of readTarEntries(tar)) validator.add(entry);
      return validator.result();
    },
    { ...EXTRACTING, zstd: options.zstd },
  ).catch((error: unknown) => {
    if (error instanceof Error && error.name === 'DecompressError') throw new TarFormatError(error.message);
    throw error;
  });
}

// ---------------------------------------------------------------------------------------------
// Space

/**
 * What the extracted files take on a file system of `blockSize`-byte blocks: each file its size
 * rounded up to whole blocks, each folder and symbolic link a block. 12,000 one-byte files take
 * 12,000 blocks, not 12,000 bytes.
 */
export function bytesOnDisk(listing: Pick<ArchiveListing, 'files' | 'folders' | 'symlinks'>, blockSize: number): number {
  const block = blockSize > 0 ? blockSize : 4096;
  let bytes = (listing.folders + listing.symlinks + 1) * block; // +1: the extraction folder itself.
  for (const file of listing.files) bytes += Math.ceil(file.size / block) * block;
  return bytes;
}

/** Fails before tar writes anything when the files, or their inodes, cannot fit into `dir`'s file system. */
async function requireExtractionSpace(dir: string, listing: ArchiveListing): Promise<void> {
  const stats = await fs.promises.statfs(dir).catch(() => undefined);
  if (!stats) return; // No statfs here: tar itself will tell.
  const bytes = bytesOnDisk(listing, stats.bsize);
  await requireFreeSpace(dir, bytes, {
    what: `the ${listing.files.length} extracted files and ${listing.folders} folders need, counted in whole ${stats.bsize}-byte blocks of this file system,`,
    advice: 'choose another `extract-path` (or set `keep-archive: false` and a `path` on a larger disk)',
  });
  const inodes = listing.files.length + listing.folders + listing.symlinks + 1;
  // Some file systems (btrfs, and statfs on Windows) report no inode count: nothing to check there.
  if (stats.files > 0 && stats.ffree < inodes) {
    throw new ActionError(
      `Not enough free inodes in ${dir} (\`extract-path\`): the archive makes ${inodes} files, folders and links, but the file system has room for ${stats.ffree} more. Free some up, or choose another \`extract-path\`.`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Extracting

interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: NodeJS.ErrnoException;
}

function exitOf(child: import('node:child_process').ChildProcess): Promise<ExitStatus> {
  return new Promise((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
}

async function capture(command: string, args: string[]): Promise<{ code: number | null; stdout: string; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.once('error', (error) => resolve({ code: null, stdout, error }));
    child.once('close', (code) => resolve({ code, stdout }));
  });
}

/** Whether the `tar` on PATH is GNU tar (else bsdtar, as on macOS and Windows), and its version line. */
export async function tarFlavour(): Promise<{ gnu: boolean; version: string }> {
  const { stdout, error } = await capture('tar', ['--version']);
  if (error)
    throw new ActionError(
      `Extracting needs the \`tar\` program, and it could not be run: ${error.message}. Install tar, or set \`extract: false\` and unpack the archive yourself.`,
    );
  const firstLine = stdout.split('\n')[0].trim();
  return { gnu: /GNU tar/i.test(firstLine), version: firstLine || 'unknown tar' };
}

/** The system error texts tar prints (GNU tar and bsdtar alike), and the codes they stand for. */
const DISK_ERROR_TEXTS: Array<[RegExp, string]> = [
  [/No space left on device/i, 'ENOSPC'],
  [/Dis[ck] quota exceeded/i, 'EDQUOT'],
  [/File too large/i, 'EFBIG'],
  [/Read-only file system/i, 'EROFS'],
  [/Permission denied/i, 'EACCES'],
];

/** The disk fault tar's messages report, if any: tar says what the system said, in words. */
export function diskErrorIn(stderr: string): NodeJS.ErrnoException | undefined {
  for (const [text, code] of DISK_ERROR_TEXTS) {
    const line = stderr.split('\n').find((l) => text.test(l));
    if (line) return Object.assign(new Error(line.trim()), { code });
  }
  return undefined;
}

/**
 * GNU tar reports a write cut short without the system's reason ("Wrote only 6144 of 10240
 * bytes"): a full disk, or a file size limit. Which one the free space left tells.
 */
async function shortWriteIn(stderr: string, dir: string): Promise<NodeJS.ErrnoException | undefined> {
  const line = stderr.split('\n').find((l) => /Wrote only \d+ of \d+ bytes/.test(l));
  if (!line) return undefined;
  const free = await freeSpace(dir);
  return Object.assign(new Error(line.trim()), { code: free !== undefined && free < 1024 * 1024 ? 'ENOSPC' : 'EFBIG' });
}

/** What tar wrote to stderr, kept short. */
function stderrOf(child: import('node:child_process').ChildProcess): () => string {
  let text = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (text.length < 16_384) text += d;
  });
  return () => text.trim();
}

/**
 * Decompresses `archive` into `tar -x -f -` running in `staging`: the `zstd` program's output goes
 * straight into tar; without the program (or for gzip), node:zlib decompresses and this process
 * feeds tar.
 */
async function unpack(archive: string, format: ArchiveFormat, staging: string, options: ExtractOptions): Promise<void> {
  const flavour = await tarFlavour();
  // Ownership and permission bits from the archive are not restored: the files belong to the runner's user.
  const own = flavour.gnu ? ['--no-same-owner', '--no-same-permissions', '--warning=no-unknown-keyword'] : [];
  // GNU tar on Windows (Git's) reads `C:\\x` as a remote host; `/` separators it takes as a path.
  const into = process.platform === 'win32' && flavour.gnu ? staging.replace(/\\/g, '/') : staging;
  const tarArgs = ['-x', '-f', '-', '-C', into, ...own];

  let zstd: import('node:child_process').ChildProcess | undefined;
  if (format === 'zstd' && options.zstd !== 'node') {
    zstd = spawn('zstd', ['-d', '-c', '-q', '--long=31', '--', archive], { stdio: ['ignore', 'pipe', 'pipe'] });
    const started = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      zstd?.once('spawn', () => resolve(undefined));
      zstd?.once('error', (error) => resolve(error));
    });
    if (started) {
      zstd = undefined;
      if (started.code !== 'ENOENT' || options.zstd === 'program' || !nodeZstd()) {
        throw started.code === 'ENOENT'
          ? new ZstdMissingError(EXTRACTING.need, EXTRACTING.advice)
          : new ActionError(`Could not run zstd (${started.message}); check its installation, or ${EXTRACTING.advice}.`);
      }
      log.info('The `zstd` program is not on PATH: decompressing with node:zlib');
    }
  }

  // Without the program (or for gzip), node:zlib decompresses and this process feeds tar.
  const decoder = zstd ? undefined : format === 'gzip' ? createGunzip({ chunkSize: 256 * 1024 }) : nodeZstd()?.({ chunkSize: 256 * 1024 });
  if (!zstd && !decoder) throw new ZstdMissingError(EXTRACTING.need, EXTRACTING.advice);

  const tar = spawn('tar', tarArgs, { stdio: [zstd?.stdout ?? 'pipe', 'ignore', 'pipe'] });
  // tar has its own end of the pipe now.
  zstd?.stdout?.destroy();
  const tarStderr = stderrOf(tar);
  const zstdStderr = zstd ? stderrOf(zstd) : () => '';
  const tarExit = exitOf(tar);
  const zstdExit = zstd ? exitOf(zstd) : Promise.resolve<ExitStatus>({ code: 0, signal: null });
  let feedError: Error | undefined;
  if (decoder && tar.stdin) {
    await pipeline(fs.createReadStream(archive, { highWaterMark: 1024 * 1024 }), decoder, tar.stdin).catch(
      (error: NodeJS.ErrnoException) => {
        // tar stopping early breaks the pipe: its own exit status says why.
        if (error.code !== 'EPIPE' && error.code !== 'ERR_STREAM_PREMATURE_CLOSE') feedError = error;
      },
    );
  }
  const [t, z] = await Promise.all([tarExit, zstdExit]);
  if (t.error) throw new ActionError(`Could not run tar (${t.error.message}); check its installation, or ${EXTRACTING.advice}.`);
  const disk = t.code !== 0 ? (diskErrorIn(tarStderr()) ?? (await shortWriteIn(tarStderr(), staging))) : undefined;
  if (disk) throw await explainDiskError(disk, 'extract-path', path.dirname(staging), 'extracting the archive');
  // tar may stop reading at the end-of-archive blocks: zstd then dies writing what follows them.
  const zstdFailed = z.error !== undefined || (z.code !== 0 && z.signal !== 'SIGPIPE' && !/Broken pipe/i.test(zstdStderr()));
  if (zstdFailed || feedError) {
    const why = feedError?.message ?? z.error?.message ?? (zstdStderr() || `exit code ${z.code ?? z.signal}`);
    throw new ActionError(
      `The archive could not be decompressed while it was extracted (${log.escapeControls(why)}). Nothing was extracted; the archive is still at ${archive}. Run the job again; if it persists, report it to Together with the job id.`,
    );
  }
  if (t.code !== 0) {
    const said = tarStderr().split('\n').slice(-3).join(' ');
    throw new ActionError(
      `tar could not extract the archive (${log.escapeControls(said) || `exit code ${t.code ?? t.signal}`}). Nothing was extracted; the archive is still at ${archive}.`,
    );
  }
}

/** Puts the finished folder at `dir`, replacing what was there only now that it is complete. */
async function moveIntoPlace(staging: string, dir: string): Promise<void> {
  const old = tempPathFor(dir, 'old');
  const removeOld = trackTempFile(old);
  let moved = false;
  try {
    await renameWithRetry(dir, old).then(
      () => (moved = true),
      (error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      },
    );
    await renameWithRetry(staging, dir);
  } catch (error) {
    if (moved) await renameWithRetry(old, dir).catch(() => undefined);
    throw error;
  } finally {
    await removeOld();
  }
}

/**
 * Checks every entry, then extracts `archive` into `dir`: into a hidden folder beside it first,
 * moved into place when complete, so a rejected or failed extraction leaves no files behind and
 * an older folder at `dir` untouched.
 */
export async function extractArchive(
  archive: string,
  format: ArchiveFormat,
  dir: string,
  options: ExtractOptions = {},
): Promise<Extracted> {
  const started = Date.now();
  let listing: ArchiveListing;
  try {
    listing = await listArchive(archive, format, options);
  } catch (error) {
    const nothing = `Nothing was extracted; the archive is still at ${archive}.`;
    if (error instanceof UnsafeArchiveError) {
      throw new ActionError(
        `The archive is not safe to unpack: ${error.message}. ${nothing} Report this to Together with the job id; do not unpack it by hand.`,
      );
    }
    if (error instanceof TarFormatError)
      throw new ActionError(`The archive could not be read as a tar archive: ${error.message}. ${nothing}`);
    throw error;
  }
  log.info(
    `Checked ${listing.entries} entries: no absolute paths, no "..", no links leading outside, no devices, no control characters. ${listing.files.length} files, ${formatBytes(listing.totalBytes)} in all.`,
  );

  const parentDir = path.dirname(dir);
  const parent = await prepareDirectory(parentDir, 'extract-path');
  const staging = tempPathFor(dir);
  const removeStaging = trackTempFile(staging);
  let placed = false;
  try {
    await requireExtractionSpace(parentDir, listing);
    await fs.promises.mkdir(staging);
    await unpack(archive, format, staging, options);
    await moveIntoPlace(staging, dir);
    placed = true;
  } catch (error) {
    if (isDiskError(error)) throw await explainDiskError(error, 'extract-path', parentDir, 'extracting the archive');
    throw error;
  } finally {
    await removeStaging();
    if (!placed) await parent.removeIfCreated();
  }
  const modelDir = listing.topLevelDir === undefined ? dir : path.join(dir, listing.topLevelDir);
  const elapsedMs = Date.now() - started;
  log.info(`Extracted into ${dir} in ${formatDuration(elapsedMs / 1000)}`);
  if (listing.topLevelDir !== undefined) log.info(`The archive holds one folder, ${listing.topLevelDir}: model-dir is ${modelDir}`);
  return { dir, modelDir, listing, elapsedMs };
}

/** The largest files, biggest first (ties by name), for the job summary. */
export function largestFiles(files: readonly ExtractedFile[], count = LARGEST_FILES): ExtractedFile[] {
  return [...files].sort((a, b) => b.size - a.size || a.name.localeCompare(b.name)).slice(0, count);
}
