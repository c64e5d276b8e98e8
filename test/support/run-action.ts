/**
 * Runs the built `dist/index.js` the way a GitHub runner does: a child process with `INPUT_*`
 * variables, the file-command files, and cwd = GITHUB_WORKSPACE.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DIST = path.join(ROOT, 'dist', 'index.js');
/** Preload that removes tool-cache's 10-20 s sleeps between download attempts. */
export const FAST_RETRY = path.join(ROOT, 'test', 'support', 'fast-retry.mjs');
/** Preload that resolves host names under `.test` to 127.0.0.1. */
export const TEST_HOSTS = path.join(ROOT, 'test', 'support', 'test-hosts.mjs');
/** Preload that makes opening tool-cache's download file slow (SLOW_OPEN_MS, SLOW_OPEN_TIMES). */
export const SLOW_OPEN = path.join(ROOT, 'test', 'support', 'slow-open.mjs');

export interface ActionRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  outputs: Record<string, string>;
  summary: string;
  /** The scratch directory holding workspace/, temp/, tool-cache/ and the command files. */
  scratch: string;
  workspace: string;
  runnerTemp: string;
}

export interface RunOptions {
  inputs: Record<string, string>;
  env?: Record<string, string | undefined>;
  /** Extra node arguments before the script, e.g. ['--import', FAST_RETRY]. */
  nodeArgs?: string[];
  /** A command that runs node, e.g. ['sh', '-c', 'ulimit -f 2048; exec "$@"', 'sh']: node and its arguments follow. */
  prefix?: string[];
  /** Prepares the workspace before the run (e.g. an older file at the target). */
  setup?: (workspace: string) => void | Promise<void>;
  /** Called with the child once it has started, e.g. to signal it. */
  onSpawn?: (child: import('node:child_process').ChildProcess, output: { stdout: () => string }) => void;
  timeoutMs?: number;
}

/** The inputs action.yml declares, with their defaults, as the runner passes them. */
export const DEFAULT_INPUTS: Record<string, string> = {
  'job-id': '',
  step: '',
  'checkpoint-type': 'default',
  path: '',
  'api-key': '',
  'base-url': '',
  'upload-artifact': 'false',
  'artifact-name': '',
  'retention-days': '',
  wait: 'false',
  'wait-timeout-minutes': '120',
  extract: 'false',
  'extract-path': '',
  'keep-archive': 'true',
  cache: 'false',
  'dry-run': 'false',
  'verify-contents': 'true',
  connections: '6',
  'stall-timeout': '60',
};

export async function runAction(options: RunOptions): Promise<ActionRun> {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'together-download-e2e-'));
  const workspace = path.join(scratch, 'workspace');
  const runnerTemp = path.join(scratch, 'temp');
  const toolCache = path.join(scratch, 'tool-cache');
  for (const dir of [workspace, runnerTemp, toolCache]) fs.mkdirSync(dir);
  const outputFile = path.join(scratch, 'output');
  const summaryFile = path.join(scratch, 'summary');
  fs.writeFileSync(outputFile, '');
  fs.writeFileSync(summaryFile, '');
  await options.setup?.(workspace);

  const env: Record<string, string> = {};
  // Start from a clean environment: nothing of the developer's or CI's own runner may leak in.
  for (const name of ['PATH', 'HOME', 'SYSTEMROOT', 'TMPDIR', 'LANG']) {
    if (process.env[name] !== undefined) env[name] = process.env[name] as string;
  }
  Object.assign(env, {
    GITHUB_ACTIONS: 'true',
    GITHUB_WORKSPACE: workspace,
    RUNNER_TEMP: runnerTemp,
    RUNNER_TOOL_CACHE: toolCache,
    GITHUB_OUTPUT: outputFile,
    GITHUB_STEP_SUMMARY: summaryFile,
    GITHUB_REPOSITORY: 'octo-org/models',
    GITHUB_RUN_ID: '4242',
  });
  for (const [name, value] of Object.entries({ ...DEFAULT_INPUTS, ...options.inputs })) {
    env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] = value;
  }
  for (const [name, value] of Object.entries(options.env ?? {})) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }

  const [command, ...argv] = [...(options.prefix ?? []), process.execPath, ...(options.nodeArgs ?? []), DIST];
  const child = spawn(command, argv, { cwd: workspace, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  options.onSpawn?.(child, { stdout: () => stdout });
  const timeout = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on('close', (c, s) => resolve([c, s])),
  );
  clearTimeout(timeout);

  return {
    code,
    signal,
    stdout,
    stderr,
    outputs: parseOutputs(fs.readFileSync(outputFile, 'utf8')),
    summary: fs.readFileSync(summaryFile, 'utf8'),
    scratch,
    workspace,
    runnerTemp,
  };
}

/** Parses the heredoc format `core.setOutput` appends to GITHUB_OUTPUT. */
export function parseOutputs(text: string): Record<string, string> {
  const outputs: Record<string, string> = {};
  for (const m of text.matchAll(/^(.+?)<<(ghadelimiter_[0-9a-f-]+)\r?\n([\s\S]*?)\r?\n\2$/gm)) outputs[m[1]] = m[3];
  return outputs;
}

/** The `::error::` message(s) of a failed run. */
export function errorsOf(run: ActionRun): string {
  return run.stdout
    .split('\n')
    .filter((l) => l.startsWith('::error'))
    .join('\n');
}

/** Asserts the secret appears nowhere but on the `::add-mask::` line. */
export function assertNoLeak(run: ActionRun, secret: string): void {
  const lines = run.stdout.split('\n').filter((l) => !l.startsWith('::add-mask::'));
  assert.ok(!lines.some((l) => l.includes(secret)), 'the API key leaked into stdout');
  assert.ok(!run.stderr.includes(secret), 'the API key leaked into stderr');
  assert.ok(!JSON.stringify(run.outputs).includes(secret), 'the API key leaked into the outputs');
  assert.ok(!run.summary.includes(secret), 'the API key leaked into the summary');
}

/**
 * What every run must leave behind, failed or not: no API key in sight, an empty RUNNER_TEMP, no
 * temp file or folder (`.partial`, `.old`, artifact staging) in the workspace, no stack trace.
 */
export function assertCleanRun(run: ActionRun, apiKey: string): void {
  assertNoLeak(run, apiKey);
  assert.deepEqual(listFiles(run.runnerTemp), [], 'RUNNER_TEMP must be left empty');
  const entries = fs.existsSync(run.workspace) ? (fs.readdirSync(run.workspace, { recursive: true }) as string[]) : [];
  const leftovers = entries.filter((e) => /\.(partial|old)$/.test(e) || e.includes('.together-download-artifact-'));
  assert.deepEqual(leftovers, [], 'no temp file or temp folder may be left behind');
  assert.ok(!run.stdout.includes('    at '), 'no stack trace in the log');
}

export function assertSucceeded(run: ActionRun): void {
  assert.equal(run.code, 0, `the action failed:\n${run.stdout}\n${run.stderr}`);
}

/** A failed run: exit code 1, exactly one error line matching every pattern, no outputs. */
export function assertFailed(run: ActionRun, ...patterns: RegExp[]): string {
  assert.equal(run.code, 1, `expected a failure:\n${run.stdout}`);
  const errors = errorsOf(run);
  assert.equal(errors.split('\n').length, 1, `exactly one error line, got:\n${errors}`);
  for (const p of patterns) assert.match(errors, p);
  assert.deepEqual(run.outputs, {}, 'a failed run sets no outputs');
  return errors;
}

/** Every file below `dir`, relative, hidden ones included. */
export function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
}

export function removeScratch(run: ActionRun): void {
  fs.rmSync(run.scratch, { recursive: true, force: true });
}

export interface ActionRunner {
  /** Runs the action with the file's defaults under `inputs`, and checks what every run must satisfy. */
  act(inputs: Record<string, string>, options?: Omit<RunOptions, 'inputs'>): Promise<ActionRun>;
  /** Removes the scratch folders of every run so far. */
  removeRuns(): void;
}

/**
 * One test file's way of running the action: `defaults` (read at each run, so it may name servers
 * started later) gives the inputs and environment every run starts from; each run then passes
 * `assertCleanRun` and `check`, if given.
 */
export function actionRunner(
  apiKey: string,
  defaults: () => Pick<RunOptions, 'inputs' | 'env'>,
  check?: (run: ActionRun) => void,
): ActionRunner {
  const runs: ActionRun[] = [];
  return {
    async act(inputs, options = {}) {
      const base = defaults();
      const run = await runAction({ env: base.env, ...options, inputs: { ...base.inputs, ...inputs } });
      runs.push(run);
      assertCleanRun(run, apiKey);
      check?.(run);
      return run;
    },
    removeRuns() {
      for (const run of runs.splice(0)) removeScratch(run);
    },
  };
}
