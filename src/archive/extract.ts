/**
 * Unpacking a downloaded archive safely: every entry is listed and checked first (no absolute
 * paths, no `..`, no links leading outside the folder, no devices), and only then is the archive
 * extracted, with tool-cache's tar support, into a hidden folder that is moved into place at the end.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createGunzip } from 'node:zlib';
import * as tc from '@actions/tool-cache';
import { ActionError, InputError } from '../errors.js';
import { formatBytes, formatDuration } from '../format.js';
import * as log from '../log.js';
import { prepareDirectory, requireFreeSpace, type SpaceNeed, tempPathFor, trackTempFile } from '../transfer/destination.js';
import { type ArchiveListing, EntryValidator, type ExtractedFile, UnsafeArchiveError } from './entries.js';
import type { ArchiveFormat } from './format.js';
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

/** `model.tar.zst` -> `model`; a name without an archive suffix gets `-extracted` appended. */
export function folderNameFor(archiveName: string): string {
  const stripped = archiveName.replace(ARCHIVE_SUFFIX, '');
  return stripped === archiveName || stripped === '' ? `${archiveName}-extracted` : stripped;
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

interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: NodeJS.ErrnoException;
}

const ZSTD_MISSING =
  'Extracting a .tar.zst needs the `zstd` program, and it is not on PATH. Install it first (e.g. `sudo apt-get install -y zstd` or `brew install zstd`), or set `extract: false` and unpack the archive yourself.';

/** Runs `consume` over the archive's decompressed tar stream. */
async function withTarStream<T>(file: string, format: ArchiveFormat, consume: (tar: AsyncIterable<Uint8Array>) => Promise<T>): Promise<T> {
  if (format === 'gzip') {
    const input = fs.createReadStream(file);
    const gunzip = createGunzip();
    input.on('error', (error) => gunzip.destroy(error));
    input.pipe(gunzip);
    try {
      return await consume(gunzip);
    } catch (error) {
      if (error instanceof ActionError || error instanceof TarFormatError) throw error;
      throw new TarFormatError(`gzip could not decompress it (${(error as Error).message})`);
    } finally {
      input.destroy();
      gunzip.destroy();
    }
  }

  const child = spawn('zstd', ['-d', '-c', '-q', '--long=31', '--', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  // Read to its end, zstd's exit status counts; stopped early (at the end-of-archive blocks, or at
  // a rejected entry), zstd is stopped too and its status does not matter.
  const stop = async (): Promise<{ exit: ExitStatus; stopped: boolean }> => {
    const drained = child.stdout.readableEnded;
    if (!drained) {
      child.stdout.destroy();
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill('SIGTERM');
    }
    return { exit: await exited, stopped: !drained };
  };
  const failure = ({ exit, stopped }: { exit: ExitStatus; stopped: boolean }): Error | undefined => {
    if (exit.error)
      return exit.error.code === 'ENOENT'
        ? new ActionError(ZSTD_MISSING)
        : new ActionError(
            `Could not run zstd (${exit.error.message}); check its installation, or set \`extract: false\` and unpack the archive yourself.`,
          );
    if (!stopped && exit.code !== 0)
      return new TarFormatError(`zstd could not decompress it (${stderr.trim().replace(/\s+/g, ' ') || `exit code ${exit.code}`})`);
    return undefined;
  };

  let result: T;
  try {
    result = await consume(child.stdout);
  } catch (error) {
    const problem = failure(await stop());
    // A broken zstd stream shows up as a truncated tar: zstd's own message is the better one.
    throw problem && !(error instanceof UnsafeArchiveError) ? problem : error;
  }
  const problem = failure(await stop());
  if (problem) throw problem;
  return result;
}

/** Lists and checks every entry of the archive without writing anything. */
export async function listArchive(file: string, format: ArchiveFormat): Promise<ArchiveListing> {
  return withTarStream(file, format, async (tar) => {
    const validator = new EntryValidator();
    for await (const entry of readTarEntries(tar)) validator.add(entry);
    return validator.result();
  });
}

// ---------------------------------------------------------------------------------------------
// Extracting

async function capture(command: string, args: string[]): Promise<{ code: number | null; stdout: string; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.once('error', (error) => resolve({ code: null, stdout, error }));
    child.once('close', (code) => resolve({ code, stdout }));
  });
}

/** Whether the `tar` on PATH is GNU tar, and whether it knows `--zstd` (GNU tar 1.31 and later). */
export async function tarFlavour(): Promise<{ gnu: boolean; zstd: boolean; version: string }> {
  const { stdout, error } = await capture('tar', ['--version']);
  if (error)
    throw new ActionError(
      `Extracting needs the \`tar\` program, and it could not be run: ${error.message}. Install tar, or set \`extract: false\` and unpack the archive yourself.`,
    );
  const firstLine = stdout.split('\n')[0].trim();
  const gnu = /GNU tar/i.test(firstLine);
  const match = /(\d+)\.(\d+)/.exec(firstLine);
  const zstd = gnu && match !== null && (Number(match[1]) > 1 || (Number(match[1]) === 1 && Number(match[2]) >= 31));
  return { gnu, zstd, version: firstLine || 'unknown tar' };
}

/** Extracting: the files are checked against the free space before tar writes any of them. */
const FILES_TO_EXTRACT: SpaceNeed = {
  what: 'the extracted files need',
  advice: 'choose another `extract-path` (or set `keep-archive: false` and a `path` on a larger disk)',
};

/** Puts the finished folder at `dir`, replacing what was there only now that it is complete. */
async function moveIntoPlace(staging: string, dir: string): Promise<void> {
  const old = tempPathFor(dir, 'old');
  const removeOld = trackTempFile(old);
  let moved = false;
  try {
    await fs.promises.rename(dir, old).then(
      () => (moved = true),
      (error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      },
    );
    await fs.promises.rename(staging, dir);
  } catch (error) {
    if (moved) await fs.promises.rename(old, dir).catch(() => undefined);
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
export async function extractArchive(archive: string, format: ArchiveFormat, dir: string): Promise<Extracted> {
  const started = Date.now();
  let listing: ArchiveListing;
  try {
    listing = await listArchive(archive, format);
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
    `Checked ${listing.entries} entries: no absolute paths, no "..", no links leading outside, no devices. ${listing.files.length} files, ${formatBytes(listing.totalBytes)} in all.`,
  );

  const parent = await prepareDirectory(path.dirname(dir), 'extract-path');
  const staging = tempPathFor(dir);
  const removeStaging = trackTempFile(staging);
  const tarFile = tempPathFor(dir, 'tar.partial');
  const removeTarFile = trackTempFile(tarFile);
  let placed = false;
  try {
    await requireFreeSpace(path.dirname(dir), listing.totalBytes, FILES_TO_EXTRACT);
    await fs.promises.mkdir(staging);
    const tar = await tarFlavour();
    // Ownership and permission bits from the archive are not restored: the files belong to the runner's user.
    const keepNoOwner = tar.gnu ? ['--no-same-owner', '--no-same-permissions'] : [];
    try {
      if (format === 'gzip') {
        await tc.extractTar(archive, staging, ['x', '-z', ...keepNoOwner]);
      } else if (tar.zstd) {
        await tc.extractTar(archive, staging, ['x', '--zstd', ...keepNoOwner]);
      } else {
        log.info(`${tar.version} cannot read zstd itself: decompressing with zstd first`);
        await decompressZstd(archive, tarFile);
        await tc.extractTar(tarFile, staging, ['x', ...keepNoOwner]);
      }
    } catch (error) {
      if (error instanceof ActionError) throw error;
      throw new ActionError(
        `tar could not extract the archive (${(error as Error).message}). Nothing was extracted; the archive is still at ${archive}.`,
      );
    }
    await moveIntoPlace(staging, dir);
    placed = true;
  } finally {
    await removeTarFile();
    await removeStaging();
    if (!placed) await parent.removeIfCreated();
  }
  const modelDir = listing.topLevelDir === undefined ? dir : path.join(dir, listing.topLevelDir);
  const elapsedMs = Date.now() - started;
  log.info(`Extracted into ${dir} in ${formatDuration(elapsedMs / 1000)}`);
  if (listing.topLevelDir !== undefined) log.info(`The archive holds one folder, ${listing.topLevelDir}: model-dir is ${modelDir}`);
  return { dir, modelDir, listing, elapsedMs };
}

async function decompressZstd(archive: string, tarFile: string): Promise<void> {
  const child = spawn('zstd', ['-d', '-q', '-f', '--long=31', '-o', tarFile, '--', archive], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exit = await new Promise<ExitStatus>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  if (exit.error)
    throw new ActionError(
      exit.error.code === 'ENOENT'
        ? ZSTD_MISSING
        : `Could not run zstd (${exit.error.message}); check its installation, or set \`extract: false\` and unpack the archive yourself.`,
    );
  if (exit.code !== 0)
    throw new ActionError(
      `zstd could not decompress the archive (${stderr.trim() || `exit code ${exit.code}`}). Nothing was extracted; the archive is still at ${archive}. Run the job again; if it persists, report it to Together with the job id.`,
    );
}

/** The largest files, biggest first (ties by name), for the job summary. */
export function largestFiles(files: readonly ExtractedFile[], count = LARGEST_FILES): ExtractedFile[] {
  return [...files].sort((a, b) => b.size - a.size || a.name.localeCompare(b.name)).slice(0, count);
}
