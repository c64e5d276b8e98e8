import * as log from '../log.js';
import { testHook } from './test-hooks.js';

/** Statuses worth another try: throttling, timeouts and the transient server errors. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * How long the server asked us to wait, from `retry-after-ms` or `retry-after` (seconds or an
 * HTTP date). Undefined when it did not ask or the value is unusable.
 */
export function retryAfterMs(headers: Record<string, string | string[] | undefined>, now = Date.now()): number | undefined {
  const header = (name: string) => {
    const value = headers[name];
    return Array.isArray(value) ? value[0] : value;
  };
  const ms = Number(header('retry-after-ms'));
  if (header('retry-after-ms') !== undefined && Number.isFinite(ms) && ms >= 0) return ms;
  const after = header('retry-after');
  if (after === undefined) return undefined;
  const seconds = Number(after);
  if (after.trim() !== '' && Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(after);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The longest wait a server's `retry-after` or `retry-after-ms` can ask for; longer asks are cut to this. */
export const MAX_SERVER_WAIT_MS = 60_000;

/**
 * How long to wait before the next attempt: what the server asked for, capped at
 * `MAX_SERVER_WAIT_MS`, or else a backoff. `note` says so when the server's ask was cut.
 */
export function nextWaitMs(asked: number | undefined, backoff: () => number): { waitMs: number; note: string } {
  if (asked === undefined) return { waitMs: backoff(), note: '' };
  const cap = testHook('MAX_SERVER_WAIT_MS', MAX_SERVER_WAIT_MS);
  if (asked <= cap) return { waitMs: asked, note: ' (as the server asked)' };
  return {
    waitMs: cap,
    note: ` (the server asked for ${(asked / 1000).toFixed(0)} s; ${cap / 1000} s is the most this action waits)`,
  };
}

export interface BackoffOptions {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, capMs: 30_000 };

/** The backoff every retry loop starts from (tests shorten its base). */
export function defaultBackoff(): BackoffOptions {
  return { ...DEFAULT_BACKOFF, baseMs: testHook('BACKOFF_BASE_MS', DEFAULT_BACKOFF.baseMs) };
}

/** Full-jitter exponential backoff: a random wait up to base * 2^attempt, never above the cap. */
export function backoffMs(attempt: number, { baseMs, capMs }: BackoffOptions = defaultBackoff(), random = Math.random): number {
  return Math.round(random() * Math.min(capMs, baseMs * 2 ** attempt));
}

/** A failure that another attempt may cure; `waitMs` is what the server asked for, if anything. */
export class RetryableError extends Error {
  constructor(
    message: string,
    readonly waitMs?: number,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'RetryableError';
  }
}

/** Thrown when every attempt failed; carries how many there were and the last failure. */
export class RetriesExhaustedError extends Error {
  constructor(
    readonly what: string,
    readonly attempts: number,
    readonly last: RetryableError,
  ) {
    super(`${what} failed after ${attempts} attempts; the last one: ${last.message}`);
    this.name = 'RetriesExhaustedError';
  }
}

/**
 * Runs `attempt` until it succeeds, throws something other than a RetryableError, or runs out of
 * attempts. Waits honour the server's retry-after, capped so that a hostile value cannot stall a job.
 */
export async function withRetries<T>(
  what: string,
  attempt: (n: number) => Promise<T>,
  { attempts = 5, backoff = defaultBackoff() }: { attempts?: number; backoff?: BackoffOptions } = {},
): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (error) {
      if (!(error instanceof RetryableError)) throw error;
      if (n + 1 >= attempts) throw new RetriesExhaustedError(what, attempts, error);
      const { waitMs, note } = nextWaitMs(error.waitMs, () => backoffMs(n, backoff));
      log.info(`${what}: ${error.message}; attempt ${n + 2} of ${attempts} in ${(waitMs / 1000).toFixed(1)} s${note}`);
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  }
}
