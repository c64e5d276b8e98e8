import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { folderNameFor, MAX_FOLDER_NAME } from '../../src/archive/extract.js';
import { defaultFileName, MAX_MODEL_PART, slugify, windowsSafe } from '../../src/archive/naming.js';

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

test('trailing dots and spaces go, so Windows keeps the name as it is', () => {
  assert.equal(
    defaultFileName({ modelOutputName: 'Org/model-v1.', jobId: JOB, fetched: 'merged', format: 'zstd' }),
    'org--model-v1.tar.zst',
  );
  assert.equal(
    defaultFileName({ modelOutputName: 'Org/model-v1...', jobId: JOB, step: 3, fetched: 'merged', format: 'zstd' }),
    'org--model-v1-step-3.tar.zst',
  );
  assert.equal(windowsSafe('model. . '), 'model');
  assert.equal(windowsSafe('...'), '');
});

test('Windows device names get a suffix, with or without an extension', () => {
  assert.equal(defaultFileName({ modelOutputName: 'CON', jobId: JOB, fetched: 'merged', format: 'zstd' }), 'con-.tar.zst');
  assert.equal(defaultFileName({ modelOutputName: 'nul.v2', jobId: JOB, fetched: 'adapter', format: 'gzip' }), 'nul-.v2-adapter.tar.gz');
  assert.equal(windowsSafe('com1'), 'com1-');
  assert.equal(windowsSafe('console'), 'console');
  assert.equal(windowsSafe('lpt9.tar.zst'), 'lpt9-.tar.zst');
});

test('the model part is capped at 100 characters', () => {
  const name = defaultFileName({ modelOutputName: `org/${'m'.repeat(300)}`, jobId: JOB, step: 123456, fetched: 'adapter', format: 'zstd' });
  assert.equal(name, `org--${'m'.repeat(MAX_MODEL_PART - 5)}-step-123456-adapter.tar.zst`);
});

/** What Windows does to a path component: strips trailing dots and spaces; refuses device names. */
function windowsMangles(component: string): boolean {
  return /[. ]$/.test(component) || /^(?:con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(?:\.|$)/i.test(component);
}

test('whatever the server sends: names Windows keeps as they are, and paths well under MAX_PATH in a Windows workspace', () => {
  const workspace = 'D:\\a\\fine-tuning-pipelines\\fine-tuning-pipelines';
  fc.assert(
    fc.property(
      fc.string({ unit: 'binary', maxLength: 400 }),
      fc.option(fc.integer({ min: 1, max: 1e9 }), { nil: undefined }),
      fc.constantFrom('merged', 'adapter', 'model'),
      (name, step, fetched) => {
        const file = defaultFileName({ modelOutputName: name, jobId: JOB, step, fetched: fetched as 'merged', format: 'zstd' });
        const folder = folderNameFor(file);
        for (const component of [file, folder]) {
          assert.ok(!windowsMangles(component), `${JSON.stringify(component)} would be changed by Windows`);
          assert.equal(path.win32.basename(component), component);
        }
        // The deepest file of a sharded model, in the extraction folder beside the archive.
        const deepest = path.win32.join(workspace, 'models', folder, 'merged', 'model-00030-of-00030.safetensors.index.json');
        assert.ok(deepest.length < 260, `${deepest.length} characters: ${deepest}`);
      },
    ),
  );
});

test('extraction folders: no trailing dots, no device names, capped', () => {
  assert.equal(folderNameFor('org--model-v1..tar.zst'), 'org--model-v1');
  assert.equal(folderNameFor('my model. .tar.gz'), 'my model');
  assert.equal(folderNameFor('..tar.zst'), 'extracted');
  assert.equal(folderNameFor('aux.tar.zst'), 'aux-');
  assert.equal(folderNameFor(`${'x'.repeat(300)}.tar.zst`), 'x'.repeat(MAX_FOLDER_NAME));
  assert.equal(folderNameFor('. .'), '. .-extracted');
});
