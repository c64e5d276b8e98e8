import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InputError } from '../../src/errors.js';
import {
  DEFAULT_BASE_URL,
  parseArtifactName,
  parseBaseUrl,
  parseCheckpointType,
  parseInputs,
  parseJobId,
  parseRetentionDays,
  parseStep,
} from '../../src/inputs.js';
import { rawInputs } from '../support/raw-inputs.js';

const JOB = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';

const raw = rawInputs;

function throwsInput(fn: () => unknown, input: string, text?: RegExp) {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof InputError, `expected InputError, got ${String(error)}`);
    assert.equal(error.input, input);
    assert.match(error.message, new RegExp(`^Input \`${input}\``));
    if (text) assert.match(error.message, text);
    return true;
  });
}

describe('job-id', () => {
  test('accepts a plain id and an id with a step', () => {
    assert.deepEqual(parseJobId(JOB), { jobId: JOB, step: undefined });
    assert.deepEqual(parseJobId(`${JOB}:120`), { jobId: JOB, step: 120 });
    assert.deepEqual(parseJobId(`  ${JOB}  `), { jobId: JOB, step: undefined });
  });

  for (const bad of [
    '',
    'fe94af08',
    'ft-',
    'ft-abc def',
    'ft-abc/../x',
    'ft-abc?x=1',
    'ft-abc%2F',
    'ft-..',
    'ft-abc:',
    'ft-abc:0',
    'ft-abc:-1',
    'ft-abc:1.5',
    'ft-abc:12:3',
    'FT-abc',
    'ft_abc',
    'ft-abc#x',
    'ft-ab\ncd',
    'ft-ab\tcd',
  ]) {
    test(`rejects ${JSON.stringify(bad)} naming job-id and the expected form`, () => {
      throwsInput(() => parseJobId(bad), 'job-id', /ft-<id>/);
    });
  }

  test('rejects a step too large to be exact', () => {
    throwsInput(() => parseJobId(`${JOB}:99999999999999999999`), 'job-id', /positive integer/);
  });
});

describe('step', () => {
  test('empty means the final model', () => assert.equal(parseStep(''), undefined));
  test('a positive integer', () => assert.equal(parseStep(' 42 '), 42));
  for (const bad of ['0', '-3', '1.5', 'ten', '1e3', '0x10', '12abc', '99999999999999999999']) {
    test(`rejects ${JSON.stringify(bad)}`, () => throwsInput(() => parseStep(bad), 'step', /positive integer/));
  }
  test('a step in job-id and the same step input agree', () => {
    assert.equal(parseInputs(raw({ 'job-id': `${JOB}:10`, step: '10' })).step, 10);
  });
  test('a step in job-id and a different step input is an error naming step', () => {
    throwsInput(() => parseInputs(raw({ 'job-id': `${JOB}:10`, step: '20' })), 'step', /disagrees/);
  });
});

describe('checkpoint-type', () => {
  test('defaults to default and ignores case', () => {
    assert.equal(parseCheckpointType(''), 'default');
    assert.equal(parseCheckpointType('ADAPTER'), 'adapter');
    assert.equal(parseCheckpointType(' Merged '), 'merged');
  });
  test('lists the three valid values', () => {
    throwsInput(() => parseCheckpointType('lora'), 'checkpoint-type', /default, merged, adapter/);
  });
});

describe('api-key', () => {
  test('missing key fails and says where to put it', () => {
    throwsInput(() => parseInputs(raw({ 'api-key': '' })), 'api-key', /TOGETHER_API_KEY/);
  });
  test('a key that cannot be a header fails without echoing the key', () => {
    assert.throws(
      () => parseInputs(raw({ 'api-key': 'abc\ndef' })),
      (error: Error) => error instanceof InputError && !error.message.includes('abc'),
    );
  });
});

describe('base-url', () => {
  test('defaults to the public API and drops a trailing slash', () => {
    assert.equal(parseBaseUrl(''), DEFAULT_BASE_URL);
    assert.equal(parseBaseUrl('http://127.0.0.1:8080/v1/'), 'http://127.0.0.1:8080/v1');
  });
  for (const bad of ['not a url', 'ftp://x/v1', 'https://u:p@x/v1', 'https://x/v1?a=1']) {
    test(`rejects ${bad}`, () => throwsInput(() => parseBaseUrl(bad), 'base-url'));
  }
});

describe('artifact inputs', () => {
  test('artifact-name: empty means the file name', () => assert.equal(parseArtifactName(''), undefined));
  test('artifact-name: a plain name passes', () => assert.equal(parseArtifactName('model-v1.tar.zst'), 'model-v1.tar.zst'));
  for (const bad of ['a:b', 'a/b', 'a\\b', 'a<b', 'a>b', 'a|b', 'a*b', 'a?b', 'a"b', 'a\rb', 'a\nb', '   ']) {
    test(`artifact-name: rejects ${JSON.stringify(bad)}`, () => throwsInput(() => parseArtifactName(bad), 'artifact-name'));
  }
  test('retention-days: 1 to 90', () => {
    assert.equal(parseRetentionDays(''), undefined);
    assert.equal(parseRetentionDays('1'), 1);
    assert.equal(parseRetentionDays('90'), 90);
  });
  for (const bad of ['0', '91', '-1', '7.5', 'week', '1e1']) {
    test(`retention-days: rejects ${JSON.stringify(bad)}`, () => throwsInput(() => parseRetentionDays(bad), 'retention-days', /1 to 90/));
  }
});

describe('connections and stall-timeout', () => {
  test('defaults and valid values', () => {
    const inputs = parseInputs(raw({ connections: '16', 'stall-timeout': '30' }));
    assert.equal(inputs.connections, 16);
    assert.equal(inputs.stallTimeoutSeconds, 30);
  });
  for (const bad of ['0', '33', 'many', '2.5', '-1']) {
    test(`connections: rejects ${JSON.stringify(bad)}`, () =>
      throwsInput(() => parseInputs(raw({ connections: bad })), 'connections', /1 to 32/));
  }
  for (const bad of ['0', '3601', 'soon', '1.5']) {
    test(`stall-timeout: rejects ${JSON.stringify(bad)}`, () =>
      throwsInput(() => parseInputs(raw({ 'stall-timeout': bad })), 'stall-timeout', /1 to 3600/));
  }
});

test('parseInputs returns a typed, validated object', () => {
  const inputs = parseInputs(
    raw({ 'job-id': `${JOB}:7`, 'checkpoint-type': 'Adapter', path: ' models/ ', 'retention-days': '5', 'upload-artifact': true }),
  );
  assert.deepEqual(inputs, {
    jobId: JOB,
    step: 7,
    checkpointType: 'adapter',
    path: 'models/',
    workspace: '/work/space',
    apiKey: 'key-123',
    baseUrl: DEFAULT_BASE_URL,
    uploadArtifact: true,
    artifactName: undefined,
    retentionDays: 5,
    wait: false,
    waitTimeoutMinutes: 120,
    extract: false,
    extractPath: '',
    keepArchive: true,
    cache: false,
    dryRun: false,
    verifyContents: true,
    connections: 6,
    stallTimeoutSeconds: 60,
  });
});
