import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { ROOT } from '../support/run-action.js';

// `npm test` runs the suite through scripts/node24.mjs, which puts a Node first on PATH and says
// which one. The end-to-end tests start dist/index.js with process.execPath, so the action runs on
// the same Node as the suite: on the runtime action.yml declares in the first pass.
const pass = process.env.TOGETHER_DOWNLOAD_NODE_PASS;
const expected = process.env.TOGETHER_DOWNLOAD_NODE_EXPECTED;

test('the suite, and the action it spawns, run on the Node that npm test chose', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, ['-p', 'process.version']);
  assert.equal(stdout.trim(), process.version, 'a child started with process.execPath runs the same Node');
  // Started by hand (node --test, npm run test:current) there is no choice to check.
  if (pass === undefined) return;
  assert.ok(expected, 'scripts/node24.mjs names the Node it put first on PATH');
  assert.equal(process.version, expected);
  if (pass === 'runtime') {
    const action = parse(fs.readFileSync(path.join(ROOT, 'action.yml'), 'utf8')) as { runs: { using: string } };
    assert.equal(`node${process.versions.node.split('.')[0]}`, action.runs.using, 'the first pass runs on the runtime action.yml declares');
  }
});
