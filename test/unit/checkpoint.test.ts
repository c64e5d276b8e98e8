import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InputError } from '../../src/errors.js';
import {
  checkpointOutputs,
  planCheckpoint,
  requireCompleted,
  requireStep,
  resolveStep,
  safeJson,
  trainingKind,
} from '../../src/together/checkpoint.js';

test('training kind: Lora in any case is LoRA; Full or absent is full', () => {
  assert.equal(trainingKind({ type: 'Lora' }), 'lora');
  assert.equal(trainingKind({ type: 'LORA' }), 'lora');
  assert.equal(trainingKind({ type: 'Full' }), 'full');
  assert.equal(trainingKind(undefined), 'full');
  assert.equal(trainingKind(null), 'full');
});

test('LoRA: default means merged; merged and adapter map to themselves', () => {
  assert.deepEqual(planCheckpoint('lora', 'default'), { fetched: 'merged', query: 'merged' });
  assert.deepEqual(planCheckpoint('lora', 'merged'), { fetched: 'merged', query: 'merged' });
  assert.deepEqual(planCheckpoint('lora', 'adapter'), { fetched: 'adapter', query: 'adapter' });
});

test('full: only default, sent as model_output_path', () => {
  assert.deepEqual(planCheckpoint('full', 'default'), { fetched: 'model', query: 'model_output_path' });
  for (const choice of ['merged', 'adapter'] as const) {
    assert.throws(
      () => planCheckpoint('full', choice),
      (e: Error) => e instanceof InputError && /checkpoint-type/.test(e.message) && /no adapter/.test(e.message),
    );
  }
});

test('requireCompleted names the status and, for unfinished jobs, the step input', () => {
  assert.doesNotThrow(() => requireCompleted({ id: 'ft-a', status: 'completed' }));
  for (const status of ['pending', 'queued', 'running', 'compressing', 'uploading', 'something_new']) {
    assert.throws(() => requireCompleted({ id: 'ft-a', status }), new RegExp(`status \`${status}\`.*\`step\``));
  }
  for (const status of ['error', 'user_error', 'cancelled', 'cancel_requested']) {
    assert.throws(() => requireCompleted({ id: 'ft-a', status }), new RegExp(`status \`${status}\``));
  }
});

test('requireStep lists the steps that exist, sorted and without repeats', () => {
  const checkpoints = [{ step: 30 }, { step: 10 }, { step: 30 }, { step: 20 }];
  assert.doesNotThrow(() => requireStep('ft-a', 20, checkpoints));
  assert.throws(() => requireStep('ft-a', 15, checkpoints), /step.*Steps that exist: 10, 20, 30\./s);
  assert.throws(() => requireStep('ft-a', 1, []), /no saved checkpoints/);
});

test('resolveStep: a number stays, latest is the highest saved step, none fails naming the status', () => {
  const checkpoints = [{ step: 30 }, { step: 10 }, { step: 20 }];
  assert.equal(resolveStep('ft-a', 20, 'running', checkpoints), 20);
  assert.equal(resolveStep('ft-a', undefined, 'completed', checkpoints), undefined);
  assert.equal(resolveStep('ft-a', 'latest', 'running', checkpoints), 30);
  assert.throws(
    () => resolveStep('ft-a', 'latest', 'queued', []),
    /ft-a has no saved checkpoints yet \(status `queued`\).*`step: latest`.*wait: true/,
  );
});

test('checkpointOutputs: sorted by step, labels and dates as given, steps once each', () => {
  const outputs = checkpointOutputs([
    { step: 30, checkpointType: 'Final Merged', createdAt: '2024-01-03' },
    { step: 10, checkpointType: 'Intermediate', createdAt: '2024-01-01' },
    { step: 30, checkpointType: 'Final Adapter' },
  ]);
  assert.deepEqual(JSON.parse(outputs.checkpoints), [
    { step: 10, checkpoint_type: 'Intermediate', created_at: '2024-01-01' },
    { step: 30, checkpoint_type: 'Final Merged', created_at: '2024-01-03' },
    { step: 30, checkpoint_type: 'Final Adapter', created_at: null },
  ]);
  assert.equal(outputs.steps, '[10,30]');
  assert.deepEqual(checkpointOutputs([]), { checkpoints: '[]', steps: '[]' });
});

test('safeJson escapes every control and separator character JSON.stringify lets through, and stays parseable', () => {
  const all = `${Array.from({ length: 0xa0 }, (_, i) => String.fromCharCode(i)).join('')}\u2028\u2029\ud800`;
  const json = safeJson({ all });
  // biome-ignore lint/suspicious/noControlCharactersInRegex: none may remain raw
  assert.doesNotMatch(json, /[\u0000-\u001f\u007f-\u009f\u2028\u2029\ud800-\udfff]/);
  assert.deepEqual(JSON.parse(json), { all });
});

test('resolveStep copes with a list of any length', () => {
  const many = Array.from({ length: 300_000 }, (_, i) => ({ step: i + 1 }));
  assert.equal(resolveStep('ft-a', 'latest', 'running', many), 300_000);
});
