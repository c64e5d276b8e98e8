/**
 * The training metrics the job summary shows: the training loss and, where logged, the evaluation
 * loss nearest the fetched step. They only inform: when Together has none, or the request fails,
 * the summary goes without them and the step carries on.
 */
import { messageOf } from '../errors.js';
import * as log from '../log.js';
import type { MetricsSnapshot, TogetherApi } from './api.js';

/** A value and the step it was logged at. */
export interface LoggedValue {
  value: number;
  step: number;
}

export interface NearestMetrics {
  /** The fetched step; undefined for the final model (the last logged step is used). */
  target?: number;
  trainLoss?: LoggedValue;
  evalLoss?: LoggedValue;
}

// Names as logged through Weights & Biases (the spec's example: `train/loss`, `train/global_step`),
// and the plain Hugging Face Trainer names.
const STEP_KEYS = ['train/global_step', 'eval/global_step', 'global_step', 'step'];
const TRAIN_LOSS_KEYS = ['train/loss', 'train_loss', 'loss'];
const EVAL_LOSS_KEYS = ['eval/loss', 'eval_loss', 'validation/loss', 'val/loss', 'valid/loss'];

function stepOf(snapshot: MetricsSnapshot): number | undefined {
  const key = STEP_KEYS.find((k) => Number.isSafeInteger(snapshot[k]) && snapshot[k] >= 0);
  return key === undefined ? undefined : snapshot[key];
}

/** Every (value, step) of the first of `keys` each snapshot has, in the order logged. */
function series(snapshots: readonly MetricsSnapshot[], keys: readonly string[]): LoggedValue[] {
  return snapshots.flatMap((s) => {
    const step = stepOf(s);
    const key = keys.find((k) => k in s);
    return step === undefined || key === undefined ? [] : [{ value: s[key], step }];
  });
}

/** The value logged nearest `target`: the earlier step on a tie, the later entry at one step. */
function nearest(values: readonly LoggedValue[], target: number): LoggedValue | undefined {
  let best: LoggedValue | undefined;
  for (const v of values) {
    if (best === undefined) {
      best = v;
      continue;
    }
    const d = Math.abs(v.step - target);
    const bestD = Math.abs(best.step - target);
    if (d < bestD || (d === bestD && v.step <= best.step)) best = v;
  }
  return best;
}

/** The losses logged nearest `step` (the last logged step when undefined), or undefined when there are none. */
export function nearestMetrics(snapshots: readonly MetricsSnapshot[], step?: number): NearestMetrics | undefined {
  const train = series(snapshots, TRAIN_LOSS_KEYS);
  const evaluation = series(snapshots, EVAL_LOSS_KEYS);
  const all = [...train, ...evaluation];
  if (all.length === 0) return undefined;
  const target = step ?? all.reduce((max, v) => Math.max(max, v.step), 0);
  return { target: step, trainLoss: nearest(train, target), evalLoss: nearest(evaluation, target) };
}

/** `0.4523`, `1.235e-7`: four significant digits, no trailing zeros. */
export function formatMetric(value: number): string {
  return String(Number(value.toPrecision(4)));
}

export function describeMetrics(metrics: NearestMetrics): string {
  const parts = [
    metrics.trainLoss && `training loss ${formatMetric(metrics.trainLoss.value)} (step ${metrics.trainLoss.step})`,
    metrics.evalLoss && `evaluation loss ${formatMetric(metrics.evalLoss.value)} (step ${metrics.evalLoss.step})`,
  ].filter((p) => p !== undefined);
  return parts.join(', ');
}

/**
 * Reads the job's metrics for the summary. Never throws: without metrics (none, or a failed
 * request) it logs one line and returns undefined.
 */
export async function readTrainingMetrics(
  api: Pick<TogetherApi, 'listMetrics'>,
  jobId: string,
  step?: number,
): Promise<NearestMetrics | undefined> {
  let metrics: NearestMetrics | undefined;
  try {
    metrics = nearestMetrics(await api.listMetrics(jobId), step);
  } catch (error) {
    log.info(`Training metrics: not shown in the summary (${messageOf(error)})`);
    return undefined;
  }
  if (metrics === undefined) {
    log.info('Training metrics: Together has none for this job');
    return undefined;
  }
  log.info(`Training metrics nearest ${step === undefined ? 'the end of training' : `step ${step}`}: ${describeMetrics(metrics)}`);
  return metrics;
}
