/**
 * Renames that survive Windows. There a file or folder that another process holds open (a model
 * server from an earlier step, the search indexer, antivirus on a self-hosted runner) cannot be
 * replaced or moved: the rename fails with EPERM, EBUSY or EACCES until the other process lets go,
 * usually within seconds. Elsewhere those codes mean what they say and are not retried.
 */
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ActionError } from '../errors.js';
import * as log from '../log.js';

/** How long a rename is retried on Windows before it fails. */
export const RENAME_PATIENCE_MS = 60_000;

const HELD_OPEN = new Set(['EPERM', 'EBUSY', 'EACCES']);

/** A rename that kept failing because something holds the file open. */
export class FileInUseError extends ActionError {
  constructor(
    readonly file: string,
    code: string,
    waitedMs: number,
  ) {
    super(
      `Could not replace or move ${file}: another process holds it open (${code}), and it was still held after ${Math.round(waitedMs / 1000)} s. Stop what uses it (a model server or a Python process from an earlier step, an indexer, antivirus scanning the folder), then run the step again.`,
    );
    this.name = 'FileInUseError';
  }
}

export interface RenameOptions {
  platform?: NodeJS.Platform;
  patienceMs?: number;
  /** Replaceable in tests. */
  rename?: (from: string, to: string) => Promise<void>;
  now?: () => number;
  wait?: (ms: number) => Promise<unknown>;
}

/** `fs.rename`, retried with backoff for up to a minute on Windows while the target is held open. */
export async function renameWithRetry(from: string, to: string, options: RenameOptions = {}): Promise<void> {
  const {
    platform = process.platform,
    patienceMs = RENAME_PATIENCE_MS,
    rename = fs.promises.rename,
    now = Date.now,
    wait = (ms: number) => sleep(ms),
  } = options;
  const started = now();
  for (let attempt = 0; ; attempt++) {
    try {
      await rename(from, to);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? '';
      if (platform !== 'win32' || !HELD_OPEN.has(code)) throw error;
      const waited = now() - started;
      if (waited >= patienceMs) throw new FileInUseError(to, code, waited);
      if (attempt === 0) log.info(`${to} is held open by another process (${code}); trying again for up to ${patienceMs / 1000} s`);
      await wait(Math.min(2_000, 50 * 2 ** attempt, Math.max(0, patienceMs - waited)));
    }
  }
}
