import { ActionError } from '../errors.js';
import { formatDuration } from '../format.js';
import * as log from '../log.js';
import type { Checkpoint, FineTuneEvent, Job, TogetherApi } from './api.js';
import type { StepChoice } from './checkpoint.js';

/** The first wait between two polls; each next one is 1.5 times longer, up to the cap. */
export const FIRST_POLL_INTERVAL_MS = 2_000;
export const POLL_GROWTH = 1.5;
export const MAX_POLL_INTERVAL_MS = 60_000;

/** Statuses a job never leaves for `completed`. */
const ENDED_STATUSES = new Set(['error', 'user_error', 'cancelled', 'cancel_requested']);

/** The wait before poll number `n + 1` (n = 0 is the wait after the first poll). */
export function pollIntervalMs(n: number): number {
  return Math.min(MAX_POLL_INTERVAL_MS, Math.round(FIRST_POLL_INTERVAL_MS * POLL_GROWTH ** n));
}

export interface WaitTarget {
  jobId: string;
  /** Wait for this checkpoint (`latest`: any checkpoint) to be listed instead of for the job to complete. */
  step?: StepChoice;
  timeoutMs: number;
}

/** The clock and the sleep, replaceable in unit tests. */
export interface WaitClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: WaitClock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** What the last poll saw: the job and, when a step was awaited, its checkpoints, so nobody asks again. */
export interface Seen {
  job: Job;
  checkpoints?: Checkpoint[];
}

type Poll = Seen & { done: boolean; steps?: number[] };

/**
 * Polls the job until it is `completed` (or, with a step, until that checkpoint is listed),
 * logging one line per change of status. Fails with the job's last error event when it ends
 * without the result, and with its last status at the timeout.
 */
export async function waitForJob(
  api: Pick<TogetherApi, 'getJob' | 'listCheckpoints' | 'listEvents'>,
  target: WaitTarget,
  clock: WaitClock = realClock,
): Promise<Seen> {
  const start = clock.now();
  const deadline = start + target.timeoutMs;
  const awaited = target.step === undefined ? 'to complete' : `to list ${checkpointName(target.step)}`;
  log.info(`Waiting up to ${formatDuration(target.timeoutMs / 1000)} for job ${target.jobId} ${awaited}`);
  let lastStatus: string | undefined;
  let lastSteps = '';
  for (let n = 0; ; n++) {
    const poll = await pollOnce(api, target);
    const elapsed = formatDuration((clock.now() - start) / 1000);
    if (poll.job.status !== lastStatus) {
      log.info(`[${elapsed}] status: ${poll.job.status}`);
      lastStatus = poll.job.status;
    }
    if (!poll.done && poll.steps !== undefined && poll.steps.join(', ') !== lastSteps) {
      lastSteps = poll.steps.join(', ');
      if (lastSteps) log.info(`[${elapsed}] checkpoints saved: ${lastSteps}`);
    }
    if (poll.done) {
      log.info(`[${elapsed}] ${target.step === undefined ? 'the job is completed' : `${checkpointName(target.step)} is listed`}`);
      return { job: poll.job, checkpoints: poll.checkpoints };
    }
    if (ENDED_STATUSES.has(poll.job.status)) throw await endedError(api, target, poll.job.status);
    if (poll.job.status === 'completed') {
      // Completed, yet the step is not there: it never will be.
      throw new ActionError(
        target.step === 'latest'
          ? `Fine-tuning job ${target.jobId} completed without saving any checkpoint, so \`step: latest\` has nothing to fetch. Leave \`step\` empty to download the final model.`
          : `Fine-tuning job ${target.jobId} completed without a checkpoint at step ${target.step}. Steps that exist: ${lastSteps || 'none'}. Check \`step\`.`,
      );
    }
    const now = clock.now();
    if (now >= deadline) {
      throw new ActionError(
        `Fine-tuning job ${target.jobId} is still \`${poll.job.status}\` after waiting ${formatDuration((now - start) / 1000)} (\`wait-timeout-minutes\`). Raise \`wait-timeout-minutes\`, or run this step again later.`,
      );
    }
    // The last poll happens at the deadline itself, so a job finishing just in time is seen.
    await clock.sleep(Math.min(pollIntervalMs(n), deadline - now));
  }
}

/** `the checkpoint at step 10`, or for `latest`, `a checkpoint`. */
function checkpointName(step: StepChoice): string {
  return step === 'latest' ? 'a checkpoint (step: latest)' : `the checkpoint at step ${step}`;
}

async function pollOnce(api: Pick<TogetherApi, 'getJob' | 'listCheckpoints'>, target: WaitTarget): Promise<Poll> {
  const job = await api.getJob(target.jobId);
  if (target.step === undefined) return { done: job.status === 'completed', job };
  const checkpoints = await api.listCheckpoints(target.jobId);
  const steps = [...new Set(checkpoints.map((c) => c.step))].sort((a, b) => a - b);
  const done = target.step === 'latest' ? steps.length > 0 : steps.includes(target.step);
  return { done, job, checkpoints, steps };
}

/** The message for a job that ended without the result: its last error event says why. */
async function endedError(api: Pick<TogetherApi, 'listEvents'>, target: WaitTarget, status: string): Promise<ActionError> {
  let events: FineTuneEvent[] = [];
  try {
    events = await api.listEvents(target.jobId);
  } catch (error) {
    log.warning(`Could not read the job's events: ${(error as Error).message}`);
  }
  const why = lastErrorEvent(events);
  const said = why ? ` Together says: ${why}` : ' Together recorded no error message for it.';
  return new ActionError(
    `Fine-tuning job ${target.jobId} ended with status \`${status}\`${target.step === undefined ? '' : ` before saving ${checkpointName(target.step)}`}.${said}`,
  );
}

/** The message of the last error event (level `error`, or type `job_error`), one line, bounded. */
export function lastErrorEvent(events: readonly FineTuneEvent[]): string | undefined {
  const errors = events.filter((e) => /error/i.test(e.level ?? '') || e.type === 'job_error');
  const message = errors.at(-1)?.message?.replace(/\s+/g, ' ').trim();
  if (!message) return undefined;
  return message.length > 500 ? `${message.slice(0, 500)}…` : message;
}
