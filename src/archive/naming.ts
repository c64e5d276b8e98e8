import type { FetchedType } from '../together/checkpoint.js';
import type { ArchiveFormat } from './format.js';

/**
 * Turns a model name into something safe for one path component: `/` becomes `--`, `_` and spaces
 * become `-`, everything is lowercased, any other character outside `[a-z0-9.@+-]` becomes `-`,
 * and leading dots go, so the result can be neither hidden nor `.`/`..`. `defaultFileName` also
 * drops trailing dots and caps the length, for Windows.
 */
export function slugify(name: string): string {
  return name
    .replaceAll('/', '--')
    .replace(/[_ ]/g, '-')
    .toLowerCase()
    .replace(/[^a-z0-9.@+-]/g, '-')
    .replace(/^\.+/, '');
}

/** The longest model part of a default name: with a workspace and the model's own files, paths stay well under Windows' 260 characters. */
export const MAX_MODEL_PART = 100;

/** Names Windows reserves for devices, with or without an extension. */
const WINDOWS_DEVICE = /^(?:con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(?:\.|$)/i;

/**
 * A name Windows keeps as it is: no trailing dots or spaces (Windows tools strip them, so the file
 * would not be found under its own name) and no device name such as `con` or `nul.tar.zst`.
 */
export function windowsSafe(name: string): string {
  const trimmed = name.replace(/[. ]+$/, '');
  return WINDOWS_DEVICE.test(trimmed) ? trimmed.replace(/^[^.]*/, '$&-') : trimmed;
}

export const ARCHIVE_EXTENSIONS: Record<ArchiveFormat, string> = {
  zstd: '.tar.zst',
  gzip: '.tar.gz',
};

/** The default file name of a download, e.g. `org--model-abc123-step-10-adapter.tar.zst`. */
export function defaultFileName(opts: {
  modelOutputName?: string;
  jobId: string;
  step?: number;
  fetched: FetchedType;
  format: ArchiveFormat;
}): string {
  // The job id is validated to [A-Za-z0-9-], so it is always a usable fallback.
  const base =
    windowsSafe(slugify(opts.modelOutputName ?? '').slice(0, MAX_MODEL_PART)) || windowsSafe(slugify(opts.jobId).slice(0, MAX_MODEL_PART));
  const step = opts.step === undefined ? '' : `-step-${opts.step}`;
  const adapter = opts.fetched === 'adapter' ? '-adapter' : '';
  return `${base}${step}${adapter}${ARCHIVE_EXTENSIONS[opts.format]}`;
}
