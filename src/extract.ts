/**
 * Unpacking a downloaded archive safely: every entry is listed and checked first (no absolute
 * paths, no `..`, no links leading outside the folder, no devices), and only then is the archive
 * extracted, with tool-cache's tar support, into a hidden folder that is moved into place at the end.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createGunzip } from 'node:zlib';
import * as core from '@actions/core';
import * as tc from '@actions/tool-cache';
import type { ArchiveFormat } from './archive-format.js';
import { prepareDirectory, requireFreeSpace, type SpaceNeed, tempPathFor, trackTempFile } from './destination.js';
import { ActionError, InputError } from './errors.js';
import { formatBytes, formatDuration } from './format.js';
import { readTarEntries, type TarEntry, TarFormatError } from './tar.js';

/** How many of the largest files the job summary lists. */
export const LARGEST_FILES = 20;

export interface ExtractedFile {
  /** Path inside the extraction folder, `/`-separated. */
  name: string;
  size: number;
}

export interface ArchiveListing {
  /** Every entry, metadata headers not counted. */
  entries: number;
  /** The regular files, in archive order. */
  files: ExtractedFile[];
  totalBytes: number;
  /** The one top-level folder, when the archive holds exactly one thing and it is a folder. */
  topLevelDir?: string;
}

export interface Extracted {
  /** The extraction folder. */
  dir: string;
  /** Where the model is: inside the one top-level folder when there is one, else `dir`. */
  modelDir: string;
  listing: ArchiveListing;
  elapsedMs: number;
}

/** An archive entry that could write outside the folder, or something no model archive holds. */
export class UnsafeArchiveError extends ActionError {
  constructor(
    readonly entry: string,
    reason: string,
  ) {
    super(`entry ${shown(entry)} ${reason}`);
    this.name = 'UnsafeArchiveError';
  }
}

function shown(name: string): string {
  return JSON.stringify(name.length > 120 ? `${name.slice(0, 120)}…` : name);
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
// Checking the entries

/** Splits a `/`-separated archive path into its components, dropping empty ones and `.`. */
function components(name: string): string[] {
  return name.split('/').filter((c) => c !== '' && c !== '.');
}

/** Case- and normalization-insensitive, so that `A` and `a` collide on any file system. */
function keyOf(parts: readonly string[]): string {
  return parts.join('/').normalize('NFC').toLowerCase();
}

const FILE_TYPES = new Set(['0', '7']);
const TYPE_NAMES: Record<string, string> = {
  '3': 'a character device',
  '4': 'a block device',
  '6': 'a FIFO',
};

/**
 * Checks archive entries one by one, in order, before anything is written. Rejects absolute
 * paths, `..`, backslashes, devices and FIFOs, links whose target leads outside the folder,
 * entries written through an earlier symbolic link, and names that appear twice.
 */
export class EntryValidator {
  private entries = 0;
  private readonly files: ExtractedFile[] = [];
  private readonly kinds = new Map<string, 'file' | 'dir' | 'symlink' | 'hardlink'>();
  private readonly topLevel = new Map<string, boolean>();

  add(entry: TarEntry): void {
    this.entries++;
    const parts = this.checkName(entry.name, entry.name);
    if (entry.paxKeys.some((k) => k.startsWith('GNU.sparse'))) {
      throw new UnsafeArchiveError(entry.name, 'is a sparse file, which this action does not extract');
    }
    const type = entry.type;
    if (TYPE_NAMES[type]) throw new UnsafeArchiveError(entry.name, `is ${TYPE_NAMES[type]}; an archive of model files has none`);
    if (!FILE_TYPES.has(type) && !['1', '2', '5'].includes(type)) {
      throw new UnsafeArchiveError(entry.name, `has the tar entry type ${JSON.stringify(type)}, which this action does not extract`);
    }
    if (!FILE_TYPES.has(type) && entry.size !== 0) {
      throw new UnsafeArchiveError(entry.name, `is a ${type === '5' ? 'directory' : 'link'} that claims ${entry.size} bytes of data`);
    }
    if (FILE_TYPES.has(type) && entry.name.endsWith('/')) {
      // GNU tar extracts such a file as a folder and then reads its data as further entries,
      // which this check would never see.
      throw new UnsafeArchiveError(
        entry.name,
        'is a file whose name ends in "/": tar would make it a folder and read its data as more entries',
      );
    }
    if (parts.length === 0) {
      if (type !== '5') throw new UnsafeArchiveError(entry.name, 'has an empty name');
      return; // `./`: the folder itself.
    }
    // Nothing may be written through a symbolic link the archive made earlier.
    for (let i = 1; i < parts.length; i++) {
      const kind = this.kinds.get(keyOf(parts.slice(0, i)));
      if (kind === 'symlink') {
        throw new UnsafeArchiveError(entry.name, `would be written through the symbolic link ${shown(parts.slice(0, i).join('/'))}`);
      }
      if (kind !== undefined && kind !== 'dir') {
        throw new UnsafeArchiveError(entry.name, `is inside ${shown(parts.slice(0, i).join('/'))}, which is not a folder`);
      }
    }
    const key = keyOf(parts);
    const existing = this.kinds.get(key);
    if (existing !== undefined && !(existing === 'dir' && type === '5')) {
      throw new UnsafeArchiveError(entry.name, 'appears twice in the archive (names are compared ignoring case)');
    }

    if (type === '2') this.checkSymlink(entry, parts);
    if (type === '1') this.checkHardLink(entry);

    for (let i = 1; i < parts.length; i++) this.kinds.set(keyOf(parts.slice(0, i)), 'dir');
    this.kinds.set(key, type === '5' ? 'dir' : type === '2' ? 'symlink' : type === '1' ? 'hardlink' : 'file');
    const isDir = type === '5' || parts.length > 1;
    this.topLevel.set(parts[0], (this.topLevel.get(parts[0]) ?? false) || isDir);
    if (FILE_TYPES.has(type)) this.files.push({ name: parts.join('/'), size: entry.size });
  }

  result(): ArchiveListing {
    const tops = [...this.topLevel.entries()];
    const topLevelDir = tops.length === 1 && tops[0][1] ? tops[0][0] : undefined;
    const totalBytes = this.files.reduce((sum, f) => sum + f.size, 0);
    return { entries: this.entries, files: this.files, totalBytes, topLevelDir };
  }

  /** The name's components; throws for anything that is not a plain relative path. */
  private checkName(name: string, entry: string, what = 'has'): string[] {
    if (name.includes('\0')) throw new UnsafeArchiveError(entry, `${what} a NUL character in its path`);
    if (name.includes('\\')) throw new UnsafeArchiveError(entry, `${what} a backslash in its path, a separator on Windows`);
    if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) throw new UnsafeArchiveError(entry, `${what} an absolute path`);
    const parts = components(name);
    if (parts.includes('..')) throw new UnsafeArchiveError(entry, `${what} a ".." component that leads outside the folder`);
    return parts;
  }

  /**
   * A symlink's target is resolved from the link's own folder. It may climb with leading `..`
   * only as far as the extraction folder, and may not climb again after descending: a later
   * `..` could be walked through another link and end up outside.
   */
  private checkSymlink(entry: TarEntry, parts: string[]): void {
    const target = entry.linkName;
    const outside = `is a symbolic link to ${shown(target)}, outside the folder`;
    if (target === '') throw new UnsafeArchiveError(entry.name, 'is a symbolic link with an empty target');
    // tar would cut the target at the NUL: the link it makes is not the one checked here.
    if (target.includes('\0')) throw new UnsafeArchiveError(entry.name, 'is a symbolic link with a NUL character in its target');
    if (target.includes('\\')) throw new UnsafeArchiveError(entry.name, `is a symbolic link to ${shown(target)}, with a backslash in it`);
    if (target.startsWith('/') || /^[A-Za-z]:/.test(target)) throw new UnsafeArchiveError(entry.name, outside);
    const steps = components(target);
    const climbs = steps.findIndex((s) => s !== '..');
    const up = climbs === -1 ? steps.length : climbs;
    if (steps.slice(up).includes('..')) {
      throw new UnsafeArchiveError(entry.name, `is a symbolic link to ${shown(target)}, which goes back up after going down`);
    }
    if (up > parts.length - 1) throw new UnsafeArchiveError(entry.name, outside);
    // Walking down through an earlier link is fine only because that link was checked the same way.
  }

  /** A hard link names an earlier regular file of the archive, by its path from the folder's root. */
  private checkHardLink(entry: TarEntry): void {
    const target = entry.linkName;
    const parts = this.checkName(target, entry.name, `is a hard link to ${shown(target)}, which has`);
    if (parts.length === 0) throw new UnsafeArchiveError(entry.name, 'is a hard link with an empty target');
    for (let i = 1; i < parts.length; i++) {
      if (this.kinds.get(keyOf(parts.slice(0, i))) === 'symlink') {
        throw new UnsafeArchiveError(entry.name, `is a hard link through the symbolic link ${shown(parts.slice(0, i).join('/'))}`);
      }
    }
    const kind = this.kinds.get(keyOf(parts));
    if (kind !== 'file' && kind !== 'hardlink') {
      throw new UnsafeArchiveError(entry.name, `is a hard link to ${shown(target)}, which is not a file earlier in the archive`);
    }
  }
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
  core.info(
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
        core.info(`${tar.version} cannot read zstd itself: decompressing with zstd first`);
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
  core.info(`Extracted into ${dir} in ${formatDuration(elapsedMs / 1000)}`);
  if (listing.topLevelDir !== undefined) core.info(`The archive holds one folder, ${listing.topLevelDir}: model-dir is ${modelDir}`);
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
