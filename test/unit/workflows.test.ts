import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { parse } from 'yaml';
import { ROOT } from '../support/run-action.js';
import type { Workflow } from '../support/snippets.js';

// The e2e workflow's step that starts the fake Together API, run by bash with a stand-in `npm`.
const e2e = parse(fs.readFileSync(path.join(ROOT, '.github', 'workflows', 'e2e.yml'), 'utf8')) as Workflow;
const startStep = Object.values(e2e.jobs)
  .flatMap((job) => job.steps ?? [])
  .find((step) => step.name === 'Start the fake Together API');

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-step-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

function runStep(npm: string): Promise<{ code: number | null; output: string }> {
  const dir = fs.mkdtempSync(path.join(scratch, 'run-'));
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.writeFileSync(path.join(dir, 'bin', 'npm'), `#!/usr/bin/env bash\n${npm}\n`, { mode: 0o755 });
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-e', '-c', startStep?.run ?? 'exit 99'], {
      cwd: dir,
      env: { ...process.env, PATH: `${path.join(dir, 'bin')}${path.delimiter}${process.env.PATH}`, FAKE_KEY: 'k' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
    });
    child.stderr.on('data', (d) => {
      output += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

describe('e2e workflow: starting the fake Together API', () => {
  test('the step exists and starts the server in the background', () => {
    assert.ok(startStep?.run, 'e2e.yml has a step named "Start the fake Together API"');
    assert.match(startStep.run, /npm run -s fake-api .*&\n/);
  });

  test('a server that exits at once fails the step at once, with its output and an error', async () => {
    const run = await runStep('echo "Error: listen EADDRINUSE: address already in use 127.0.0.1:8787" >&2; exit 1');
    assert.equal(run.code, 1);
    assert.match(run.output, /EADDRINUSE/);
    // The exit was noticed, not the 30 s timeout.
    assert.match(run.output, /::error::The fake Together API exited before it was listening/);
  });

  test('a server that prints its URL and keeps running passes the step', async () => {
    const run = await runStep('echo http://127.0.0.1:8787/v1; exec sleep 2');
    assert.equal(run.code, 0, run.output);
    assert.match(run.output, /^http:\/\/127\.0\.0\.1:8787\/v1$/m);
    assert.doesNotMatch(run.output, /::error::/);
  });
});
