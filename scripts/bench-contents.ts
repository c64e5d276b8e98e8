/**
 * `node --import tsx scripts/bench-contents.ts -- [--size 2GiB] [--reps 5]`: what the content check
 * (`verify-contents`) costs on a real model archive read from disk (makeLargeArchiveFile: safetensors
 * shards of BF16-like weights that zstd compresses to about 80 %), next to a plain sha256 of the same
 * file. Each measurement runs in a fresh process; CPU counts that process and the zstd program it
 * runs. Medians of interleaved rounds.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { checkContents } from '../src/archive/contents.js';
import { nodeZstd } from '../src/archive/decompress.js';
import { makeLargeArchiveFile } from '../test/support/archives.js';

const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '2GiB' },
    reps: { type: 'string', default: '5' },
    child: { type: 'string' },
    file: { type: 'string' },
  },
});

const GiB = 1024 ** 3;

/** CPU seconds of this process and of the children it has waited for (Linux). */
function cpuSeconds(): number {
  const fields = fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
  return ticks / 100;
}

async function child(mode: string, file: string): Promise<void> {
  const before = cpuSeconds();
  const started = performance.now();
  const source = fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
  if (mode === 'sha256') {
    const hash = createHash('sha256');
    for await (const chunk of source) hash.update(chunk as Buffer);
    hash.digest('hex');
  } else {
    await checkContents(source, 'zstd', { fetched: 'merged' }, { zstd: mode as 'node' | 'program' });
  }
  const wall = (performance.now() - started) / 1000;
  const peak = Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024;
  process.stdout.write(`${JSON.stringify({ wall, cpu: cpuSeconds() - before, peakRssMiB: peak })}\n`);
}

function measure(mode: string, file: string): Promise<{ wall: number; cpu: number; peakRssMiB: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', process.argv[1], '--child', mode, '--file', file], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.on('close', (code) =>
      code === 0 ? resolve(JSON.parse(out.trim().split('\n').at(-1) as string)) : reject(new Error(`${mode}: exit ${code}`)),
    );
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const m = /^(\d+(?:\.\d+)?)\s*(MiB|GiB)$/i.exec(args.size);
  if (!m) throw new Error(`not a size: ${args.size}`);
  const size = Math.round(Number(m[1]) * (m[2].toLowerCase() === 'gib' ? GiB : 1024 ** 2));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'together-bench-contents-'));
  const file = path.join(work, 'model.tar.zst');
  try {
    process.stdout.write(`Generating a ${args.size} model archive... `);
    await makeLargeArchiveFile(file, size);
    process.stdout.write('done\n');
    const modes = ['sha256', 'program', ...(nodeZstd() ? ['node'] : [])];
    const samples = new Map<string, Array<{ wall: number; cpu: number; peakRssMiB: number }>>();
    for (let rep = 1; rep <= Number(args.reps); rep++) {
      for (const mode of modes) {
        const s = await measure(mode, file);
        samples.set(mode, [...(samples.get(mode) ?? []), s]);
        process.stdout.write(
          `rep ${rep} ${mode.padEnd(8)} wall ${s.wall.toFixed(2)} s, CPU ${s.cpu.toFixed(2)} s, peak RSS ${s.peakRssMiB.toFixed(0)} MiB\n`,
        );
      }
    }
    const gib = size / GiB;
    const names: Record<string, string> = {
      sha256: 'sha256 of the file (reference)',
      program: 'content check, zstd program',
      node: 'content check, node:zlib zstd',
    };
    process.stdout.write(`\nArchive ${args.size}, Node ${process.version}, ${os.cpus().length} CPUs, medians of ${args.reps}\n\n`);
    process.stdout.write('| what | wall s/GiB | CPU s/GiB | MiB/s | peak RSS MiB |\n| --- | --- | --- | --- | --- |\n');
    for (const mode of modes) {
      const list = samples.get(mode) ?? [];
      const wall = median(list.map((s) => s.wall));
      const cpu = median(list.map((s) => s.cpu));
      process.stdout.write(
        `| ${names[mode]} | ${(wall / gib).toFixed(2)} | ${(cpu / gib).toFixed(2)} | ${(size / 1024 ** 2 / wall).toFixed(0)} | ${median(list.map((s) => s.peakRssMiB)).toFixed(0)} |\n`,
      );
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (args.child) await child(args.child, args.file as string);
else await main();
