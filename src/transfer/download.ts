import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tc from '@actions/tool-cache';
import { ActionError } from '../errors.js';
import { displayUrl } from '../format.js';
import * as log from '../log.js';
import { explainHttpStatus, type RequestContext } from '../together/api.js';
import { trackTempFile } from './destination.js';
import type { ProbeResult } from './probe.js';
import { ProgressReporter } from './progress.js';
import { downloadRanged } from './ranged-download.js';
import { renameWithRetry } from './rename.js';

/** tool-cache makes this many attempts itself. */
export const TOOL_CACHE_ATTEMPTS = 3;
/** How often tool-cache is started again after it refused to go on over its own leftover file. */
const LEFTOVER_RESTARTS = 2;

export interface DownloadResult {
  bytes: number;
  elapsedMs: number;
  /** Set when the sha256 was computed during the download. */
  sha256?: string;
}

export interface DownloadSettings {
  apiKey: string;
  /** The API's host name: only requests to it carry the API key. */
  apiHost: string;
  connections: number;
  stallTimeoutMs: number;
}

/**
 * Parallel, resumable ranges when the server honours them and the size is known; otherwise one
 * stream through tool-cache, which is what such a server can give.
 */
export async function downloadArchive(
  probe: ProbeResult,
  settings: DownloadSettings,
  tempFile: string,
  context: RequestContext,
): Promise<DownloadResult> {
  if (probe.rangesHonoured && probe.total !== undefined && probe.total > 0) {
    const result = await downloadRanged({ ...probe, total: probe.total }, settings.apiKey, tempFile, settings, context);
    log.info(`sha256 computed during the download; it finished ${(result.hashTailMs / 1000).toFixed(2)} s after the last byte`);
    return result;
  }
  log.info(
    probe.rangesHonoured
      ? 'The server did not say how large the archive is: downloading it as one stream.'
      : 'The server does not honour range requests: downloading the archive as one stream, without resume.',
  );
  return downloadWithToolCache(probe, settings.apiKey, tempFile, context);
}

/**
 * Downloads the archive into `tempFile` with tool-cache, which honours the runner's proxy settings
 * and retries on its own. Progress comes from watching the file grow.
 */
export async function downloadWithToolCache(
  probe: ProbeResult,
  apiKey: string,
  tempFile: string,
  context: RequestContext,
): Promise<DownloadResult> {
  // tool-cache writes into a folder of its own. When a response breaks before tool-cache's file is
  // open, the open can finish after tool-cache removed the file for its next attempt: the file is
  // back, every later attempt refuses to start ("already exists"), and the file would outlive the
  // run. Such a refusal is recognised below, and a late open into the removed folder fails instead.
  const folder = `${tempFile}.d`;
  const removeFolder = trackTempFile(folder);
  await fs.promises.mkdir(folder);
  const file = path.join(folder, 'archive');
  const progress = new ProgressReporter(probe.total);
  const sizeNow = () =>
    fs.promises.stat(file).then(
      (s) => s.size,
      () => 0,
    );
  const timer = setInterval(() => void sizeNow().then((bytes) => progress.update(bytes)), 1000);
  // tool-cache logs the URL it fetches, so it gets the API's own URL and follows redirects itself,
  // dropping the key when the host changes. It cannot follow a relative redirect: then it gets the
  // resolved URL, whose query the probe has masked.
  const url = probe.relativeRedirect ? probe.url : probe.requestUrl;
  const sendAuth = probe.relativeRedirect ? probe.sendAuth : true;
  try {
    for (let restarts = 0; ; restarts++) {
      try {
        await tc.downloadTool(url, file, sendAuth ? `Bearer ${apiKey}` : undefined, { accept: 'application/octet-stream' });
        break;
      } catch (error) {
        if (!isLeftoverRefusal(error, file)) throw explainDownloadError(error, probe, context);
        if (restarts === LEFTOVER_RESTARTS) {
          throw new ActionError(
            `The download from ${displayUrl(probe.url)} failed: ${restarts + 1} times the response broke off before its first byte was saved. The server accepts the request but does not send the archive; run the job again later.`,
            { cause: error },
          );
        }
        log.info(
          'A response broke off before its first byte was saved, and tool-cache will not retry over the empty file it left behind: removed it, starting again.',
        );
        await fs.promises.rm(file, { force: true });
      }
    }
    const bytes = await sizeNow();
    await renameWithRetry(file, tempFile);
    return { bytes, elapsedMs: progress.finish(bytes) };
  } finally {
    clearInterval(timer);
    await removeFolder();
  }
}

/** tool-cache's refusal to start an attempt because the file from a failed one is still there. */
function isLeftoverRefusal(error: unknown, file: string): boolean {
  return error instanceof Error && error.message === `Destination file path ${file} already exists`;
}

function explainDownloadError(error: unknown, probe: ProbeResult, context: RequestContext): unknown {
  if (error instanceof tc.HTTPError && error.httpStatusCode !== undefined) {
    const status = error.httpStatusCode;
    const attempts = status >= 500 || status === 408 || status === 429 ? TOOL_CACHE_ATTEMPTS : 1;
    return explainHttpStatus(status, undefined, context, attempts);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new ActionError(
    `The download from ${displayUrl(probe.url)} failed after ${TOOL_CACHE_ATTEMPTS} attempts: ${message}. The connection broke or the server stopped sending; run the job again.`,
    { cause: error },
  );
}
