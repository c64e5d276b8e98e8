/**
 * `npm run bench`: what a download costs this action, next to curl and the official SDK.
 *
 * The archive is served by nginx (sendfile, an HTTP and an HTTPS listener, a third with
 * `limit_rate` for the per-connection cap), started from a config of its own on 127.0.0.1. The
 * fake Together API answers the download with a redirect to it, as Together hands out signed
 * storage URLs. nginx cannot cut a connection halfway, so the drop profiles are served by the
 * fake API's own download route (`dropOnceAt`).
 *
 *   npm run bench -- [--size 2GiB] [--reps 5] [--profiles http,https,capped,drop50,drop90]
 *                    [--tools action,action-no-check,action-main,action-w2,curl,curl-openssl,sdk,curl-resume]
 *                    [--connections 6] [--rate 50MiB] [--cpu-prof] [--out bench-results/bench.json]
 *
 * Every run: wall time, MiB/s, client CPU seconds per GiB (user + system of the whole process
 * tree, from the times of reaped children), peak RSS (sum over the tree, sampled), a byte-for-byte
 * check of the file, and the server's CPU on its own. Tools run interleaved in each round; the
 * table holds medians with min and max, and ratios to curl taken within each round.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { DEFAULT_CONNECTIONS } from '../src/transfer/ranged-download.js';
import { makeLargeArchiveFile } from '../test/support/archives.js';
import { makeCertificates } from '../test/support/certs.js';
import { type Faults, startFakeTogether } from '../test/support/fake-together.js';
import { ROOT, removeScratch, runAction } from '../test/support/run-action.js';

const execFileAsync = promisify(execFile);

const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '2GiB' },
    reps: { type: 'string', default: '5' },
    profiles: { type: 'string', default: 'http,https,capped,drop50,drop90' },
    tools: { type: 'string', default: 'action,action-no-check,action-main,action-w2,curl,curl-openssl,sdk,curl-resume' },
    connections: { type: 'string', default: String(DEFAULT_CONNECTIONS) },
    rate: { type: 'string', default: '50MiB' },
    'cpu-prof': { type: 'boolean', default: false },
    'keep-going': { type: 'boolean', default: false },
    out: { type: 'string', default: path.join(ROOT, 'bench-results', 'bench.json') },
  },
});

function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/i.exec(text.trim());
  if (!m) throw new Error(`not a size: ${text}`);
  const unit = { b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 }[(m[2] ?? 'B').toLowerCase() as 'b'];
  return Math.round(Number(m[1]) * unit);
}

const SIZE = parseSize(args.size);
const REPS = Number(args.reps);
const RATE = parseSize(args.rate);
const JOB = 'ft-00000000-bench-0000-0000-000000000000';
const KEY = `bench-${randomBytes(6).toString('hex')}`;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const CLOCK_TICK = 100; // USER_HZ on Linux

// --- the client's process tree: CPU from reaped children, RSS sampled --------------------------

/** User + system seconds of this process's reaped children (and theirs), from /proc/self/stat. */
function childrenCpuSeconds(): number {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 16 and 17 (cutime, cstime) counted from 1; field 3 is fields[0] here.
  return (Number(fields[13]) + Number(fields[14])) / CLOCK_TICK;
}

function processCpuSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICK;
  } catch {
    return 0;
  }
}

function childrenOf(pid: number): number[] {
  try {
    return fs
      .readdirSync(`/proc/${pid}/task`)
      .flatMap((task) => fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/))
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}

function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function hwmOf(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * User and system CPU seconds of each of a process's threads (by thread id), with its kind: the
 * main thread, libuv's thread pool and worker threads (Node.js names both "node" or
 * "libuv-worker"), V8's helpers (GC, compiler), anything else by name.
 */
function threadsCpu(pid: number): Map<string, { kind: string; user: number; sys: number }> {
  const out = new Map<string, { kind: string; user: number; sys: number }>();
  try {
    for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
      const stat = fs.readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const kind =
        Number(task) === pid ? 'main' : /^libuv|^node$/.test(name) ? 'pool+workers' : /^V8|^DelayedTask/.test(name) ? 'v8' : name;
      out.set(task, { kind, user: Number(fields[11]) / CLOCK_TICK, sys: Number(fields[12]) / CLOCK_TICK });
    }
  } catch {
    // gone
  }
  return out;
}

/**
 * Samples the tree under `child` every 20 ms: the peak of its summed RSS, and the CPU of every
 * thread the root process ever had, as last seen (a thread that ends before the process keeps
 * its last reading).
 */
function watchTree(child: ChildProcess): () => { peakRss: number; threads: Record<string, number> } {
  let peak = 0;
  const seen = new Map<string, { kind: string; user: number; sys: number }>();
  const root = child.pid as number;
  const sample = () => {
    const pids = [root];
    for (let i = 0; i < pids.length; i++) pids.push(...childrenOf(pids[i]));
    const sum = pids.reduce((n, pid) => n + rssOf(pid), 0);
    peak = Math.max(peak, sum, hwmOf(root));
    for (const [tid, cpu] of threadsCpu(root)) seen.set(tid, cpu);
  };
  const timer = setInterval(sample, 20);
  sample();
  return () => {
    clearInterval(timer);
    const threads: Record<string, number> = {};
    for (const { kind, user, sys } of seen.values()) {
      threads[`${kind} user`] = (threads[`${kind} user`] ?? 0) + user;
      threads[`${kind} sys`] = (threads[`${kind} sys`] ?? 0) + sys;
    }
    return { peakRss: peak, threads };
  };
}

// --- nginx --------------------------------------------------------------------------------------

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nginx did not listen on ${port}`);
}

interface Nginx {
  http: string;
  https: string;
  capped: string;
  pids(): number[];
  /** Body bytes nginx sent since the last call. */
  sentSinceLast(): number;
  stop(): Promise<void>;
}

async function startNginx(work: string, archive: string, certFile: string, keyFile: string): Promise<Nginx> {
  const dir = path.join(work, 'nginx');
  fs.mkdirSync(path.join(dir, 'logs'), { recursive: true });
  const [http, https, capped] = [await freePort(), await freePort(), await freePort()];
  const location = `location = /v1/finetune/download { alias ${archive}; }`;
  const conf = `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 1024; }
http {
  default_type application/octet-stream;
  log_format bytes '$body_bytes_sent';
  access_log ${dir}/logs/access.log bytes;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server { listen 127.0.0.1:${http}; ${location} }
  server { listen 127.0.0.1:${capped}; limit_rate ${RATE}; ${location} }
  server {
    listen 127.0.0.1:${https} ssl;
    ssl_certificate ${certFile};
    ssl_certificate_key ${keyFile};
    ssl_protocols TLSv1.3;
    ${location}
  }
}
`;
  fs.writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const child = spawn('/usr/sbin/nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'logs', 'error.log')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += d));
  child.on('exit', (code) => {
    if (code) process.stderr.write(`nginx exited with ${code}: ${stderr}\n`);
  });
  await Promise.all([http, https, capped].map(waitForPort));
  const accessLog = path.join(dir, 'logs', 'access.log');
  let logOffset = 0;
  return {
    http: `http://127.0.0.1:${http}`,
    https: `https://127.0.0.1:${https}`,
    capped: `http://127.0.0.1:${capped}`,
    pids: () => [child.pid as number, ...childrenOf(child.pid as number)],
    sentSinceLast() {
      // nginx writes a request's line when it ends; give it a moment.
      const text = fs.existsSync(accessLog) ? fs.readFileSync(accessLog, 'utf8') : '';
      const fresh = text.slice(logOffset);
      logOffset = text.length;
      return fresh
        .split('\n')
        .filter((l) => l !== '')
        .reduce((n, l) => n + Number(l), 0);
    },
    stop: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGQUIT');
      }),
  };
}

// --- profiles and tools -------------------------------------------------------------------------

interface Profile {
  name: string;
  describe: string;
  /** The fake API's faults: a redirect to nginx, or its own route with a drop. */
  faults: () => Faults;
  /** Served by nginx (true) or by the fake API itself. */
  nginx: boolean;
}

interface Sample {
  ok: boolean;
  wallMs: number;
  cpuSeconds: number;
  peakRssBytes: number;
  serverCpuSeconds: number;
  wireBytes: number;
  load: number;
  threads?: Record<string, number>;
  hashTailMs?: number;
  readBackPercent?: number;
  note?: string;
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};
const min = (xs: number[]) => Math.min(...xs.filter((x) => Number.isFinite(x)));
const max = (xs: number[]) => Math.max(...xs.filter((x) => Number.isFinite(x)));

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function identical(a: string, b: string): Promise<boolean> {
  try {
    await execFileAsync('cmp', ['-s', a, b]);
    return true;
  } catch {
    return false;
  }
}

function loadAverage(): number {
  return Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

async function main(): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'together-bench-'));
  // nginx's worker runs as another user (nobody) when started as root: it must be able to read.
  fs.chmodSync(work, 0o755);
  const archive = path.join(work, 'archive.tar.zst');
  process.stdout.write(`Generating a ${(SIZE / MiB).toFixed(0)} MiB archive... `);
  await makeLargeArchiveFile(archive, SIZE);
  fs.chmodSync(archive, 0o644);
  const size = fs.statSync(archive).size;
  const archiveSha = await sha256File(archive);
  process.stdout.write(`done (${size} bytes)\n`);
  const certs = await makeCertificates(['127.0.0.1', 'localhost']);
  const nginx = await startNginx(work, archive, certs.certFile, certs.keyFile);
  const api = await startFakeTogether({
    apiKey: KEY,
    jobs: [
      {
        id: JOB,
        status: 'completed',
        model_output_name: 'bench/model',
        training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16 },
        archives: { merged: { file: archive } },
      },
    ],
  });
  const signature = () => `&X-Amz-Signature=${randomBytes(16).toString('hex')}`;
  const PROFILES: Record<string, Profile> = {
    http: {
      name: 'http',
      describe: 'HTTP, full speed',
      nginx: true,
      faults: () => ({ redirectTo: nginx.http, redirectQuery: signature() }),
    },
    https: {
      name: 'https',
      describe: 'HTTPS, full speed',
      nginx: true,
      faults: () => ({ redirectTo: nginx.https, redirectQuery: signature() }),
    },
    capped: {
      name: 'capped',
      describe: `HTTP, each connection capped at ${args.rate}/s`,
      nginx: true,
      faults: () => ({ redirectTo: nginx.capped, redirectQuery: signature() }),
    },
    drop50: {
      name: 'drop50',
      describe: 'a connection dropped at 50 %',
      nginx: false,
      faults: () => ({ dropOnceAt: Math.floor(size * 0.5) }),
    },
    drop90: {
      name: 'drop90',
      describe: 'a connection dropped at 90 %',
      nginx: false,
      faults: () => ({ dropOnceAt: Math.floor(size * 0.9) }),
    },
  };
  const profiles = args.profiles.split(',').map((p) => {
    if (!PROFILES[p]) throw new Error(`unknown profile ${p}; use ${Object.keys(PROFILES).join(', ')}`);
    return PROFILES[p];
  });
  const url = `${api.url}/finetune/download?ft_id=${JOB}&checkpoint=merged`;
  const output = path.join(work, 'out.tar.zst');
  const profDir = path.join(path.dirname(args.out), `cpu-prof-${Date.now()}`);
  const env = { ...process.env, TOGETHER_API_KEY: KEY, NODE_EXTRA_CA_CERTS: certs.caFile };

  /** Runs one client, measuring its tree and the server. */
  const measure = async (
    profile: Profile,
    start: (
      onSpawn: (child: ChildProcess) => void,
    ) => Promise<{ ok: boolean; file?: string; note?: string; extra?: Partial<Sample>; cleanup?: () => void }>,
  ): Promise<Sample> => {
    api.setFaults(profile.faults());
    nginx.sentSinceLast();
    const apiBytes = api.bytesSent();
    const cpuBefore = childrenCpuSeconds();
    const serverBefore = nginx.pids().reduce((n, pid) => n + processCpuSeconds(pid), 0);
    const apiCpuBefore = process.cpuUsage();
    const loadBefore = loadAverage();
    let stop = () => ({ peakRss: 0, threads: {} as Record<string, number> });
    const started = performance.now();
    const result = await start((child) => {
      stop = watchTree(child);
    });
    const wallMs = performance.now() - started;
    const { peakRss, threads } = stop();
    const cpuSeconds = childrenCpuSeconds() - cpuBefore;
    const apiCpu = process.cpuUsage(apiCpuBefore);
    await new Promise((r) => setTimeout(r, 50));
    const serverCpuSeconds =
      nginx.pids().reduce((n, pid) => n + processCpuSeconds(pid), 0) - serverBefore + (apiCpu.user + apiCpu.system) / 1e6;
    const wireBytes = profile.nginx ? nginx.sentSinceLast() : api.bytesSent() - apiBytes;
    let ok = result.ok;
    let note = result.note;
    if (ok && result.file) {
      ok = await identical(result.file, archive);
      if (!ok) note = 'the file differs from the archive';
    }
    if (result.file) fs.rmSync(result.file, { force: true });
    result.cleanup?.();
    fs.rmSync(output, { force: true });
    return {
      ok,
      wallMs,
      cpuSeconds,
      peakRssBytes: peakRss,
      serverCpuSeconds,
      wireBytes,
      load: (loadBefore + loadAverage()) / 2,
      threads,
      note,
      ...result.extra,
    };
  };

  const shell =
    (script: string, extraEnv: Record<string, string> = {}) =>
    (onSpawn: (child: ChildProcess) => void) =>
      new Promise<{ ok: boolean; file?: string; note?: string }>((resolve) => {
        const child = spawn('sh', ['-c', script, 'sh', output, KEY, url, certs.caFile], {
          env: { ...env, ...extraEnv },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        onSpawn(child);
        let stderr = '';
        child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.on('close', (code) => resolve({ ok: code === 0, file: output, note: code === 0 ? undefined : stderr.trim().slice(-200) }));
      });
  const curl = 'curl -sS --fail -L --cacert "$4" -o "$1" -H "Authorization: Bearer $2" "$3"';

  const counts = args.connections.split(',');
  const RECEIVE_WORKERS = path.join(ROOT, 'test', 'support', 'receive-workers.mjs');
  const action = (extraInputs: Record<string, string>, receiveWorkers?: number) => (profile: Profile) =>
    measure(profile, async (onSpawn) => {
      const run = await runAction({
        inputs: { 'job-id': JOB, 'api-key': KEY, 'base-url': api.url, path: 'model.tar.zst', connections: counts[0], ...extraInputs },
        env: { NODE_EXTRA_CA_CERTS: certs.caFile, RECEIVE_WORKERS: receiveWorkers === undefined ? undefined : String(receiveWorkers) },
        nodeArgs: [
          ...(receiveWorkers !== undefined ? ['--import', RECEIVE_WORKERS] : []),
          ...(args['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []),
        ],
        onSpawn,
        timeoutMs: 60 * 60_000,
      });
      const tail = /it finished ([\d.]+) s after the last byte \((\d+) % of the bytes read back/.exec(run.stdout);
      const ok = run.code === 0 && run.outputs.sha256 === archiveSha;
      const note = ok
        ? undefined
        : (
            run.stdout.split('\n').find((l) => l.startsWith('::error')) ??
            `exit ${run.code}: ${run.stdout
              .split('\n')
              .filter((l) => !l.startsWith('::debug'))
              .slice(-6)
              .join(' | ')} ${run.stderr}`
          ).slice(0, 600);
      // The byte-for-byte check comes after the measurement, as for every tool.
      return {
        ok,
        note,
        file: path.join(run.workspace, 'model.tar.zst'),
        cleanup: () => removeScratch(run),
        extra: { hashTailMs: tail ? Number(tail[1]) * 1000 : undefined, readBackPercent: tail ? Number(tail[2]) : undefined },
      };
    });

  const TOOLS: Record<string, { name: string; run: (profile: Profile) => Promise<Sample>; profiles?: string[] }> = {
    ...Object.fromEntries(
      counts.map((n, i) => [i === 0 ? 'action' : `action-${n}`, { name: `action (${n} conn.)`, run: action({ connections: n }) }]),
    ),
    'action-no-check': { name: 'action (no content check)', run: action({ 'verify-contents': 'false', connections: counts[0] }) },
    // Where the receive runs: by default one worker thread beside the main thread, which hashes
    // (on a machine with two cores or more); here also the main thread alone, and two workers.
    'action-main': { name: 'action, receive on the main thread', run: action({ connections: counts[0] }, 0) },
    'action-w2': { name: 'action, 2 receive workers', run: action({ connections: counts[0] }, 2) },
    curl: { name: 'curl -o', run: (profile) => measure(profile, shell(curl)) },
    'curl-openssl': {
      name: 'curl -o + openssl dgst',
      run: (profile) => measure(profile, shell(`${curl} && openssl dgst -sha256 "$1" > /dev/null`)),
    },
    sdk: {
      name: 'together-ai SDK',
      run: (profile) =>
        measure(
          profile,
          (onSpawn) =>
            new Promise((resolve) => {
              const child = spawn(process.execPath, [path.join(ROOT, 'scripts', 'bench-sdk.mjs'), api.url, JOB, 'merged', output], {
                env,
                stdio: ['ignore', 'ignore', 'pipe'],
              });
              onSpawn(child);
              let stderr = '';
              child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
              child.on('close', (code) =>
                resolve({
                  ok: code === 0,
                  file: output,
                  note: code === 0 ? undefined : stderr.trim().split('\n').slice(-1)[0]?.slice(0, 200),
                }),
              );
            }),
        ),
    },
    'curl-resume': {
      name: 'curl -C - --retry 3',
      profiles: ['drop50', 'drop90'],
      run: (profile) =>
        measure(
          profile,
          shell(
            `curl -sS --fail -L --cacert "$4" -C - --retry 3 --retry-all-errors --retry-delay 0 -o "$1" -H "Authorization: Bearer $2" "$3"`,
          ),
        ),
    },
  };
  // `--connections 1,2,6` runs the action once per count.
  const wantedTools = args.tools
    .split(',')
    .flatMap((t) => (t === 'action' ? counts.map((n, i) => (i === 0 ? 'action' : `action-${n}`)) : [t]));
  const tools = wantedTools.map((t) => {
    if (!TOOLS[t]) throw new Error(`unknown tool ${t}; use ${Object.keys(TOOLS).join(', ')}`);
    return TOOLS[t];
  });

  const samples = new Map<string, Sample[]>();
  const key = (profile: string, tool: string) => `${profile}\u0000${tool}`;
  for (let rep = 1; rep <= REPS; rep++) {
    for (const profile of profiles) {
      for (const tool of tools) {
        if (tool.profiles && !tool.profiles.includes(profile.name)) continue;
        const sample = await tool.run(profile);
        samples.set(key(profile.name, tool.name), [...(samples.get(key(profile.name, tool.name)) ?? []), sample]);
        process.stdout.write(
          `round ${rep}/${REPS} ${profile.name.padEnd(7)} ${tool.name.padEnd(26)} ${sample.ok ? 'ok    ' : 'FAILED'} ${(sample.wallMs / 1000).toFixed(2)} s, ${(size / MiB / (sample.wallMs / 1000)).toFixed(0)} MiB/s, CPU ${((sample.cpuSeconds * GiB) / size).toFixed(2)} s/GiB, RSS ${(sample.peakRssBytes / MiB).toFixed(0)} MiB, server ${((sample.serverCpuSeconds * GiB) / size).toFixed(2)} s/GiB, wire ${(sample.wireBytes / MiB).toFixed(0)} MiB, load ${sample.load.toFixed(2)}${sample.note ? `  (${sample.note})` : ''}\n`,
        );
        if (!sample.ok && !args['keep-going'] && tool.run !== TOOLS.sdk.run && !profile.name.startsWith('drop')) {
          // A failure of anything but the tools that cannot resume is a bug worth stopping for.
          process.stdout.write('(stopping: pass --keep-going to go on after a failure)\n');
          await Promise.all([api.close(), nginx.stop()]);
          process.exit(1);
        }
      }
    }
  }
  await Promise.all([api.close(), nginx.stop()]);
  certs.remove();
  fs.rmSync(work, { recursive: true, force: true });

  // Ratios are taken within each round (a tool against curl -o in the same round), then the median.
  const perGiB = (s: Sample) => (s.cpuSeconds * GiB) / size;
  const rows = [];
  for (const profile of profiles) {
    const curlRuns = samples.get(key(profile.name, TOOLS.curl.name)) ?? [];
    const curlOpenssl = samples.get(key(profile.name, TOOLS['curl-openssl'].name)) ?? [];
    for (const tool of tools) {
      const all = samples.get(key(profile.name, tool.name));
      if (!all) continue;
      const ok = all.filter((s) => s.ok);
      const paired = (base: Sample[], f: (s: Sample, b: Sample) => number) =>
        median(all.map((s, i) => (s.ok && base[i]?.ok ? f(s, base[i]) : Number.NaN)));
      const throughput = ok.map((s) => size / MiB / (s.wallMs / 1000));
      rows.push({
        profile: profile.name,
        description: profile.describe,
        tool: tool.name,
        runs: all.length,
        succeeded: ok.length,
        wallSeconds: {
          median: median(ok.map((s) => s.wallMs / 1000)),
          min: min(ok.map((s) => s.wallMs / 1000)),
          max: max(ok.map((s) => s.wallMs / 1000)),
        },
        throughputMiBs: { median: median(throughput), min: min(throughput), max: max(throughput) },
        cpuSecondsPerGiB: { median: median(ok.map(perGiB)), min: min(ok.map(perGiB)), max: max(ok.map(perGiB)) },
        peakRssMiB: {
          median: median(ok.map((s) => s.peakRssBytes / MiB)),
          min: min(ok.map((s) => s.peakRssBytes / MiB)),
          max: max(ok.map((s) => s.peakRssBytes / MiB)),
        },
        serverCpuSecondsPerGiB: median(ok.map((s) => (s.serverCpuSeconds * GiB) / size)),
        wireMiB: median(ok.map((s) => s.wireBytes / MiB)),
        resentPercent: median(ok.map((s) => (100 * (s.wireBytes - size)) / size)),
        speedVsCurl: paired(curlRuns, (s, b) => b.wallMs / s.wallMs),
        cpuVsCurl: paired(curlRuns, (s, b) => s.cpuSeconds / b.cpuSeconds),
        speedVsCurlOpenssl: paired(curlOpenssl, (s, b) => b.wallMs / s.wallMs),
        hashTailSeconds: median(ok.map((s) => (s.hashTailMs ?? Number.NaN) / 1000)),
        readBackPercent: median(ok.map((s) => s.readBackPercent ?? Number.NaN)),
        load: median(all.map((s) => s.load)),
        threadsCpuSecondsPerGiB: ok[0]?.threads
          ? medianThreads(
              ok.map((s) => s.threads ?? {}),
              size,
            )
          : undefined,
        failures: all.filter((s) => !s.ok).map((s) => s.note),
      });
    }
  }

  const f = (n: number | undefined, digits = 1) => (n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits));
  const range = (r: { median: number; min: number; max: number }, digits = 1) =>
    Number.isFinite(r.median) ? `${f(r.median, digits)} (${f(r.min, digits)}–${f(r.max, digits)})` : '–';
  const lines = [
    `Archive ${(size / MiB).toFixed(0)} MiB, ${REPS} interleaved rounds; medians (min–max) of the runs that succeeded; ratios to curl are medians of per-round ratios.`,
    `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}, nginx ${await nginxVersion()}, curl ${await curlVersion()}; load average during the runs: median ${f(median(rows.map((r) => r.load)), 2)}.`,
    '',
    '| profile | tool | ok | wall s | MiB/s | × curl -o | × curl -o + openssl | client CPU-s/GiB | CPU × curl -o | peak RSS MiB | server CPU-s/GiB | re-sent |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.description} | ${r.tool} | ${r.succeeded}/${r.runs} | ${range(r.wallSeconds, 2)} | ${range(r.throughputMiBs, 0)} | ${f(r.speedVsCurl, 2)} | ${f(r.speedVsCurlOpenssl, 2)} | ${range(r.cpuSecondsPerGiB, 2)} | ${f(r.cpuVsCurl, 2)} | ${range(r.peakRssMiB, 0)} | ${f(r.serverCpuSecondsPerGiB, 2)} | ${f(r.resentPercent, 2)} % |`,
    ),
  ];
  const threadRows = rows.filter((r) => r.threadsCpuSecondsPerGiB && r.tool.startsWith('action'));
  if (threadRows.length > 0) {
    lines.push('', 'CPU-s/GiB of the action by thread (every thread as last seen; the main thread includes start-up):');
    for (const r of threadRows)
      lines.push(
        `- ${r.description}, ${r.tool}: ${Object.entries(r.threadsCpuSecondsPerGiB ?? {})
          .map(([n, s]) => `${n} ${f(s, 2)}`)
          .join(', ')}`,
      );
  }
  if (args['cpu-prof']) lines.push('', `CPU profiles of the action runs: ${profDir} `);
  process.stdout.write(`\n${lines.join('\n')}\n`);
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(
    args.out,
    `${JSON.stringify({ date: new Date().toISOString(), sizeBytes: size, rounds: REPS, rateBytesPerSecond: RATE, connections: Number(args.connections), cpus: os.cpus().length, node: process.version, rows }, null, 2)}\n`,
  );
  process.stdout.write(`\nWrote ${args.out}\n`);
}

function medianThreads(runs: Record<string, number>[], size: number): Record<string, number> {
  const names = new Set(runs.flatMap((r) => Object.keys(r)));
  return Object.fromEntries([...names].map((n) => [n, (median(runs.map((r) => r[n] ?? 0)) * GiB) / size]));
}

async function nginxVersion(): Promise<string> {
  const { stderr } = await execFileAsync('/usr/sbin/nginx', ['-v']).catch((e) => e);
  return /nginx\/(\S+)/.exec(String(stderr))?.[1] ?? '?';
}

async function curlVersion(): Promise<string> {
  const { stdout } = await execFileAsync('curl', ['--version']);
  return /curl (\S+)/.exec(stdout)?.[1] ?? '?';
}

await main();
