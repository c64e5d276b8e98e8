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

const JOB_ID = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';
const apiKey = `demo-${randomBytes(8).toString('hex')}`;
const out = (text = '') => process.stdout.write(`${text}\n`);

const adapter = await makeArchive(peftAdapterFiles(), 'zstd');
const api = await startFakeTogether({
  apiKey,
  jobs: [
    {
      id: JOB_ID,
      status: 'completed',
      model: 'meta-llama/Meta-Llama-3.1-8B-Instruct-Reference',
      model_output_name: 'user@example.com/Meta-Llama-3.1-8B-Instruct-Reference-my_suffix-abc123',
      training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16, lora_dropout: 0.05, lora_trainable_modules: 'all-linear' },
      checkpoints: [
        { step: 10, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
        { step: 20, checkpoint_type: 'Final Adapter', checkpoint: 'adapter' },
      ],
      archives: { adapter, 'adapter@10': adapter },
    },
  ],
});

const inputs = { 'job-id': JOB_ID, 'checkpoint-type': 'adapter', path: 'models/', 'api-key': apiKey, 'base-url': api.url };
out(`Fake Together API on ${api.url}, serving ${JOB_ID} (a LoRA adapter, ${adapter.length} bytes)`);
out('Running dist/index.js with:');
for (const [name, value] of Object.entries(inputs)) out(`  ${name}: ${name === 'api-key' ? '***' : value}`);
out();

try {
  const run = await runAction({ inputs });
  out('---------------------------------------- log (stdout) ----------------------------------------');
  out(run.stdout.trimEnd());
  if (run.stderr.trim()) out(`---------------------------------------- stderr ----------------------------------------\n${run.stderr.trimEnd()}`);
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
