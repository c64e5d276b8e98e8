import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InputError } from '../../src/errors.js';
import { parseJobId, parseStep } from '../../src/inputs.js';

const ID = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';

test('step: a positive integer, latest in any case, or empty', () => {
  assert.equal(parseStep('120'), 120);
  assert.equal(parseStep(' latest '), 'latest');
  assert.equal(parseStep('LATEST'), 'latest');
  assert.equal(parseStep(''), undefined);
  for (const bad of ['0', '-1', 'last', 'latest1', '1.5', 'newest']) {
    assert.throws(
      () => parseStep(bad),
      (e: Error) => e instanceof InputError && e.input === 'step' && /positive integer/.test(e.message) && /`latest`/.test(e.message),
    );
  }
});

test('job-id: ft-<id>:latest, and nothing else after the colon but digits', () => {
  assert.deepEqual(parseJobId(`${ID}:latest`), { jobId: ID, step: 'latest' });
  assert.deepEqual(parseJobId(`${ID}:Latest`), { jobId: ID, step: 'latest' });
  assert.deepEqual(parseJobId(`${ID}:12`), { jobId: ID, step: 12 });
  for (const bad of [`${ID}:latest2`, `${ID}:last`, `FT-${ID.slice(3)}:latest`]) {
    assert.throws(
      () => parseJobId(bad),
      (e: Error) => e instanceof InputError && e.input === 'job-id' && /ft-<id>:latest/.test(e.message),
    );
  }
});
