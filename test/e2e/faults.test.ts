/**
 * End-to-end: faults, hostile servers and bad input, on both download paths (parallel ranges, and
 * one tool-cache stream for a server that ignores Range). Each case ends in a correct file or a
 * clear failure, never a wrong file, and never shows the API key.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import fc from 'fast-check';
import { makeArchive, sha256, weights } from '../support/archives.js';
import { type FakeJob, type FakeTogether, type Faults, type Reply, startFakeTogether } from '../support/fake-together.js';
import { type ForwardProxy, startProxy } from '../support/proxy.js';
import { type ActionRun, actionRunner, errorsOf, FAST_RETRY, listFiles, TEST_HOSTS } from '../support/run-action.js';

const KEY = 'tgp_v1_faults-secret-9Kq2';
const SIGNATURE = 'X-Signature=sig-0123456789abcdef-secret';
const JOB = 'ft-5a5a5a5a-0000-4000-8000-000000000001';

let api: FakeTogether;
let storage: FakeTogether;
let archive: Buffer;

const jobs = (): FakeJob[] => [
  {
    id: JOB,
    status: 'completed',
    model_output_name: 'org/faulty-model',
    training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
    checkpoints: [{ step: 4, checkpoint_type: 'Intermediate', checkpoint: 'adapter' }],
    archives: { merged: archive, 'merged@4': archive },
  },
];

before(async () => {
  archive = await makeArchive({ 'config.json': Buffer.from('{}'), 'model.safetensors': weights(3 * 1024 * 1024) }, 'zstd');
  api = await startFakeTogether({ apiKey: KEY, jobs: jobs() });
  // Another host on loopback, playing the storage service a signed URL points at.
  storage = await startFakeTogether({ apiKey: KEY, jobs: jobs(), host: '127.0.0.2', requireNoAuth: true });
});

after(async () => {
  await Promise.all([api.close(), storage.close()]);
  removeRuns();
});

beforeEach(() => {
  for (const server of [api, storage]) {
    server.setFaults({});
    server.requests.length = 0;
  }
});

const { act, removeRuns } = actionRunner(
  KEY,
  () => ({ inputs: { 'job-id': JOB, 'api-key': KEY, 'base-url': api.url } }),
  (run) =>
    assert.ok(
      !run.stdout.split('\n').some((l) => !l.startsWith('::add-mask::') && l.includes(SIGNATURE)),
      'a signed URL was logged with its query',
    ),
);

function succeeded(run: ActionRun): void {
  assert.equal(run.code, 0, `the action failed:\n${run.stdout}\n${run.stderr}`);
  assert.equal(run.outputs.sha256, sha256(archive));
  assert.deepEqual(fs.readFileSync(run.outputs.path), archive);
}

function failed(run: ActionRun, ...patterns: RegExp[]): string {
  assert.equal(run.code, 1, `expected a failure:\n${run.stdout}`);
  const errors = errorsOf(run);
  for (const p of patterns) assert.match(errors, p);
  assert.ok(!run.stdout.includes('    at '), 'no stack trace');
  assert.deepEqual(listFiles(run.workspace), [], 'nothing is left at the destination');
  return errors;
}

const isProbe = (r: { range?: string }) => r.range === 'bytes=0-1';
const downloads = (server = api) => server.requests.filter((r) => r.endpoint === 'download');

const MODES = [
  { name: 'parallel ranges', faults: {} as Faults, nodeArgs: [] as string[], attempts: 6 },
  { name: 'tool-cache stream', faults: { ignoreRange: true } as Faults, nodeArgs: ['--import', FAST_RETRY], attempts: 3 },
];

describe('transient errors are retried, permanent ones are not', () => {
  const TRANSIENT: Array<[string, Reply | 'reset']> = [
    ['429 with retry-after', { status: 429, headers: { 'retry-after': '0' } }],
    ['429 with retry-after-ms', { status: 429, headers: { 'retry-after-ms': '20' } }],
    ['502', { status: 502, headers: { 'retry-after-ms': '1' } }],
    ['503', { status: 503, headers: { 'retry-after-ms': '1' } }],
    ['504', { status: 504, headers: { 'retry-after-ms': '1' } }],
    ['a reset connection', 'reset'],
  ];
  for (const [name, reply] of TRANSIENT) {
    test(`${name} on the job lookup and the checkpoint list`, async () => {
      api.setFaults({ queue: { job: [reply], checkpoints: [reply] } });
      const run = await act({ step: '4' });
      succeeded(run);
      assert.equal(api.requests.filter((r) => r.endpoint === 'job').length, 2);
      assert.equal(api.requests.filter((r) => r.endpoint === 'checkpoints').length, 2);
    });

    for (const mode of MODES) {
      test(`${name} on the probe and on the download (${mode.name})`, async () => {
        const base: Reply = reply === 'reset' ? { status: 0, reset: true } : reply;
        const first: Reply = { ...base, when: isProbe };
        const later: Reply = { ...base, when: (r) => !isProbe(r) };
        api.setFaults({ ...mode.faults, queue: { download: [first, later] } });
        const run = await act({}, { nodeArgs: mode.nodeArgs });
        succeeded(run);
        assert.ok(downloads().length >= 4, 'a failed and a repeated probe, a failed and a repeated download');
      });
    }
  }

  test('retry-after is honoured', async () => {
    api.setFaults({ queue: { download: [{ status: 429, headers: { 'retry-after': '1' }, when: (r) => !isProbe(r) }] } });
    const run = await act({});
    succeeded(run);
    const [failedAt, retriedAt] = downloads()
      .filter((r) => !isProbe(r))
      .map((r) => r.at);
    assert.ok(retriedAt - failedAt >= 950, `retried after ${retriedAt - failedAt} ms`);
  });

  for (const mode of MODES) {
    test(`a failure that persists ends with the attempts and the last status (${mode.name})`, async () => {
      const busy: Reply = { status: 503, headers: { 'retry-after-ms': '1' }, when: (r) => !isProbe(r) };
      api.setFaults({ ...mode.faults, queue: { download: Array.from({ length: 12 }, () => busy) } });
      const run = await act({}, { nodeArgs: mode.nodeArgs });
      failed(run, new RegExp(`${mode.attempts} attempts`), /HTTP 503/);
    });
  }

  test('a probe that keeps failing ends with the attempts and the last status', async () => {
    const busy: Reply = { status: 502, headers: { 'retry-after-ms': '1' } };
    api.setFaults({ queue: { download: Array.from({ length: 6 }, () => busy) } });
    const run = await act({});
    failed(run, /5 attempts/, /HTTP 502/);
    assert.equal(downloads().length, 5);
  });

  for (const status of [400, 401, 403, 404]) {
    test(`${status} is never retried`, async () => {
      api.setFaults({ queue: { job: [{ status }] } });
      const lookup = await act({});
      failed(lookup, new RegExp(`HTTP ${status}`));
      assert.equal(api.requests.length, 1);

      for (const mode of MODES) {
        api.requests.length = 0;
        api.setFaults({ ...mode.faults, queue: { download: [{ status, when: (r) => !isProbe(r) }] } });
        const run = await act({}, { nodeArgs: mode.nodeArgs });
        failed(run, new RegExp(`HTTP ${status}`));
        assert.equal(downloads().length, 2, `${mode.name}: the probe and one download request`);
      }
    });
  }
});

describe('redirects to a storage host', () => {
  for (const mode of MODES) {
    for (const status of [302, 307]) {
      test(`a ${status} to another host works and that host never sees the key (${mode.name})`, async () => {
        api.setFaults({ redirectTo: storage.url.replace(/\/v1$/, ''), redirectStatus: status, redirectQuery: `&${SIGNATURE}` });
        storage.setFaults(mode.faults);
        const run = await act({}, { nodeArgs: mode.nodeArgs });
        succeeded(run);
        assert.ok(downloads(storage).length >= 2, 'the archive came from the storage host');
        for (const r of downloads(storage)) assert.equal(r.headers.authorization, undefined, 'the storage host received the API key');
        for (const r of downloads(api)) assert.equal(r.headers.authorization, `Bearer ${KEY}`);
        assert.match(run.stdout, /Redirected \(HTTP 30[27]\) to http:\/\/127\.0\.0\.2:\d+\/v1\/finetune\/download\?…/);
      });
    }

    test(`a 403 from the storage host blames its signed link, not the API key (${mode.name})`, async () => {
      api.setFaults({ redirectTo: storage.url.replace(/\/v1$/, ''), redirectQuery: `&${SIGNATURE}` });
      storage.setFaults({ ...mode.faults, queue: { download: [{ status: 403 }] } });
      const run = await act({}, { nodeArgs: mode.nodeArgs });
      const error = failed(
        run,
        /storage server Together redirected the download of job .* answered HTTP 403/,
        /signed link may have expired/,
      );
      assert.doesNotMatch(error, /api-key/);
    });

    test(`a relative Location works (${mode.name})`, async () => {
      api.setFaults({ ...mode.faults, relativeRedirect: true });
      const run = await act({}, { nodeArgs: mode.nodeArgs });
      succeeded(run);
      assert.ok(downloads().some((r) => r.status === 307));
      assert.ok(downloads().some((r) => r.query.hop === '1' && (r.status === 200 || r.status === 206)));
    });
  }
});

describe('servers that lie', () => {
  for (const mode of MODES) {
    test(`a body shorter than its Content-Length (${mode.name})`, async () => {
      api.setFaults({ ...mode.faults, contentLength: (n) => n + 10_000 });
      const run = await act({}, { nodeArgs: mode.nodeArgs });
      if (mode.name === 'parallel ranges') succeeded(run);
      else failed(run, /failed after 3 attempts/);
    });
  }

  test('a size in the probe that the download does not match (parallel ranges)', async () => {
    api.setFaults({ probeTotal: archive.length + 4096 });
    const run = await act({});
    failed(run, /Content-Range|incomplete/);
  });

  test('a Content-Length in the probe that the download does not match (tool-cache stream)', async () => {
    let probed = false;
    api.setFaults({
      ignoreRange: true,
      contentLength: (n) => {
        if (probed) return n;
        probed = true;
        return n + 4096;
      },
    });
    const run = await act({}, { nodeArgs: ['--import', FAST_RETRY] });
    failed(run, /incomplete/, new RegExp(String(archive.length)));
  });

  test('a 200 with the full body in answer to the range probe is not read into memory', async () => {
    const big = Buffer.concat([archive, randomBytes(64 * 1024 * 1024)]);
    api.jobs.get(JOB)!.archives.merged = big;
    try {
      api.setFaults({ ignoreRange: true });
      const run = await act({}, { nodeArgs: ['--import', FAST_RETRY] });
      assert.equal(run.code, 0, run.stdout);
      assert.equal(run.outputs.sha256, sha256(big));
      // What the server managed to hand to the socket before the probe hung up: kernel buffers
      // hold a few MB on loopback, far from the whole archive.
      assert.ok(downloads()[0].bodyBytes < big.length / 4, `the probe let ${downloads()[0].bodyBytes} of ${big.length} bytes be sent`);
    } finally {
      api.jobs.get(JOB)!.archives.merged = archive;
    }
  });

  const page = '<!DOCTYPE html><html><body>502 Bad Gateway</body></html>';
  const htmlReply = (when: Reply['when'], extra: Partial<Reply> = {}): Reply => ({
    status: 200,
    headers: { 'content-type': 'text/html' },
    body: page,
    when,
    ...extra,
  });

  test('an HTML error page served with 200 to the probe is refused before downloading (tool-cache stream)', async () => {
    api.setFaults({ ignoreRange: true, queue: { download: [htmlReply(isProbe)] } });
    const run = await act({}, { nodeArgs: ['--import', FAST_RETRY] });
    failed(run, /not a zstd or gzip archive/, /text\/html/);
    assert.equal(downloads().length, 1, 'only the probe');
  });

  test('an HTML error page served with 200 for a range: the server stopped honouring ranges (parallel ranges)', async () => {
    api.setFaults({ queue: { download: [htmlReply((r) => !isProbe(r))] } });
    const run = await act({});
    failed(run, /stopped honouring range requests \(HTTP 200/);
  });

  for (const check of [true, false]) {
    test(`an HTML page of the right length served as the range: ${check ? 'the content check' : 'the check after the download'} refuses it (parallel ranges)`, async () => {
      const body = page.padEnd(archive.length, ' ');
      const contentRange = `bytes 0-${archive.length - 1}/${archive.length}`;
      api.setFaults({
        queue: { download: [htmlReply((r) => !isProbe(r), { status: 206, body, headers: { 'content-range': contentRange } })] },
      });
      const run = await act({ 'verify-contents': String(check) });
      failed(
        run,
        check
          ? /cannot be read as a zstd-compressed tar: zstd could not decompress it .* Nothing was saved\./
          : /not the zstd archive Together announced \(first bytes: 3c 21 44 4f/,
      );
    });
  }
});

describe('cancellation', () => {
  for (const mode of MODES) {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      test(`${signal} during the download removes the temp file and exits non-zero (${mode.name})`, async () => {
        api.setFaults({ ...mode.faults, bytesPerSecond: 256 * 1024 });
        let signalledAt = 0;
        const run = await act(
          {},
          {
            nodeArgs: mode.nodeArgs,
            onSpawn: (child, output) => {
              const timer = setInterval(() => {
                if (/::group::Download/.test(output.stdout())) {
                  clearInterval(timer);
                  setTimeout(() => {
                    signalledAt = Date.now();
                    child.kill(signal);
                  }, 500);
                }
              }, 20);
            },
          },
        );
        const exitedAfter = Date.now() - signalledAt;
        assert.notEqual(run.code, 0);
        assert.ok(signalledAt > 0, 'the download was under way when the signal came');
        assert.ok(exitedAfter < 5000, `exited ${exitedAfter} ms after the signal`);
        assert.match(run.stdout, new RegExp(`Cancelled \\(${signal}\\)`));
        assert.deepEqual(listFiles(run.workspace), []);
      });
    }
  }
});

describe('disk space', () => {
  for (const mode of MODES) {
    test(`an archive larger than the free space fails before downloading, quoting both numbers (${mode.name})`, async () => {
      const huge = 2 ** 50;
      api.setFaults(mode.name === 'parallel ranges' ? { probeTotal: huge } : { ignoreRange: true, contentLength: () => huge });
      const run = await act({}, { nodeArgs: mode.nodeArgs });
      const error = failed(run, /Not enough disk space/, new RegExp(`${huge} bytes`), /bytes\) is free/);
      assert.match(error, /only [\d.]+ [KMGT]iB \(\d+ bytes\) is free/);
      assert.equal(downloads().length, 1, 'only the probe');
    });
  }
});

describe('proxies', () => {
  let proxy: ForwardProxy;
  before(async () => {
    proxy = await startProxy();
  });
  after(() => proxy.close());
  beforeEach(() => {
    proxy.carried.length = 0;
    proxy.upstreamPorts.clear();
  });

  // http-client never proxies 127.* or localhost, so the API goes by a name under `.test`, which
  // the proxy and (through the TEST_HOSTS preload) the action resolve to this machine.
  const named = () => api.url.replace('127.0.0.1', 'api.together.test');

  for (const mode of MODES) {
    for (const variable of ['http_proxy', 'HTTP_PROXY']) {
      test(`${variable} carries the API calls and the download (${mode.name})`, async () => {
        api.setFaults(mode.faults);
        const run = await act(
          { 'base-url': named(), step: '4' },
          { nodeArgs: [...mode.nodeArgs, '--import', TEST_HOSTS], env: { [variable]: proxy.url } },
        );
        succeeded(run);
        // The job lookup and checkpoint list (the SDK's fetch) tunnel through CONNECT; the probe and
        // the ranges go as absolute-form requests to the proxy; tool-cache's stream tunnels.
        const tunnels = proxy.carried.filter((c) => c.startsWith('CONNECT api.together.test:'));
        const forwarded = proxy.carried.filter((c) => c.startsWith('GET http://api.together.test:'));
        assert.equal(tunnels.length + forwarded.length, proxy.carried.length, `the proxy carried:\n${proxy.carried.join('\n')}`);
        assert.ok(tunnels.length >= (mode.name === 'parallel ranges' ? 2 : 3), `the proxy carried:\n${proxy.carried.join('\n')}`);
        assert.ok(
          forwarded.some((c) => c.includes('/v1/finetune/download?')),
          'the probe went to the proxy in absolute form',
        );
        for (const r of api.requests) {
          assert.ok(
            proxy.upstreamPorts.has(r.remotePort ?? -1),
            `${r.method} ${r.path} (${r.range ?? 'whole'}) did not come through the proxy`,
          );
        }
        assert.ok(api.requests.every((r) => r.headers.authorization === `Bearer ${KEY}`));
        assert.equal(api.requests.filter((r) => r.endpoint === 'job' || r.endpoint === 'checkpoints').length, 2);
      });
    }

    test(`no_proxy is honoured (${mode.name})`, async () => {
      api.setFaults(mode.faults);
      const run = await act(
        { 'base-url': named() },
        { nodeArgs: [...mode.nodeArgs, '--import', TEST_HOSTS], env: { http_proxy: proxy.url, no_proxy: 'example.com,together.test' } },
      );
      succeeded(run);
      assert.deepEqual(proxy.carried, []);
      assert.ok(api.requests.length >= 3);
    });
  }

  test('without a proxy variable nothing goes through the proxy', async () => {
    const run = await act({ 'base-url': named() }, { nodeArgs: ['--import', TEST_HOSTS] });
    succeeded(run);
    assert.deepEqual(proxy.carried, []);
  });
});

describe('input fuzzing through the built action', () => {
  test('random job-id and step values: a validation error naming the input, or requests with only the validated id and step', async () => {
    const samples = fc.sample(
      fc.record({
        jobId: fc.oneof(
          fc.string({ unit: 'binary', maxLength: 40 }),
          fc.string().map((s) => `ft-${s}`),
          { weight: 3, arbitrary: fc.stringMatching(/^ft-[a-z0-9-]{1,12}(:[0-9]{1,2})?$/) },
          fc.constantFrom(JOB, `${JOB}:4`, `${JOB}/../x`, `${JOB}?ft_id=x`, `${JOB}%2f`),
        ),
        step: fc.oneof({ weight: 3, arbitrary: fc.constant('') }, fc.string({ maxLength: 8 }), {
          weight: 2,
          arbitrary: fc.integer({ min: -5, max: 10 }).map(String),
        }),
      }),
      { numRuns: 24, seed: 20261125 },
    );
    let reachedServer = 0;
    for (const { jobId, step } of samples) {
      api.requests.length = 0;
      if (jobId.includes('\0') || step.includes('\0')) continue; // An environment variable cannot hold NUL.
      const run = await act({ 'job-id': jobId, step });
      if (run.code === 0) {
        assert.equal(run.outputs.sha256, sha256(archive));
      } else {
        const error = errorsOf(run);
        const named = /Input `(job-id|step)`/.test(error);
        const unknown = /HTTP 404|has no checkpoint at step/.test(error);
        assert.ok(named || unknown, `unexpected failure for ${JSON.stringify({ jobId, step })}: ${error}`);
        if (named) assert.equal(api.requests.length, 0, 'a rejected input makes no request');
      }
      if (api.requests.length > 0) reachedServer++;
      for (const r of api.requests) {
        const id = r.endpoint === 'download' ? r.query.ft_id : decodeURIComponent(r.path.split('/')[3] ?? '');
        assert.match(id, /^ft-[A-Za-z0-9-]+$/, `request ${r.path} carries ${JSON.stringify(id)}`);
        for (const name of Object.keys(r.query))
          assert.ok(['ft_id', 'checkpoint', 'checkpoint_step'].includes(name), `unexpected query ${name}`);
        if (r.query.checkpoint_step !== undefined) assert.match(r.query.checkpoint_step, /^[1-9]\d*$/);
        assert.match(r.path, /^\/v1\/(fine-tunes\/ft-[A-Za-z0-9-]+(\/checkpoints|\/metrics)?|finetune\/download)$/);
      }
    }
    // The request checks mean something only if enough samples got past validation.
    assert.ok(reachedServer >= 8, `only ${reachedServer} of ${samples.length} samples reached the server`);
  });
});

describe('load', () => {
  test('ten downloads at once against one server, each into its own destination, all correct', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => act({ path: `out-${i}/`, connections: String(1 + (i % 4)) })));
    for (const [i, run] of results.entries()) {
      succeeded(run);
      assert.equal(path.dirname(run.outputs.path), path.join(run.workspace, `out-${i}`));
      assert.deepEqual(listFiles(run.workspace), [`out-${i}/org--faulty-model.tar.zst`]);
    }
  });
});
