/**
 * `npm run bench`: how fast and how lean this action downloads, next to curl and the official SDK.
 *
 * Serves a generated archive from disk through the fake Together API and runs, interleaved, every
 * tool on every server profile, printing medians as a table and writing them as JSON.
 *
 *   npm run bench -- [--size 2GiB] [--reps 5] [--profiles loopback,limited,drop50,drop90]
 *                    [--connections 6] [--rate 50MiB] [--out bench-results/bench.json]
 *
 * `--connections 1,4,8,16` runs the action once per value, to choose the default.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CONNECTIONS } from '../src/transfer/ranged-download.js';
import { makeLargeArchiveFile } from '../test/support/archives.js';
import { type Faults, startFakeTogether } from '../test/support/fake-together.js';
import { ROOT, removeScratch, runAction } from '../test/support/run-action.js';

const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '2GiB' },
    reps: { type: 'string', default: '5' },
    profiles: { type: 'string', default: 'loopback,limited,drop50,drop90' },
    connections: { type: 'string', default: String(DEFAULT_CONNECTIONS) },
    rate: { type: 'string', default: '50MiB' },
    tools: { type: 'string', default: 'action,curl,sdk' },
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

interface Profile {
  name: string;
  describe: string;
  faults: () => Faults;
}

const PROFILES: Record<string, Profile> = {
  loopback: { name: 'loopback', describe: 'loopback, full speed', faults: () => ({}) },
  limited: { name: 'limited', describe: `each connection limited to ${args.rate}/s`, faults: () => ({ bytesPerSecond: RATE }) },
  drop50: { name: 'drop50', describe: 'connection dropped at 50 %', faults: () => ({ dropOnceAt: Math.floor(SIZE * 0.5) }) },
  drop90: { name: 'drop90', describe: 'connection dropped at 90 %', faults: () => ({ dropOnceAt: Math.floor(SIZE * 0.9) }) },
};

interface Sample {
  ok: boolean;
  wallMs: number;
  peakRssBytes: number;
  wireBytes: number;
  hashTailMs?: number;
  note?: string;
}

/** Peak RSS of a running child: VmHWM is a high-water mark, so the last reading is the peak. */
function watchRss(child: ChildProcess): () => number {
  let peak = 0;
  const read = () => {
    try {
      const status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const m = /VmHWM:\s+(\d+) kB/.exec(status);
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    } catch {
      // The process has exited.
    }
  };
  const timer = setInterval(read, 20);
  return () => {
    clearInterval(timer);
    return peak;
  };
}

function runCommand(
  command: string,
  argv: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; wallMs: number; peakRssBytes: number; stderr: string }> {
  const started = performance.now();
  const child = spawn(command, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const stopRss = watchRss(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve) =>
    child.on('close', (code) => resolve({ code, wallMs: performance.now() - started, peakRssBytes: stopRss(), stderr })),
  );
}

const median = (xs: number[]) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

async function main(): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'together-bench-'));
  const archive = path.join(work, 'archive.tar.zst');
  process.stdout.write(`Generating a ${(SIZE / MiB).toFixed(0)} MiB archive... `);
  await makeLargeArchiveFile(archive, SIZE);
  process.stdout.write('done\n');
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
  const url = `${api.url}/finetune/download?ft_id=${JOB}&checkpoint=merged`;
  const output = path.join(work, 'out.tar.zst');
  const env = { ...process.env, TOGETHER_API_KEY: KEY };

  type Tool = { name: string; run: (profile: Profile) => Promise<Sample> };
  const measure = async (profile: Profile, body: () => Promise<Omit<Sample, 'wireBytes'>>): Promise<Sample> => {
    api.setFaults(profile.faults());
    const before = api.bytesSent();
    const sample = await body();
    fs.rmSync(output, { force: true });
    return { ...sample, wireBytes: api.bytesSent() - before };
  };
  const tools: Tool[] = [];
  const wanted = args.tools.split(',');
  if (wanted.includes('action')) {
    for (const connections of args.connections.split(',')) {
      tools.push({
        name: `action (${connections} conn.)`,
        run: (profile) =>
          measure(profile, async () => {
            const started = performance.now();
            let stopRss = () => 0;
            const run = await runAction({
              inputs: { 'job-id': JOB, 'api-key': KEY, 'base-url': api.url, path: 'model.tar.zst', connections },
              onSpawn: (child) => (stopRss = watchRss(child)),
              timeoutMs: 30 * 60_000,
            });
            const wallMs = performance.now() - started;
            const tail = /it finished ([\d.]+) s after the last byte/.exec(run.stdout);
            const ok = run.code === 0 && run.outputs.size === String(SIZE);
            const note = ok ? undefined : (run.stdout.split('\n').find((l) => l.startsWith('::error')) ?? run.stderr).slice(0, 200);
            removeScratch(run);
            return { ok, wallMs, peakRssBytes: stopRss(), hashTailMs: tail ? Number(tail[1]) * 1000 : undefined, note };
          }),
      });
    }
  }
  if (wanted.includes('curl')) {
    tools.push({
      name: 'curl -o',
      run: (profile) =>
        measure(profile, async () => {
          const r = await runCommand('curl', ['-sS', '--fail', '-o', output, '-H', `Authorization: Bearer ${KEY}`, url], env);
          const ok = r.code === 0 && fs.statSync(output).size === SIZE;
          return { ok, wallMs: r.wallMs, peakRssBytes: r.peakRssBytes, note: ok ? undefined : r.stderr.trim().slice(0, 200) };
        }),
    });
    tools.push({
      name: 'curl -o + sha256sum',
      run: (profile) =>
        measure(profile, async () => {
          // What the action delivers (a file and its sha256), the way a shell step would get it.
          const r = await runCommand(
            'sh',
            ['-c', 'curl -sS --fail -o "$1" -H "Authorization: Bearer $2" "$3" && sha256sum "$1" > /dev/null', 'sh', output, KEY, url],
            env,
          );
          const ok = r.code === 0 && fs.statSync(output).size === SIZE;
          // The watcher sees the shell, not curl and sha256sum: no memory figure for this row.
          return { ok, wallMs: r.wallMs, peakRssBytes: Number.NaN, note: ok ? undefined : r.stderr.trim().slice(0, 200) };
        }),
    });
    if (args.profiles.includes('drop')) {
      tools.push({
        name: 'curl -C - --retry 3',
        run: (profile) =>
          measure(profile, async () => {
            const r = await runCommand(
              'curl',
              [
                '-sS',
                '--fail',
                '-C',
                '-',
                '--retry',
                '3',
                '--retry-all-errors',
                '--retry-delay',
                '0',
                '-o',
                output,
                '-H',
                `Authorization: Bearer ${KEY}`,
                url,
              ],
              env,
            );
            const ok = r.code === 0 && fs.statSync(output).size === SIZE;
            return { ok, wallMs: r.wallMs, peakRssBytes: r.peakRssBytes, note: ok ? undefined : r.stderr.trim().slice(0, 200) };
          }),
      });
    }
  }
  if (wanted.includes('sdk')) {
    tools.push({
      name: 'together-ai SDK',
      run: (profile) =>
        measure(profile, async () => {
          const r = await runCommand(process.execPath, [path.join(ROOT, 'scripts', 'bench-sdk.mjs'), api.url, JOB, 'merged', output], env);
          const ok = r.code === 0 && fs.existsSync(output) && fs.statSync(output).size === SIZE;
          return {
            ok,
            wallMs: r.wallMs,
            peakRssBytes: r.peakRssBytes,
            note: ok ? undefined : r.stderr.trim().split('\n').slice(-1)[0]?.slice(0, 200),
          };
        }),
    });
  }

  const profiles = args.profiles.split(',').map((p) => {
    if (!PROFILES[p]) throw new Error(`unknown profile ${p}; use ${Object.keys(PROFILES).join(', ')}`);
    return PROFILES[p];
  });
  const samples = new Map<string, Sample[]>();
  for (const profile of profiles) {
    for (let rep = 1; rep <= REPS; rep++) {
      for (const tool of tools) {
        const sample = await tool.run(profile);
        const key = `${profile.name}\u0000${tool.name}`;
        samples.set(key, [...(samples.get(key) ?? []), sample]);
        process.stdout.write(
          `${profile.name.padEnd(8)} rep ${rep}/${REPS} ${tool.name.padEnd(22)} ${sample.ok ? 'ok    ' : 'FAILED'} ${(sample.wallMs / 1000).toFixed(2)} s, ${(SIZE / MiB / (sample.wallMs / 1000)).toFixed(0)} MiB/s, RSS ${(sample.peakRssBytes / MiB).toFixed(0)} MiB, wire ${(sample.wireBytes / MiB).toFixed(0)} MiB${sample.note ? `  (${sample.note})` : ''}\n`,
        );
      }
    }
  }
  await api.close();
  fs.rmSync(work, { recursive: true, force: true });

  const rows = [];
  for (const profile of profiles) {
    const curl = samples.get(`${profile.name}\u0000curl -o`)?.filter((s) => s.ok) ?? [];
    const curlThroughput = curl.length ? SIZE / (median(curl.map((s) => s.wallMs)) / 1000) : NaN;
    const curlRss = curl.length ? median(curl.map((s) => s.peakRssBytes)) : NaN;
    for (const tool of tools) {
      const all = samples.get(`${profile.name}\u0000${tool.name}`) ?? [];
      const ok = all.filter((s) => s.ok);
      const wall = median(ok.map((s) => s.wallMs));
      const throughput = SIZE / (wall / 1000);
      const rss = median(ok.map((s) => s.peakRssBytes));
      const tails = ok.map((s) => s.hashTailMs).filter((t): t is number => t !== undefined);
      rows.push({
        profile: profile.name,
        description: profile.describe,
        tool: tool.name,
        runs: all.length,
        succeeded: ok.length,
        wallSeconds: wall / 1000,
        throughputMiBs: throughput / MiB,
        peakRssMiB: rss / MiB,
        wireMiB: median(ok.map((s) => s.wireBytes)) / MiB,
        extraWirePercent: (100 * (median(ok.map((s) => s.wireBytes)) - SIZE)) / SIZE,
        throughputVsCurl: throughput / curlThroughput,
        rssVsCurl: rss / curlRss,
        hashTailSeconds: tails.length ? median(tails) / 1000 : undefined,
      });
    }
  }

  const fmt = (n: number | undefined, digits = 1) => (n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits));
  const lines = [
    `Archive ${(SIZE / MiB).toFixed(0)} MiB, ${REPS} repetitions, medians of successful runs; ${os.cpus().length} CPUs, Node ${process.version}`,
    '',
    '| profile | tool | ok | wall s | MiB/s | × curl | peak RSS MiB | × curl | wire MiB | extra wire | sha256 tail s |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.description} | ${r.tool} | ${r.succeeded}/${r.runs} | ${fmt(r.wallSeconds, 2)} | ${fmt(r.throughputMiBs, 0)} | ${fmt(r.throughputVsCurl, 2)} | ${fmt(r.peakRssMiB, 0)} | ${fmt(r.rssVsCurl, 1)} | ${fmt(r.wireMiB, 0)} | ${fmt(r.extraWirePercent, 1)} % | ${fmt(r.hashTailSeconds, 2)} |`,
    ),
  ];
  process.stdout.write(`\n${lines.join('\n')}\n`);
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(
    args.out,
    `${JSON.stringify({ date: new Date().toISOString(), sizeBytes: SIZE, repetitions: REPS, rateBytesPerSecond: RATE, cpus: os.cpus().length, node: process.version, rows }, null, 2)}\n`,
  );
  process.stdout.write(`\nWrote ${args.out}\n`);
}

await main();
