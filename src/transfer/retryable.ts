/**
 * What makes a failure worth another attempt, without the retry loop (which logs): a receive
 * worker needs these, and no more.
 */

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
