/**
 * Decompressing an archive as a stream, for whoever reads its tar: gzip with node:zlib; zstd with
 * the `zstd` program where it is on PATH, else with node:zlib where this Node.js has it (22.15 and
 * later). The program comes first: it decodes weights about 1.8 times as fast as node:zlib's zstd
 * and on a core of its own, so the check costs less CPU and keeps up with faster downloads. Windows
 * of up to 2 GiB are accepted (`--long=31`), the most zstd's own tools write.
 */
import { spawn } from 'node:child_process';
import type { Readable, Transform, Writable } from 'node:stream';
import * as zlib from 'node:zlib';
import { ActionError } from '../errors.js';
import type { ArchiveFormat } from './format.js';

/** How the zstd stream is decoded: in this process, or by the `zstd` program. */
export type ZstdDecoder = 'node' | 'program';

/** Bytes per piece of decompressed output: large enough that the per-piece work does not count. */
const CHUNK_BYTES = 256 * 1024;

type ZstdFactory = (options: { chunkSize?: number; params?: Record<number, number> }) => Transform;

/** node:zlib's zstd decoder, when this Node.js has one. */
export function nodeZstd(): ZstdFactory | undefined {
  const z = zlib as unknown as { createZstdDecompress?: ZstdFactory; constants: Record<string, number | undefined> };
  const windowLogMax = z.constants.ZSTD_d_windowLogMax;
  if (typeof z.createZstdDecompress !== 'function' || windowLogMax === undefined) return undefined;
  const create = z.createZstdDecompress;
  return (options) => create({ ...options, params: { ...options.params, [windowLogMax]: 31 } });
}

export const INSTALL_ZSTD =
  'Install zstd (Ubuntu: `sudo apt-get install -y zstd`; macOS: `brew install zstd`; Windows: `choco install zstandard`, `winget install Meta.Zstandard` or `scoop install zstd`)';

/** zstd is needed and neither node:zlib nor the program can provide it. */
export class ZstdMissingError extends ActionError {
  constructor(need: string, advice: string) {
    super(
      `${need} needs zstd: the \`zstd\` program is not on PATH and this Node.js (${process.version}) has no zstd in node:zlib (Node.js 22.15 and later do). ${INSTALL_ZSTD}, or ${advice}.`,
    );
    this.name = 'ZstdMissingError';
  }
}

/** The compressed data is not what its format says: corrupt, truncated or not compressed at all. */
export class DecompressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecompressError';
  }
}

interface Decoder {
  input: Writable;
  output: Readable;
  /** Settles once the decoder has finished: the first failure it reported, if any. */
  finished: Promise<Error | undefined>;
  /** Stops it before the end of its input. */
  stop(): void;
}

function zlibDecoder(stream: Transform, what: string): Decoder {
  let failure: Error | undefined;
  const finished = new Promise<Error | undefined>((resolve) => {
    stream.once('error', (error) => {
      failure ??= new DecompressError(`${what} could not decompress it (${error.message})`);
      resolve(failure);
    });
    stream.once('close', () => resolve(failure));
  });
  return { input: stream, output: stream, finished, stop: () => stream.destroy() };
}

/** The `zstd` program as a decoder, once it has started; undefined when it is not on PATH. */
async function programDecoder(advice: string): Promise<Decoder | undefined> {
  const child = spawn('zstd', ['-d', '-c', '-q', '--long=31'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const started = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', (error) => resolve(error));
  });
  if (started?.code === 'ENOENT') return undefined;
  if (started) throw new ActionError(`Could not run zstd (${started.message}); check its installation, or ${advice}.`);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  // Writing to a zstd that has stopped reading fails with EPIPE: its exit status says why.
  child.stdin.on('error', () => undefined);
  const finished = new Promise<Error | undefined>((resolve) => {
    child.once('close', (code, signal) => {
      if (code === 0 || signal !== null) return resolve(undefined);
      resolve(new DecompressError(`zstd could not decompress it (${stderr.trim().replace(/\s+/g, ' ') || `exit code ${code}`})`));
    });
  });
  return {
    input: child.stdin,
    output: child.stdout,
    finished,
    stop: () => {
      child.stdout.destroy();
      child.stdin.destroy();
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill('SIGTERM');
    },
  };
}

export interface DecompressOptions {
  /** What needs the decompression, for the message when zstd is missing, e.g. "Checking the archive's contents". */
  need: string;
  /** What else the user can do, e.g. "set `verify-contents: false`". */
  advice: string;
  /** Force a zstd decoder (tests); by default the program where it is on PATH, else node:zlib's. */
  zstd?: ZstdDecoder;
}

async function decoderFor(format: ArchiveFormat, options: DecompressOptions): Promise<Decoder> {
  if (format === 'gzip') return zlibDecoder(zlib.createGunzip({ chunkSize: CHUNK_BYTES }), 'gzip');
  const create = nodeZstd();
  if (options.zstd !== 'node') {
    const program = await programDecoder(options.advice);
    if (program) return program;
  }
  if (options.zstd === 'program' || !create) throw new ZstdMissingError(options.need, options.advice);
  return zlibDecoder(create({ chunkSize: CHUNK_BYTES }), 'zstd');
}

/**
 * Runs `consume` over the decompressed bytes of `source`. When `consume` returns before the end
 * (at the tar's end-of-archive blocks), the decoder is stopped and the rest of `source` is read
 * and dropped, so that whoever feeds it can finish; when it throws, `source` is closed at once.
 * A decoder's failure is reported in place of the truncated tar it causes.
 */
export async function withDecompressed<T>(
  source: AsyncIterable<Uint8Array>,
  format: ArchiveFormat,
  consume: (plain: AsyncIterable<Buffer>) => Promise<T>,
  options: DecompressOptions,
): Promise<T> {
  let decoder: Decoder;
  try {
    decoder = await decoderFor(format, options);
  } catch (error) {
    await source[Symbol.asyncIterator]().return?.();
    throw error;
  }
  let stopped = false;
  let failed = false;
  let sourceError: unknown;
  let consumed: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    consumed = resolve;
  });
  const pump = (async () => {
    try {
      for await (const chunk of source) {
        // A decoder that has stopped taking input (it failed, or it is past the end) makes the
        // pump wait for the reader's verdict: read on and drop the rest, or stop reading.
        if (!stopped && !failed && decoder.input.destroyed) await done;
        if (failed) break;
        if (stopped || decoder.input.destroyed) continue;
        // Written through before the next chunk is asked for: the source may reuse its buffer.
        await written(decoder.input, chunk);
      }
      if (!stopped && !failed) decoder.input.end();
    } catch (error) {
      sourceError = error;
      decoder.output.destroy(error as Error);
    }
  })();

  let result: T;
  try {
    result = await consume(decoder.output);
  } catch (error) {
    failed = true;
    consumed();
    // A broken stream shows up as a truncated tar: the decoder's own message says more. Read to
    // its end, the decoder is finishing on its own; else it is stopped first.
    const ended = settle(decoder);
    const problem = await decoder.finished;
    await pump;
    if (sourceError !== undefined) throw sourceError;
    throw problem && (ended || !isVerdict(error)) ? problem : error;
  }
  stopped = true;
  consumed();
  const ended = settle(decoder);
  const problem = await decoder.finished;
  await pump;
  if (sourceError !== undefined) throw sourceError;
  if (ended && problem) throw problem;
  return result;
}

/**
 * Once the reader is done: a decoder whose output has not ended is stopped; one whose output has
 * ended has its input closed too, since the program's pipes must all close before it counts as
 * finished. True when the output had ended.
 */
function settle(decoder: Decoder): boolean {
  const ended = decoder.output.readableEnded;
  if (ended) decoder.input.destroy();
  else decoder.stop();
  return ended;
}

/**
 * An error the reader raised about what it read (an unsafe entry, a wrong model, a damaged weights
 * file, a bad tar header), as opposed to a tar cut short, which a failing decoder causes.
 */
function isVerdict(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.name === 'TarFormatError') return !error.message.includes('ends inside');
  return error instanceof ActionError || error.name === 'SafetensorsError';
}

/** Writes `chunk`; resolves once the stream is done with it (handed on, failed or closed). */
function written(stream: Writable, chunk: Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('close', done);
      resolve();
    };
    stream.on('close', done);
    stream.write(chunk, done);
  });
}
