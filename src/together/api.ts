import { HttpClient } from '@actions/http-client';
import Together, { APIConnectionError, APIError } from 'together-ai';
import { ActionError } from '../errors.js';
import * as log from '../log.js';

/** The attempts the SDK makes for 408/409/429/5xx and network errors (retries + 1). */
export const API_ATTEMPTS = 5;

export interface Job {
  id: string;
  status: string;
  model?: string;
  modelOutputName?: string;
  trainingType?: { type?: string };
}

export interface Checkpoint {
  step: number;
  checkpointType: string;
  checkpoint?: string;
}

/** One entry of a job's event log. */
export interface FineTuneEvent {
  type: string;
  level?: string;
  message: string;
  createdAt?: string;
}

/** What the request was for, so that an error can say which input to fix. */
export interface RequestContext {
  what: string;
  jobId: string;
  step?: number;
}

/** Together's JSON endpoints, through the official SDK. */
export class TogetherApi {
  private readonly client: Together;

  constructor(
    readonly baseUrl: string,
    apiKey: string,
  ) {
    // fetch, which the SDK uses, ignores https_proxy and no_proxy; the runner's proxy settings
    // reach it through the same dispatcher http-client would use for this URL.
    const dispatcher = new HttpClient('together-download').getAgentDispatcher(baseUrl);
    this.client = new Together({
      apiKey,
      baseURL: baseUrl,
      fetchOptions: dispatcher ? ({ dispatcher } as Together['fetchOptions']) : undefined,
      maxRetries: API_ATTEMPTS - 1,
      timeout: 60_000,
      // The SDK would otherwise write its own warnings to the console, outside our log format.
      logLevel: 'off',
    });
  }

  async getJob(jobId: string): Promise<Job> {
    const job = await this.call({ what: 'looking up the job', jobId }, () => this.client.fineTuning.retrieve(jobId));
    return {
      id: job.id || jobId,
      status: String(job.status ?? 'unknown'),
      model: job.model,
      modelOutputName: job.model_output_name,
      trainingType: job.training_type ?? undefined,
    };
  }

  async listCheckpoints(jobId: string): Promise<Checkpoint[]> {
    const list = await this.call({ what: 'listing the checkpoints', jobId }, () => this.client.fineTuning.listCheckpoints(jobId));
    return (list.data ?? [])
      .filter((c) => Number.isSafeInteger(c.step))
      .map((c) => ({ step: c.step, checkpointType: c.checkpoint_type, checkpoint: c.checkpoint }));
  }

  async listEvents(jobId: string): Promise<FineTuneEvent[]> {
    const list = await this.call({ what: 'reading the job events', jobId }, () => this.client.fineTuning.listEvents(jobId));
    return (list.data ?? []).map((e) => ({
      type: String(e.type ?? ''),
      level: e.level ?? undefined,
      message: String(e.message ?? ''),
      createdAt: e.created_at,
    }));
  }

  private async call<T>(context: RequestContext, request: () => Promise<T>): Promise<T> {
    log.debug(`Together API: ${context.what} for ${context.jobId}`);
    try {
      return await request();
    } catch (error) {
      throw explainApiError(error, context, this.baseUrl);
    }
  }
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

/** Turns an SDK error into a message that says what to change. */
export function explainApiError(error: unknown, context: RequestContext, baseUrl: string): unknown {
  if (error instanceof APIConnectionError) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
    return new ActionError(
      `Could not reach the Together API at ${baseUrl} while ${context.what}, after ${API_ATTEMPTS} attempts (${error.message}${cause}). Check the network, a proxy, or the \`base-url\` input.`,
      { cause: error },
    );
  }
  if (error instanceof APIError && typeof error.status === 'number') {
    return explainHttpStatus(error.status, serverMessage(error.error), context, API_ATTEMPTS);
  }
  return error;
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
