import type { IncomingMessage } from 'node:http';
import * as core from '@actions/core';
import { HttpClient } from '@actions/http-client';
import { type ArchiveFormat, describeBytes, sniffFormat } from '../archive/format.js';
import { ActionError } from '../errors.js';
import { displayUrl } from '../format.js';
import * as log from '../log.js';
import { explainHttpStatus, type RequestContext, serverMessage } from '../together/api.js';
import { isRetryableStatus, RetriesExhaustedError, RetryableError, retryAfterMs, withRetries } from './retry.js';

export const PROBE_ATTEMPTS = 5;
const MAX_REDIRECTS = 10;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export interface ProbeResult {
  /** The archive's size in bytes, when the server told it. */
  total?: number;
  /** Whether the server answered the range request with 206 Partial Content. */
  rangesHonoured: boolean;
  format: ArchiveFormat;
  /** Where the archive is served from once redirects are followed. */
  url: string;
  /** Whether `url` is on the API's host, i.e. may receive the `Authorization` header. */
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

/** A client that leaves redirects and retries to us: http-client mishandles relative redirects. */
export function newHttpClient(socketTimeoutMs = 60_000, pool: { keepAlive?: boolean; maxSockets?: number } = {}): HttpClient {
  return new HttpClient('together-download', [], {
    allowRedirects: false,
    allowRetries: false,
    socketTimeout: socketTimeoutMs,
    keepAlive: pool.keepAlive ?? false,
    maxSockets: pool.maxSockets,
  });
}

/**
 * GETs `url`, following redirects ourselves: relative `Location`s resolve against the current
 * URL, the API key is sent only while the host is the API's own, and the query of every URL
 * redirected to is masked in the log.
 */
export async function getFollowingRedirects(
  client: HttpClient,
  url: string,
  auth: { apiKey: string; apiHost: string },
  headers: Record<string, string>,
  print: (line: string) => void = log.info,
): Promise<{ response: IncomingMessage; url: string; sendAuth: boolean; relativeRedirect: boolean }> {
  let current = url;
  let relativeRedirect = false;
  for (let hop = 0; ; hop++) {
    const sendAuth = new URL(current).hostname === auth.apiHost;
    const res = await client.get(current, sendAuth ? { ...headers, authorization: `Bearer ${auth.apiKey}` } : headers);
    const status = res.message.statusCode ?? 0;
    const location = res.message.headers.location;
    if (!REDIRECT_STATUSES.has(status) || !location) return { response: res.message, url: current, sendAuth, relativeRedirect };
    relativeRedirect ||= !/^[a-z][a-z0-9+.-]*:/i.test(location);
    res.message.resume();
    if (hop >= MAX_REDIRECTS)
      throw new ActionError(`The download redirected more than ${MAX_REDIRECTS} times; last hop: ${displayUrl(current)}.`);
    const next = new URL(location, current);
    if (next.protocol !== 'https:' && next.protocol !== 'http:') {
      throw new ActionError(`The download redirected to an unsupported URL scheme (${next.protocol}).`);
    }
    if (new URL(current).protocol === 'https:' && next.protocol === 'http:') {
      throw new ActionError(
        `The download redirected from https to plain http (${displayUrl(next.href)}); refusing to continue without TLS.`,
      );
    }
    // A signed storage URL carries its credentials in the query, and http-client puts the whole
    // path in some of its errors ("Request timeout: /...?X-Signature=..."), which end up in the log.
    if (next.search.length > 1) core.setSecret(next.search.slice(1));
    print(`Redirected (HTTP ${status}) to ${displayUrl(next.href)}`);
    current = next.href;
  }
}

/**
 * Reads at most `limit` bytes of a response, then drops the connection: never the whole body.
 * A body that breaks off after some bytes still yields them; only an empty one throws.
 */
export async function readHead(response: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of response) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (length >= limit) break;
    }
  } catch (error) {
    if (length === 0) throw error;
  } finally {
    response.destroy();
  }
  return Buffer.concat(chunks).subarray(0, limit);
}

const CONTENT_RANGE = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i;

/** Parses `Content-Range: bytes a-b/total`; undefined total for `*` or a malformed header. */
export function totalFromContentRange(header: string | undefined): number | undefined {
  const match = header ? CONTENT_RANGE.exec(header.trim()) : null;
  if (!match || match[3] === '*') return undefined;
  const total = Number(match[3]);
  return Number.isSafeInteger(total) ? total : undefined;
}

function contentLength(response: IncomingMessage): number | undefined {
  const header = response.headers['content-length'];
  if (header === undefined || !/^\d+$/.test(header)) return undefined;
  const n = Number(header);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Asks for the first two bytes of the archive to learn its size, its format and whether the
 * server honours ranges. A server that ignores the range gets its body cut off after the first
 * chunk.
 */
export async function probeArchive(url: string, apiKey: string, context: RequestContext): Promise<ProbeResult> {
  const client = newHttpClient();
  try {
    return await withRetries(
      'Probing the archive',
      async () => {
        let answer: Awaited<ReturnType<typeof getFollowingRedirects>>;
        try {
          answer = await getFollowingRedirects(
            client,
            url,
            { apiKey, apiHost: new URL(url).hostname },
            { range: 'bytes=0-1', accept: 'application/octet-stream' },
          );
        } catch (error) {
          if (error instanceof ActionError) throw error;
          throw new RetryableError(`network error: ${(error as Error).message}`);
        }
        const { response } = answer;
        const status = response.statusCode ?? 0;
        if (status === 206 || status === 200) {
          const head = await readHead(response, 16).catch((error: Error) => {
            throw new RetryableError(`the probe's body broke off: ${error.message}`);
          });
          const total = status === 206 ? totalFromContentRange(response.headers['content-range']) : contentLength(response);
          const format = sniffFormat(head, { partial: true });
          if (!format || head.length === 0) {
            throw new ActionError(
              `Together answered the download of job ${context.jobId} with something that is not a zstd or gzip archive (content-type ${response.headers['content-type'] ?? 'none'}, first bytes ${describeBytes(head)}). Try again later; if it persists, report it to Together with the job id.`,
            );
          }
          return {
            total,
            rangesHonoured: status === 206,
            format,
            url: answer.url,
            sendAuth: answer.sendAuth,
            requestUrl: url,
            relativeRedirect: answer.relativeRedirect,
          };
        }
        if (status === 416) {
          response.resume();
          throw new ActionError(
            `Together served an empty archive for job ${context.jobId} (HTTP 416 for its first bytes). Check that the job finished correctly.`,
          );
        }
        const body = await readHead(response, 64 * 1024).catch(() => Buffer.alloc(0));
        if (isRetryableStatus(status)) {
          throw new RetryableError(`HTTP ${status}`, retryAfterMs(response.headers), status);
        }
        throw answer.sendAuth ? explainHttpStatus(status, detailOf(body), context, 1) : explainStorageStatus(status, answer.url, context);
      },
      { attempts: PROBE_ATTEMPTS },
    );
  } catch (error) {
    if (error instanceof RetriesExhaustedError) {
      if (error.last.status !== undefined) throw explainHttpStatus(error.last.status, undefined, context, error.attempts);
      throw new ActionError(
        `Could not reach the download at ${displayUrl(url)} after ${error.attempts} attempts (${error.last.message}). Check the network or a proxy, then run the job again.`,
      );
    }
    throw error;
  } finally {
    client.dispose();
  }
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
