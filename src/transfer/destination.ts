import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ActionError, InputError } from '../errors.js';
import { formatBytes } from '../format.js';
import * as log from '../log.js';
import { explainDiskError, isDiskError } from './disk-errors.js';

export interface Destination {
  /** The directory the file goes into. */
  dir: string;
  /** The file name the user chose, or undefined to use the default name. */
  name?: string;
}

/**
 * Where the `path` input points. An existing directory, or a value ending in a separator, is a
 * directory; anything else names the file itself. Relative paths resolve against the workspace.
 */
export function resolveDestination(input: string, workspace: string): Destination {
  if (input === '') return { dir: path.resolve(workspace) };
  if (input.includes('\0')) throw new InputError('path', 'contains a NUL character.');
  const absolute = path.resolve(workspace, input);
  const endsWithSeparator = /[\\/]$/.test(input);
  if (endsWithSeparator || isDirectory(absolute)) return { dir: absolute };
  return { dir: path.dirname(absolute), name: path.basename(absolute) };
}

const PATH_HINT = 'Give a directory, or a file path whose parent can be created.';

/** What an existing file system entry is, in words, for one that is not a regular file. */
function kindOf(stat: fs.Stats): string {
  if (stat.isDirectory()) return 'a directory';
  if (stat.isSymbolicLink()) return 'a symbolic link';
  if (stat.isFIFO()) return 'a FIFO (named pipe)';
  if (stat.isSocket()) return 'a socket';
  if (stat.isCharacterDevice()) return 'a character device';
  if (stat.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

/**
 * Refuses a target that exists and is not a regular file: the download replaces what is at its
 * target, and only a file may be replaced (never a pipe a reader waits on, a device, a socket, a
 * link or a folder).
 */
export function requireReplaceable(target: string): void {
  let stat: fs.Stats | undefined;
  try {
    stat = fs.lstatSync(target, { throwIfNoEntry: false });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOTDIR') throw error;
    throw new InputError('path', `cannot create the directory ${path.dirname(target)}: a file is in the way. ${PATH_HINT}`);
  }
  if (stat === undefined || stat.isFile()) return;
  throw new InputError(
    'path',
    `${target} exists and is ${kindOf(stat)}. Only a regular file there is replaced by the download: remove it, or give another \`path\` (a directory, or the path of a file).`,
  );
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Creates the destination directory, remembering what it created so that a failed download can
 * leave the file system as it found it.
 */
export async function prepareDirectory(
  dir: string,
  input: 'path' | 'extract-path' = 'path',
): Promise<{ removeIfCreated: () => Promise<void> }> {
  let created: string | undefined;
  try {
    created = await makeDirectories(dir);
  } catch (error) {
    if (isDiskError(error)) throw await explainDiskError(error, input, nearestExisting(dir), `creating the directory ${dir}`);
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : (error as Error).message;
    const hint = input === 'path' ? PATH_HINT : 'Give a folder that can be created.';
    throw new InputError(input, `cannot create the directory ${dir}: ${why}. ${hint}`);
  }
  return {
    removeIfCreated: async () => {
      if (!created) return;
      // Remove only empty directories, deepest first, up to the first one we created.
      for (let d = dir; d.startsWith(created); d = path.dirname(d)) {
        try {
          await fs.promises.rmdir(d);
        } catch {
          return;
        }
        if (d === created) return;
      }
    },
  };
}

/**
 * `mkdir -p`, one level at a time: a recursive `fs.mkdir` reports ENOENT where the file system
 * refused the write (a read-only disk, for one), which would send the user looking for a missing
 * folder. Returns the first folder it created, like `fs.mkdir` with `recursive`.
 */
export async function makeDirectories(dir: string): Promise<string | undefined> {
  const missing: string[] = [];
  for (let d = path.resolve(dir); !fs.existsSync(d); d = path.dirname(d)) {
    missing.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of missing) {
    await fs.promises.mkdir(d).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST' || !fs.statSync(d).isDirectory()) throw error;
    });
  }
  return missing[0];
}

/** The deepest folder of `dir`'s ancestors that exists: where a failed mkdir was refused. */
function nearestExisting(dir: string): string {
  let current = path.resolve(dir);
  while (!fs.existsSync(current) && path.dirname(current) !== current) current = path.dirname(current);
  return current;
}

/** A hidden temp path beside the target, so the final rename stays on one file system. */
export function tempPathFor(target: string, suffix = 'partial'): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString('hex')}.${suffix}`);
}

/** Temp files (and temp folders, such as a half-done extraction) to remove if the process is cancelled before it can clean up after itself. */
const pendingTempFiles = new Set<string>();
let signalHandlersInstalled = false;

export function trackTempFile(file: string): () => Promise<void> {
  installSignalHandlers();
  pendingTempFiles.add(file);
  return async () => {
    pendingTempFiles.delete(file);
    await fs.promises.rm(file, { force: true, recursive: true });
  };
}

function installSignalHandlers(): void {
  if (signalHandlersInstalled) return;
  signalHandlersInstalled = true;
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(signal, () => {
      for (const file of pendingTempFiles) {
        try {
          fs.rmSync(file, { force: true, recursive: true });
        } catch {
          // Best effort: the process is exiting either way.
        }
      }
      log.error(`Cancelled (${signal}); the partial download was removed.`);
      process.exit(code);
    });
  }
}

/** What needs the space, and what the user can do besides freeing some. */
export interface SpaceNeed {
  what: string;
  advice: string;
}

const ARCHIVE_AT_PATH: SpaceNeed = { what: 'the archive needs', advice: 'choose another `path`' };

/** Fails early, quoting both numbers, when `bytes` cannot fit on the disk that holds `dir`. */
export async function requireFreeSpace(dir: string, bytes: number | undefined, need: SpaceNeed = ARCHIVE_AT_PATH): Promise<void> {
  if (bytes === undefined) return;
  let free: number;
  try {
    const stats = await fs.promises.statfs(dir);
    free = stats.bavail * stats.bsize;
  } catch {
    return; // No statfs on this platform or file system: the download itself will tell.
  }
  if (free < bytes) {
    throw new ActionError(
      `Not enough disk space in ${dir}: ${need.what} ${formatBytes(bytes)} (${bytes} bytes) but only ${formatBytes(free)} (${free} bytes) is free. Free up space (for example remove preinstalled tools), ${need.advice}, or use a larger runner.`,
    );
  }
}
