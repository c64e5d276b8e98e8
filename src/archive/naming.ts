import type { FetchedType } from '../together/checkpoint.js';
import type { ArchiveFormat } from './format.js';

/**
 * Turns a model name into something safe for one path component: `/` becomes `--`, `_` and spaces
 * become `-`, everything is lowercased, any other character outside `[a-z0-9.@+-]` becomes `-`,
 * and leading dots go, so the result can be neither hidden nor `.`/`..`.
 */
export function slugify(name: string): string {
  return name
    .replaceAll('/', '--')
    .replace(/[_ ]/g, '-')
    .toLowerCase()
    .replace(/[^a-z0-9.@+-]/g, '-')
    .replace(/^\.+/, '');
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
  const base = slugify(opts.modelOutputName ?? '') || slugify(opts.jobId);
  const step = opts.step === undefined ? '' : `-step-${opts.step}`;
  const adapter = opts.fetched === 'adapter' ? '-adapter' : '';
  // Keep well under the 255-byte limit of common file systems, leaving room for the suffixes.
  return `${base.slice(0, 200)}${step}${adapter}${ARCHIVE_EXTENSIONS[opts.format]}`;
}
