import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MetricsSnapshot } from '../../src/together/api.js';
import { describeMetrics, formatMetric, nearestMetrics, readTrainingMetrics } from '../../src/together/metrics.js';

const SNAPSHOTS: MetricsSnapshot[] = [
  { 'train/loss': 2, 'train/learning_rate': 0.0001, 'train/global_step': 5 },
  { 'train/loss': 1.5, 'train/global_step': 10 },
  { 'eval/loss': 1.75, 'train/global_step': 10 },
  { 'train/loss': 1.25, 'train/global_step': 15 },
  { 'train/loss': 0.875, 'train/global_step': 30 },
  { 'eval/loss': 1.125, 'train/global_step': 30 },
];

test('the losses nearest the step, each with the step it was logged at', () => {
  assert.deepEqual(nearestMetrics(SNAPSHOTS, 14), {
    target: 14,
    trainLoss: { value: 1.25, step: 15 },
    evalLoss: { value: 1.75, step: 10 },
  });
  assert.deepEqual(nearestMetrics(SNAPSHOTS, 1000)?.trainLoss, { value: 0.875, step: 30 });
  assert.deepEqual(nearestMetrics(SNAPSHOTS, 1)?.trainLoss, { value: 2, step: 5 });
});

test('a tie goes to the earlier step; two entries at one step, to the later', () => {
  assert.deepEqual(nearestMetrics(SNAPSHOTS, 20)?.evalLoss, { value: 1.75, step: 10 });
  const twice: MetricsSnapshot[] = [
    { 'train/loss': 1, 'train/global_step': 8 },
    { 'train/loss': 0.9, 'train/global_step': 8 },
  ];
  assert.deepEqual(nearestMetrics(twice, 8)?.trainLoss, { value: 0.9, step: 8 });
});

test('without a step (the final model): the last logged step', () => {
  const metrics = nearestMetrics(SNAPSHOTS);
  assert.equal(metrics?.target, undefined);
  assert.deepEqual(metrics?.trainLoss, { value: 0.875, step: 30 });
  assert.deepEqual(metrics?.evalLoss, { value: 1.125, step: 30 });
});

test('other names for the step and the losses; snapshots without a step are ignored', () => {
  const metrics = nearestMetrics([{ loss: 3 }, { eval_loss: 2, global_step: 4 }, { loss: 1, step: 4 }], 4);
  assert.deepEqual(metrics, { target: 4, trainLoss: { value: 1, step: 4 }, evalLoss: { value: 2, step: 4 } });
});

test('no loss anywhere: no metrics', () => {
  assert.equal(nearestMetrics([]), undefined);
  assert.equal(nearestMetrics([{ 'train/learning_rate': 0.1, 'train/global_step': 3 }], 3), undefined);
});

test('values: four significant digits; a line for the log', () => {
  assert.equal(formatMetric(0.123456), '0.1235');
  assert.equal(formatMetric(1.5), '1.5');
  assert.equal(formatMetric(1.23456e-7), '1.235e-7');
  assert.equal(describeMetrics({ trainLoss: { value: 0.5, step: 7 } }), 'training loss 0.5 (step 7)');
});

test('readTrainingMetrics never throws: a failed request means no metrics', async () => {
  const failing = { listMetrics: async () => Promise.reject(new Error('HTTP 500')) };
  assert.equal(await readTrainingMetrics(failing, 'ft-a', 10), undefined);
  const working = { listMetrics: async () => SNAPSHOTS };
  assert.deepEqual((await readTrainingMetrics(working, 'ft-a', 10))?.trainLoss, { value: 1.5, step: 10 });
});

test('hundreds of thousands of snapshots (what fits in 16 MiB) are no problem', () => {
  const many = Array.from({ length: 300_000 }, (_, i) => ({ 'train/loss': 1 / (i + 1), 'train/global_step': i + 1 }));
  assert.deepEqual(nearestMetrics(many)?.trainLoss, { value: 1 / 300_000, step: 300_000 });
});
