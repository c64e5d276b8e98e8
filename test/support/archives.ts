/**
 * Real archives for tests and the demo: safetensors files, a PEFT LoRA adapter, tar.zst / tar.gz
 * archives made with GNU tar, and large zstd-looking files for benchmarks.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

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

const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/**
 * A file of exactly `bytes` bytes: the zstd magic followed by pseudo-random data. One 8 MiB random
 * block is reused; every 4 KiB block gets its global index stamped at offset 8, so no two blocks are
 * equal and misplaced data is detectable by hash.
 */
export async function makeLargeArchiveFile(path: string, bytes: number): Promise<void> {
  const CHUNK = 8 * 1024 * 1024;
  const BLOCK = 4096;
  const buf = randomBytes(Math.min(CHUNK, Math.max(bytes, 0)));
  const firstBytes = Buffer.from(buf.subarray(0, 4));
  const fh = await open(path, 'w');
  try {
    let pos = 0;
    while (pos < bytes) {
      const n = Math.min(CHUNK, bytes - pos);
      for (let b = 0; b + 16 <= n; b += BLOCK) buf.writeBigUInt64LE(BigInt((pos + b) / BLOCK), b + 8);
      if (pos === 0) ZSTD_MAGIC.copy(buf, 0, 0, Math.min(4, n));
      else firstBytes.copy(buf, 0);
      let off = 0;
      while (off < n) {
        const { bytesWritten } = await fh.write(buf, off, n - off, pos + off);
        off += bytesWritten;
      }
      pos += n;
    }
  } finally {
    await fh.close();
  }
}
