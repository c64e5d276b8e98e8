import { formatBytes, formatDuration, formatSpeed } from '../format.js';
import * as log from '../log.js';

export const PROGRESS_INTERVAL_MS = 5_000;

/** One progress line: bytes so far, total, percent, speed and ETA (the last three when known). */
export function progressLine(bytes: number, total: number | undefined, elapsedMs: number): string {
  const seconds = elapsedMs / 1000;
  const speed = seconds > 0 ? bytes / seconds : 0;
  const parts = [total === undefined ? formatBytes(bytes) : `${formatBytes(bytes)} / ${formatBytes(total)}`];
  if (total !== undefined && total > 0) parts.push(`${((100 * bytes) / total).toFixed(1)}%`);
  parts.push(formatSpeed(speed));
  if (total !== undefined && bytes < total) {
    parts.push(speed > 0 ? `ETA ${formatDuration((total - bytes) / speed)}` : 'ETA ?');
  }
  return parts.join(', ');
}

/**
 * Logs download progress at most once per interval, and once at the end, so a multi-GB download
 * shows life without flooding the log.
 */
export class ProgressReporter {
  private readonly startedAt: number;
  private lastLoggedAt: number;

  constructor(
    private readonly total: number | undefined,
    private readonly print: (line: string) => void = log.info,
    private readonly now: () => number = Date.now,
    private readonly intervalMs = PROGRESS_INTERVAL_MS,
  ) {
    this.startedAt = now();
    this.lastLoggedAt = this.startedAt;
  }

  update(bytes: number): void {
    const now = this.now();
    if (now - this.lastLoggedAt < this.intervalMs) return;
    this.lastLoggedAt = now;
    this.print(progressLine(bytes, this.total, now - this.startedAt));
  }

  /** Logs the closing line and returns the elapsed time in ms. */
  finish(bytes: number): number {
    const elapsed = this.now() - this.startedAt;
    this.print(`${progressLine(bytes, this.total, elapsed)}, done in ${formatDuration(elapsed / 1000)}`);
    return elapsed;
  }
}
