/**
 * End-to-end: Together's JSON endpoints through the built dist/index.js: the checkpoint outputs,
 * `step: latest`, training metrics in the summary, and what a hostile or broken API server, a
 * proxy, DNS or TLS can do to those calls (ceilings, sizes, causes, redaction, forged commands).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { makeArchive, peftAdapterFiles, safetensors, sha256 } from '../support/archives.js';
import { type FakeJob, type FakeTogether, startFakeTogether } from '../support/fake-together.js';
import { type ForwardProxy, startProxy } from '../support/proxy.js';
import { type ActionRun, actionRunner, assertFailed, assertSucceeded, ROOT, TEST_HOSTS } from '../support/run-action.js';
import { SAMPLE_MODEL, SAMPLE_OUTPUT_NAME, SAMPLE_SLUG } from '../support/sample-job.js';

const KEY = 'tgp_v1_api-side-secret-Zq81Lw';
const LORA = 'ft-3c3c3c3c-1111-4222-8333-444455556666';
const RUNNING = 'ft-9d9d9d9d-1111-4222-8333-444455556666';
/** Preload that shortens each API attempt's deadline to API_DEADLINE_MS (default 1500 ms). */
const API_DEADLINE = path.join(ROOT, 'test', 'support', 'api-deadline.mjs');
const SLUG = SAMPLE_SLUG;

let api: FakeTogether;
let merged: Buffer;
let adapter: Buffer;
let adapters: Record<number, Buffer>;
const scratch: string[] = [];

const METRICS: Array<Record<string, number>> = [
  { 'train/loss': 2.0, 'train/learning_rate': 0.0001, 'train/global_step': 5 },
  { 'train/loss': 1.5, 'train/learning_rate': 0.00009, 'train/global_step': 10 },
  { 'eval/loss': 1.75, 'train/global_step': 10 },
  { 'train/loss': 1.25, 'train/global_step': 15 },
  { 'train/loss': 0.875, 'train/global_step': 30 },
  { 'eval/loss': 1.125, 'train/global_step': 30 },
];

function jobs(): FakeJob[] {
  return [
    {
      id: LORA,
      status: 'completed',
      model: SAMPLE_MODEL,
      model_output_name: SAMPLE_OUTPUT_NAME,
      training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
      // Listed out of order, two at the last step: the outputs sort them and list each step once.
      checkpoints: [
        { step: 20, checkpoint_type: 'Intermediate', checkpoint: 'adapter', created_at: '2024-07-26T18:40:00.000Z' },
        { step: 10, checkpoint_type: 'Intermediate', checkpoint: 'adapter', created_at: '2024-07-26T18:20:00.000Z' },
        { step: 30, checkpoint_type: 'Final Merged', checkpoint: 'model', created_at: '2024-07-26T19:00:00.000Z' },
        { step: 30, checkpoint_type: 'Final Adapter', checkpoint: 'adapter', created_at: '2024-07-26T19:00:00.000Z' },
      ],
      metrics: METRICS,
      archives: { merged, adapter, 'adapter@10': adapters[10], 'adapter@20': adapters[20], 'adapter@30': adapters[30] },
    },
    {
      id: RUNNING,
      status: 'running',
      model_output_name: 'org/still-training',
      training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
      checkpoints: [],
      archives: { 'adapter@5': adapters[10] },
    },
  ];
}

before(async () => {
  const weights = safetensors({ 'model.embed.weight': { dtype: 'F32', shape: [64, 32], data: new Float32Array(64 * 32).fill(0.5) } });
  merged = await makeArchive({ 'config.json': Buffer.from('{"model_type":"llama"}'), 'model.safetensors': weights }, 'zstd');
  adapter = await makeArchive(peftAdapterFiles({ seed: 1 }), 'zstd');
  adapters = {
    10: await makeArchive(peftAdapterFiles({ seed: 10 }), 'zstd'),
    20: await makeArchive(peftAdapterFiles({ seed: 20 }), 'zstd'),
    30: await makeArchive(peftAdapterFiles({ seed: 30 }), 'zstd'),
  };
  api = await startFakeTogether({ apiKey: KEY, jobs: jobs() });
});

after(async () => {
  await api.close();
  removeRuns();
  for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  api.setFaults({});
  api.requests.length = 0;
  api.jobs.clear();
  for (const job of jobs()) api.jobs.set(job.id, job);
});

/** The only workflow commands the action itself writes in these runs. */
const OWN_COMMAND = /^::(add-mask|group|endgroup|debug|error|warning)::/;

const { act, removeRuns } = actionRunner(
  KEY,
  () => ({ inputs: { 'api-key': KEY, 'base-url': api.url } }),
  (run) => {
    for (const line of run.stdout.split('\n').filter((l) => l.startsWith('::'))) assert.match(line, OWN_COMMAND);
  },
);

const requestsTo = (endpoint: string) => api.requests.filter((r) => r.endpoint === endpoint);

/** The job summary's row for `field`, as the HTML table holds it. */
function summaryRow(run: ActionRun, field: string): string | undefined {
  return new RegExp(`<tr><td>${field}</td><td>(.*?)</td></tr>`).exec(run.summary)?.[1];
}

function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `together-api-${prefix}-`));
  scratch.push(dir);
  return dir;
}

/** A closed port on 127.0.0.1: nothing listens there. */
async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A server for the hostile cases: `handle` answers every request; it counts the body bytes it managed to send. */
async function startServer(handle: (req: http.IncomingMessage, res: http.ServerResponse, sent: { bytes: number }) => void) {
  const sent = { bytes: 0 };
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => handle(req, res, sent));
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    sent,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Writes `total` bytes of a JSON string body in 1 MiB pieces, honouring backpressure, until the client goes. */
async function writeHugeJson(res: http.ServerResponse, total: number, sent: { bytes: number }): Promise<void> {
  const piece = Buffer.alloc(1024 * 1024, 'a');
  let closed = false;
  res.on('close', () => (closed = true));
  res.write('{"id":"');
  for (let written = 0; written < total && !closed; written += piece.length) {
    const ok = res.write(piece, (err) => {
      if (!err) sent.bytes += piece.length;
    });
    if (!ok) await new Promise((resolve) => res.once('drain', resolve).once('close', resolve));
  }
  if (!closed) res.end('"}');
}

describe('checkpoints and steps outputs', () => {
  test('a dry run sets them: every checkpoint sorted by step with its label and date, and the distinct steps', async () => {
    const run = await act({ 'job-id': LORA, 'dry-run': 'true' });
    assertSucceeded(run);
    assert.deepEqual(JSON.parse(run.outputs.checkpoints), [
      { step: 10, checkpoint_type: 'Intermediate', created_at: '2024-07-26T18:20:00.000Z' },
      { step: 20, checkpoint_type: 'Intermediate', created_at: '2024-07-26T18:40:00.000Z' },
      { step: 30, checkpoint_type: 'Final Merged', created_at: '2024-07-26T19:00:00.000Z' },
      { step: 30, checkpoint_type: 'Final Adapter', created_at: '2024-07-26T19:00:00.000Z' },
    ]);
    assert.equal(run.outputs.steps, '[10,20,30]');
    assert.equal(requestsTo('checkpoints').length, 1);
  });

  test('a download sets them too, with a step or without', async () => {
    for (const step of ['', '20']) {
      const run = await act({ 'job-id': LORA, 'checkpoint-type': 'adapter', step });
      assertSucceeded(run);
      assert.equal(run.outputs.steps, '[10,20,30]');
      assert.equal(JSON.parse(run.outputs.checkpoints).length, 4);
    }
  });

  test('a job without checkpoints has empty arrays', async () => {
    api.jobs.get(LORA)!.checkpoints = [];
    const run = await act({ 'job-id': LORA, 'dry-run': 'true' });
    assertSucceeded(run);
    assert.equal(run.outputs.checkpoints, '[]');
    assert.equal(run.outputs.steps, '[]');
  });

  test("labels holding control, C1 and line-separator characters are escaped in the JSON, and the API's other values are dropped", async () => {
    const label = 'Inter\nmediate\r\t\u0007\u0085\u2028\u2029::warning::x';
    api.jobs.get(LORA)!.checkpoints = [
      { step: 10, checkpoint_type: label, created_at: `2024\u2028${KEY}` },
      { step: 0, checkpoint_type: 'step zero cannot be asked for' },
    ];
    const run = await act({ 'job-id': LORA, 'dry-run': 'true' });
    assertSucceeded(run);
    const json = run.outputs.checkpoints;
    // biome-ignore lint/suspicious/noControlCharactersInRegex: these must not pass raw
    assert.doesNotMatch(json, /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
    assert.ok(json.includes('\\u2028') && json.includes('\\u0085') && json.includes('\\n'), json);
    assert.deepEqual(JSON.parse(json), [{ step: 10, checkpoint_type: label, created_at: '2024\u2028***' }]);
    assert.equal(run.outputs.steps, '[10]');
  });
});

describe('step: latest', () => {
  test('resolves to the highest saved step; the step output and the file name carry its number', async () => {
    const run = await act({ 'job-id': LORA, step: 'latest', 'checkpoint-type': 'adapter' });
    assertSucceeded(run);
    assert.equal(run.outputs.step, '30');
    assert.equal(run.outputs.sha256, sha256(adapters[30]));
    assert.equal(run.outputs.path, path.join(run.workspace, `${SLUG}-step-30-adapter.tar.zst`));
    assert.match(run.stdout, /step: latest is step 30/);
    const download = requestsTo('download').at(-1)!;
    assert.equal(download.query.checkpoint_step, '30');
    assert.match(summaryRow(run, 'Step') ?? '', /^30$/);
  });

  test('job-id ft-...:latest works the same; Latest in any case', async () => {
    for (const [jobId, step] of [
      [`${LORA}:latest`, ''],
      [`${LORA}:LATEST`, 'Latest'],
    ]) {
      const run = await act({ 'job-id': jobId, step, 'checkpoint-type': 'adapter', 'dry-run': 'true' });
      assertSucceeded(run);
      assert.equal(run.outputs.step, '30');
    }
  });

  test('a step number and latest together disagree, naming the input', async () => {
    const run = await act({ 'job-id': `${LORA}:latest`, step: '20' });
    assertFailed(run, /Input `step`/, /disagrees/);
    assert.equal(api.requests.length, 0);
  });

  test('a job without checkpoints fails, naming its status', async () => {
    const run = await act({ 'job-id': RUNNING, step: 'latest', 'checkpoint-type': 'adapter' });
    assertFailed(run, /has no saved checkpoints yet \(status `running`\)/, /`step: latest`/, /wait: true/);
    assert.equal(requestsTo('download').length, 0);
  });

  test('a bad step names the input and what is valid', async () => {
    const run = await act({ 'job-id': LORA, step: 'newest' });
    assertFailed(run, /Input `step`/, /positive integer/, /`latest`/);
    assert.equal(api.requests.length, 0);
  });
});

describe('training metrics in the summary', () => {
  test('the losses logged nearest the fetched step, with the step they were logged at', async () => {
    const run = await act({ 'job-id': LORA, step: '20', 'checkpoint-type': 'adapter' });
    assertSucceeded(run);
    // Step 20: training loss logged at 15 (nearer than 30), evaluation loss at 10 and 30 are as near: the earlier.
    assert.equal(summaryRow(run, 'Training loss'), '1.25 (logged at step 15)');
    assert.equal(summaryRow(run, 'Evaluation loss'), '1.75 (logged at step 10)');
    assert.match(run.stdout, /Training metrics nearest step 20: training loss 1\.25 \(step 15\), evaluation loss 1\.75 \(step 10\)/);
    const [request] = requestsTo('metrics');
    assert.equal(requestsTo('metrics').length, 1);
    assert.equal(request.method, 'GET');
    assert.deepEqual(request.query, {}, 'no filter: all metrics');
    assert.equal(request.body, '', 'no body: all metrics');
  });

  test('for the final model, the last logged ones; a dry run shows them too', async () => {
    const run = await act({ 'job-id': LORA, 'dry-run': 'true' });
    assertSucceeded(run);
    assert.equal(summaryRow(run, 'Training loss'), '0.875 (logged at step 30)');
    assert.equal(summaryRow(run, 'Evaluation loss'), '1.125 (logged at step 30)');
  });

  test('only training loss logged: no evaluation row', async () => {
    api.jobs.get(LORA)!.metrics = METRICS.filter((m) => 'train/loss' in m);
    const run = await act({ 'job-id': LORA, step: '10', 'checkpoint-type': 'adapter' });
    assertSucceeded(run);
    assert.equal(summaryRow(run, 'Training loss'), '1.5 (logged at step 10)');
    assert.equal(summaryRow(run, 'Evaluation loss'), undefined);
  });

  const without: Array<[string, () => void, RegExp]> = [
    ['none', () => (api.jobs.get(LORA)!.metrics = []), /^Training metrics: Together has none for this job$/m],
    ['a 500', () => api.setFaults({ queue: { metrics: [{ status: 500 }] } }), /^Training metrics: not shown in the summary \(.*HTTP 500/m],
    [
      'a reset connection',
      () => api.setFaults({ queue: { metrics: ['reset'] } }),
      /^Training metrics: not shown in the summary \(Could not reach/m,
    ],
    [
      'an answer that is not JSON',
      () => api.setFaults({ queue: { metrics: [{ status: 200, headers: { 'content-type': 'text/html' }, body: '<html>' }] } }),
      /^Training metrics: not shown in the summary \(.*not a JSON object/m,
    ],
  ];
  for (const [what, arrange, line] of without) {
    test(`with ${what}: the summary says nothing of metrics, one log line, the step succeeds`, async () => {
      arrange();
      const run = await act({ 'job-id': LORA, step: '20', 'checkpoint-type': 'adapter' });
      assertSucceeded(run);
      assert.equal(run.outputs.sha256, sha256(adapters[20]));
      assert.ok(!/loss|metric/i.test(run.summary), run.summary);
      assert.match(run.stdout, line);
      assert.equal(run.stdout.split('\n').filter((l) => /metric/i.test(l) && !l.startsWith('::debug::')).length, 1, run.stdout);
      assert.equal(requestsTo('metrics').length, 1, 'one attempt: the metrics only inform');
    });
  }
});

describe('ceilings on the JSON endpoints', () => {
  for (const [header, value] of [
    ['retry-after', '3600'],
    ['retry-after-ms', '3600000'],
  ]) {
    test(`a ${header} of an hour is cut to 60 s, and the wait is logged`, async () => {
      api.setFaults({ queue: { job: [{ status: 429, headers: { [header]: value } }] } });
      let sawLine = false;
      const run = await act(
        { 'job-id': LORA },
        {
          onSpawn: (child, output) => {
            const timer = setInterval(() => {
              if (/attempt 2 of 5 in 60\.0 s/.test(output.stdout())) {
                clearInterval(timer);
                sawLine = true;
                child.kill('SIGTERM');
              }
            }, 20);
            child.on('close', () => clearInterval(timer));
          },
          timeoutMs: 30_000,
        },
      );
      assert.ok(sawLine, `no capped wait in the log:\n${run.stdout}`);
      assert.match(
        run.stdout,
        /Together API, looking up the job: HTTP 429; attempt 2 of 5 in 60\.0 s \(the server asked for 3600 s; 60 s is the most this action waits\)/,
      );
      assert.equal(requestsTo('job').length, 1, 'the SDK did not retry on its own');
    });
  }

  test('a job body sent a byte at a time fails as too slow, saying how long it waited', async () => {
    const server = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '400' });
      const timer = setInterval(() => res.write(' '), 200);
      res.on('close', () => clearInterval(timer));
    });
    try {
      const run = await act({ 'job-id': LORA, 'base-url': server.url }, { nodeArgs: ['--import', API_DEADLINE] });
      assertFailed(
        run,
        /The Together API was too slow while looking up the job/,
        /not complete after 1\.5 s of waiting/,
        /on the last of 5 attempts/,
      );
      assert.equal((run.stdout.match(/no complete answer within 1\.5 s; attempt \d of 5/g) ?? []).length, 4);
    } finally {
      await server.close();
    }
  });

  test('so does a checkpoint list whose headers never come', async () => {
    const server = await startServer((req, res) => {
      if (req.url?.endsWith('/checkpoints')) return; // never answers
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: LORA, status: 'completed' }));
    });
    try {
      const run = await act({ 'job-id': LORA, step: '10', 'base-url': server.url }, { nodeArgs: ['--import', API_DEADLINE] });
      assertFailed(run, /too slow while listing the checkpoints/, /1\.5 s/);
    } finally {
      await server.close();
    }
  });

  test('a job document over 16 MiB announced by content-length is refused before its body is read', async () => {
    const server = await startServer((_req, res, sent) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(400 * 1024 * 1024 + 9) });
      void writeHugeJson(res, 400 * 1024 * 1024, sent);
    });
    try {
      const run = await act({ 'job-id': LORA, 'base-url': server.url });
      assertFailed(
        run,
        /answer while looking up the job for job .* was refused/,
        /announces 419430409 bytes \(content-length\), over the 16 MiB/,
      );
      assert.ok(server.sent.bytes < 64 * 1024 * 1024, `${server.sent.bytes} bytes were sent`);
    } finally {
      await server.close();
    }
  });

  test('a chunked job document over 16 MiB is cut off at 16 MiB', async () => {
    const server = await startServer((_req, res, sent) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      void writeHugeJson(res, 400 * 1024 * 1024, sent);
    });
    try {
      const run = await act({ 'job-id': LORA, 'base-url': server.url });
      assertFailed(run, /was refused: the answer passed 16 MiB, the most this action reads/);
      assert.ok(server.sent.bytes < 64 * 1024 * 1024, `${server.sent.bytes} bytes were sent: the body was read on`);
    } finally {
      await server.close();
    }
  });
});

describe('connection errors name their cause', () => {
  test('a host name that does not resolve', async () => {
    const run = await act({ 'job-id': LORA, 'base-url': 'http://api.together.invalid/v1' });
    assertFailed(
      run,
      /Could not reach the Together API at http:\/\/api\.together\.invalid\/v1 while looking up the job, after 5 attempts/,
      /the host name api\.together\.invalid did not resolve \((ENOTFOUND|EAI_AGAIN)\)/,
      /`base-url`/,
    );
  });

  test('an address that refuses', async () => {
    const port = await closedPort();
    const run = await act({ 'job-id': LORA, 'base-url': `http://127.0.0.1:${port}/v1` });
    assertFailed(run, new RegExp(`127\\.0\\.0\\.1:${port} refused the connection \\(ECONNREFUSED\\)`), /after 5 attempts/);
  });

  describe('a certificate that is not trusted', () => {
    let tlsApi: FakeTogether;
    let certFile: string;
    before(async () => {
      const dir = tempDir('tls');
      certFile = path.join(dir, 'cert.pem');
      const keyFile = path.join(dir, 'key.pem');
      await promisify(execFile)('openssl', [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        keyFile,
        '-out',
        certFile,
        '-days',
        '2',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ]);
      tlsApi = await startFakeTogether({
        apiKey: KEY,
        jobs: jobs(),
        tls: { key: fs.readFileSync(keyFile), cert: fs.readFileSync(certFile) },
      });
    });
    after(() => tlsApi.close());

    test('fails at once, naming the host and the hint NODE_EXTRA_CA_CERTS', async () => {
      const run = await act({ 'job-id': LORA, 'base-url': tlsApi.url });
      const error = assertFailed(
        run,
        /the certificate of 127\.0\.0\.1:\d+ is not trusted \(DEPTH_ZERO_SELF_SIGNED_CERT: self-signed certificate\)/,
        /NODE_EXTRA_CA_CERTS/,
      );
      assert.doesNotMatch(error, /attempts|--use-system-ca/);
      assert.doesNotMatch(run.stdout, /attempt 2/, 'an untrusted certificate is not retried');
      assert.equal(tlsApi.requests.length, 0);
    });

    test('with NODE_EXTRA_CA_CERTS naming it, the whole download works over TLS', async () => {
      const run = await act({ 'job-id': LORA, 'base-url': tlsApi.url }, { env: { NODE_EXTRA_CA_CERTS: certFile } });
      assertSucceeded(run);
      assert.equal(run.outputs.sha256, sha256(merged));
      assert.ok(tlsApi.requests.filter((r) => r.endpoint === 'download').length >= 2, 'the probe and the download went over TLS too');
    });
  });

  describe('a proxy that wants credentials', () => {
    let proxy: ForwardProxy;
    before(async () => {
      proxy = await startProxy({ refuse: 407 });
    });
    after(() => proxy.close());

    for (const scheme of ['http', 'https']) {
      test(`its 407 is named, without the proxy's password (${scheme}_proxy)`, async () => {
        const proxyUrl = proxy.url.replace('http://', 'http://robot:pr0xy-pa55@');
        const run = await act(
          { 'job-id': LORA, 'base-url': `${scheme}://api.together.test:${api.port}/v1` },
          { nodeArgs: ['--import', TEST_HOSTS], env: { [`${scheme}_proxy`]: proxyUrl } },
        );
        assertFailed(
          run,
          new RegExp(
            `the proxy ${proxy.url.replace(/[.:/]/g, '\\$&')} answered HTTP 407 Proxy Authentication Required when asked to connect to api\\.together\\.test:${api.port}`,
          ),
          /https_proxy=http:\/\/user:password@proxy:port/,
        );
        assert.ok(!run.stdout.includes('pr0xy-pa55'), 'the proxy password was printed');
        assert.doesNotMatch(run.stdout, /attempt 2/, 'a 407 is not retried');
        assert.ok(proxy.carried.some((c) => c.startsWith('CONNECT api.together.test:')));
        assert.equal(api.requests.length, 0);
      });
    }
  });
});

describe('the API key, echoed by the server, is redacted everywhere', () => {
  /** The key was there to leak: the redacted form shows at least twice where the server echoed it. */
  function echoedTwice(text: string): void {
    assert.match(text, /request made with the key \*\*\*; check that \*\*\* is valid/);
  }

  test('in the error annotation of a refused job lookup', async () => {
    api.setFaults({ echoKey: true, queue: { job: [{ status: 403 }] } });
    const run = await act({ 'job-id': LORA });
    echoedTwice(assertFailed(run, /HTTP 403/));
  });

  test('in the error of an API that keeps failing, and its retry lines', async () => {
    const busy = { status: 503, headers: { 'retry-after-ms': '1' } };
    api.setFaults({ echoKey: true, queue: { checkpoints: Array.from({ length: 5 }, () => busy) } });
    const run = await act({ 'job-id': LORA, step: '10' });
    echoedTwice(assertFailed(run, /after 5 attempts/, /HTTP 503/));
  });

  test('in the warning about job events that could not be read', async () => {
    const job = api.jobs.get(RUNNING)!;
    job.status = 'error';
    api.setFaults({ echoKey: true, queue: { events: [{ status: 400 }] } });
    const run = await act({ 'job-id': RUNNING, wait: 'true' });
    assertFailed(run, /ended with status `error`/);
    const warning = run.stdout.split('\n').find((l) => l.startsWith('::warning::'));
    assert.ok(warning, run.stdout);
    assert.match(warning, /Could not read the job's events/);
    echoedTwice(warning);
  });

  test('in the log line about metrics that could not be read, and in a summary', async () => {
    api.setFaults({ echoKey: true, queue: { metrics: [{ status: 404 }] } });
    const run = await act({ 'job-id': LORA, step: '10', 'checkpoint-type': 'adapter' });
    assertSucceeded(run);
    echoedTwice(run.stdout.split('\n').find((l) => l.startsWith('Training metrics')) ?? '');
  });

  test('in the error of a refused download probe', async () => {
    api.setFaults({ echoKey: true, queue: { download: [{ status: 403 }] } });
    const run = await act({ 'job-id': LORA });
    echoedTwice(assertFailed(run, /HTTP 403/));
  });

  for (const baseUrl of [`not-a-url-${KEY}`, `ftp://example.com/${KEY}/v1`, `https://example.com/v1?key=${KEY}`]) {
    test(`a base-url holding the key is not echoed (${baseUrl.replace(KEY, 'KEY')})`, async () => {
      const run = await act({ 'job-id': LORA, 'base-url': baseUrl });
      assertFailed(run, /Input `base-url`/);
      assert.equal(api.requests.length, 0);
    });
  }
});

describe('job fields cannot forge workflow commands', () => {
  const INJECTIONS = ['\n::warning::x', '\n::stop-commands::x', '\n::set-output name=path::x', '\r\n::error::x'];
  const FIELDS = ['model_output_name', 'model', 'id', 'status'];

  for (const injection of INJECTIONS) {
    test(`fields ending in ${JSON.stringify(injection)} print no command of their own`, async () => {
      api.jobs.get(LORA)!.served = Object.fromEntries(FIELDS.map((f) => [f, `${f}-value${injection}`]));
      const run = await act({ 'job-id': LORA, step: '10', 'checkpoint-type': 'adapter', 'dry-run': 'true' });
      assertSucceeded(run);
      // Each field did reach the log, escaped on its own line.
      for (const field of FIELDS)
        assert.ok(run.stdout.includes(`${field}-value${JSON.stringify(injection).slice(1, -1)}`), `${field} was not logged`);
      assert.deepEqual(
        run.stdout.split('\n').filter((l) => l.startsWith('::') && !/^::(add-mask|group|endgroup|debug)::/.test(l)),
        [],
        'a line started with a command the action did not write',
      );
      assert.notEqual(run.outputs.path, 'x');
      assert.ok(!run.summary.includes(injection), 'the summary holds the raw text');
    });
  }

  test('a status that fails the run shows in the one error line, escaped', async () => {
    api.jobs.get(LORA)!.served = { status: 'running\n::stop-commands::x' };
    const run = await act({ 'job-id': LORA });
    const error = assertFailed(run, /not finished yet \(status `running\\n::stop-commands::x`\)/);
    assert.ok(error.startsWith('::error::'));
    assert.ok(!run.stdout.split('\n').some((l) => l.startsWith('::stop-commands::')));
  });
});
