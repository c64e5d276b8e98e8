import * as log from '../log.js';
import { RetryableError } from './retryable.js';
import { testHook } from './test-hooks.js';

export { isRetryableStatus, RetryableError, retryAfterMs } from './retryable.js';

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
