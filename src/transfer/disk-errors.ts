/**
 * Disk faults: a full disk, a quota, a file too large for the file system, a read-only file system
 * or a folder the runner may not write. None of them is cured by another attempt, and none is the
 * network's fault, so each is reported at once, naming the input that chose the folder, the folder
 * and its free space.
 */
import * as fs from 'node:fs';
import { ActionError } from '../errors.js';
import { formatBytes } from '../format.js';

/** The input that decides where something is written. */
export type WhereInput = 'path' | 'extract-path' | 'cache';

const DISK_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG', 'EROFS', 'EACCES']);

/** True for an error that no retry can cure because the disk refused the write. */
export function isDiskError(error: unknown): error is NodeJS.ErrnoException {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && DISK_CODES.has(code);
}

/** Free bytes for the runner's user on the file system holding `dir`, or undefined when it cannot be told. */
export async function freeSpace(dir: string): Promise<number | undefined> {
  try {
    const stats = await fs.promises.statfs(dir);
    return stats.bavail * stats.bsize;
  } catch {
    return undefined;
  }
}

const ADVICE: Record<WhereInput, string> = {
  path: 'choose another `path`',
  'extract-path': 'choose another `extract-path`',
  cache: 'set `cache: false`',
};

/**
 * The message for a disk fault while writing into `dir`, the folder `input` chose. `error` must
 * satisfy `isDiskError`.
 */
export async function explainDiskError(error: NodeJS.ErrnoException, input: WhereInput, dir: string, what: string): Promise<ActionError> {
  const free = await freeSpace(dir);
  const freeText = free === undefined ? 'free space unknown' : `${formatBytes(free)} (${free} bytes) free`;
  const where = `${dir} (\`${input}\`; ${freeText})`;
  const advice = ADVICE[input];
  const reasons: Record<string, string> = {
    ENOSPC: `the disk is full while ${what} in ${where}. Free up space (for example remove preinstalled tools), ${advice}, or use a larger runner.`,
    EDQUOT: `the disk quota of the runner's user is used up while ${what} in ${where}. Free up space in the quota, or ${advice}.`,
    EFBIG: `the file grew larger than the file system or a file size limit allows while ${what} in ${where} (FAT32 holds at most 4 GiB per file; \`ulimit -f\` can set a lower limit). Use a folder on another file system: ${advice}.`,
    EROFS: `the file system is read-only, so nothing can be written while ${what} in ${where}. ${capitalise(advice)}.`,
    EACCES: `the runner's user may not write there while ${what} in ${where}. Give the folder write permission, or ${advice}.`,
  };
  const code = error.code ?? 'EIO';
  return new ActionError(`${code}: ${reasons[code] ?? `${error.message} (${where})`}`, { cause: error });
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
