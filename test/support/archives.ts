/**
 * Real archives for tests and the demo: safetensors files, a PEFT LoRA adapter, tar.zst / tar.gz
 * archives made with GNU tar, and large zstd-looking files for benchmarks.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { header } from './tar-writer.js';

const execFileAsync = promisify(execFile);

export interface F32Tensor {
  dtype: 'F32';
  shape: number[];
  data: Float32Array;
}

/**
 * The safetensors format: 8-byte little-endian header length N, N bytes of JSON header
 * ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}) padded with spaces
 * so that the data starts on an 8-byte boundary, then the raw little-endian tensor data.
 */
/** Lowercase hex SHA-256, what the action's `sha256` output must equal. */
export const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

export function safetensors(tensors: Record<string, F32Tensor>): Buffer {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) {
      throw new Error(`tensor ${name}: shape [${t.shape}] holds ${count} values but data has ${t.data.length}`);
    }
    const bytes = t.data.length * 4;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const headerBuf = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBuf.length + offset);
  out.writeBigUInt64LE(BigInt(headerBuf.length), 0);
  headerBuf.copy(out, 8);
  let p = 8 + headerBuf.length;
  for (const name of names) {
    for (const v of tensors[name].data) {
      out.writeFloatLE(v, p);
      p += 4;
    }
  }
  return out;
}

/** mulberry32: a small deterministic PRNG returning floats in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface PeftAdapterOptions {
  r?: number;
  alpha?: number;
  baseModel?: string;
  hidden?: number;
  layers?: number;
  seed?: number;
  /** extra: default 0.05 */
  dropout?: number;
  /** extra: default q_proj, k_proj, v_proj, o_proj */
  targetModules?: string[];
}

/**
 * A PEFT LoRA adapter: adapter_config.json (a LoraConfig as PEFT saves it) and
 * adapter_model.safetensors with lora_A [r, hidden] and lora_B [hidden, r] tensors per target module
 * and layer, filled with deterministic pseudo-random values.
 */
export function peftAdapterFiles(opts: PeftAdapterOptions = {}): Record<string, Buffer> {
  const r = opts.r ?? 8;
  const alpha = opts.alpha ?? 16;
  const baseModel = opts.baseModel ?? 'meta-llama/Meta-Llama-3.1-8B-Instruct';
  const hidden = opts.hidden ?? 64;
  const layers = opts.layers ?? 2;
  const rand = mulberry32(opts.seed ?? 42);
  const targets = opts.targetModules ?? ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
  const mlp = new Set(['gate_proj', 'up_proj', 'down_proj']);

  const config = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: alpha,
    lora_dropout: opts.dropout ?? 0.05,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r,
    rank_pattern: {},
    revision: null,
    target_modules: [...targets].sort(),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: false,
  };

  const fill = (n: number, scale: number): Float32Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (rand() * 2 - 1) * scale;
    return a;
  };
  const tensors: Record<string, F32Tensor> = {};
  for (let l = 0; l < layers; l++) {
    for (const m of targets) {
      const prefix = `base_model.model.model.layers.${l}.${mlp.has(m) ? 'mlp' : 'self_attn'}.${m}`;
      tensors[`${prefix}.lora_A.weight`] = { dtype: 'F32', shape: [r, hidden], data: fill(r * hidden, 1 / Math.sqrt(hidden)) };
      tensors[`${prefix}.lora_B.weight`] = { dtype: 'F32', shape: [hidden, r], data: fill(hidden * r, 0.01) };
    }
  }
  return {
    'adapter_config.json': Buffer.from(`${JSON.stringify(config, null, 2)}\n`),
    'adapter_model.safetensors': safetensors(tensors),
  };
}

/**
 * A real tar archive (GNU tar, `--zstd` or `-z`) of `files` (keys may contain `/` for subfolders),
 * optionally under one top-level folder.
 */
export async function makeArchive(files: Record<string, Buffer>, format: 'zstd' | 'gzip', opts: { topDir?: string } = {}): Promise<Buffer> {
  const tmp = await mkdtemp(join(tmpdir(), 'together-archive-'));
  try {
    const srcDir = join(tmp, 'src');
    const root = opts.topDir ? join(srcDir, opts.topDir) : srcDir;
    await mkdir(root, { recursive: true });
    for (const [name, data] of Object.entries(files)) {
      const target = join(root, name);
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, data);
    }
    const entries = opts.topDir ? [opts.topDir] : [...new Set(Object.keys(files).map((k) => k.split('/')[0]))].sort();
    const out = join(tmp, format === 'zstd' ? 'archive.tar.zst' : 'archive.tar.gz');
    await execFileAsync('tar', [
      format === 'zstd' ? '--zstd' : '-z',
      '--sort=name',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '--mtime=@1700000000',
      '-cf',
      out,
      '-C',
      srcDir,
      '--',
      ...entries,
    ]);
    return await readFile(out);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

export interface TensorSpec {
  name: string;
  dtype: string;
  shape: number[];
  /** Bytes of data; the header's data_offsets follow one another in this order. */
  bytes: number;
}

/**
 * The first part of a safetensors file, up to its data: the 8-byte length and the JSON header,
 * padded with spaces to `minLength` (at least to a multiple of 8), the tensors laid out in order.
 */
export function safetensorsHead(tensors: TensorSpec[], minLength = 0, metadata: Record<string, string> = { format: 'pt' }): Buffer {
  // No prototype: a tensor may be called `__proto__`.
  const header: Record<string, unknown> = Object.assign(Object.create(null), { __metadata__: metadata });
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes] };
    offset += t.bytes;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Math.max(minLength, json.length + ((8 - (json.length % 8)) % 8));
  const out = Buffer.alloc(8 + length, 0x20);
  out.writeBigUInt64LE(BigInt(length), 0);
  json.copy(out, 8);
  return out;
}

/** BF16 tensors of at most `tensorBytes` each (and one U8 byte when the total is odd) holding `dataBytes` in all. */
function bf16Tensors(dataBytes: number, prefix: string, tensorBytes: number): TensorSpec[] {
  const tensors: TensorSpec[] = [];
  const cols = 1024;
  let left = dataBytes;
  for (let i = 0; left > 1; i++) {
    const bytes = Math.min(left - (left % 2), tensorBytes - (tensorBytes % 2));
    const elements = bytes / 2;
    const shape = elements % cols === 0 ? [elements / cols, cols] : [elements];
    tensors.push({ name: `${prefix}.${i}.weight`, dtype: 'BF16', shape, bytes });
    left -= bytes;
  }
  if (left === 1) tensors.push({ name: `${prefix}.odd`, dtype: 'U8', shape: [1], bytes: 1 });
  return tensors;
}

/** The header of a safetensors file of exactly `bytes` bytes whose tensors are BF16 (see `weights`). */
export function weightsLayout(
  bytes: number,
  opts: { prefix?: string; tensorBytes?: number } = {},
): { head: Buffer; tensors: TensorSpec[] } {
  const prefix = opts.prefix ?? 'model.layers';
  const tensorBytes = opts.tensorBytes ?? 64 * 1024 * 1024;
  let headLength = 64;
  for (;;) {
    const dataBytes = bytes - headLength;
    if (dataBytes < 0) throw new Error(`a safetensors file of ${bytes} bytes is too small for its header`);
    const tensors = bf16Tensors(dataBytes, prefix, tensorBytes);
    const head = safetensorsHead(tensors);
    if (head.length <= headLength) return { head: safetensorsHead(tensors, headLength - 8), tensors };
    headLength = head.length;
  }
}

/**
 * A whole safetensors file of exactly `bytes` bytes (at least a few hundred): BF16 tensors of random
 * weights, as many as it takes of at most 64 MiB (or `tensorBytes`) each.
 */
export function weights(bytes: number, opts: { prefix?: string; tensorBytes?: number } = {}): Buffer {
  const { head } = weightsLayout(bytes, opts);
  return Buffer.concat([head, randomBytes(bytes - head.length)]);
}

export interface ModelOptions {
  /** Bytes of all weight files together (default 300,000). */
  weightBytes?: number;
  /** More than one: `model-0000i-of-0000n.safetensors` shards and their index. */
  shards?: number;
  /** Merged into config.json. */
  config?: Record<string, unknown>;
  /** The largest tensor, in bytes (default 64 MiB). */
  tensorBytes?: number;
}

/**
 * A merged or full model as a Hugging Face folder holds it: config.json, generation_config.json,
 * tokenizer files and safetensors weights, sharded with model.safetensors.index.json when asked.
 */
export function modelFiles(opts: ModelOptions = {}): Record<string, Buffer> {
  const shards = opts.shards ?? 1;
  const total = opts.weightBytes ?? 300_000;
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 64,
    num_hidden_layers: 2,
    torch_dtype: 'bfloat16',
    _name_or_path: 'meta-llama/Meta-Llama-3.1-8B-Instruct',
    ...opts.config,
  };
  const files: Record<string, Buffer> = {
    'config.json': Buffer.from(`${JSON.stringify(config, null, 2)}\n`),
    'generation_config.json': Buffer.from('{"bos_token_id": 128000, "eos_token_id": 128009}\n'),
    'tokenizer.json': Buffer.from('{"version":"1.0","model":{"type":"BPE"}}\n'),
    'tokenizer_config.json': Buffer.from('{"model_max_length": 131072}\n'),
  };
  if (shards === 1) {
    files['model.safetensors'] = weights(total, { tensorBytes: opts.tensorBytes });
    return files;
  }
  const per = Math.floor(total / shards);
  for (let i = 1; i <= shards; i++) {
    const name = `model-${String(i).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    files[name] = weights(i === shards ? total - per * (shards - 1) : per, {
      prefix: `model.layers.${i - 1}`,
      tensorBytes: opts.tensorBytes,
    });
  }
  return withShardIndex(files);
}

/**
 * `files` with a `model.safetensors.index.json` that names, for every tensor of every
 * `.safetensors` file among them, the file that holds it: what sharded weights come with.
 */
export function withShardIndex(files: Record<string, Buffer>): Record<string, Buffer> {
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (const [name, data] of Object.entries(files)) {
    if (!name.endsWith('.safetensors')) continue;
    const n = Number(data.readBigUInt64LE(0));
    for (const tensor of Object.keys(JSON.parse(data.subarray(8, 8 + n).toString('utf8')))) {
      if (tensor !== '__metadata__') weightMap[tensor] = name.slice(name.lastIndexOf('/') + 1);
    }
    total += data.length - 8 - n;
  }
  const index = { metadata: { total_size: total }, weight_map: weightMap };
  return { ...files, 'model.safetensors.index.json': Buffer.from(`${JSON.stringify(index, null, 2)}\n`) };
}

/** A .tar.zst of a merged model (see `modelFiles`) under one top-level folder, `merged/` by default. */
export async function makeModelArchive(opts: ModelOptions & { topDir?: string; format?: 'zstd' | 'gzip' } = {}): Promise<Buffer> {
  return makeArchive(modelFiles(opts), opts.format ?? 'zstd', { topDir: opts.topDir ?? 'merged' });
}

const MiB = 1024 * 1024;

/**
 * Weights that compress as real BF16 weights do, a little: random low bytes (mantissa), high bytes
 * (sign and exponent) from a few values. One block is reused; every 4 KiB gets its index stamped,
 * so no two pieces of an archive are equal and misplaced data changes its sha256.
 */
function weightBlock(): Buffer {
  const block = randomBytes(8 * MiB);
  const highs = [0x3b, 0x3c, 0x3d, 0xbb, 0xbc, 0xbd, 0x3e, 0xbe];
  for (let i = 1; i < block.length; i += 2) block[i] = highs[block[i] & 7];
  return block;
}

/** Writes `data` to a stream, waiting whenever it asks to. */
async function put(stream: Writable, data: Buffer): Promise<void> {
  if (stream.write(data)) return;
  await new Promise<void>((resolve, reject) => {
    const done = (error?: Error) => {
      stream.off('drain', done);
      stream.off('error', done);
      if (error) reject(error);
      else resolve();
    };
    stream.on('drain', done);
    stream.on('error', done);
  });
}

/**
 * A real model archive of exactly `bytes` bytes (at least 64 KiB), streamed to disk with no
 * whole-archive buffer, for the benchmark and the tests of large downloads: a `.tar.zst` of
 * `model/` with config.json, safetensors shards of at most 1 GiB with valid headers and random BF16
 * weights, and their index. The tar is compressed with `zstd -1`; a zstd skippable frame after
 * it makes up the exact size (decoders pass over it).
 */
export async function makeLargeArchiveFile(path: string, bytes: number): Promise<void> {
  if (bytes < 64 * 1024) throw new Error(`makeLargeArchiveFile makes archives of 64 KiB or more, not ${bytes} bytes`);
  const block = weightBlock();
  // How well the weights compress, from one block, so that the archive comes out just under `bytes`.
  const sample = await compressedLength(block);
  const ratio = sample / block.length;
  for (let attempt = 0; ; attempt++) {
    const target = Math.floor((bytes * (0.995 - attempt * 0.02)) / ratio) - 64 * 1024;
    await writeModelTarZst(path, Math.max(target, 16 * 1024), block);
    const { size } = await stat(path);
    const pad = bytes - size - 8;
    if (pad < 0) continue;
    const frame = Buffer.alloc(8);
    frame.writeUInt32LE(0x184d2a50, 0);
    frame.writeUInt32LE(pad, 4);
    const fh = await open(path, 'a');
    try {
      await fh.write(frame);
      const zeros = Buffer.alloc(Math.min(pad, 8 * MiB));
      for (let left = pad; left > 0; left -= zeros.length) await fh.write(zeros, 0, Math.min(left, zeros.length));
    } finally {
      await fh.close();
    }
    return;
  }
}

function compressedLength(data: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('zstd', ['-q', '-c', '-1'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let n = 0;
    child.stdout.on('data', (d: Buffer) => (n += d.length));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(n) : reject(new Error(`zstd exited ${code}`))));
    child.stdin.end(data);
  });
}

async function writeModelTarZst(path: string, tarBytes: number, block: Buffer): Promise<void> {
  const SHARD = 1024 * MiB;
  const fixed = 64 * 1024; // headers, configs, the index and the end blocks, roughly
  const weightBytes = Math.max(tarBytes - fixed, 1024);
  const shards = Math.max(1, Math.ceil(weightBytes / SHARD));
  const layouts = Array.from({ length: shards }, (_, i) =>
    weightsLayout(i === shards - 1 ? weightBytes - Math.floor(weightBytes / shards) * (shards - 1) : Math.floor(weightBytes / shards), {
      prefix: `model.layers.${i}`,
    }),
  );
  const name = (i: number) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
  const weightMap: Record<string, string> = {};
  layouts.forEach((l, i) => {
    for (const t of l.tensors) weightMap[t.name] = name(i);
  });
  const small: Record<string, Buffer> = {
    'config.json': Buffer.from(JSON.stringify({ architectures: ['LlamaForCausalLM'], model_type: 'llama', torch_dtype: 'bfloat16' })),
    'model.safetensors.index.json': Buffer.from(JSON.stringify({ metadata: { total_size: weightBytes }, weight_map: weightMap })),
  };

  const out = await open(path, 'w');
  const child = spawn('zstd', ['-q', '-c', '-1', '-T0'], { stdio: ['pipe', out.fd, 'inherit'] });
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`zstd exited ${code}`))));
  });
  const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);
  const stdin = child.stdin as Writable;
  try {
    await put(stdin, header({ name: 'model/', type: '5' }));
    for (const [file, data] of Object.entries(small)) {
      await put(stdin, Buffer.concat([header({ name: `model/${file}`, data }), data, pad(data.length)]));
    }
    let stamp = 0n;
    for (const [i, layout] of layouts.entries()) {
      const size = layout.head.length + layout.tensors.reduce((n, t) => n + t.bytes, 0);
      await put(stdin, Buffer.concat([header({ name: `model/${name(i)}`, size }), layout.head]));
      for (let left = size - layout.head.length; left > 0; ) {
        const n = Math.min(left, block.length);
        for (let b = 0; b + 8 <= n; b += 4096) block.writeBigUInt64LE(stamp++, b);
        await put(stdin, Buffer.from(block.subarray(0, n)));
        left -= n;
      }
      await put(stdin, pad(size));
    }
    await put(stdin, Buffer.alloc(1024));
    stdin.end();
    await exited;
  } finally {
    await out.close();
  }
}
