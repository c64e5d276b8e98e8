/**
 * What the archive holds, read from its tar headers and its small JSON files without extracting
 * anything, checked against what was asked for: an adapter (`adapter_config.json` and adapter
 * weights) or a merged or full model (`config.json` and weights, with an index naming every shard
 * when they are sharded). Every `.safetensors` file is checked as it streams past. Memory stays
 * bounded whatever the model's size: tensor data is skipped, only headers and configs are kept.
 */
import { ActionError } from '../errors.js';
import { hasControls, quote } from '../log.js';
import type { FetchedType } from '../together/checkpoint.js';
import { type DecompressOptions, withDecompressed } from './decompress.js';
import { components } from './entries.js';
import type { ArchiveFormat } from './format.js';
import { checkSafetensorsEntry, SafetensorsError } from './safetensors.js';
import { TarReader } from './tar.js';

/** What was asked for: the checkpoint type fetched and its step (undefined for the final model). */
export interface Asked {
  fetched: FetchedType;
  step?: number;
}

/** What the archive was found to hold. */
export interface ContentsReport {
  /** `adapter`, or the kind of model asked for (`merged` or `model`) when it holds a model. */
  kind: FetchedType;
  /** The model's folder inside the archive; '' for its root. */
  folder: string;
  /** Regular files in the whole archive. */
  files: number;
  /** The weight files in the model's folder. */
  weights: string[];
  /** `.safetensors` files checked (all of them, in every folder), with their tensors and data bytes. */
  safetensors: { files: number; tensors: number; bytes: number };
  /** An adapter's `base_model_name_or_path`, when it has one that is safe to pass on. */
  baseModel?: string;
  /** An adapter's LoRA rank `r`. */
  loraRank?: number;
  /** A model's architecture (`architectures[0]` or `model_type` of its config.json). */
  architecture?: string;
  /** Values of the archive that were not passed on, and why. */
  notes: string[];
}

/** The archive does not hold what was asked for, or a weights file in it is damaged. */
export class ContentsError extends ActionError {
  constructor(message: string) {
    super(message);
    this.name = 'ContentsError';
  }
}

/** A config is a few kilobytes; a file this large under that name is not one. */
export const MAX_CONFIG_BYTES = 1024 * 1024;
/** The shard index of the largest models is a few megabytes. */
export const MAX_INDEX_BYTES = 32 * 1024 * 1024;

const ADAPTER_CONFIG = 'adapter_config.json';
const CONFIG = 'config.json';
const ADAPTER_WEIGHTS = ['adapter_model.safetensors', 'adapter_model.bin'];
const INDEX = /\.index\.json$/;
const SHARD = /-\d+-of-\d+\.(?:safetensors|bin)$/;
/** `.bin` files a Trainer saves beside the weights that are not weights. */
const NOT_WEIGHTS = /^(?:training_args|optimizer|scheduler|rng_state)[^/]*\.bin$/;

interface JsonFile {
  size: number;
  /** Absent when the file is larger than its cap. */
  data?: Buffer;
}

/** What one pass over the tar saw. */
interface Seen {
  /** Regular files (and hard links to them), by path. */
  files: Set<string>;
  /** Top-level names, and whether each is a folder. */
  tops: Map<string, boolean>;
  /** The small JSON files at the root and one folder down, by path. */
  json: Map<string, JsonFile>;
  safetensors: ContentsReport['safetensors'];
}

const basename = (p: string) => p.slice(p.lastIndexOf('/') + 1);
const dirname = (p: string) => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');

function capFor(name: string): number | undefined {
  if (name === ADAPTER_CONFIG || name === CONFIG) return MAX_CONFIG_BYTES;
  if (INDEX.test(name)) return MAX_INDEX_BYTES;
  return undefined;
}

/** Reads the tar once: its file names, its small JSON files, and every safetensors header. */
async function survey(plain: AsyncIterable<Uint8Array>): Promise<Seen> {
  const tar = new TarReader(plain);
  const seen: Seen = { files: new Set(), tops: new Map(), json: new Map(), safetensors: { files: 0, tensors: 0, bytes: 0 } };
  for (let entry = await tar.next(); entry !== undefined; entry = await tar.next()) {
    const parts = components(entry.name);
    if (parts.length === 0) continue;
    const isDir = entry.type === '5' || parts.length > 1;
    seen.tops.set(parts[0], (seen.tops.get(parts[0]) ?? false) || isDir);
    const regular = entry.type === '0' || entry.type === '7';
    if (!regular && entry.type !== '1') continue;
    const file = parts.join('/');
    seen.files.add(file);
    if (!regular) continue;
    if (/\.safetensors$/i.test(file)) {
      try {
        const facts = await checkSafetensorsEntry(tar, entry.size);
        seen.safetensors.files++;
        seen.safetensors.tensors += facts.tensors;
        seen.safetensors.bytes += facts.dataBytes;
      } catch (error) {
        if (!(error instanceof SafetensorsError)) throw error;
        throw new ContentsError(
          `The archive holds a damaged weights file, ${quote(file, 200)} (${entry.size} bytes): ${error.message}. Loading the model would fail. Run the job again; if it persists, report it to Together with the job id. To keep the archive anyway, set \`verify-contents: false\`.`,
        );
      }
      continue;
    }
    const cap = parts.length <= 2 ? capFor(basename(file)) : undefined;
    if (cap !== undefined) seen.json.set(file, { size: entry.size, data: entry.size <= cap ? await tar.read(entry.size) : undefined });
  }
  return seen;
}

/** The model's folder: the archive's one top-level folder when it has one, otherwise its root. */
function modelFolder(tops: Map<string, boolean>): string {
  const all = [...tops.entries()];
  return all.length === 1 && all[0][1] ? all[0][0] : '';
}

const folderText = (folder: string) => (folder === '' ? 'the archive root' : `the folder ${quote(`${folder}/`)}`);
const listed = (names: string[], max = 8) =>
  names.length === 0
    ? 'nothing'
    : `${names
        .slice(0, max)
        .map((n) => quote(n))
        .join(', ')}${names.length > max ? `, … (${names.length} in all)` : ''}`;

function readJson(folder: string, name: string, file: JsonFile): Record<string, unknown> {
  const where = quote(folder ? `${folder}/${name}` : name);
  const cap = capFor(name) ?? MAX_CONFIG_BYTES;
  if (file.data === undefined) {
    throw new ContentsError(
      `The archive's ${where} is ${file.size} bytes, more than the ${cap} bytes such a file ever holds: it is not a ${INDEX.test(name) ? 'shard index' : 'model config'}. If the archive is right nonetheless, set \`verify-contents: false\`.`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(file.data.toString('utf8'));
  } catch (error) {
    throw new ContentsError(
      `The archive's ${where} is not valid JSON (${(error as Error).message}). If the archive is right nonetheless, set \`verify-contents: false\`.`,
    );
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new ContentsError(
      `The archive's ${where} is not a JSON object. If the archive is right nonetheless, set \`verify-contents: false\`.`,
    );
  }
  return json as Record<string, unknown>;
}

const kindName = (kind: 'adapter' | 'model', fetched: FetchedType) =>
  kind === 'adapter' ? 'an adapter' : fetched === 'model' ? 'a full model' : 'a merged model';
const forWhat = (asked: Asked) => (asked.step === undefined ? 'as the final checkpoint' : `for step ${asked.step}`);

/** A value from the archive that may become an output: no control characters, a sane length. */
function outputValue(value: unknown, name: string, max: number, notes: string[]): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value === '' || value.length > max || hasControls(value)) {
    notes.push(
      `${name} ${quote(typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value)))} was not passed on: ${typeof value !== 'string' || value === '' ? 'it is not a name' : value.length > max ? `it is longer than ${max} characters` : 'it holds control characters'}`,
    );
    return undefined;
  }
  return value;
}

/**
 * Decides what the surveyed archive holds and whether that is what was asked for; throws a
 * ContentsError that says what was found instead.
 */
function judge(seen: Seen, asked: Asked): ContentsReport {
  const folder = modelFolder(seen.tops);
  const prefix = folder === '' ? '' : `${folder}/`;
  const here = [...seen.files]
    .filter((f) => dirname(f) === folder)
    .map(basename)
    .sort();
  // Folders inside the model's folder, to show when it holds no model.
  const below = [
    ...new Set(
      [...seen.files]
        .filter((f) => f.startsWith(prefix) && f.slice(prefix.length).includes('/'))
        .map((f) => f.slice(prefix.length).split('/')[0]),
    ),
  ].sort();
  const has = (name: string) => here.includes(name);
  const adapterWeights = ADAPTER_WEIGHTS.filter(has);
  const weights = here.filter((n) => /\.(?:safetensors|bin)$/.test(n) && !ADAPTER_WEIGHTS.includes(n) && !NOT_WEIGHTS.test(n));
  const isAdapter = has(ADAPTER_CONFIG) && adapterWeights.length > 0;
  const isModel = has(CONFIG) && weights.length > 0;
  const wanted = asked.fetched === 'adapter' ? 'adapter' : 'model';
  const found = isAdapter ? 'adapter' : isModel ? 'model' : undefined;
  const ok = wanted === 'adapter' ? isAdapter : isModel;
  const notes: string[] = [];

  if (!ok) {
    const folders = below.length > 0 ? ` (and the folder${below.length === 1 ? '' : 's'} ${listed(below.map((b) => `${b}/`))})` : '';
    const holds = `${folderText(folder)} holds ${here.length > 0 ? listed(here) : 'no files'}${folders}`;
    if (found !== undefined) {
      const why =
        asked.step === undefined
          ? 'The archive does not hold what `checkpoint-type` asked for; report it to Together with the job id.'
          : `Together's API may ignore \`checkpoint\` when \`checkpoint_step\` is given (its published spec says so) and send what it saved at that step. Ask for \`checkpoint-type: ${found === 'adapter' ? 'adapter' : 'merged'}\` at step ${asked.step}, or leave \`step\` out for the final ${wanted === 'adapter' ? 'adapter' : 'model'}.`;
      throw new ContentsError(
        `Together sent ${kindName(found, asked.fetched)} ${forWhat(asked)}, not ${kindName(wanted, asked.fetched)}: ${holds}. ${why} To keep this archive as it is, set \`verify-contents: false\`.`,
      );
    }
    const needs =
      wanted === 'adapter'
        ? `${ADAPTER_CONFIG} and adapter weights (${ADAPTER_WEIGHTS.join(' or ')})`
        : `${CONFIG} and weights (*.safetensors or *.bin)`;
    throw new ContentsError(
      `The archive Together sent ${forWhat(asked)} is not ${kindName(wanted, asked.fetched)}: ${kindName(wanted, asked.fetched)} needs ${needs} in its folder, and ${holds}. Run the job again; if it persists, report it to Together with the job id. If the archive is right nonetheless, set \`verify-contents: false\`.`,
    );
  }

  const report: ContentsReport = {
    kind: wanted === 'adapter' ? 'adapter' : asked.fetched,
    folder,
    files: seen.files.size,
    weights: wanted === 'adapter' ? adapterWeights : weights,
    safetensors: seen.safetensors,
    notes,
  };
  if (wanted === 'adapter') {
    const config = readJson(folder, ADAPTER_CONFIG, seen.json.get(`${prefix}${ADAPTER_CONFIG}`) as JsonFile);
    report.baseModel = outputValue(config.base_model_name_or_path, 'base_model_name_or_path', 512, notes);
    const r = config.r;
    if (typeof r === 'number' && Number.isSafeInteger(r) && r > 0) report.loraRank = r;
    else if (r !== undefined)
      notes.push(`the LoRA rank r ${quote(JSON.stringify(r) ?? String(r))} was not passed on: it is not a positive integer`);
    return report;
  }
  const config = readJson(folder, CONFIG, seen.json.get(`${prefix}${CONFIG}`) as JsonFile);
  const architecture = Array.isArray(config.architectures) ? config.architectures[0] : config.model_type;
  report.architecture = outputValue(architecture, 'the architecture', 200, notes);
  checkShards(folder, here, seen);
  return report;
}

/** Sharded weights need an index, and every file an index names must be in the folder. */
function checkShards(folder: string, here: string[], seen: Seen): void {
  const prefix = folder === '' ? '' : `${folder}/`;
  const indexes = here.filter((n) => INDEX.test(n) && /\.(?:safetensors|bin)\.index\.json$/.test(n));
  for (const name of indexes) {
    const index = readJson(folder, name, seen.json.get(`${prefix}${name}`) as JsonFile);
    const map = index.weight_map;
    if (map === null || typeof map !== 'object' || Array.isArray(map) || !Object.values(map).every((v) => typeof v === 'string')) {
      throw new ContentsError(
        `The archive's ${quote(`${prefix}${name}`)} has no weight_map naming the file of each tensor, so the sharded model cannot be loaded. Run the job again; if it persists, report it to Together with the job id, or set \`verify-contents: false\`.`,
      );
    }
    const named = [...new Set(Object.values(map as Record<string, string>))].sort();
    const missing = named.filter((f) => !seen.files.has(components(`${prefix}${f}`).join('/')));
    if (missing.length > 0) {
      throw new ContentsError(
        `The archive's ${quote(`${prefix}${name}`)} names ${named.length} weight files, and ${missing.length} of them ${missing.length === 1 ? 'is' : 'are'} not in the archive: ${listed(missing)}. The model is incomplete and would not load. Run the job again; if it persists, report it to Together with the job id, or set \`verify-contents: false\`.`,
      );
    }
  }
  const shards = here.filter((n) => SHARD.test(n));
  if (shards.length > 0 && indexes.length === 0) {
    throw new ContentsError(
      `The archive holds sharded weights (${listed(shards, 3)}) but no index file (such as model.safetensors.index.json) that says which tensor is in which shard, so the model would not load. Run the job again; if it persists, report it to Together with the job id, or set \`verify-contents: false\`.`,
    );
  }
}

export interface CheckOptions extends Partial<Pick<DecompressOptions, 'zstd'>> {}

/**
 * Reads the compressed archive from `source` once, decompressing it on the way, and checks that it
 * holds what was asked for; throws a ContentsError (or a ZstdMissingError, or the source's own
 * error) otherwise. Nothing is written anywhere.
 */
export async function checkContents(
  source: AsyncIterable<Uint8Array>,
  format: ArchiveFormat,
  asked: Asked,
  options: CheckOptions = {},
): Promise<ContentsReport> {
  let seen: Seen;
  try {
    seen = await withDecompressed(source, format, survey, {
      need: "Checking the archive's contents",
      advice: 'set `verify-contents: false`',
      zstd: options.zstd,
    });
  } catch (error) {
    if (!(error instanceof Error) || error instanceof ActionError) throw error;
    if (error.name === 'TarFormatError' || error.name === 'DecompressError') {
      throw new ContentsError(
        `The archive cannot be read as a ${format === 'zstd' ? 'zstd' : 'gzip'}-compressed tar: ${error.message}. Run the job again; if it persists, report it to Together with the job id. To keep it anyway, set \`verify-contents: false\`.`,
      );
    }
    throw error;
  }
  return judge(seen, asked);
}

/** One line for the log: what was found. */
export function describeContents(report: ContentsReport): string {
  const where = report.folder === '' ? 'at the archive root' : `in ${quote(`${report.folder}/`)}`;
  const what =
    report.kind === 'adapter'
      ? `an adapter${report.baseModel ? ` of ${quote(report.baseModel)}` : ''}${report.loraRank ? `, LoRA rank ${report.loraRank}` : ''}`
      : `${report.kind === 'model' ? 'a full model' : 'a merged model'}${report.architecture ? ` (${report.architecture})` : ''}, ${report.weights.length} weight file${report.weights.length === 1 ? '' : 's'}`;
  const st = report.safetensors;
  return `Contents: ${what}, ${where}; ${st.files} safetensors file${st.files === 1 ? '' : 's'} whole (${st.tensors} tensors)`;
}
