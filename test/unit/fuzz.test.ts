import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { InputError } from '../../src/errors.js';
import { type Inputs, parseInputs, type RawInputs } from '../../src/inputs.js';
import { downloadUrl } from '../../src/transfer/probe.js';
import { rawInputs } from '../support/raw-inputs.js';

const VALID = rawInputs();

const STRING_INPUTS = Object.entries(VALID)
  .filter(([name, value]) => typeof value === 'string' && name !== 'workspace')
  .map(([name]) => name);

const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.string({ unit: 'grapheme-ascii', maxLength: 30 }),
  fc.constantFrom(
    'ft-abc',
    'ft-abc:7',
    'ft-../x',
    'ft-a?b=c',
    'ft-a%2Fb',
    ' ',
    '0',
    '-1',
    '1e3',
    'https://evil.example/v1',
    '..',
    '.',
    'a/b',
  ),
);

const wholeIn = (n: number | undefined, min: number, max: number) => n !== undefined && Number.isInteger(n) && n >= min && n <= max;
const stepChoice = (s: Inputs['step']) => s === undefined || s === 'latest' || wholeIn(s, 1, Number.MAX_SAFE_INTEGER);

/** What a value that parsed must have become, for the input it came from. */
const TYPED: Record<string, (inputs: Inputs) => boolean> = {
  'job-id': (i) => /^ft-[A-Za-z0-9-]+$/.test(i.jobId) && stepChoice(i.step),
  step: (i) => stepChoice(i.step),
  'checkpoint-type': (i) => ['default', 'merged', 'adapter'].includes(i.checkpointType),
  path: (i) => i.path === i.path.trim(),
  'api-key': (i) => /^[\x21-\x7e]+$/.test(i.apiKey),
  'base-url': (i) => /^https?:\/\/[^?#@]+$/.test(i.baseUrl),
  'artifact-name': (i) => i.artifactName === undefined || (i.artifactName.trim() !== '' && !/[":<>|*?\\/\r\n]/.test(i.artifactName)),
  'retention-days': (i) => i.retentionDays === undefined || wholeIn(i.retentionDays, 1, 90),
  'wait-timeout-minutes': (i) => Number.isFinite(i.waitTimeoutMinutes) && i.waitTimeoutMinutes > 0,
  // extract is false in VALID: any extract-path but '' is refused, so one that parsed is ''.
  'extract-path': (i) => i.extractPath === '',
  connections: (i) => wholeIn(i.connections, 1, 32),
  'stall-timeout': (i) => wholeIn(i.stallTimeoutSeconds, 1, 3600),
};

test('every string input has a check of what it parses to', () => {
  assert.deepEqual(Object.keys(TYPED).sort(), [...STRING_INPUTS].sort());
});

test('every input: a random value gives a validation error naming that input, or a typed value', () => {
  fc.assert(
    fc.property(fc.constantFrom(...STRING_INPUTS), anyText, (name, value) => {
      let inputs: ReturnType<typeof parseInputs>;
      try {
        inputs = parseInputs({ ...VALID, [name]: value } as RawInputs);
      } catch (error) {
        assert.ok(error instanceof InputError, `not an InputError: ${String(error)}`);
        // A step in job-id can disagree with nothing here, so the error names the fuzzed input.
        assert.equal(error.input, name);
        assert.match(error.message, new RegExp(`^Input \`${name}\``));
        return;
      }
      assert.ok(TYPED[name](inputs), `${name} = ${JSON.stringify(value)} was accepted as ${JSON.stringify(inputs)}`);
    }),
    { numRuns: 3000 },
  );
});

test('job-id and step: the download URL carries only the validated id and step', () => {
  fc.assert(
    fc.property(anyText, fc.oneof(fc.constant(''), anyText), (jobId, step) => {
      let inputs: ReturnType<typeof parseInputs>;
      try {
        inputs = parseInputs({ ...VALID, 'job-id': jobId, step } as RawInputs);
      } catch (error) {
        assert.ok(error instanceof InputError && (error.input === 'job-id' || error.input === 'step'));
        return;
      }
      if (inputs.step === 'latest') return; // resolved to a listed step before any download URL is made
      const url = new URL(downloadUrl('https://api.together.ai/v1', { jobId: inputs.jobId, step: inputs.step, checkpoint: 'merged' }));
      assert.equal(url.origin + url.pathname, 'https://api.together.ai/v1/finetune/download');
      assert.deepEqual(
        [...url.searchParams.keys()],
        inputs.step === undefined ? ['ft_id', 'checkpoint'] : ['ft_id', 'checkpoint_step', 'checkpoint'],
      );
      assert.equal(url.searchParams.get('ft_id'), inputs.jobId);
      assert.ok(jobId.includes(inputs.jobId), 'the id is the one the user gave');
    }),
    { numRuns: 3000 },
  );
});
