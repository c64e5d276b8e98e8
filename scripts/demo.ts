/**
 * `npm run demo`: a local fake of the Together API serving a finished LoRA job whose archive is a
 * real .tar.zst PEFT adapter, and the built action run against it exactly as a runner would.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { makeArchive, peftAdapterFiles } from '../test/support/archives.js';
import { startFakeTogether } from '../test/support/fake-together.js';
import { removeScratch, runAction } from '../test/support/run-action.js';
import { SAMPLE_JOB_ID, sampleLoraJob } from '../test/support/sample-job.js';

const apiKey = `demo-${randomBytes(8).toString('hex')}`;
const out = (text = '') => process.stdout.write(`${text}\n`);

const adapter = await makeArchive(peftAdapterFiles(), 'zstd');
const api = await startFakeTogether({ apiKey, jobs: [sampleLoraJob(adapter)] });

const inputs = { 'job-id': SAMPLE_JOB_ID, 'checkpoint-type': 'adapter', path: 'models/', 'api-key': apiKey, 'base-url': api.url };
out(`Fake Together API on ${api.url}, serving ${SAMPLE_JOB_ID} (a LoRA adapter, ${adapter.length} bytes)`);
out('Running dist/index.js with:');
for (const [name, value] of Object.entries(inputs)) out(`  ${name}: ${name === 'api-key' ? '***' : value}`);
out();

try {
  const run = await runAction({ inputs });
  out('---------------------------------------- log (stdout) ----------------------------------------');
  out(run.stdout.trimEnd());
  if (run.stderr.trim())
    out(`---------------------------------------- stderr ----------------------------------------\n${run.stderr.trimEnd()}`);
  out('---------------------------------------- outputs ($GITHUB_OUTPUT) ----------------------------------------');
  for (const [name, value] of Object.entries(run.outputs)) out(`${name}=${value}`);
  out('---------------------------------------- job summary ($GITHUB_STEP_SUMMARY) ----------------------------------------');
  out(run.summary.trimEnd());
  out();
  if (run.code === 0) {
    out('---------------------------------------- tar --zstd -tvf "$path" ----------------------------------------');
    const { stdout } = await promisify(execFile)('tar', ['--zstd', '-tvf', run.outputs.path]);
    out(stdout.trimEnd());
    out();
    out('The action succeeded.');
  } else {
    out(`The action failed (exit code ${run.code}).`);
  }
  removeScratch(run);
  process.exitCode = run.code ?? 1;
} finally {
  await api.close();
}
