/**
 * End-to-end, property-based: random strings (newlines, `::` workflow commands, HTML, Markdown,
 * control and separator characters) in every field a server supplies and in archive entry names.
 * Whatever they hold, no line of the log starts a workflow command the action did not write,
 * nothing raw reaches the log, the outputs or the summary, and the summary stays one HTML table.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { peftAdapterFiles } from '../support/archives.js';
import { type FakeJob, type FakeTogether, type Reply, startFakeTogether } from '../support/fake-together.js';
import { type ActionRun, actionRunner } from '../support/run-action.js';
import { SAMPLE_JOB_ID } from '../support/sample-job.js';
import { hostileArchive, pax, type RawEntry } from '../support/tar-writer.js';

const KEY = 'tgp_v1_untrusted-text-Zq81xV';
/** Every forged command carries this token right after its `::`, so a forged line is told from the action's own. */
const TOKEN = 'ZZINJECTED';

// The pieces hostile text is made of.
const BREAKS = ['\n', '\r\n', '\r', '\u2028', '\u2029', '\u0085', '\u000b', '\u000c', '\u0000', '\u001b[31m', '\u009b2J', '\u007f'];
const COMMANDS = [
  `::warning::${TOKEN}`,
  `::error file=x,line=1::${TOKEN}`,
  `::stop-commands::${TOKEN}`,
  `::set-output name=path::${TOKEN}`,
  `::add-mask::${TOKEN}`,
  `::group::${TOKEN}`,
  `::debug::${TOKEN}`,
];
const MARKUP = [
  '<img src=x onerror=alert(1)>',
  '</td></tr></table>',
  '<script>',
  '| a | b |',
  '[x](https://evil.example)',
  '![i](https://evil.example/i.png)',
  '&amp;',
  '"\'`',
  '**bold**',
  '<!--',
];

const piece = fc.oneof(
  fc.constantFrom(...BREAKS),
  fc.constantFrom(...COMMANDS),
  fc.constantFrom(...MARKUP),
  fc.string({ maxLength: 6 }),
  fc.string({ unit: 'binary', maxLength: 4 }),
);
/** A hostile string: always at least one line break followed by a forged command, plus anything. */
const hostile = fc
  .tuple(
    fc.array(piece, { maxLength: 5 }),
    fc.constantFrom(...BREAKS.slice(0, 5)),
    fc.constantFrom(...COMMANDS),
    fc.array(piece, { maxLength: 5 }),
  )
  .map(([before, brk, command, after]) => [...before, brk, command, ...after].join(''));

// biome-ignore lint/suspicious/noControlCharactersInRegex: the characters that must never be printed raw
const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029]/;
const OWN_COMMANDS = /^::(add-mask|group|endgroup|error|warning|debug|notice)::/;

/** What must hold for any run, whatever the servers sent. */
function assertNothingForged(run: ActionRun): void {
  const lines = run.stdout.split('\n');
  for (const line of lines) {
    assert.ok(!line.includes('\r'), `a raw carriage return in the log: ${JSON.stringify(line)}`);
    assert.ok(!RAW_CONTROL.test(line), `a raw control character in the log: ${JSON.stringify(line)}`);
    if (!/^\s*::/.test(line)) continue;
    assert.match(line, OWN_COMMANDS, `a workflow command the action did not write: ${JSON.stringify(line)}`);
    assert.ok(!new RegExp(`^::[a-z-]+(?: [^:]*)?::${TOKEN}`).test(line), `a forged command: ${JSON.stringify(line)}`);
  }
  // `::stop-commands::` would make the runner ignore the step's own commands, its error included.
  assert.ok(!lines.some((l) => /^\s*::stop-commands::/.test(l)));
  for (const [name, value] of Object.entries(run.outputs)) {
    assert.ok(!RAW_CONTROL.test(value) && !/[\r\n]/.test(value), `output ${name} holds a raw control character: ${JSON.stringify(value)}`);
  }
  assertWellFormedSummary(run.summary);
}

/** The summary is the action's own HTML: headings, paragraphs and tables, nothing raw from a server. */
function assertWellFormedSummary(summary: string): void {
  if (summary === '') return;
  assert.ok(!RAW_CONTROL.test(summary), `a raw control character in the summary: ${JSON.stringify(summary)}`);
  for (const table of summary.match(/<table>[\s\S]*?<\/table>/g) ?? []) {
    assert.ok(!/\n\s*\n/.test(table), 'a blank line inside a table ends the HTML block on GitHub');
  }
  // With the action's own tags removed, no markup is left: every `<` from a server was escaped.
  const own = /<\/?(?:h[1-6]|table|tr|th|td|code|p|strong|em|br|ul|li|details|summary)>|<a href="[^"<>]*">|<\/a>/g;
  const rest = summary.replace(own, '');
  assert.ok(!/[<>]/.test(rest), `markup left in the summary: ${JSON.stringify(rest.slice(0, 300))}`);
  assert.ok(!/\]\(/.test(rest), 'a raw Markdown link in the summary');
  const opened = (summary.match(/<table>/g) ?? []).length;
  assert.equal(opened, (summary.match(/<\/table>/g) ?? []).length, 'every table is closed');
  assert.equal((summary.match(/<tr>/g) ?? []).length, (summary.match(/<\/tr>/g) ?? []).length, 'every row is closed');
}

let api: FakeTogether;
let adapter: Buffer;

before(async () => {
  adapter = await hostileArchive(Object.entries(peftAdapterFiles()).map(([name, data]): RawEntry => ({ name: `adapter/${name}`, data })));
  api = await startFakeTogether({ apiKey: KEY, jobs: [] });
});

after(async () => {
  await api.close();
  removeRuns();
});

const { act, removeRuns } = actionRunner(KEY, () => ({ inputs: { 'api-key': KEY, 'base-url': api.url } }), assertNothingForged);

/** A job whose every string field the server controls is hostile. */
function hostileJob(fields: { status: string; model: string; outputName: string; trainingType: string; label: string }): FakeJob {
  return {
    id: SAMPLE_JOB_ID,
    status: fields.status,
    model: fields.model,
    model_output_name: fields.outputName,
    training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
    checkpoints: [{ step: 10, checkpoint_type: fields.label, checkpoint: 'adapter' }],
    events: [{ type: 'job_error', level: 'error', message: fields.label }],
    archives: { adapter, merged: adapter, 'adapter@10': adapter },
  };
}

/** The job document as the server sends it, with the fields the fake fills in itself made hostile too. */
function jobReply(job: FakeJob, id: string, trainingType: string): Reply {
  return {
    status: 200,
    body: JSON.stringify({
      id,
      status: job.status,
      model: job.model,
      model_output_name: job.model_output_name,
      training_type: { type: trainingType, lora_r: 8 },
      created_at: '2024-07-26T18:04:05.123Z',
    }),
  };
}

describe('untrusted text stays text', () => {
  test('hostile job, checkpoint and event fields, and hostile error bodies, in every scenario', async () => {
    const fields = fc.record({
      status: hostile,
      model: hostile,
      outputName: hostile,
      trainingType: hostile,
      label: hostile,
      id: hostile,
      message: hostile,
    });
    const scenario = fc.constantFrom('completed', 'not-completed', 'step', 'wait-failed', 'error-body', 'download-error-body');
    await fc.assert(
      fc.asyncProperty(fields, scenario, async (f, kind) => {
        api.requests.length = 0;
        const job = hostileJob({ ...f, status: kind === 'completed' || kind === 'download-error-body' ? 'completed' : f.status });
        if (kind === 'wait-failed') job.status = 'error';
        api.jobs.clear();
        api.jobs.set(job.id, job);
        const errorBody: Reply = { status: 400, body: JSON.stringify({ error: { message: f.message, type: f.label } }) };
        api.setFaults({
          queue: {
            job: kind === 'error-body' ? [errorBody] : kind === 'wait-failed' ? [] : [jobReply(job, f.id, f.trainingType)],
            download: kind === 'download-error-body' ? [errorBody] : [],
          },
        });
        const inputs: Record<string, string> = { 'job-id': SAMPLE_JOB_ID, 'checkpoint-type': 'adapter', extract: 'true' };
        if (kind === 'step') inputs.step = '10';
        if (kind === 'wait-failed') Object.assign(inputs, { wait: 'true', 'wait-timeout-minutes': '0.2' });
        const run = await act(inputs);
        // Whatever happened, it ended: with the download, or with one error the action wrote.
        if (run.code !== 0) assert.equal(run.stdout.split('\n').filter((l) => l.startsWith('::error::')).length, 1, run.stdout);
      }),
      { numRuns: 24 },
    );
  });

  test('hostile archive entry names: refused or listed, never printed raw', async () => {
    const name = fc.tuple(fc.constantFrom('adapter/', ''), hostile).map(([dir, n]) => `${dir}${n}`);
    await fc.assert(
      fc.asyncProperty(fc.array(name, { minLength: 1, maxLength: 3 }), async (names) => {
        const entries: RawEntry[] = [];
        for (const [file, data] of Object.entries(peftAdapterFiles())) entries.push({ name: `adapter/${file}`, data });
        for (const n of names) entries.push(pax({ path: n }), { name: 'placeholder', data: Buffer.from('x') });
        const archive = await hostileArchive(entries);
        const job = hostileJob({ status: 'completed', model: 'm', outputName: 'org/model', trainingType: 'Lora', label: 'Final' });
        job.archives = { adapter: archive, merged: archive };
        api.jobs.clear();
        api.jobs.set(job.id, job);
        api.setFaults({});
        const run = await act({ 'job-id': SAMPLE_JOB_ID, 'checkpoint-type': 'adapter', extract: 'true', 'verify-contents': 'false' });
        // Names with control characters are refused by the entry check; the error shows them escaped.
        if (names.some((n) => RAW_CONTROL.test(n) || /[\r\n]/.test(n))) {
          assert.equal(run.code, 1, `an entry name with a control character must be refused:\n${run.stdout}`);
          assert.match(run.stdout, /::error::The archive is not safe to unpack/);
        }
      }),
      { numRuns: 12 },
    );
  });
});
