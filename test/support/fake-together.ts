/**
 * A fake of the Together AI fine-tuning API (the parts this project uses), listening on loopback.
 *
 * Follows /work/shared/together-api.md and together-openapi.yaml:
 *   GET /v1/fine-tunes/:id              FinetuneResponse
 *   GET /v1/fine-tunes/:id/checkpoints  FinetuneListCheckpoints
 *   GET /v1/fine-tunes/:id/events       FinetuneListEvents
 *   GET /v1/fine-tunes/:id/metrics      {"metrics": [...]}, filtered by an optional JSON body
 *   GET /v1/finetune/download?ft_id=..&checkpoint_step=..&checkpoint=..   (also HEAD)
 *
 * Only Node built-ins are used. Files on disk are streamed with fs.createReadStream and never read whole.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export interface FakeCheckpoint {
  step: number;
  checkpoint_type: string;
  checkpoint?: 'model' | 'adapter';
  created_at?: string;
  path?: string;
}

/** Bytes in memory, or a file on disk streamed with fs (never read whole into memory). */
export type ArchiveSource = Buffer | { file: string };

export interface FakeJob {
  id: string;
  status: string;
  training_type?:
    | { type: 'Full' }
    | { type: 'Lora'; lora_r: number; lora_alpha: number; lora_dropout?: number; lora_trainable_modules?: string };
  model_output_name?: string;
  model?: string;
  checkpoints?: FakeCheckpoint[];
  events?: Array<{ type: string; message: string; level?: string; created_at?: string }>;
  /** Training metrics snapshots in the order logged (flat scalar dictionaries, e.g. `train/loss`, `train/global_step`); none: `{"metrics": []}`. */
  metrics?: Array<Record<string, number>>;
  /** Fields served in the job document in place of the generated ones (a hostile `id`, `status`, ...). */
  served?: Record<string, unknown>;
  /** key: `${checkpoint}` for the final archive (merged | adapter | model_output_path), `${checkpoint}@${step}` for a step */
  archives: Record<string, ArchiveSource>;
}

export interface Reply {
  status: number;
  /** Destroy the socket instead of answering (a reset connection). */
  reset?: boolean;
  /** Serve this reply only to a ranged (`range`) or a whole-body (`whole`) request, or when the predicate holds. */
  when?: 'range' | 'whole' | ((request: { range?: string }) => boolean);
  headers?: Record<string, string>;
  body?: string;
}

export type Endpoint = 'job' | 'checkpoints' | 'events' | 'metrics' | 'download';

export interface Faults {
  /** replies served (and consumed, one per request) before normal behaviour, per endpoint; 'reset' destroys the socket */
  queue?: Partial<Record<Endpoint, Array<Reply | 'reset'>>>;
  /** answer a Range request with 200 and the full body */
  ignoreRange?: boolean;
  /** lie in Content-Length (200: full length, 206: range length, passed through this function) */
  contentLength?: (realLength: number) => number;
  /** destroy the socket after this many body bytes of any download response */
  cutBodyAfter?: number;
  /** the first download response to a request without Range is cut after this many body bytes; then the fault is spent */
  cutWholeOnceAfter?: number;
  /** send a download response's headers, then wait this long before its body (so a client has its file open when a cut comes) */
  bodyAfterMs?: number;
  /** download content type (default application/octet-stream) */
  contentType?: string;
  /** send the download body chunked, without Content-Length */
  noContentLength?: boolean;
  /** throttle each download connection to this rate */
  bytesPerSecond?: number;
  /** the next `times` (default 1) download responses longer than `bytes` send `bytes` body bytes, then nothing until the client disconnects */
  stallAfter?: { bytes: number; times?: number };
  /** the first download response covering this archive offset is cut there (the socket is destroyed); then the fault is spent */
  dropOnceAt?: number;
  /** /finetune/download answers 302 with Location = redirectTo + original path and query */
  redirectTo?: string;
  /** status of that redirect (default 302) */
  redirectStatus?: number;
  /** appended to the redirect's query, e.g. `&X-Signature=secret` for a signed storage URL */
  redirectQuery?: string;
  /** a download request without `hop=1` gets a 307 to a *relative* Location (same path, `&hop=1` added) */
  relativeRedirect?: boolean;
  /** the total reported in Content-Range to the `bytes=0-1` probe (a lie about the size) */
  probeTotal?: number;
  /** every JSON error message (4xx/5xx) repeats, twice, the key the request presented (a server that echoes credentials) */
  echoKey?: boolean;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  range?: string;
  /** status sent; 0 when the socket was reset without an answer */
  status: number;
  /** body bytes written on the wire for this request */
  bodyBytes: number;
  /** which route matched, if any */
  endpoint?: Endpoint;
  /** when the request arrived (Date.now()) */
  at: number;
  /** the client's port: which connection (a proxy's, say) the request came on */
  remotePort?: number;
  /** the request body, as text (the metrics filter) */
  body?: string;
}

export interface FakeTogether {
  url: string;
  port: number;
  requests: RecordedRequest[];
  bytesSent(): number;
  setFaults(f: Faults): void;
  jobs: Map<string, FakeJob>;
  close(): Promise<void>;
}

export interface StartFakeTogetherOptions {
  apiKey: string;
  jobs: FakeJob[];
  faults?: Faults;
  /** default 127.0.0.1 */
  host?: string;
  /**
   * Storage-host mode (redirect target): the download route does not check auth and answers 400
   * when an Authorization header is present. Other routes still check auth.
   */
  requireNoAuth?: boolean;
  /** default 0: any free port */
  port?: number;
  /** serve https with this key and certificate (PEM) */
  tls?: { key: string | Buffer; cert: string | Buffer };
}

const FIXED_CREATED = '2024-07-26T18:04:05.123Z';
const FIXED_UPDATED = '2024-07-26T19:41:17.456Z';
const BUFFER_CHUNK = 64 * 1024;

function errorBody(message: string, type: string, code: string | null = null): string {
  return JSON.stringify({ error: { message, type, param: null, code } });
}

function defaultErrorBody(status: number): string {
  switch (status) {
    case 400:
      return errorBody('Bad request', 'invalid_request_error');
    case 401:
      return errorBody(
        'Invalid API key provided. You can find your API key at https://api.together.xyz/settings/api-keys.',
        'invalid_request_error',
        'invalid_api_key',
      );
    case 403:
      return errorBody('Forbidden', 'invalid_request_error');
    case 404:
      return errorBody('Not found', 'invalid_request_error');
    case 408:
      return errorBody('Request timeout', 'server_error');
    case 409:
      return errorBody('Conflict', 'invalid_request_error');
    case 429:
      return errorBody('Rate limit exceeded, please try again later', 'rate_limit_error', 'rate_limit_exceeded');
    case 500:
      return errorBody('Internal server error', 'server_error');
    case 502:
      return errorBody('Bad gateway', 'server_error');
    case 503:
      return errorBody('Service unavailable', 'server_error');
    case 504:
      return errorBody('Gateway timeout', 'server_error');
    default:
      return status >= 500
        ? errorBody(`Server error (${status})`, 'server_error')
        : errorBody(`Request failed (${status})`, 'invalid_request_error');
  }
}

function cfRay(): string {
  return `${randomBytes(8).toString('hex')}-SJC`;
}

function sourceLength(src: ArchiveSource): number {
  return Buffer.isBuffer(src) ? src.length : statSync(src.file).size;
}

/** Yields the bytes [start, end] (inclusive) of a source; end < start means empty. */
function sourceChunks(src: ArchiveSource, start: number, end: number): AsyncIterable<Buffer> & { destroy(): void } {
  if (end < start) {
    return {
      async *[Symbol.asyncIterator]() {},
      destroy() {},
    };
  }
  if (Buffer.isBuffer(src)) {
    return {
      async *[Symbol.asyncIterator]() {
        for (let p = start; p <= end; p += BUFFER_CHUNK) yield src.subarray(p, Math.min(end + 1, p + BUFFER_CHUNK));
      },
      destroy() {},
    };
  }
  const rs = createReadStream(src.file, { start, end, highWaterMark: 1024 * 1024 });
  return {
    [Symbol.asyncIterator]: () => rs[Symbol.asyncIterator]() as AsyncIterator<Buffer>,
    destroy: () => rs.destroy(),
  };
}

type RangeResult = { kind: 'none' } | { kind: 'ok'; start: number; end: number } | { kind: 'unsatisfiable' };

/** Single-range parsing per RFC 9110; invalid or multi-range headers are ignored (served as 200). */
function parseRange(header: string | undefined, total: number): RangeResult {
  if (!header) return { kind: 'none' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return { kind: 'none' };
  const [, a, b] = m;
  if (a === '' && b === '') return { kind: 'none' };
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0 || total === 0) return { kind: 'unsatisfiable' };
    return { kind: 'ok', start: Math.max(0, total - suffix), end: total - 1 };
  }
  const start = Number(a);
  const end = b === '' ? total - 1 : Number(b);
  if (b !== '' && end < start) return { kind: 'none' };
  if (start >= total) return { kind: 'unsatisfiable' };
  return { kind: 'ok', start, end: Math.min(end, total - 1) };
}

function routeOf(pathname: string): { endpoint: Endpoint; id?: string } | undefined {
  if (pathname === '/v1/finetune/download') return { endpoint: 'download' };
  const m = /^\/v1\/fine-tunes\/([^/]+)(\/checkpoints|\/events|\/metrics)?\/?$/.exec(pathname);
  if (!m) return undefined;
  const id = decodeURIComponent(m[1]);
  if (m[2] === '/checkpoints') return { endpoint: 'checkpoints', id };
  if (m[2] === '/events') return { endpoint: 'events', id };
  if (m[2] === '/metrics') return { endpoint: 'metrics', id };
  return { endpoint: 'job', id };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function lastStep(job: FakeJob): number {
  return (job.checkpoints ?? []).reduce((m, c) => Math.max(m, c.step), 0);
}

function checkpointPath(job: FakeJob, c: FakeCheckpoint): string {
  return c.path ?? `s3://together-dev-model-out-us-west-2/finetune/${job.id}/checkpoint-${c.step}`;
}

function jobJson(job: FakeJob): Record<string, unknown> {
  const completed = job.status === 'completed';
  const model = job.model ?? 'meta-llama/Meta-Llama-3.1-8B-Instruct-Reference';
  const suffix = job.id.slice(-6);
  const nCheckpoints = (job.checkpoints ?? []).filter((c) => !/^final/i.test(c.checkpoint_type)).length;
  const out: Record<string, unknown> = {
    id: job.id,
    training_file: 'file-2c4d1e2f-8f4a-4f6b-9a55-0f9c1b7d3e21',
    validation_file: '',
    model,
    model_output_name: job.model_output_name ?? `user@example.com/${model.split('/').pop()}-ft-${suffix}`,
    model_output_path: `s3://together-dev-model-out-us-west-2/finetune/${job.id}/final`,
    trainingfile_numlines: 1000,
    trainingfile_size: 523_184,
    created_at: FIXED_CREATED,
    updated_at: FIXED_UPDATED,
    started_at: FIXED_CREATED,
    n_epochs: 1,
    n_checkpoints: nCheckpoints,
    n_evals: 0,
    batch_size: 16,
    learning_rate: 0.00001,
    lr_scheduler: { lr_scheduler_type: 'linear', lr_scheduler_args: { min_lr_ratio: 0 } },
    warmup_ratio: 0,
    max_grad_norm: 1,
    weight_decay: 0,
    eval_steps: 0,
    train_on_inputs: 'auto',
    training_method: { method: 'sft', train_on_inputs: 'auto' },
    status: job.status,
    job_id: '',
    events: eventsJson(job),
    token_count: completed ? 412_288 : 0,
    param_count: 8_030_261_248,
    total_price: 0,
    epochs_completed: completed ? 1 : 0,
    queue_depth: 0,
    wandb_project_name: '',
    wandb_url: '',
  };
  if (job.training_type) out.training_type = job.training_type;
  return { ...out, ...job.served };
}

/** The step a metrics snapshot was logged at, for the spec's `global_step_*` filters. */
function metricStep(m: Record<string, number>): number | undefined {
  return m['train/global_step'] ?? m['eval/global_step'] ?? m.global_step;
}

/** When a snapshot was logged: the fake's jobs log one snapshot per second from their start. */
function metricLoggedAt(index: number): number {
  return Date.parse(FIXED_CREATED) + index * 1000;
}

/**
 * `GET /fine-tunes/{id}/metrics`: every snapshot, or those the optional JSON body's filters keep
 * (`global_step_from/to`, `logged_at_from/to`, all inclusive). A body that is not a JSON object is
 * the spec's 400.
 */
function metricsJson(job: FakeJob, body: string): { status: number; body: string } {
  let filter: Record<string, unknown> = {};
  if (body.trim() !== '') {
    try {
      filter = JSON.parse(body);
    } catch {
      return { status: 400, body: errorBody('Invalid request: bad JSON body', 'invalid_request_error') };
    }
    if (typeof filter !== 'object' || filter === null || Array.isArray(filter)) {
      return { status: 400, body: errorBody('Invalid request: the body must be a JSON object', 'invalid_request_error') };
    }
  }
  const number = (k: string) => (typeof filter[k] === 'number' ? (filter[k] as number) : undefined);
  const time = (k: string) => (typeof filter[k] === 'string' ? Date.parse(filter[k] as string) : undefined);
  const [stepFrom, stepTo, from, to] = [number('global_step_from'), number('global_step_to'), time('logged_at_from'), time('logged_at_to')];
  const metrics = (job.metrics ?? []).filter((m, i) => {
    const step = metricStep(m);
    if ((stepFrom !== undefined || stepTo !== undefined) && step === undefined) return false;
    if (stepFrom !== undefined && (step as number) < stepFrom) return false;
    if (stepTo !== undefined && (step as number) > stepTo) return false;
    if (from !== undefined && metricLoggedAt(i) < from) return false;
    if (to !== undefined && metricLoggedAt(i) > to) return false;
    return true;
  });
  return { status: 200, body: JSON.stringify({ metrics }) };
}

function checkpointsJson(job: FakeJob): { data: Array<Record<string, unknown>> } {
  return {
    data: (job.checkpoints ?? []).map((c) => {
      const o: Record<string, unknown> = {
        step: c.step,
        path: checkpointPath(job, c),
        created_at: c.created_at ?? FIXED_UPDATED,
        checkpoint_type: c.checkpoint_type,
      };
      if (c.checkpoint !== undefined) o.checkpoint = c.checkpoint;
      return o;
    }),
  };
}

function eventsJson(job: FakeJob): Array<Record<string, unknown>> {
  return (job.events ?? []).map((e) => ({
    object: 'fine-tune-event',
    created_at: e.created_at ?? FIXED_UPDATED,
    level: e.level ?? 'info',
    message: e.message,
    type: e.type,
    param_count: 0,
    token_count: 0,
    total_steps: lastStep(job),
    wandb_url: '',
    step: 0,
    checkpoint_path: '',
    model_path: '',
    training_offset: 0,
    hash: '',
  }));
}

type Resolved = { ok: true; key: string; source: ArchiveSource } | { ok: false; status: number; body: string };

/** Finds the archive for a download query, or the spec's error. */
function resolveArchive(job: FakeJob, query: Record<string, string>): Resolved {
  const checkpoint = query.checkpoint;
  if (checkpoint !== undefined && !['merged', 'adapter', 'model_output_path'].includes(checkpoint)) {
    return {
      ok: false,
      status: 400,
      body: errorBody(
        `Invalid checkpoint type '${checkpoint}'. Must be one of: merged, adapter, model_output_path`,
        'invalid_request_error',
      ),
    };
  }
  const stepRaw = query.checkpoint_step;
  let step = 0;
  if (stepRaw !== undefined && stepRaw !== '') {
    if (!/^\d+$/.test(stepRaw)) {
      return {
        ok: false,
        status: 400,
        body: errorBody(`Invalid checkpoint_step '${stepRaw}': must be a non-negative integer`, 'invalid_request_error'),
      };
    }
    step = Number(stepRaw);
  }
  const keys = Object.keys(job.archives);

  if (step > 0) {
    const stepKeys = keys.filter((k) => k.endsWith(`@${step}`));
    const known = (job.checkpoints ?? []).some((c) => c.step === step) || stepKeys.length > 0;
    if (!known) {
      const steps = (job.checkpoints ?? []).map((c) => c.step).join(', ') || 'none';
      return {
        ok: false,
        status: 404,
        body: errorBody(
          `Checkpoint step ${step} not found for fine-tune job ${job.id}. Available steps: ${steps}`,
          'invalid_request_error',
        ),
      };
    }
    if (checkpoint !== undefined && job.archives[`${checkpoint}@${step}`]) {
      return { ok: true, key: `${checkpoint}@${step}`, source: job.archives[`${checkpoint}@${step}`] };
    }
    if (stepKeys.length === 1) return { ok: true, key: stepKeys[0], source: job.archives[stepKeys[0]] };
    return {
      ok: false,
      status: 400,
      body: errorBody(
        `No ${checkpoint ?? ''}${checkpoint ? ' ' : ''}artifact available for checkpoint step ${step} of fine-tune job ${job.id}`,
        'invalid_request_error',
      ),
    };
  }

  if (job.status !== 'completed') {
    return {
      ok: false,
      status: 400,
      body: errorBody(
        `Fine-tune job ${job.id} is not completed (status: ${job.status}); no model is available for download yet`,
        'invalid_request_error',
      ),
    };
  }
  const finalKeys = keys.filter((k) => !k.includes('@'));
  let key: string | undefined;
  if (checkpoint !== undefined) key = job.archives[checkpoint] ? checkpoint : undefined;
  else if (finalKeys.length === 1) key = finalKeys[0];
  else key = ['merged', 'model_output_path'].find((k) => job.archives[k]);
  if (key === undefined) {
    return {
      ok: false,
      status: 400,
      body: errorBody(`No ${checkpoint ?? 'final'} artifact available for fine-tune job ${job.id}`, 'invalid_request_error'),
    };
  }
  return { ok: true, key, source: job.archives[key] };
}

function replyApplies(reply: Reply, range: string | undefined): boolean {
  if (!reply.when) return true;
  if (typeof reply.when === 'function') return reply.when({ range });
  return (reply.when === 'range') === (range !== undefined);
}

export function startFakeTogether(opts: StartFakeTogetherOptions): Promise<FakeTogether> {
  const host = opts.host ?? '127.0.0.1';
  const jobs = new Map<string, FakeJob>(opts.jobs.map((j) => [j.id, j]));
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  let faults: Faults = opts.faults ?? {};
  let totalSent = 0;

  /** With `echoKey`, an error body's message repeats the presented key twice. */
  function echoed(rec: RecordedRequest, status: number, body: string): string {
    if (!faults.echoKey || status < 400) return body;
    const auth = rec.headers.authorization;
    const key = typeof auth === 'string' ? auth.replace(/^Bearer /, '') : '';
    try {
      const parsed = JSON.parse(body);
      if (typeof parsed?.error?.message === 'string') {
        parsed.error.message += ` (request made with the key ${key}; check that ${key} is valid)`;
        return JSON.stringify(parsed);
      }
    } catch {
      // not JSON: left as it is
    }
    return body;
  }

  function sendJson(
    res: http.ServerResponse,
    rec: RecordedRequest,
    status: number,
    body: string,
    headers: Record<string, string> = {},
  ): void {
    const buf = Buffer.from(echoed(rec, status, body));
    rec.status = status;
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': String(buf.length),
      'cf-ray': cfRay(),
      ...headers,
    });
    if (rec.method === 'HEAD') {
      res.end();
      return;
    }
    res.end(buf, () => {
      rec.bodyBytes += buf.length;
    });
  }

  function sendReply(req: http.IncomingMessage, res: http.ServerResponse, rec: RecordedRequest, reply: Reply | 'reset'): void {
    if (reply === 'reset' || reply.reset) {
      rec.status = 0;
      req.socket.destroy();
      return;
    }
    const body = echoed(rec, reply.status, reply.body ?? (reply.status >= 400 ? defaultErrorBody(reply.status) : ''));
    const headers: Record<string, string> = { 'cf-ray': cfRay(), ...(reply.headers ?? {}) };
    const hasType = Object.keys(headers).some((h) => h.toLowerCase() === 'content-type');
    if (!hasType && body !== '') headers['content-type'] = 'application/json';
    const buf = Buffer.from(body);
    headers['content-length'] = String(buf.length);
    rec.status = reply.status;
    res.writeHead(reply.status, headers);
    if (rec.method === 'HEAD' || buf.length === 0) {
      res.end();
      return;
    }
    res.end(buf, () => {
      rec.bodyBytes += buf.length;
    });
  }

  /** Writes a download body honouring backpressure, throttling and the cut fault; resolves when done or aborted. */
  async function pumpBody(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    rec: RecordedRequest,
    src: ArchiveSource,
    start: number,
    end: number,
    announced: number | undefined,
  ): Promise<void> {
    const f = faults;
    const realLength = end >= start ? end - start + 1 : 0;
    // how many bytes we may send: the cut fault and a Content-Length lie both limit it
    let limit = realLength;
    if (announced !== undefined) limit = Math.min(limit, announced);
    let cut = f.cutBodyAfter !== undefined && f.cutBodyAfter < limit;
    if (cut) limit = f.cutBodyAfter!;
    if (f.cutWholeOnceAfter !== undefined && req.headers.range === undefined) {
      cut ||= f.cutWholeOnceAfter < limit;
      limit = Math.min(limit, f.cutWholeOnceAfter);
      f.cutWholeOnceAfter = undefined;
    }
    // a Content-Length larger than what we send: the connection must be dropped after the body
    let dropAfter = cut || (announced !== undefined && announced > limit);
    // one-shot faults, consumed by the first response they apply to
    let hang = false;
    const stall = f.stallAfter;
    if (stall && (stall.times ?? 1) > 0 && limit > stall.bytes) {
      stall.times = (stall.times ?? 1) - 1;
      limit = stall.bytes;
      hang = true;
    }
    if (f.dropOnceAt !== undefined && start <= f.dropOnceAt && f.dropOnceAt < start + limit) {
      limit = f.dropOnceAt - start;
      f.dropOnceAt = undefined;
      dropAfter = true;
    }

    let closed = false;
    const onClose = () => {
      closed = true;
    };
    res.on('close', onClose);
    if (f.bodyAfterMs) {
      res.flushHeaders();
      await sleep(f.bodyAfterMs);
    }
    const chunks = sourceChunks(src, start, start + limit - 1);
    const rate = f.bytesPerSecond;
    const slice = rate ? Math.max(1, Math.min(64 * 1024, Math.floor(rate / 20))) : Infinity;
    const t0 = Date.now();
    let written = 0;
    // settles when the last written piece has been handed to the socket (or the socket closed)
    let lastFlush: Promise<void> = Promise.resolve();

    const write = (piece: Buffer): Promise<void> =>
      new Promise<void>((resolve) => {
        if (closed) return resolve();
        const len = piece.length;
        let flushed!: () => void;
        lastFlush = new Promise<void>((r) => (flushed = r));
        const ok = res.write(piece, (err) => {
          if (!err) {
            rec.bodyBytes += len;
            totalSent += len;
          }
          flushed();
        });
        if (ok) return resolve();
        const done = () => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });

    try {
      for await (const chunk of chunks) {
        if (closed) break;
        for (let p = 0; p < chunk.length && !closed; p += slice) {
          const piece = slice === Infinity ? chunk : chunk.subarray(p, p + slice);
          if (rate) {
            const due = t0 + ((written + piece.length) / rate) * 1000;
            const wait = due - Date.now();
            if (wait > 0) await sleep(wait);
            if (closed) break;
          }
          await write(piece);
          written += piece.length;
        }
      }
    } catch {
      // source read error: drop the connection, the body is incomplete
      req.socket.destroy();
      return;
    } finally {
      chunks.destroy();
      res.off('close', onClose);
    }
    if (closed) return;
    if (hang) {
      // send nothing more until the client gives up on this connection
      await new Promise<void>((r) => (closed ? r() : res.once('close', () => r())));
      return;
    }
    if (dropAfter) {
      // make sure the bytes we wrote are flushed, then cut the connection (body cut short)
      await Promise.race([lastFlush, new Promise<void>((r) => res.once('close', () => r()))]);
      req.socket.destroy();
      return;
    }
    res.end();
  }

  function handleDownload(req: http.IncomingMessage, res: http.ServerResponse, rec: RecordedRequest, url: URL): void {
    const f = faults;
    const query = rec.query;
    if (f.relativeRedirect && query.hop !== '1') {
      rec.status = 307;
      res.writeHead(307, { location: `${url.pathname}${url.search}&hop=1`, 'content-length': '0', 'cf-ray': cfRay() });
      res.end();
      return;
    }
    if (f.redirectTo !== undefined && !opts.requireNoAuth) {
      rec.status = f.redirectStatus ?? 302;
      res.writeHead(rec.status, {
        location: f.redirectTo + url.pathname + url.search + (f.redirectQuery ?? ''),
        'content-length': '0',
        'cf-ray': cfRay(),
      });
      res.end();
      return;
    }
    const ftId = query.ft_id;
    if (!ftId) {
      sendJson(res, rec, 400, errorBody('Missing required query parameter: ft_id', 'invalid_request_error'));
      return;
    }
    const job = jobs.get(ftId);
    if (!job) {
      sendJson(res, rec, 404, errorBody(`Fine-tune job ${ftId} not found`, 'invalid_request_error'));
      return;
    }
    const resolved = resolveArchive(job, query);
    if (!resolved.ok) {
      sendJson(res, rec, resolved.status, resolved.body);
      return;
    }
    let total: number;
    try {
      total = sourceLength(resolved.source);
    } catch {
      sendJson(res, rec, 500, defaultErrorBody(500));
      return;
    }
    const range = f.ignoreRange ? ({ kind: 'none' } as RangeResult) : parseRange(rec.range, total);
    const common: Record<string, string> = {
      'accept-ranges': 'bytes',
      'cf-ray': cfRay(),
    };
    if (range.kind === 'unsatisfiable') {
      rec.status = 416;
      const body = Buffer.from(errorBody(`Requested range not satisfiable (size ${total})`, 'invalid_request_error'));
      res.writeHead(416, {
        ...common,
        'content-range': `bytes */${total}`,
        'content-type': 'application/json',
        'content-length': String(body.length),
      });
      if (rec.method === 'HEAD') res.end();
      else res.end(body, () => (rec.bodyBytes += body.length));
      return;
    }
    const start = range.kind === 'ok' ? range.start : 0;
    const end = range.kind === 'ok' ? range.end : total - 1;
    const realLength = end - start + 1;
    const status = range.kind === 'ok' ? 206 : 200;
    const headers: Record<string, string> = { ...common };
    if (f.contentType !== '') headers['content-type'] = f.contentType ?? 'application/octet-stream';
    const probe = start === 0 && end <= 1;
    if (status === 206) headers['content-range'] = `bytes ${start}-${end}/${probe && f.probeTotal !== undefined ? f.probeTotal : total}`;
    let announced: number | undefined;
    if (!f.noContentLength) {
      announced = f.contentLength ? Math.max(0, Math.floor(f.contentLength(realLength))) : realLength;
      headers['content-length'] = String(announced);
      if (announced !== realLength) headers.connection = 'close';
    }
    rec.status = status;
    res.writeHead(status, headers);
    if (rec.method === 'HEAD') {
      res.end();
      return;
    }
    void pumpBody(req, res, rec, resolved.source, start, end, announced);
  }

  function handleAuthFailure(res: http.ServerResponse, rec: RecordedRequest): void {
    sendJson(res, rec, 401, defaultErrorBody(401));
  }

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', `http://${host}`);
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const rangeHeader = req.headers.range;
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      headers: { ...req.headers },
      range: typeof rangeHeader === 'string' ? rangeHeader : undefined,
      status: 0,
      bodyBytes: 0,
      at: Date.now(),
      remotePort: req.socket.remotePort,
    };
    requests.push(rec);
    // the request body is irrelevant; drain it
    req.resume();

    const route = routeOf(url.pathname);
    if (route) rec.endpoint = route.endpoint;
    const isDownload = route?.endpoint === 'download';
    const methodOk = req.method === 'GET' || (isDownload && req.method === 'HEAD');

    if (isDownload && opts.requireNoAuth) {
      if (req.headers.authorization !== undefined) {
        sendJson(res, rec, 400, errorBody('Authorization header must not be sent to storage', 'invalid_request_error'));
        return;
      }
    } else if (req.headers.authorization !== `Bearer ${opts.apiKey}`) {
      handleAuthFailure(res, rec);
      return;
    }

    if (!route || !methodOk) {
      sendJson(res, rec, 404, errorBody(`Unknown request URL: ${req.method} ${url.pathname}`, 'invalid_request_error'));
      return;
    }

    const queued = faults.queue?.[route.endpoint];
    const head = queued?.[0];
    const applies = head !== undefined && (head === 'reset' || replyApplies(head, req.headers.range));
    if (queued && applies) {
      sendReply(req, res, rec, queued.shift()!);
      return;
    }

    if (route.endpoint === 'download') {
      handleDownload(req, res, rec, url);
      return;
    }
    const job = jobs.get(route.id!);
    if (!job) {
      sendJson(res, rec, 404, errorBody(`Fine-tune job ${route.id} not found`, 'invalid_request_error'));
      return;
    }
    if (route.endpoint === 'job') sendJson(res, rec, 200, JSON.stringify(jobJson(job)));
    else if (route.endpoint === 'checkpoints') sendJson(res, rec, 200, JSON.stringify(checkpointsJson(job)));
    else if (route.endpoint === 'metrics') {
      // The spec's filter travels in a GET body; the answer waits for it.
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        rec.body = Buffer.concat(chunks).toString('utf8');
        const answer = metricsJson(job, rec.body);
        sendJson(res, rec, answer.status, answer.body);
      });
    } else sendJson(res, rec, 200, JSON.stringify({ data: eventsJson(job) }));
  };
  const server = opts.tls ? https.createServer(opts.tls, handler) : http.createServer(handler);

  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // a client resetting mid-response must not crash the test process
  server.on('clientError', (_err, socket) => socket.destroy());

  return new Promise<FakeTogether>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      const port = (server.address() as AddressInfo).port;
      resolve({
        url: `${opts.tls ? 'https' : 'http'}://${host}:${port}/v1`,
        port,
        requests,
        bytesSent: () => totalSent,
        setFaults: (f: Faults) => {
          faults = f;
        },
        jobs,
        close: () =>
          new Promise<void>((res) => {
            server.close(() => res());
            for (const s of sockets) s.destroy();
            sockets.clear();
          }),
      });
    });
  });
}
