import * as fs from 'node:fs';
import * as tc from '@actions/tool-cache';
import { ActionError } from './errors.js';
import { displayUrl } from './format.js';
import type { ProbeResult } from './probe.js';
import { ProgressReporter } from './progress.js';
import { type RequestContext, explainHttpStatus } from './together.js';

/** tool-cache makes this many attempts itself. */
export const TOOL_CACHE_ATTEMPTS = 3;

export interface DownloadResult {
  bytes: number;
  elapsedMs: number;
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
  const progress = new ProgressReporter(probe.total);
  const sizeNow = () => fs.promises.stat(tempFile).then((s) => s.size, () => 0);
  const timer = setInterval(() => void sizeNow().then((bytes) => progress.update(bytes)), 1000);
  try {
    // Authorization goes only to the API's host; a signed storage URL must not receive the key.
    await tc.downloadTool(probe.url, tempFile, probe.sendAuth ? `Bearer ${apiKey}` : undefined, {
      accept: 'application/octet-stream',
    });
  } catch (error) {
    throw explainDownloadError(error, probe, context);
  } finally {
    clearInterval(timer);
  }
  const bytes = await sizeNow();
  return { bytes, elapsedMs: progress.finish(bytes) };
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
