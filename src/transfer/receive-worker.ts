/**
 * A receive worker: a thread of its own that runs connections of a ranged download (`fetchRange`,
 * writing straight into the shared file descriptor), so that the main thread keeps only the
 * SHA-256 (read back, in order, from the file). It re-enters the action's own bundle, whose entry
 * then loads only this module: the worker carries the HTTP client, not the API client.
 */
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parentPort, Worker } from 'node:worker_threads';
import { ActionError } from '../errors.js';
import { DownloadClient } from './http-client.js';
import type { Piece } from './pieces.js';
import { DiskFault, DiskQueue, fetchRange, RangeStatusError, type RangeTarget } from './range-fetch.js';
import { RetryableError } from './retryable.js';

export const RECEIVE_WORKER = 'together-download receive worker';

export interface ReceiveSetup {
  role: typeof RECEIVE_WORKER;
  fd: number;
  apiKey: string;
  apiOrigin: string;
  target: RangeTarget;
}

type ToWorker = { type: 'fetch'; id: number; piece: Piece } | { type: 'abort' };
type Failure =
  | { kind: 'retry'; message: string; waitMs?: number }
  | { kind: 'status'; status: number; sendAuth: boolean; url: string }
  | { kind: 'action'; message: string }
  | { kind: 'disk'; message: string; code?: string; errno?: number; syscall?: string; path?: string }
  | { kind: 'other'; message: string };
type FromWorker =
  | { type: 'written'; id: number; bytes: number }
  | { type: 'done'; id: number; failure?: Failure }
  | { type: 'log'; line: string };

export function isReceiveSetup(data: unknown): data is ReceiveSetup {
  return typeof data === 'object' && data !== null && (data as { role?: unknown }).role === RECEIVE_WORKER;
}

/** The worker's side: fetch the pieces the main thread hands over, report what is on disk. */
export function runReceiveWorker(setup: ReceiveSetup): void {
  const port = parentPort;
  if (!port) throw new Error('not a worker');
  const send = (message: FromWorker) => port.postMessage(message);
  let abort = new AbortController();
  const client = new DownloadClient({ apiKey: setup.apiKey, apiOrigin: setup.apiOrigin });
  const disk = new DiskQueue(setup.fd);
  let diskFault: NodeJS.ErrnoException | undefined;
  port.on('message', (message: ToWorker) => {
    if (message.type === 'abort') {
      abort.abort();
      client.close();
      abort = new AbortController();
      return;
    }
    const { id, piece } = message;
    const sink = {
      disk,
      written: (bytes: number) => send({ type: 'written', id, bytes }),
      onDiskFault: (error: Error) => {
        diskFault ??= error as NodeJS.ErrnoException;
      },
    };
    fetchRange(client, setup.target, piece, sink, abort.signal, (line) => send({ type: 'log', line })).then(
      () => send({ type: 'done', id }),
      (error: unknown) => send({ type: 'done', id, failure: serialize(diskFault ? new DiskFault(diskFault) : error) }),
    );
  });
}

function serialize(error: unknown): Failure {
  if (error instanceof RetryableError) return { kind: 'retry', message: error.message, waitMs: error.waitMs };
  if (error instanceof RangeStatusError) return { kind: 'status', status: error.status, sendAuth: error.sendAuth, url: error.url };
  if (error instanceof ActionError) return { kind: 'action', message: error.message };
  if (error instanceof DiskFault) {
    const { message, code, errno, syscall, path } = error.cause;
    return { kind: 'disk', message, code, errno, syscall, path };
  }
  return { kind: 'other', message: error instanceof Error ? error.message : String(error) };
}

function deserialize(failure: Failure): Error {
  switch (failure.kind) {
    case 'retry':
      return new RetryableError(failure.message, failure.waitMs);
    case 'status':
      return new RangeStatusError(failure.status, failure.sendAuth, failure.url);
    case 'action':
      return new ActionError(failure.message);
    case 'disk': {
      const { message, ...fields } = failure;
      return new DiskFault(Object.assign(new Error(message), fields));
    }
    default:
      return new Error(failure.message);
  }
}

/**
 * The bundle's entry next to this code (`dist/index.js`), or, when run from source (the unit
 * tests), a small script that registers tsx in the worker and loads `src/index.ts`.
 */
function entry(): { file: string; eval?: true } {
  const here = fileURLToPath(import.meta.url);
  if (!here.endsWith('.ts')) return { file: path.join(path.dirname(here), 'index.js') };
  const source = pathToFileURL(path.join(path.dirname(here), '..', 'index.ts')).href;
  return { file: `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(source)}); });`, eval: true };
}

/** The main thread's side: one receive worker. */
export class ReceiveThread {
  private readonly worker: Worker;
  private nextId = 0;
  private readonly pending = new Map<
    number,
    { piece: Piece; resolve: () => void; reject: (e: Error) => void; written: (n: number) => void }
  >();
  private failure?: Error;

  constructor(setup: Omit<ReceiveSetup, 'role'>, print: (line: string) => void) {
    const { file, eval: evaluate } = entry();
    this.worker = new Worker(file, {
      eval: evaluate,
      workerData: { ...setup, role: RECEIVE_WORKER } satisfies ReceiveSetup,
      // It allocates little (the bytes go through fixed buffers): a small heap keeps the action's memory small.
      resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 48 },
    });
    this.worker.on('message', (message: FromWorker) => {
      if (message.type === 'log') return print(message.line);
      const job = this.pending.get(message.id);
      if (!job) return;
      if (message.type === 'written') {
        job.piece.received += message.bytes;
        job.written(message.bytes);
        return;
      }
      this.pending.delete(message.id);
      if (message.failure) job.reject(deserialize(message.failure));
      else job.resolve();
    });
    // A worker that fails leaves its pieces to be retried (on the main thread: see `usable`).
    this.worker.on('error', (error) => this.fail(new RetryableError(`the receive worker failed (${error.message})`)));
    this.worker.on('exit', () => this.fail(new RetryableError('the receive worker stopped')));
  }

  /** False once the worker has failed or ended. */
  get usable(): boolean {
    return this.failure === undefined;
  }

  /** One attempt at `piece` on the worker; `written` is told each run of bytes put on disk. */
  fetch(piece: Piece, written: (bytes: number) => void): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { piece, resolve, reject, written });
      this.worker.postMessage({ type: 'fetch', id, piece: { ...piece } } satisfies ToWorker);
    });
  }

  abort(): void {
    this.worker.postMessage({ type: 'abort' } satisfies ToWorker);
  }

  async close(): Promise<void> {
    this.failure ??= new RetryableError('the receive worker was closed');
    await this.worker.terminate();
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const job of this.pending.values()) job.reject(this.failure);
    this.pending.clear();
  }
}
