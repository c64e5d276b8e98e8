/**
 * `npm run fake-api -- [--port 8787]`: the local fake Together API, serving one finished LoRA job
 * whose adapter archive is test/fixtures/peft-adapter.tar.zst. Used by the e2e workflow, which
 * runs the action with `uses: ./` against it on every runner OS; prints the base URL and runs
 * until killed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { startFakeTogether } from '../test/support/fake-together.js';
import { ROOT } from '../test/support/run-action.js';
import { sampleLoraJob } from '../test/support/sample-job.js';

const { values } = parseArgs({
  options: { port: { type: 'string', default: '8787' }, 'api-key': { type: 'string', default: 'fake-key' } },
});
const adapter = fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'peft-adapter.tar.zst'));
const api = await startFakeTogether({ apiKey: values['api-key'], port: Number(values.port), jobs: [sampleLoraJob(adapter)] });
process.stdout.write(`${api.url}\n`);
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void api.close().then(() => process.exit(0)));
