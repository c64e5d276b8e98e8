import { ActionError, InputError } from '../errors.js';
import { redact } from '../log.js';

export const CHECKPOINT_TYPES = ['default', 'merged', 'adapter'] as const;
/** The `checkpoint-type` input. */
export type CheckpointChoice = (typeof CHECKPOINT_TYPES)[number];

/** What was fetched, as reported in the `checkpoint-type` output. */
export type FetchedType = 'merged' | 'adapter' | 'model';

/** The value of the download endpoint's `checkpoint` query parameter. */
export type CheckpointQuery = 'merged' | 'adapter' | 'model_output_path';

export type TrainingKind = 'lora' | 'full';

export interface CheckpointPlan {
  fetched: FetchedType;
  query: CheckpointQuery;
}

/**
 * The job's kind of training. Jobs from before LoRA existed carry no `training_type`; they were
 * full fine-tunes, so that is what its absence means.
 */
export function trainingKind(trainingType: { type?: string } | null | undefined): TrainingKind {
  return trainingType?.type?.toLowerCase() === 'lora' ? 'lora' : 'full';
}

/** Maps the `checkpoint-type` input onto what a job of this kind can serve. */
export function planCheckpoint(kind: TrainingKind, choice: CheckpointChoice): CheckpointPlan {
  if (kind === 'lora') {
    const fetched = choice === 'adapter' ? 'adapter' : 'merged';
    return { fetched, query: fetched };
  }
  if (choice !== 'default') {
    throw new InputError(
      'checkpoint-type',
      `\`${choice}\` is only available for LoRA jobs, and this is a full fine-tuning job: it has no adapter and nothing to merge. Use \`default\` (or leave the input out) to download the full model.`,
    );
  }
  return { fetched: 'model', query: 'model_output_path' };
}

export interface JobState {
  id: string;
  status: string;
}

const FAILED_STATUSES = new Set(['cancelled', 'cancel_requested', 'error', 'user_error']);

/** Throws unless the job's final model can be downloaded. */
export function requireCompleted(job: JobState): void {
  if (job.status === 'completed') return;
  const status = job.status || 'unknown';
  if (FAILED_STATUSES.has(status)) {
    throw new ActionError(
      `Fine-tuning job ${job.id} has status \`${status}\`, so it has no final model to download. Check the job on Together, or give \`step\` to fetch one of its saved checkpoints.`,
    );
  }
  throw new ActionError(
    `Fine-tuning job ${job.id} is not finished yet (status \`${status}\`), so its final model cannot be downloaded. Set \`wait: true\` to wait for it, or run this step again once the job is \`completed\`; checkpoints it has already saved can be fetched now with the \`step\` input.`,
  );
}

/** Throws, listing the steps that exist, unless `step` is one of the job's checkpoints. */
export function requireStep(jobId: string, step: number, checkpoints: ReadonlyArray<{ step: number }>): void {
  const steps = [...new Set(checkpoints.map((c) => c.step))].sort((a, b) => a - b);
  if (steps.includes(step)) return;
  const available = steps.length === 0 ? 'The job has no saved checkpoints yet.' : `Steps that exist: ${steps.join(', ')}.`;
  throw new InputError('step', `job ${jobId} has no checkpoint at step ${step}. ${available}`);
}

/** The `step` input: a step number, or `latest` for the highest step saved when the job is looked up. */
export type StepChoice = number | 'latest';

/**
 * The step to fetch: the given one, or for `latest` the highest saved step. A job without any
 * saved checkpoint has no latest one; the error names its status.
 */
export function resolveStep(
  jobId: string,
  choice: StepChoice | undefined,
  status: string,
  checkpoints: ReadonlyArray<{ step: number }>,
): number | undefined {
  if (choice !== 'latest') return choice;
  if (checkpoints.length > 0) return checkpoints.reduce((max, c) => Math.max(max, c.step), 0);
  throw new ActionError(
    `Fine-tuning job ${jobId} has no saved checkpoints yet (status \`${status || 'unknown'}\`), so \`step: latest\` has nothing to fetch. Set \`wait: true\` to wait for its first checkpoint, or give a step once one is listed.`,
  );
}

// JSON.stringify escapes C0 controls; DEL, C1 and the line separators pass through it raw.
const RAW_IN_JSON = /[\u007f-\u009f\u2028\u2029]/g;

/** JSON whose every control and separator character is escaped, so that the text stays one line of plain ASCII-safe JSON. */
export function safeJson(value: unknown): string {
  return JSON.stringify(value).replace(RAW_IN_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The `checkpoints` and `steps` outputs: every saved checkpoint sorted by step (the API's label
 * and date as strings, secrets redacted), and the distinct steps alone, for a matrix.
 */
export function checkpointOutputs(checkpoints: ReadonlyArray<{ step: number; checkpointType: string; createdAt?: string }>): {
  checkpoints: string;
  steps: string;
} {
  const sorted = [...checkpoints].sort((a, b) => a.step - b.step);
  return {
    checkpoints: safeJson(
      sorted.map((c) => ({
        step: c.step,
        checkpoint_type: redact(c.checkpointType),
        created_at: c.createdAt === undefined ? null : redact(c.createdAt),
      })),
    ),
    steps: safeJson([...new Set(sorted.map((c) => c.step))]),
  };
}
