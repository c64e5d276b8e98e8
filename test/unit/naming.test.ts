import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { defaultFileName, slugify } from '../../src/archive/naming.js';

const JOB = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';

test('the example from the documentation', () => {
  assert.equal(
    defaultFileName({
      modelOutputName: 'user@example.com/Meta-Llama-3.1-8B-Instruct-Reference-my_suffix-abc123',
      jobId: JOB,
      step: 10,
      fetched: 'adapter',
      format: 'zstd',
    }),
    'user@example.com--meta-llama-3.1-8b-instruct-reference-my-suffix-abc123-step-10-adapter.tar.zst',
  );
});

test('merged and full models carry no suffix; gzip gets .tar.gz', () => {
  assert.equal(defaultFileName({ modelOutputName: 'Org/Model', jobId: JOB, fetched: 'merged', format: 'zstd' }), 'org--model.tar.zst');
  assert.equal(defaultFileName({ modelOutputName: 'Org/Model', jobId: JOB, fetched: 'model', format: 'gzip' }), 'org--model.tar.gz');
});

test('no model_output_name falls back to the job id', () => {
  assert.equal(defaultFileName({ jobId: JOB, fetched: 'merged', format: 'zstd' }), `${JOB}.tar.zst`);
  assert.equal(
    defaultFileName({ modelOutputName: '...', jobId: JOB, step: 3, fetched: 'merged', format: 'zstd' }),
    `${JOB}-step-3.tar.zst`,
  );
});

test('slugify: slashes, underscores, spaces, case, other characters, leading dots', () => {
  assert.equal(slugify('a/b_c d'), 'a--b-c-d');
  assert.equal(slugify('ÄB+C@x.y'), '-b+c@x.y');
  assert.equal(slugify('../../etc/passwd'), '--..--etc--passwd');
  assert.equal(slugify('..\u0000\n\u001b'), '---');
  assert.equal(slugify('.hidden'), 'hidden');
});

test('whatever the server sends, the name is one safe path component', () => {
  fc.assert(
    fc.property(
      fc.option(fc.string({ unit: 'binary', maxLength: 400 }), { nil: undefined }),
      fc.option(fc.integer({ min: 1, max: 1e9 }), { nil: undefined }),
      (name, step) => {
        const file = defaultFileName({ modelOutputName: name, jobId: JOB, step, fetched: 'adapter', format: 'zstd' });
        assert.match(file, /^[a-z0-9.@+-]+$/i);
        assert.ok(!file.startsWith('.'));
        assert.equal(path.basename(file), file);
        assert.ok(Buffer.byteLength(file) <= 255);
        assert.ok(file.endsWith('-adapter.tar.zst'));
      },
    ),
  );
});
