import * as path from 'node:path';
import * as core from '@actions/core';
import { InputError } from './errors.js';
import { quote, registerSecret } from './log.js';
import { parseArtifactName } from './runner/artifact-service.js';
import { CHECKPOINT_TYPES, type CheckpointChoice, type StepChoice } from './together/checkpoint.js';
import { requireReplaceable, resolveDestination } from './transfer/destination.js';
import { DEFAULT_CONNECTIONS, DEFAULT_STALL_TIMEOUT_SECONDS } from './transfer/ranged-download.js';

export const DEFAULT_BASE_URL = 'https://api.together.ai/v1';

export { CHECKPOINT_TYPES, type CheckpointChoice, parseArtifactName, quote };

export interface Inputs {
  /** `ft-<id>`, without any `:<step>` suffix. */
  jobId: string;
  /** The checkpoint step (`latest`: the highest saved one, resolved when the job is looked up), or undefined for the final model. */
  step?: StepChoice;
  checkpointType: CheckpointChoice;
  /** The `path` input as given (may be empty); resolved against `workspace` later. */
  path: string;
  workspace: string;
  apiKey: string;
  baseUrl: string;
  uploadArtifact: boolean;
  artifactName?: string;
  retentionDays?: number;
  /** Poll the job until it is completed (or the step is listed) before downloading. */
  wait: boolean;
  waitTimeoutMinutes: number;
  /** Unpack the archive after the download. */
  extract: boolean;
  /** The `extract-path` input as given ('' = beside the archive); resolved against `workspace` later. */
  extractPath: string;
  keepArchive: boolean;
  /** Keep the archive in the runner's tool cache and take it from there when it is already in it. */
  cache: boolean;
  /** Resolve and print the plan, set the outputs known without the archive, download nothing. */
  dryRun: boolean;
  /** Check that the archive holds the kind of model asked for, with whole safetensors files. */
  verifyContents: boolean;
  /** Parallel connections for a server that honours range requests. */
  connections: number;
  stallTimeoutSeconds: number;
}

/** The raw strings an `Inputs` is made from: action inputs plus the environment fallbacks. */
export interface RawInputs {
  'job-id': string;
  step: string;
  'checkpoint-type': string;
  path: string;
  'api-key': string;
  'base-url': string;
  'upload-artifact': boolean;
  'artifact-name': string;
  'retention-days': string;
  wait: boolean;
  'wait-timeout-minutes': string;
  extract: boolean;
  'extract-path': string;
  'keep-archive': boolean;
  cache: boolean;
  'dry-run': boolean;
  'verify-contents': boolean;
  connections: string;
  'stall-timeout': string;
  workspace: string;
}

// Letters, digits and `-` only: the id is placed in a URL path and query, so nothing else may pass.
const JOB_ID = /^(ft-[A-Za-z0-9-]+)(?::([0-9]+|[Ll][Aa][Tt][Ee][Ss][Tt]))?$/;
const JOB_ID_FORM =
  '`ft-<id>`, `ft-<id>:<step>` or `ft-<id>:latest`, e.g. ft-fe94af08-1c61-41d2-8494-6d7ff5386262 or ft-fe94af08-1c61-41d2-8494-6d7ff5386262:120';

/** Reads the action's inputs, masking the API key before anything else can print it. */
export function readInputs(env: NodeJS.ProcessEnv = process.env): Inputs {
  // Registered before any input is parsed, so that no message about another input can echo it.
  const apiKey = core.getInput('api-key') || env.TOGETHER_API_KEY?.trim() || '';
  registerSecret(apiKey);
  return parseInputs({
    'job-id': core.getInput('job-id'),
    step: core.getInput('step'),
    'checkpoint-type': core.getInput('checkpoint-type'),
    path: core.getInput('path'),
    'api-key': apiKey,
    'base-url': core.getInput('base-url') || env.TOGETHER_BASE_URL?.trim() || '',
    // The runner always passes the declared default; an unset input (a local run) means false.
    'upload-artifact': booleanInput('upload-artifact', false),
    'artifact-name': core.getInput('artifact-name'),
    'retention-days': core.getInput('retention-days'),
    wait: booleanInput('wait', false),
    'wait-timeout-minutes': core.getInput('wait-timeout-minutes'),
    extract: booleanInput('extract', false),
    'extract-path': core.getInput('extract-path'),
    'keep-archive': booleanInput('keep-archive', true),
    cache: booleanInput('cache', false),
    'dry-run': booleanInput('dry-run', false),
    'verify-contents': booleanInput('verify-contents', true),
    connections: core.getInput('connections'),
    'stall-timeout': core.getInput('stall-timeout'),
    workspace: env.GITHUB_WORKSPACE || process.cwd(),
  });
}

export function parseInputs(raw: RawInputs): Inputs {
  const { jobId, step: stepInJobId } = parseJobId(raw['job-id']);
  const stepInput = parseStep(raw.step);
  if (stepInJobId !== undefined && stepInput !== undefined && stepInJobId !== stepInput) {
    throw new InputError(
      'step',
      `${stepInput} disagrees with the step ${stepInJobId} in \`job-id\`. Give the step in one place, or the same step in both.`,
    );
  }
  const apiKey = parseApiKey(raw['api-key']);
  return {
    jobId,
    step: stepInJobId ?? stepInput,
    checkpointType: parseCheckpointType(raw['checkpoint-type']),
    path: parsePath(raw.path, raw.workspace),
    workspace: raw.workspace,
    apiKey,
    baseUrl: parseBaseUrl(raw['base-url']),
    uploadArtifact: raw['upload-artifact'],
    artifactName: parseArtifactName(raw['artifact-name']),
    retentionDays: parseRetentionDays(raw['retention-days']),
    wait: raw.wait,
    waitTimeoutMinutes: parseWaitTimeoutMinutes(raw['wait-timeout-minutes']),
    ...parseExtraction(raw),
    cache: raw.cache,
    dryRun: raw['dry-run'],
    verifyContents: raw['verify-contents'],
    connections: parseIntegerInRange('connections', raw.connections, DEFAULT_CONNECTIONS, 1, 32, 'parallel connections'),
    stallTimeoutSeconds: parseIntegerInRange('stall-timeout', raw['stall-timeout'], DEFAULT_STALL_TIMEOUT_SECONDS, 1, 3600, 'seconds'),
  };
}

/** The `path` input, with a file it names checked before any request: only a regular file is replaced. */
export function parsePath(value: string, workspace: string): string {
  const trimmed = value.trim();
  const destination = resolveDestination(trimmed, workspace);
  if (destination.name !== undefined) requireReplaceable(path.join(destination.dir, destination.name));
  return trimmed;
}

/**
 * A boolean input. The runner always passes the declared default; an unset input (a local run)
 * means `fallback`. Anything but true/false fails naming the input.
 */
export function booleanInput(name: string, fallback: boolean): boolean {
  const value = core.getInput(name);
  if (value === '') return fallback;
  try {
    return core.getBooleanInput(name);
  } catch {
    throw new InputError(name, `${quote(value)} is not a boolean. Use \`true\` or \`false\`.`);
  }
}

export const DEFAULT_WAIT_TIMEOUT_MINUTES = 120;

export function parseWaitTimeoutMinutes(value: string): number {
  const trimmed = value.trim();
  if (trimmed === '') return DEFAULT_WAIT_TIMEOUT_MINUTES;
  const minutes = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/.test(trimmed) ? Number(trimmed) : NaN;
  if (!Number.isFinite(minutes) || minutes <= 0) {
    throw new InputError('wait-timeout-minutes', `${quote(trimmed)} is not valid. Use a positive number of minutes, such as 120 or 0.5.`);
  }
  return minutes;
}

/** `extract`, `extract-path` and `keep-archive`, which only make sense together. */
export function parseExtraction(
  raw: Pick<RawInputs, 'extract' | 'extract-path' | 'keep-archive'>,
): Pick<Inputs, 'extract' | 'extractPath' | 'keepArchive'> {
  const extractPath = raw['extract-path'].trim();
  if (!raw.extract && extractPath !== '') {
    throw new InputError(
      'extract-path',
      'is set but `extract` is not `true`. Set `extract: true` to unpack the archive there, or remove `extract-path`.',
    );
  }
  if (!raw.extract && !raw['keep-archive']) {
    throw new InputError(
      'keep-archive',
      '`false` removes the archive once it is unpacked, so it needs `extract: true`; without it nothing would be left. Set `extract: true`, or remove `keep-archive`.',
    );
  }
  return { extract: raw.extract, extractPath, keepArchive: raw['keep-archive'] };
}

export function parseJobId(value: string): { jobId: string; step?: StepChoice } {
  const trimmed = value.trim();
  if (trimmed === '') {
    throw new InputError('job-id', `is required. Expected ${JOB_ID_FORM}.`);
  }
  const match = JOB_ID.exec(trimmed);
  if (!match) {
    throw new InputError('job-id', `${quote(trimmed)} is not a fine-tuning job id. Expected ${JOB_ID_FORM}.`);
  }
  if (match[2]?.toLowerCase() === 'latest') return { jobId: match[1], step: 'latest' };
  const step = match[2] === undefined ? undefined : toPositiveInteger(match[2]);
  if (match[2] !== undefined && step === undefined) {
    throw new InputError('job-id', `the step after \`:\` must be a positive integer, got ${quote(match[2])}. Expected ${JOB_ID_FORM}.`);
  }
  return { jobId: match[1], step };
}

export function parseStep(value: string): StepChoice | undefined {
  const trimmed = value.trim();
  if (trimmed === '') return undefined;
  if (trimmed.toLowerCase() === 'latest') return 'latest';
  const step = /^[0-9]+$/.test(trimmed) ? toPositiveInteger(trimmed) : undefined;
  if (step === undefined) {
    throw new InputError(
      'step',
      `${quote(trimmed)} is not valid. Give a checkpoint step (a positive integer such as 120), \`latest\` for the highest saved step, or leave it empty for the final model.`,
    );
  }
  return step;
}

export function parseCheckpointType(value: string): CheckpointChoice {
  const normalized = value.trim().toLowerCase() || 'default';
  if ((CHECKPOINT_TYPES as readonly string[]).includes(normalized)) return normalized as CheckpointChoice;
  throw new InputError('checkpoint-type', `${quote(value.trim())} is not valid. Use one of: ${CHECKPOINT_TYPES.join(', ')}.`);
}

export function parseApiKey(value: string): string {
  if (value === '') {
    throw new InputError(
      'api-key',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a workflow expression to copy, not a template
      'no Together API key was given. Set `api-key: ${{ secrets.TOGETHER_API_KEY }}` or the TOGETHER_API_KEY environment variable.',
    );
  }
  // Never echo the key: only say what is wrong with it.
  // Printable ASCII without spaces is all a header value can carry safely.
  if (/[^\x21-\x7e]/.test(value)) {
    throw new InputError(
      'api-key',
      'contains whitespace, control or non-ASCII characters that cannot be sent in an HTTP header. Check the secret for a stray newline or quote.',
    );
  }
  return value;
}

export function parseBaseUrl(value: string): string {
  const trimmed = value.trim() || DEFAULT_BASE_URL;
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    throw new InputError('base-url', `${quote(trimmed)} is not a URL. Expected something like ${DEFAULT_BASE_URL}.`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new InputError('base-url', `must be an http or https URL, got ${quote(trimmed)}. Expected something like ${DEFAULT_BASE_URL}.`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new InputError('base-url', `must not carry credentials, a query or a fragment. Expected something like ${DEFAULT_BASE_URL}.`);
  }
  return url.href.replace(/\/+$/, '');
}

export function parseRetentionDays(value: string): number | undefined {
  const trimmed = value.trim();
  if (trimmed === '') return undefined;
  const days = /^[0-9]+$/.test(trimmed) ? Number(trimmed) : NaN;
  if (!Number.isInteger(days) || days < 1 || days > 90) {
    throw new InputError(
      'retention-days',
      `${quote(trimmed)} is not valid. Use a whole number of days from 1 to 90, or leave it empty for the repository default.`,
    );
  }
  return days;
}

/** A whole number within bounds; empty means the default. */
export function parseIntegerInRange(input: string, value: string, fallback: number, min: number, max: number, unit: string): number {
  const trimmed = value.trim();
  if (trimmed === '') return fallback;
  const n = /^[0-9]+$/.test(trimmed) ? Number(trimmed) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new InputError(
      input,
      `${quote(trimmed)} is not valid. Use a whole number of ${unit} from ${min} to ${max} (default ${fallback}).`,
    );
  }
  return n;
}

function toPositiveInteger(digits: string): number | undefined {
  const n = Number(digits);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}
