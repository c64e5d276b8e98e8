/** The inputs of wait, extract, cache and dry-run: defaults, validation and what goes together. */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { InputError } from '../../src/errors.js';
import { booleanInput, DEFAULT_WAIT_TIMEOUT_MINUTES, parseExtraction, parseWaitTimeoutMinutes } from '../../src/inputs.js';

function throwsInput(fn: () => unknown, input: string, text?: RegExp) {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof InputError, `expected InputError, got ${String(error)}`);
    assert.equal(error.input, input);
    if (text) assert.match(error.message, text);
    return true;
  });
}

describe('wait-timeout-minutes', () => {
  test('empty means the default', () => assert.equal(parseWaitTimeoutMinutes(''), DEFAULT_WAIT_TIMEOUT_MINUTES));
  test('whole and decimal minutes', () => {
    assert.equal(parseWaitTimeoutMinutes('120'), 120);
    assert.equal(parseWaitTimeoutMinutes(' 0.05 '), 0.05);
    assert.equal(parseWaitTimeoutMinutes('.5'), 0.5);
    assert.equal(parseWaitTimeoutMinutes('2.'), 2);
  });
  for (const bad of ['abc', '0', '0.0', '-1', '1e3', '1,5', 'Infinity', 'NaN', '12m', '0x10']) {
    test(`rejects ${JSON.stringify(bad)}, saying what is valid`, () =>
      throwsInput(() => parseWaitTimeoutMinutes(bad), 'wait-timeout-minutes', /positive number of minutes/));
  }
});

describe('extract, extract-path and keep-archive', () => {
  test('defaults: no extraction, archive kept', () => {
    assert.deepEqual(parseExtraction({ extract: false, 'extract-path': '', 'keep-archive': true }), {
      extract: false,
      extractPath: '',
      keepArchive: true,
    });
  });
  test('extract with a path and without the archive', () => {
    assert.deepEqual(parseExtraction({ extract: true, 'extract-path': ' models/m ', 'keep-archive': false }), {
      extract: true,
      extractPath: 'models/m',
      keepArchive: false,
    });
  });
  test('extract-path without extract is an error naming extract-path', () => {
    throwsInput(() => parseExtraction({ extract: false, 'extract-path': 'x', 'keep-archive': true }), 'extract-path', /extract: true/);
  });
  test('keep-archive false without extract is an error naming keep-archive', () => {
    throwsInput(() => parseExtraction({ extract: false, 'extract-path': '', 'keep-archive': false }), 'keep-archive', /extract: true/);
  });
});

describe('boolean inputs', () => {
  afterEach(() => {
    delete process.env['INPUT_DRY-RUN'];
  });
  test('unset means the default (a local run)', () => {
    assert.equal(booleanInput('dry-run', false), false);
    assert.equal(booleanInput('dry-run', true), true);
  });
  test('true and false in the YAML spellings', () => {
    for (const [value, expected] of [
      ['true', true],
      ['True', true],
      ['FALSE', false],
    ] as const) {
      process.env['INPUT_DRY-RUN'] = value;
      assert.equal(booleanInput('dry-run', !expected), expected);
    }
  });
  test('anything else names the input and says what is valid', () => {
    process.env['INPUT_DRY-RUN'] = 'yes';
    throwsInput(() => booleanInput('dry-run', false), 'dry-run', /"yes" is not a boolean\. Use `true` or `false`/);
  });
});
