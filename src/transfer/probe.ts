import { type ArchiveFormat, describeBytes, sniffFormat } from '../archive/format.js';
import { ActionError } from '../errors.js';
import { displayUrl } from '../format.js';
import * as log from '../log.js';
import { explainHttpStatus, type RequestContext, serverMessage } from '../together/api.js';
import { contentEncoding, DeadlineError } from './connection.js';
import { type Answer, DownloadClient } from './http-client.js';
import { contentLength, ProtocolError, parseContentRange } from './http-head.js';
import { describeNetworkError } from './net-errors.js';
import { isRetryableStatus, RetriesExhaustedError, RetryableError, retryAfterMs, withRetries } from './retry.js';
import { testHook } from './test-hooks.js';

export const PROBE_ATTEMPTS = 5;
/** Each probe attempt, head and body, redirects included, must be done within this. */
export const PROBE_DEADLINE_MS = 120_000;

export interface ProbeResult {
  /** The archive's size in bytes, when the server told it. */
  total?: number;
  /** Whether the server answered the range request with 206 Partial Content. */
  rangesHonoured: boolean;
  format: ArchiveFormat;
  /** Where the archive is served from once redirects are followed. */
  url: string;
  /** Whether `url` may receive the `Authorization` header: it is the API's origin, and the redirects never left it. */
  sendAuth: boolean;
  /** The download endpoint's own URL, before any redirect. */
  requestUrl: string;
  /** Whether a redirect on the way had a relative `Location`. */
  relativeRedirect: boolean;
}

/** The download endpoint's URL; every parameter goes through URLSearchParams. */
export function downloadUrl(baseUrl: string, query: { jobId: string; step?: number; checkpoint: string }): string {
  const url = new URL(`${baseUrl}/finetune/download`);
  url.searchParams.set('ft_id', query.jobId);
  if (query.step !== undefined) url.searchParams.set('checkpoint_step', String(query.step));
  url.searchParams.set('checkpoint', query.checkpoint);
  return url.href;
}

/** Parses `Content-Range: bytes a-b/total`; undefined total for `*` or a malformed header. */
export function totalFromContentRange(header: string | undefined): number | undefined {
  return parseContentRange(header)?.total;
}

/** The probe got no complete answer in time: a server that sends too slowly. */
class TooSlowError extends RetryableError {}

/**
 * Asks for the first two bytes of the archive to learn its size, its format and whether the
 * server honours ranges. A server that ignores the range gets its body cut off after the first
 * bytes. The query of every URL redirected to is masked before anything can print it, since the
 * one-stream download hands the final URL to tool-cache.
 */
export async function probeArchive(url: string, apiKey: string, context: RequestContext): Promise<ProbeResult> {
  const client = new DownloadClient({ apiKey, apiOrigin: new URL(url).origin });
  const deadlineMs = testHook('PROBE_DEADLINE_MS', PROBE_DEADLINE_MS);
  try {
    return await withRetries(
      'Probing the archive',
      async () => {
        let answer: Answer;
        try {
          answer = await client.get(url, {
            headers: { Range: 'bytes=0-1', Accept: 'application/octet-stream' },
            stallMs: deadlineMs,
            deadlineMs,
            print: log.info,
            maskQuery: log.registerSecret,
          });
        } catch (error) {
          throw asProbeFailure(error, deadlineMs);
        }
        try {
          return await readProbe(answer, url, context);
        } catch (error) {
          answer.abandon();
          throw asProbeFailure(error, deadlineMs);
        }
      },
      { attempts: PROBE_ATTEMPTS },
    );
  } catch (error) {
    if (error instanceof RetriesExhaustedError) {
      if (error.last.status !== undefined) throw explainHttpStatus(error.last.status, undefined, context, error.attempts);
      if (error.last instanceof TooSlowError) {
        throw new ActionError(
          `The download at ${displayUrl(url)} was too slow to answer: no complete answer to the probe within ${deadlineMs / 1000} s, in each of ${error.attempts} attempts. The server sends too slowly; run the job again later.`,
        );
      }
      throw new ActionError(
        `Could not reach the download at ${displayUrl(url)} after ${error.attempts} attempts (${error.last.message}). Check the network or a proxy, then run the job again.`,
      );
    }
    throw error;
  } finally {
    client.close();
  }
}

async function readProbe(answer: Answer, url: string, context: RequestContext): Promise<ProbeResult> {
  const status = answer.status;
  if (status === 206 || status === 200) {
    const encoding = contentEncoding(answer.head);
    if (encoding !== undefined) {
      throw new ActionError(
        `The archive of job ${context.jobId} is served with Content-Encoding ${JSON.stringify(encoding)} although the action asked for none: its bytes would not be the archive's. Report it to Together with the job id.`,
      );
    }
    let total: number | undefined;
    if (status === 206) {
      const range = parseContentRange(answer.header('content-range'));
      if (range?.first !== 0) {
        throw new ActionError(
          `The server answered the probe for bytes 0-1 with Content-Range ${JSON.stringify(answer.header('content-range') ?? '')}: not the range asked for. Run the job again; if it persists, report it to Together with the job id.`,
        );
      }
      total = range.total;
    } else {
      total = answer.connection.bodyFraming.kind === 'length' ? contentLength(answer.head) : undefined;
    }
    const head = await answer.readSmall(16).catch((error: Error) => {
      throw new RetryableError(`the probe's body broke off: ${describeNetworkError(error).message}`);
    });
    const format = sniffFormat(head, { partial: true });
    if (!format || head.length === 0) {
      throw new ActionError(
        `Together answered the download of job ${context.jobId} with something that is not a zstd or gzip archive (content-type ${answer.header('content-type') ?? 'none'}, first bytes ${describeBytes(head)}). Try again later; if it persists, report it to Together with the job id.`,
      );
    }
    return {
      total,
      rangesHonoured: status === 206,
      format,
      url: answer.url,
      sendAuth: answer.hop.sendAuth,
      requestUrl: url,
      relativeRedirect: answer.hop.relativeRedirect,
    };
  }
  if (status === 416) {
    answer.abandon();
    throw new ActionError(
      `Together served an empty archive for job ${context.jobId} (HTTP 416 for its first bytes). Check that the job finished correctly.`,
    );
  }
  const body = await answer.readSmall(64 * 1024).catch(() => Buffer.alloc(0));
  if (isRetryableStatus(status)) throw new RetryableError(`HTTP ${status}`, retryAfterMs(Object.fromEntries(answer.head.headers)), status);
  throw answer.hop.sendAuth ? explainHttpStatus(status, detailOf(body), context, 1) : explainStorageStatus(status, answer.url, context);
}

function asProbeFailure(error: unknown, deadlineMs: number): unknown {
  if (error instanceof ActionError || error instanceof RetryableError) return error;
  if (error instanceof DeadlineError) return new TooSlowError(`no complete answer within ${deadlineMs / 1000} s`);
  if (error instanceof ProtocolError) return new RetryableError(`the response broke HTTP/1.1: ${error.message}`);
  const failure = describeNetworkError(error);
  if (!failure.retryable) return new ActionError(`Could not probe the download: ${failure.message}.`);
  return new RetryableError(failure.message);
}

/**
 * A refusal from the storage host the API redirected to: it never saw the API key, so the key is
 * not the problem (a signed URL that expired or was refused is).
 */
export function explainStorageStatus(status: number, url: string, context: RequestContext): ActionError {
  return new ActionError(
    `The storage server Together redirected the download of job ${context.jobId} to (${displayUrl(url)}) answered HTTP ${status}. Its signed link may have expired: run the job again; if it persists, report it to Together with the job id.`,
  );
}

function detailOf(body: Buffer): string | undefined {
  try {
    return serverMessage(JSON.parse(body.toString('utf8')));
  } catch {
    return undefined;
  }
}
