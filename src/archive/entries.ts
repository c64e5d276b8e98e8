/**
 * The check every archive entry passes before anything is written: no absolute paths, no `..`,
 * no links leading outside the folder, no devices, no control characters, no names that collide on
 * a case-insensitive file system.
 */
import { ActionError } from '../errors.js';
import { hasControls, quote } from '../log.js';
import type { TarEntry } from './tar.js';

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
  /** Folders the extraction makes (those the entries imply included) and symbolic links. */
  folders: number;
  symlinks: number;
  /** The one top-level folder, when the archive holds exactly one thing and it is a folder. */
  topLevelDir?: string;
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
  return quote(name, 120);
}

/** Splits a `/`-separated archive path into its components, dropping empty ones and `.`. */
export function components(name: string): string[] {
  return name.split('/').filter((c) => c !== '' && c !== '.');
}

/** Characters that some file systems (HFS+) leave out of the names they compare: zero-width spaces and joiners, variation selectors. */
const IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu;

/**
 * The name as a case-insensitive, normalization-insensitive file system sees it, or more
 * conservatively: compatibility normalization (NFKC: `ſ` is `s`, `ϐ` is `β`, `ﬁ` is `fi`), then
 * upper- and lower-casing until nothing changes, which gives full case folding (`ß` and `ẞ` are
 * `ss`, `ς` is `σ`) and NTFS's upper-case comparison (`ı` meets `i`). APFS and NTFS collide no two
 * names this keeps apart.
 */
export function foldName(name: string): string {
  let key = name.replace(IGNORABLE, '').normalize('NFKC');
  for (let i = 0; i < 4; i++) {
    const next = key.toUpperCase().toLowerCase().normalize('NFKC').replace(IGNORABLE, '');
    if (next === key) break;
    key = next;
  }
  return key;
}

function keyOf(parts: readonly string[]): string {
  return foldName(parts.join('/'));
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
  private folders = 0;
  private symlinks = 0;
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

    for (let i = 1; i < parts.length; i++) {
      const parent = keyOf(parts.slice(0, i));
      if (!this.kinds.has(parent)) this.folders++;
      this.kinds.set(parent, 'dir');
    }
    if (type === '5' && existing === undefined) this.folders++;
    if (type === '2') this.symlinks++;
    this.kinds.set(key, type === '5' ? 'dir' : type === '2' ? 'symlink' : type === '1' ? 'hardlink' : 'file');
    const isDir = type === '5' || parts.length > 1;
    this.topLevel.set(parts[0], (this.topLevel.get(parts[0]) ?? false) || isDir);
    if (FILE_TYPES.has(type)) this.files.push({ name: parts.join('/'), size: entry.size });
  }

  result(): ArchiveListing {
    const tops = [...this.topLevel.entries()];
    const topLevelDir = tops.length === 1 && tops[0][1] ? tops[0][0] : undefined;
    const totalBytes = this.files.reduce((sum, f) => sum + f.size, 0);
    return { entries: this.entries, files: this.files, totalBytes, folders: this.folders, symlinks: this.symlinks, topLevelDir };
  }

  /** The name's components; throws for anything that is not a plain relative path. */
  private checkName(name: string, entry: string, what = 'has'): string[] {
    if (name.includes('\0')) throw new UnsafeArchiveError(entry, `${what} a NUL character in its path`);
    if (hasControls(name)) throw new UnsafeArchiveError(entry, `${what} a control character in its path`);
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
    if (hasControls(target)) throw new UnsafeArchiveError(entry.name, 'is a symbolic link with a control character in its target');
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
