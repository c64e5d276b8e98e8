/**
 * End-to-end: the download engine through the built dist/index.js, on both paths where it
 * applies. TLS storage behind a private CA, where the API key may go along a chain of redirects
 * (servers on 127.0.0.1 and 127.0.0.2, on different ports), proxies on the fast path, the
 * ceilings on every wait, disk faults, and connection errors that name their cause.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { makeArchive, sha256, weights } from '../support/archives.js';
import { makeCertificates, type TestCertificates } from '../support/certs.js';
import { type FakeJob, type FakeTogether, type Faults, startFakeTogether } from '../support/fake-together.js';
import { type ForwardProxy, startProxy } from '../support/proxy.js';
import { type ActionRun, actionRunner, errorsOf, FAST_RETRY, listFiles, ROOT, TEST_HOSTS } from '../support/run-action.js';
import { startTlsFront, type TlsFront } from '../support/tls-front.js';

const KEY = 'tgp_v1_engine-secret-Rk7p';
const SIGNATURE = 'X-Amz-Signature=0badc0ffee-engine-signature';
const JOB = 'ft-3c3c3c3c-0000-4000-8000-000000000003';
const SHORT_WAITS = path.join(ROOT, 'test', 'support', 'short-waits.mjs');
const DISK_FAULTS = path.join(ROOT, 'test', 'support', 'disk-faults.mjs');

let archive: Buffer;
let certs: TestCertificates;
/** The API, on 127.0.0.1. */
let api: FakeTogether;
/** Storage on another address, 127.0.0.2, plain http; fails any request carrying a key. */
let storage: FakeTogether;
/** Storage on the API's own address, another port; fails any request carrying a key. */
let sameHost: FakeTogether;
/** `storage` behind TLS, on 127.0.0.2. */
let tlsStorage: TlsFront;

const jobs = (): FakeJob[] => [
  {
    id: JOB,
    status: 'completed',
    model_output_name: 'org/engine-model',
    training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
    archives: { merged: archive },
  },
];

before(async () => {
  archive = await makeArchive(
    { 'config.json': Buffer.from('{"model_type":"llama"}'), 'model.safetensors': weights(3 * 1024 * 1024) },
    'zstd',
  );
  certs = await makeCertificates();
  api = await startFakeTogether({ apiKey: KEY, jobs: jobs() });
  storage = await startFakeTogether({ apiKey: KEY, jobs: jobs(), host: '127.0.0.2', requireNoAuth: true });
  sameHost = await startFakeTogether({ apiKey: KEY, jobs: jobs(), host: '127.0.0.1', requireNoAuth: true });
  tlsStorage = await startTlsFront({ certs, target: storage.port, targetHost: '127.0.0.2', host: '127.0.0.2' });
});

after(async () => {
  await Promise.all([api.close(), storage.close(), sameHost.close(), tlsStorage.close()]);
  certs.remove();
  removeRuns();
});

beforeEach(() => {
  for (const server of [api, storage, sameHost]) {
    server.setFaults({});
    server.requests.length = 0;
  }
});

/** The run's environment: the test CA trusted, as NODE_EXTRA_CA_CERTS does it on a runner, plus `extra`. */
const env = (extra: Record<string, string | undefined> = {}) => ({ NODE_EXTRA_CA_CERTS: certs.caFile, ...extra });

const { act, removeRuns } = actionRunner(
  KEY,
  () => ({ inputs: { 'job-id': JOB, 'api-key': KEY, 'base-url': api.url }, env: env() }),
  (run) => {
    // No query of a URL redirected to, anywhere: the log (but the masking command), outputs, summary.
    const lines = run.stdout.split('\n').filter((l) => !l.startsWith('::add-mask::'));
    assert.ok(!lines.some((l) => l.includes(SIGNATURE)), 'a signed URL was logged with its query');
    assert.ok(!run.stderr.includes(SIGNATURE) && !run.summary.includes(SIGNATURE) && !JSON.stringify(run.outputs).includes(SIGNATURE));
  },
);

function succeeded(run: ActionRun): void {
  assert.equal(run.code, 0, `the action failed:\n${run.stdout}\n${run.stderr}`);
  assert.equal(run.outputs.sha256, sha256(archive));
  assert.deepEqual(fs.readFileSync(run.outputs.path), archive);
}

function failed(run: ActionRun, ...patterns: RegExp[]): string {
  assert.equal(run.code, 1, `expected a failure:\n${run.stdout}`);
  const errors = errorsOf(run);
  assert.equal(errors.split('\n').length, 1, `exactly one error line, got:\n${errors}`);
  for (const p of patterns) assert.match(errors, p);
  assert.deepEqual(listFiles(run.workspace), [], 'nothing is left at the destination');
  return errors;
}

const downloads = (server: FakeTogether) => server.requests.filter((r) => r.endpoint === 'download');
const isProbe = (r: { range?: string }) => r.range === 'bytes=0-1';
const origin = (server: FakeTogether) => server.url.replace(/\/v1$/, '');

const MODES = [
  { name: 'parallel ranges', faults: {} as Faults, nodeArgs: [] as string[] },
  { name: 'one stream', faults: { ignoreRange: true } as Faults, nodeArgs: ['--import', FAST_RETRY] },
];

describe('where the API key goes, along a chain of redirects', () => {
  for (const mode of MODES) {
    test(`an http API redirecting to https storage on another host works, and storage never sees the key (${mode.name})`, async () => {
      api.setFaults({ redirectTo: tlsStorage.origin, redirectQuery: `&${SIGNATURE}` });
      storage.setFaults(mode.faults);
      const run = await act({}, { nodeArgs: mode.nodeArgs });
      succeeded(run);
      assert.ok(downloads(storage).length >= 2, 'the probe and the archive came from the TLS storage');
      for (const r of downloads(storage)) assert.equal(r.headers.authorization, undefined);
      for (const r of downloads(api)) assert.equal(r.headers.authorization, `Bearer ${KEY}`);
      assert.match(run.stdout, /Redirected \(HTTP 302\) to https:\/\/127\.0\.0\.2:\d+\/v1\/finetune\/download\?…/);
      if (mode.name === 'parallel ranges') {
        // Every range started at the API again, so each signed URL was fresh.
        assert.equal(downloads(api).length, downloads(storage).length);
      }
    });

    test(`another port of the API's host is another origin: no key there (${mode.name})`, async () => {
      api.setFaults({ redirectTo: origin(sameHost), redirectQuery: `&${SIGNATURE}` });
      sameHost.setFaults(mode.faults);
      const run = await act({}, { nodeArgs: mode.nodeArgs });
      succeeded(run);
      assert.ok(downloads(sameHost).length >= 2);
      for (const r of downloads(sameHost)) assert.equal(r.headers.authorization, undefined, 'the other port received the key');
    });

    test(`a chain that leaves the API's origin and comes back carries no key on the way back (${mode.name})`, async () => {
      api.setFaults({ ...mode.faults, redirectTo: origin(storage), redirectQuery: `&${SIGNATURE}` });
      const back = `${api.url}/finetune/download?ft_id=${JOB}&checkpoint=merged&back=1`;
      storage.setFaults({ queue: { download: [{ status: 302, headers: { location: back } }] } });
      const run = await act({}, { nodeArgs: mode.nodeArgs });
      failed(run, /storage server .* answered HTTP 401/);
      const returned = downloads(api).filter((r) => r.query.back === '1');
      assert.equal(returned.length, 1, 'the chain came back to the API');
      assert.equal(returned[0].headers.authorization, undefined, 'the key was sent after the chain had left the API');
    });
  }

  test("one stream: a redirect that only the archive's request gets (not the probe) takes no key to another port", async () => {
    const elsewhere = `${origin(sameHost)}/v1/finetune/download?ft_id=${JOB}&checkpoint=merged&${SIGNATURE}`;
    api.setFaults({ ignoreRange: true, queue: { download: [{ status: 302, when: 'whole', headers: { location: elsewhere } }] } });
    sameHost.setFaults({ ignoreRange: true });
    const run = await act({}, { nodeArgs: ['--import', FAST_RETRY] });
    succeeded(run);
    const there = downloads(sameHost);
    assert.equal(there.length, 1, 'the archive came from the other port');
    assert.equal(there[0].headers.authorization, undefined, 'the other port received the key');
  });

  test("one stream: an ftp Location that only the archive's request gets is refused, and not retried", async () => {
    api.setFaults({
      ignoreRange: true,
      queue: { download: [{ status: 302, when: 'whole', headers: { location: 'ftp://127.0.0.2/model.tar.zst' } }] },
    });
    const run = await act({}, { nodeArgs: ['--import', FAST_RETRY] });
    failed(run, /unsupported URL scheme \(ftp:\); only http and https are followed/);
    assert.equal(downloads(api).filter((r) => !isProbe(r)).length, 1, 'refused once, not retried');
  });

  test('https is never followed down to http', async () => {
    api.setFaults({ redirectTo: tlsStorage.origin, redirectQuery: `&${SIGNATURE}` });
    storage.setFaults({ queue: { download: [{ status: 302, headers: { location: `${origin(storage)}/plain?${SIGNATURE}` } }] } });
    const run = await act({});
    failed(run, /redirected from https to plain http \(http:\/\/127\.0\.0\.2:\d+\/plain\?…\); refusing to continue without TLS/);
    assert.equal(storage.requests.length, 1, 'the plain-http URL was never requested');
  });

  for (const location of ['ftp://127.0.0.2/model.tar.zst', 'gopher://127.0.0.2:70/1', 'file:///etc/passwd']) {
    test(`a Location with another scheme is refused: ${location}`, async () => {
      api.setFaults({ queue: { download: [{ status: 302, headers: { location } }] } });
      const run = await act({});
      failed(run, /unsupported URL scheme \((ftp|gopher|file):\); only http and https are followed/);
    });
  }

  test('a certificate from an authority the runner does not trust: the error says so and points at NODE_EXTRA_CA_CERTS', async () => {
    api.setFaults({ redirectTo: tlsStorage.origin, redirectQuery: `&${SIGNATURE}` });
    const run = await act({}, { env: { NODE_EXTRA_CA_CERTS: undefined } });
    failed(run, /TLS certificate of 127\.0\.0\.2 is not trusted/, /NODE_EXTRA_CA_CERTS/);
    assert.equal(downloads(storage).length, 0, 'nothing was asked of a server whose certificate is not trusted');
    assert.equal(downloads(api).length, 1, 'not retried: another attempt cannot trust it either');
  });
});

describe('proxies on the fast path', () => {
  let proxy: ForwardProxy;
  let locked: ForwardProxy;
  /** TLS storage known by a name (a proxy never carries 127.* or localhost). */
  let named: TlsFront;
  before(async () => {
    proxy = await startProxy();
    locked = await startProxy({ requireAuth: 'ci-user:proxy-pa55' });
    named = await startTlsFront({ certs, target: storage.port, targetHost: '127.0.0.2', host: '127.0.0.1' });
  });
  after(async () => {
    await Promise.all([proxy.close(), locked.close(), named.close()]);
  });
  beforeEach(() => {
    for (const p of [proxy, locked]) {
      p.carried.length = 0;
      p.upstreamPorts.clear();
    }
    named.clientPorts.clear();
  });
  const storageUrl = () => `https://storage.test:${named.port}`;

  for (const mode of MODES) {
    test(`https_proxy carries https storage through a CONNECT tunnel (${mode.name})`, async () => {
      api.setFaults({ redirectTo: storageUrl(), redirectQuery: `&${SIGNATURE}` });
      storage.setFaults(mode.faults);
      const run = await act({}, { nodeArgs: [...mode.nodeArgs, '--import', TEST_HOSTS], env: env({ https_proxy: proxy.url }) });
      succeeded(run);
      assert.ok(proxy.carried.length >= 2, 'the probe and the download went through the proxy');
      assert.deepEqual([...new Set(proxy.carried)], [`CONNECT storage.test:${named.port}`]);
      for (const port of named.clientPorts) assert.ok(proxy.upstreamPorts.has(port), 'a connection to storage bypassed the proxy');
    });
  }

  test('no_proxy is honoured for storage', async () => {
    api.setFaults({ redirectTo: storageUrl(), redirectQuery: `&${SIGNATURE}` });
    const run = await act(
      {},
      { nodeArgs: ['--import', TEST_HOSTS], env: env({ https_proxy: proxy.url, no_proxy: 'example.com,.storage.test,storage.test' }) },
    );
    succeeded(run);
    assert.deepEqual(proxy.carried, []);
  });

  test("a proxy's refusal (407) is reported with its status and what to do, and is not retried", async () => {
    api.setFaults({ redirectTo: storageUrl(), redirectQuery: `&${SIGNATURE}` });
    const run = await act({}, { nodeArgs: ['--import', TEST_HOSTS], env: env({ https_proxy: locked.url }) });
    failed(
      run,
      new RegExp(`the proxy http://127\\.0\\.0\\.1:\\d+ refused to open a tunnel to storage\\.test:${named.port}: HTTP 407`),
      /credentials/,
    );
    assert.equal(locked.carried.length, 1);
  });

  test('credentials in the proxy variable are sent to the proxy and shown nowhere', async () => {
    api.setFaults({ redirectTo: storageUrl(), redirectQuery: `&${SIGNATURE}` });
    const withCredentials = locked.url.replace('http://', 'http://ci-user:proxy-pa55@');
    const run = await act({}, { nodeArgs: ['--import', TEST_HOSTS], env: env({ https_proxy: withCredentials }) });
    succeeded(run);
    assert.ok(locked.carried.length >= 2);
    assert.ok(!run.stdout.includes('proxy-pa55'));
  });
});

describe('every wait has a ceiling', () => {
  test('a probe answered one byte every 5 s fails saying the server was too slow, and how long was waited', async () => {
    const sockets = new Set<net.Socket>();
    const trickle = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.once('data', () => {
        const head = Buffer.from('HTTP/1.1 206 Partial Content\r\nContent-Length: 2\r\n\r\n');
        let i = 0;
        const timer = setInterval(
          () => (i < head.length && !socket.destroyed ? socket.write(head.subarray(i, ++i)) : clearInterval(timer)),
          5000,
        );
        socket.write(head.subarray(0, ++i));
        socket.on('close', () => clearInterval(timer));
      });
    });
    await new Promise<void>((resolve) => trickle.listen(0, '127.0.0.2', resolve));
    try {
      api.setFaults({ redirectTo: `http://127.0.0.2:${(trickle.address() as AddressInfo).port}`, redirectQuery: `&${SIGNATURE}` });
      const run = await act({}, { nodeArgs: ['--import', SHORT_WAITS], env: env({ PROBE_DEADLINE_MS: '1000' }) });
      failed(run, /was too slow to answer: no complete answer to the probe within 1 s, in each of 5 attempts/);
    } finally {
      for (const s of sockets) s.destroy();
      trickle.close();
    }
  });

  test('a retry-after above the ceiling is cut to it and the cut is logged (probe and ranges)', async () => {
    api.setFaults({
      queue: {
        download: [
          { status: 503, headers: { 'retry-after-ms': '9000000' }, when: isProbe },
          { status: 429, headers: { 'retry-after': '3600' }, when: (r) => !isProbe(r) },
        ],
      },
    });
    const run = await act({}, { nodeArgs: ['--import', SHORT_WAITS], env: env({ MAX_SERVER_WAIT_MS: '200' }) });
    succeeded(run);
    assert.match(
      run.stdout,
      /Probing the archive: HTTP 503; attempt 2 of 5 in 0\.2 s \(the server asked for 9000 s; 0\.2 s is the most this action waits\)/,
    );
    assert.match(run.stdout, /HTTP 429; resuming in 0\.2 s \(the server asked for 3600 s; 0\.2 s is the most this action waits\)/);
  });
});

describe('connection errors name their cause', () => {
  test('a host name that does not resolve', async () => {
    const toNowhere = { status: 302, headers: { location: `http://storage.invalid:8080/model?${SIGNATURE}` } };
    api.setFaults({ queue: { download: Array.from({ length: 6 }, () => toNowhere) } });
    const run = await act({}, { nodeArgs: ['--import', TEST_HOSTS, '--import', SHORT_WAITS] });
    failed(run, /after 5 attempts \(the host name storage\.invalid did not resolve \(ENOTFOUND\)\)/);
  });

  test('an address that refuses the connection', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.2', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    api.setFaults({ redirectTo: `http://127.0.0.2:${port}`, redirectQuery: `&${SIGNATURE}` });
    const run = await act({}, { nodeArgs: ['--import', SHORT_WAITS] });
    failed(run, new RegExp(`after 5 attempts \\(127\\.0\\.0\\.2:${port} refused the connection \\(ECONNREFUSED\\)\\)`));
  });

  test('one stream: connections reset by the storage host, reported as such after three attempts', async () => {
    api.setFaults({ redirectTo: origin(storage), redirectQuery: `&${SIGNATURE}` });
    const reset = { status: 0, reset: true, when: 'whole' as const };
    storage.setFaults({ ignoreRange: true, queue: { download: [reset, reset, reset] } });
    const run = await act({}, { nodeArgs: ['--import', FAST_RETRY] });
    failed(run, /failed after 3 attempts: the connection broke: socket hang up \(ECONNRESET\)/);
  });
});

describe('one stream: the sha256 follows the file as tool-cache writes it', () => {
  test("tool-cache's next attempt must send the bytes already hashed: another archive of the same size fails the download", async () => {
    const other = Buffer.from(archive);
    other.fill(0x5a, 1024);
    const job = api.jobs.get(JOB) as FakeJob;
    // The first whole response comes slowly and is cut; the archive is another one by the next.
    api.setFaults({ ignoreRange: true, bytesPerSecond: 1024 * 1024, cutWholeOnceAfter: 2 * 1024 * 1024 });
    const timer = setInterval(() => {
      if (downloads(api).some((r) => r.range === undefined)) {
        job.archives.merged = other;
        clearInterval(timer);
      }
    }, 5);
    try {
      const run = await act({}, { nodeArgs: ['--import', FAST_RETRY], env: env({ TOOL_CACHE_RETRY_SECONDS: '1' }) });
      failed(run, /The server sent different bytes when tool-cache tried again \(the first \d+ bytes differ\)/);
      assert.ok(downloads(api).filter((r) => r.range === undefined).length >= 2, 'tool-cache tried again');
    } finally {
      clearInterval(timer);
      job.archives.merged = archive;
    }
  });
});

// --- disk faults ---------------------------------------------------------------------------------

const isRoot = process.getuid?.() === 0;

function canMount(): boolean {
  if (!isRoot) return false;
  const dir = fs.mkdtempSync(path.join(ROOT, '.mount-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'ignore' });
    execFileSync('umount', [dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    fs.rmdirSync(dir);
  }
}
const mounts = canMount();

interface DiskCase {
  code: string;
  how: string;
  /** Prepares the destination `out/` and returns what the run needs; `cleanup` undoes any mount. */
  arrange: (workspace: string) => { cleanup?: () => void };
  options: { nodeArgs?: string[]; env?: Record<string, string>; prefix?: string[] };
  /** Something to do once the download is under way. */
  during?: (workspace: string) => void;
  throttle?: boolean;
}

const injected = (code: string, at = 'write'): Pick<DiskCase, 'how' | 'arrange' | 'options'> => ({
  how: `injected (${at})`,
  arrange: (ws) => {
    fs.mkdirSync(path.join(ws, 'out'));
    return {};
  },
  options: { nodeArgs: ['--import', DISK_FAULTS], env: { DISK_FAULT_CODE: code, DISK_FAULT_AT: at } },
});

const DISK_CASES: DiskCase[] = [
  mounts
    ? {
        code: 'ENOSPC',
        how: 'a 5 MiB tmpfs that another file fills during the download',
        arrange: (ws) => {
          const out = path.join(ws, 'out');
          fs.mkdirSync(out);
          execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=5m', 'tmpfs', out]);
          return { cleanup: () => execFileSync('umount', ['-l', out]) };
        },
        options: {},
        during: (ws) => fs.writeFileSync(path.join(ws, 'out', 'filler'), Buffer.alloc(3 * 1024 * 1024)),
        throttle: true,
      }
    : { code: 'ENOSPC', ...injected('ENOSPC') },
  { code: 'EDQUOT', ...injected('EDQUOT') },
  {
    code: 'EFBIG',
    how: 'a file size limit (RLIMIT_FSIZE, as `ulimit -f` sets it)',
    arrange: (ws) => {
      fs.mkdirSync(path.join(ws, 'out'));
      return {};
    },
    options: { prefix: ['prlimit', `--fsize=${1024 * 1024}`, '--'] },
  },
  mounts
    ? {
        code: 'EROFS',
        how: 'a read-only bind mount',
        arrange: (ws) => {
          const out = path.join(ws, 'out');
          fs.mkdirSync(out);
          execFileSync('mount', ['--bind', out, out]);
          execFileSync('mount', ['-o', 'remount,ro,bind', out]);
          return { cleanup: () => execFileSync('umount', ['-l', out]) };
        },
        options: {},
      }
    : { code: 'EROFS', ...injected('EROFS', 'open') },
  isRoot
    ? { code: 'EACCES', ...injected('EACCES', 'open') }
    : {
        code: 'EACCES',
        how: 'a folder without write permission',
        arrange: (ws) => {
          const out = path.join(ws, 'out');
          fs.mkdirSync(out);
          fs.chmodSync(out, 0o555);
          return { cleanup: () => fs.chmodSync(out, 0o755) };
        },
        options: {},
      },
];

describe('disk faults are not retried and say where and how much is free', () => {
  for (const mode of MODES) {
    for (const fault of DISK_CASES) {
      test(`${fault.code}, ${fault.how} (${mode.name})`, async () => {
        api.setFaults({ ...mode.faults, ...(fault.throttle ? { bytesPerSecond: 1024 * 1024 } : {}) });
        let cleanup: (() => void) | undefined;
        let workspace = '';
        try {
          const run = await act(
            { path: 'out/' },
            {
              nodeArgs: [...mode.nodeArgs, ...(fault.options.nodeArgs ?? [])],
              env: env(fault.options.env),
              prefix: fault.options.prefix,
              setup: (ws) => {
                workspace = ws;
                cleanup = fault.arrange(ws).cleanup;
              },
              onSpawn: (child, output) => {
                if (!fault.during) return;
                const timer = setInterval(() => {
                  if (!/::group::Download/.test(output.stdout())) return;
                  clearInterval(timer);
                  fault.during?.(workspace);
                }, 10);
                child.on('close', () => clearInterval(timer));
              },
            },
          );
          fs.rmSync(path.join(workspace, 'out', 'filler'), { force: true });
          const error = failed(run, new RegExp(`^::error::${fault.code}: `), /`path`/, /free/);
          assert.ok(error.includes(path.join(run.workspace, 'out')), `the folder is named: ${error}`);
          assert.doesNotMatch(
            run.stdout,
            /resuming in|Waiting \d+ seconds before trying again|connection broke/,
            'a disk fault was retried',
          );
          const archiveRequests = downloads(api).filter((r) => !isProbe(r));
          assert.ok(archiveRequests.length <= 1, `${archiveRequests.length} requests for the archive`);
        } finally {
          cleanup?.();
        }
      });
    }
  }
});
