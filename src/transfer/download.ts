import * as log from '../log.js';
import type { RequestContext } from '../together/api.js';
import type { Follower } from './follow.js';
import { downloadWithToolCache } from './one-stream.js';
import type { ProbeResult } from './probe.js';
import { downloadRanged } from './ranged-download.js';

export type { Follower } from './follow.js';

export interface DownloadResult {
  bytes: number;
  elapsedMs: number;
  /** The sha256, computed during the download. */
  sha256?: string;
}

export interface DownloadSettings {
  apiKey: string;
  /** The API's origin (`scheme://host:port`): only requests to it carry the API key. */
  apiOrigin: string;
  connections: number;
  stallTimeoutMs: number;
  /** Receive worker threads of a ranged download; by default one where there is a second core. */
  receiveWorkers?: number;
}

/**
 * Parallel, resumable ranges when the server honours them and the size is known; otherwise one
 * stream through tool-cache, which is what such a server can give.
 *
 * `follow`, when given, is called once as the download starts with the archive's bytes in order
 * (each Buffer its own to keep), read back from the written part of the file as it grows. The
 * download resolves only once `follow` has; a `follow` that rejects aborts the download with its
 * error; a download that fails makes the iterable throw, and its own error is the one reported.
 */
export async function downloadArchive(
  probe: ProbeResult,
  settings: DownloadSettings,
  tempFile: string,
  context: RequestContext,
  follow?: Follower,
): Promise<DownloadResult> {
  if (probe.rangesHonoured && probe.total !== undefined && probe.total > 0) {
    const result = await downloadRanged({ ...probe, total: probe.total }, settings.apiKey, tempFile, settings, context, follow);
    const readBack = result.bytes > 0 ? (100 * result.readBackBytes) / result.bytes : 0;
    log.info(
      `sha256 computed during the download; it finished ${(result.hashTailMs / 1000).toFixed(2)} s after the last byte (${readBack.toFixed(0)} % of the bytes read back from the file, the rest hashed as they arrived)`,
    );
    return result;
  }
  log.info(
    probe.rangesHonoured
      ? 'The server did not say how large the archive is: downloading it as one stream.'
      : 'The server does not honour range requests: downloading the archive as one stream, without resume.',
  );
  const result = await downloadWithToolCache(probe, settings.apiKey, tempFile, context, follow);
  log.info('sha256 computed during the download, as the file grew');
  return result;
}
