import { HttpClient } from '@actions/http-client';
import { getProxyUrl } from '@actions/http-client/lib/proxy';
import Together, { APIError } from 'together-ai';
import { ActionError } from '../errors.js';
import * as log from '../log.js';
import { isRetryableStatus, RetriesExhaustedError, RetryableError, retryAfterMs, withRetries } from '../transfer/retry.js';
import { describeConnectionError } from './connection-errors.js';
import { apiDeadlineMs, type BodyTooLargeError, bodyTooLarge, boundedFetch, MAX_API_DEADLINE_MS } from './json-transport.js';

/** The attempts for the job, checkpoint and event requests: 408/409/429/5xx, connection errors and deadlines are retried. */
export const API_ATTEMPTS = 5;
/** The metrics only feed the summary: one attempt (one deadline), then the summary goes without them. */
export const METRICS_ATTEMPTS = 1;

export interface Job {
  id: string;
  status: string;
  model?: string;
  modelOutputName?: string;
  trainingType?: { type?: string };
}

export interface Checkpoint {
  step: number;
  /** The API's free-text label: `Intermediate`, `Final Merged`, ... */
  checkpointType: string;
  checkpoint?: string;
  createdAt?: string;
}

/** One entry of a job's event log. */
export interface FineTuneEvent {
  type: string;
  level?: string;
  message: string;
  createdAt?: string;
}

/** One snapshot of `GET /fine-tunes/{id}/metrics`: scalar values by name (`train/loss`, `train/global_step`, ...). */
export type MetricsSnapshot = Record<string, number>;

/** What the request was for, so that an error can say which input to fix. */
export interface RequestContext {
  what: string;
  jobId: string;
  step?: number;
}

type RequestOptions = { signal: AbortSignal };

/**
 * A failed attempt that another may cure; `explain` gives the step's error once no attempt is
 * left, knowing how many there were.
 */
class FailedAttempt extends RetryableError {
  constructor(
    message: string,
    readonly explain: (attempts: number) => ActionError,
    waitMs?: number,
    status?: number,
  ) {
    super(message, waitMs, status);
  }
}

/**
 * Together's JSON endpoints, through the official SDK. The retries are ours, not the SDK's
 * (`maxRetries: 0`): the same policy as the download's (`withRetries`: a server's `retry-after`
 * capped at 60 s, every wait logged), and a retry can cover what the SDK's cannot: a body that
 * breaks or trickles after the head. Each attempt has one deadline for head and body.
 */
export class TogetherApi {
  private readonly client: Together;
  /** The proxy the API calls go through, without credentials, for error messages. */
  private readonly proxy?: string;

  constructor(
    readonly baseUrl: string,
    apiKey: string,
  ) {
    // fetch, which the SDK uses, ignores https_proxy and no_proxy; the runner's proxy settings
    // reach it through the same dispatcher http-client would use for this URL.
    const dispatcher = new HttpClient('together-download').getAgentDispatcher(baseUrl);
    if (dispatcher) this.proxy = getProxyUrl(new URL(baseUrl))?.origin;
    this.client = new Together({
      apiKey,
      baseURL: baseUrl,
      fetch: boundedFetch(dispatcher),
      maxRetries: 0,
      // The SDK's own timeout covers only the head; ours (apiDeadlineMs, at most this) comes first.
      timeout: MAX_API_DEADLINE_MS + 1000,
      // The SDK would otherwise write its own warnings to the console, outside our log format.
      logLevel: 'off',
    });
  }

  async getJob(jobId: string): Promise<Job> {
    const job = await this.call({ what: 'looking up the job', jobId }, (o) => this.client.fineTuning.retrieve(jobId, o));
    return {
      id: job.id || jobId,
      status: String(job.status ?? 'unknown'),
      model: job.model,
      modelOutputName: job.model_output_name,
      trainingType: job.training_type ?? undefined,
    };
  }

  /** The checkpoints that can be asked for by step (a positive whole number). */
  async listCheckpoints(jobId: string): Promise<Checkpoint[]> {
    const list = await this.call({ what: 'listing the checkpoints', jobId }, (o) => this.client.fineTuning.listCheckpoints(jobId, o));
    return (Array.isArray(list.data) ? list.data : [])
      .filter((c) => Number.isSafeInteger(c?.step) && c.step > 0)
      .map((c) => ({
        step: c.step,
        checkpointType: String(c.checkpoint_type ?? ''),
        checkpoint: typeof c.checkpoint === 'string' ? c.checkpoint : undefined,
        createdAt: typeof c.created_at === 'string' ? c.created_at : undefined,
      }));
  }

  async listEvents(jobId: string): Promise<FineTuneEvent[]> {
    const list = await this.call({ what: 'reading the job events', jobId }, (o) => this.client.fineTuning.listEvents(jobId, o));
    return (Array.isArray(list.data) ? list.data : []).map((e) => ({
      type: String(e.type ?? ''),
      level: e.level ?? undefined,
      message: String(e.message ?? ''),
      createdAt: e.created_at,
    }));
  }

  /** Every metrics snapshot, in the order logged (no filter: the spec's "omit the body to get them all"). */
  async listMetrics(jobId: string): Promise<MetricsSnapshot[]> {
    const list = await this.call(
      { what: 'reading the training metrics', jobId },
      (o) => this.client.fineTuning.listMetrics(jobId, {}, o),
      METRICS_ATTEMPTS,
    );
    const snapshots: unknown[] = Array.isArray(list.metrics) ? list.metrics : [];
    return snapshots.flatMap((m) => {
      if (typeof m !== 'object' || m === null) return [];
      const values = Object.entries(m).filter(([, v]) => typeof v === 'number' && Number.isFinite(v));
      return values.length === 0 ? [] : [Object.fromEntries(values) as MetricsSnapshot];
    });
  }

  private async call<T>(context: RequestContext, request: (options: RequestOptions) => Promise<T>, attempts = API_ATTEMPTS): Promise<T> {
    log.debug(`Together API: ${context.what} for ${context.jobId}`);
    try {
      return await withRetries(`Together API, ${context.what}`, () => this.attempt(context, request), { attempts });
    } catch (error) {
      if (error instanceof RetriesExhaustedError && error.last instanceof FailedAttempt) throw error.last.explain(attempts);
      throw error;
    }
  }

  /** One request, head and body within the deadline; failures classified for `withRetries`. */
  private async attempt<T>(context: RequestContext, request: (options: RequestOptions) => Promise<T>): Promise<T> {
    const deadlineMs = apiDeadlineMs();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), deadlineMs);
    try {
      const body = await request({ signal: controller.signal });
      if (typeof body !== 'object' || body === null || Array.isArray(body)) {
        throw new ActionError(
          `Together's answer while ${context.what} for job ${context.jobId} is not a JSON object, so it is not Together's API answering. Check the \`base-url\` input (or TOGETHER_BASE_URL): it must be Together's API, e.g. https://api.together.ai/v1.`,
        );
      }
      return body;
    } catch (error) {
      if (controller.signal.aborted) throw tooSlow(context, deadlineMs);
      throw this.classify(error, context);
    } finally {
      clearTimeout(timer);
    }
  }

  private classify(error: unknown, context: RequestContext): unknown {
    if (error instanceof ActionError) return error;
    const tooLarge = bodyTooLarge(error);
    if (tooLarge) return explainTooLarge(tooLarge, context);
    if (error instanceof APIError && typeof error.status === 'number') {
      const status = error.status;
      const detail = serverMessage(error.error);
      if (!isRetryableStatus(status) && status !== 409) return explainHttpStatus(status, detail, context, 1);
      const headers = error.headers ? Object.fromEntries(error.headers.entries()) : {};
      return new FailedAttempt(`HTTP ${status}`, (n) => explainHttpStatus(status, detail, context, n), retryAfterMs(headers), status);
    }
    const problem = describeConnectionError(error, this.baseUrl, this.proxy);
    if (problem) {
      const explain = (attempts: number) =>
        new ActionError(
          `Could not reach the Together API at ${this.baseUrl} while ${context.what}${attempts > 1 ? `, after ${attempts} attempts` : ''}: ${problem.reason}. ${problem.hint}`,
          { cause: error },
        );
      return problem.retryable ? new FailedAttempt(problem.reason, explain) : explain(1);
    }
    if (error instanceof SyntaxError) {
      return new ActionError(
        `Together's answer while ${context.what} for job ${context.jobId} is not valid JSON (${error.message}). Run the job again later; if it persists, check \`base-url\`.`,
      );
    }
    return error;
  }
}

function tooSlow(context: RequestContext, deadlineMs: number): FailedAttempt {
  const seconds = deadlineMs / 1000;
  return new FailedAttempt(
    `no complete answer within ${seconds} s`,
    (attempts) =>
      new ActionError(
        `The Together API was too slow while ${context.what} for job ${context.jobId}: its answer (head and body) was not complete after ${seconds} s of waiting${attempts > 1 ? `, on the last of ${attempts} attempts` : ''}. This is a problem on Together's side or the network; run the job again later.`,
      ),
  );
}

function explainTooLarge(error: BodyTooLargeError, context: RequestContext): ActionError {
  return new ActionError(
    `Together's answer while ${context.what} for job ${context.jobId} was refused: ${error.message}. A real answer is a few kilobytes; check the \`base-url\` input (or TOGETHER_BASE_URL), or run the job again later.`,
  );
}

/** The `message` of a Together error body (`{"error": {"message": ...}}`), if there is one. */
export function serverMessage(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const inner = (body as { error?: unknown }).error ?? body;
  const message = typeof inner === 'object' && inner !== null ? (inner as { message?: unknown }).message : inner;
  if (typeof message !== 'string' || message.trim() === '') return undefined;
  const oneLine = message.replace(/\s+/g, ' ').trim();
  return oneLine.length > 300 ? `${oneLine.slice(0, 300)}…` : oneLine;
}

/** The message for an HTTP error status from any Together endpoint. */
export function explainHttpStatus(status: number, detail: string | undefined, context: RequestContext, attempts: number): ActionError {
  const said = detail ? ` Together said: ${detail}` : '';
  const where = `HTTP ${status} while ${context.what}`;
  switch (status) {
    case 401:
      return new ActionError(
        `Together rejected the API key (${where}). Check the \`api-key\` input (or TOGETHER_API_KEY): it must be a valid Together API key, e.g. \`api-key: \${{ secrets.TOGETHER_API_KEY }}\`.${said}`,
      );
    case 403:
      return new ActionError(
        `The API key may not access job ${context.jobId} (${where}). Check that \`api-key\` belongs to the account or project that owns the job.${said}`,
      );
    case 404:
      return new ActionError(
        context.step === undefined
          ? `Together has no fine-tuning job ${context.jobId} (${where}). Check \`job-id\`: it must be the id of one of your fine-tuning jobs, as \`together fine-tuning list\` prints it.${said}`
          : `Together has no checkpoint at step ${context.step} of job ${context.jobId} (${where}). Check \`job-id\` and \`step\`.${said}`,
      );
    case 400:
      return new ActionError(
        `Together refused the request (${where}) for job ${context.jobId}. Check \`job-id\`, \`step\` and \`checkpoint-type\`.${said}`,
      );
    default:
      if (status === 408 || status === 429 || status >= 500) {
        return new ActionError(
          `The Together API still failed after ${attempts} attempts (last status: ${where}). This is a temporary problem on Together's side or the network; run the job again later.${said}`,
        );
      }
      return new ActionError(`The Together API answered ${where}.${said}`);
  }
}
