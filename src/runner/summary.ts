import * as core from '@actions/core';
import { formatBytes, formatDuration, formatSpeed } from '../format.js';
import { formatMetric, type NearestMetrics } from '../together/metrics.js';

export interface SummaryFacts {
  jobId: string;
  model?: string;
  checkpointType: string;
  step?: number;
  file: string;
  /** Unknown only in a dry run whose server did not say. */
  size?: number;
  /** Not known in a dry run. */
  sha256?: string;
  /** Absent in a dry run. */
  elapsedMs?: number;
  /** Where the archive came from, when the tool cache was asked. */
  source?: 'download' | 'cache';
  /** Nothing was downloaded: the summary shows the plan. */
  dryRun?: boolean;
  /** The folder a dry run would extract into. */
  extractDir?: string;
  extracted?: {
    dir: string;
    modelDir: string;
    files: number;
    bytes: number;
    /** The largest files, biggest first, with paths inside `dir`. */
    largest: ReadonlyArray<{ name: string; size: number }>;
  };
  /** What the content check found; `false` when `verify-contents` turned it off. */
  contents?:
    | false
    | {
        /** `adapter`, `merged` or `model`. */
        kind: string;
        baseModel?: string;
        loraRank?: number;
        architecture?: string;
        weightFiles: number;
        safetensorsFiles: number;
        tensors: number;
      };
  /** The archive was removed after extracting it (`keep-archive: false`). */
  archiveRemoved?: boolean;
  artifact?: { name: string; url: string };
  /** The training metrics logged nearest the fetched step, when Together has any. */
  metrics?: NearestMetrics;
}

/**
 * Summary cells are raw HTML: anything that came from a server, an archive or a user is escaped,
 * control and separator characters included. A raw newline could end the HTML block (GitHub
 * renders what follows a blank line as Markdown), so it becomes a character reference too.
 */
export function escapeHtml(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what must not pass raw
  return text.replace(/[&<>"'`|\\[\]()*_!\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `&#${c.charCodeAt(0)};`);
}

const code = (text: string) => `<code>${escapeHtml(text)}</code>`;
const bytes = (n: number) => `${formatBytes(n)} (${n} bytes)`;

export function summaryRows(facts: SummaryFacts): Array<[string, string]> {
  const rows: Array<[string, string]> = [
    ['Job', code(facts.jobId)],
    ['Model', facts.model ? code(facts.model) : '–'],
    ['Checkpoint type', escapeHtml(facts.checkpointType)],
    ['Step', facts.step === undefined ? 'final' : String(facts.step)],
    ['File', code(facts.file)],
    ['Size', facts.size === undefined ? 'unknown' : bytes(facts.size)],
  ];
  if (facts.sha256 !== undefined) rows.push(['SHA-256', code(facts.sha256)]);
  if (facts.source !== undefined)
    rows.push(['Source', facts.source === 'cache' ? 'runner tool cache (nothing downloaded)' : 'Together (not in the tool cache yet)']);
  if (facts.elapsedMs !== undefined) {
    const seconds = facts.elapsedMs / 1000;
    rows.push(['Time', formatDuration(seconds)]);
    if (facts.source !== 'cache') rows.push(['Speed', seconds > 0 && facts.size !== undefined ? formatSpeed(facts.size / seconds) : '–']);
  }
  if (facts.contents === false) rows.push(['Contents', 'not checked (<code>verify-contents: false</code>)']);
  else if (facts.contents) rows.push(...contentRows(facts.contents));
  if (facts.extractDir !== undefined) rows.push(['Extract into', code(facts.extractDir)]);
  if (facts.extracted) {
    rows.push(['Extracted to', code(facts.extracted.dir)]);
    rows.push(['Model folder', code(facts.extracted.modelDir)]);
    rows.push(['Files', `${facts.extracted.files} files, ${bytes(facts.extracted.bytes)}`]);
  }
  if (facts.archiveRemoved) rows.push(['Archive', 'removed after extraction (<code>keep-archive: false</code>)']);
  for (const [label, logged] of [
    ['Training loss', facts.metrics?.trainLoss],
    ['Evaluation loss', facts.metrics?.evalLoss],
  ] as const) {
    if (logged) rows.push([label, `${escapeHtml(formatMetric(logged.value))} (logged at step ${logged.step})`]);
  }
  if (facts.artifact) {
    rows.push(['Artifact', `<a href="${escapeHtml(facts.artifact.url)}">${escapeHtml(facts.artifact.name)}</a>`]);
  }
  return rows;
}

const CONTENT_KINDS: Record<string, string> = { adapter: 'LoRA adapter', merged: 'merged model', model: 'full model' };

function contentRows(contents: Exclude<NonNullable<SummaryFacts['contents']>, false>): Array<[string, string]> {
  const kind = CONTENT_KINDS[contents.kind] ?? escapeHtml(contents.kind);
  const detail = [
    contents.loraRank === undefined ? undefined : `rank ${contents.loraRank}`,
    contents.architecture === undefined ? undefined : code(contents.architecture),
    `${contents.weightFiles} weight file${contents.weightFiles === 1 ? '' : 's'}`,
  ].filter((d) => d !== undefined);
  const whole = `${contents.safetensorsFiles} safetensors file${contents.safetensorsFiles === 1 ? '' : 's'} whole (${contents.tensors} tensors)`;
  const rows: Array<[string, string]> = [['Contents', `${kind} (${detail.join(', ')}); ${whole}`]];
  if (contents.baseModel !== undefined) rows.push(['Base model', code(contents.baseModel)]);
  return rows;
}

export async function writeSummary(facts: SummaryFacts): Promise<void> {
  if (!process.env.GITHUB_STEP_SUMMARY) return; // Not on a runner: nowhere to write it.
  core.summary.addHeading(facts.dryRun ? 'Together fine-tuning download (dry run)' : 'Together fine-tuning download', 3);
  if (facts.dryRun) core.summary.addRaw('<p><strong>dry-run</strong>: this is the plan; nothing was downloaded or written.</p>', true);
  core.summary.addTable([
    [
      { data: 'Field', header: true },
      { data: 'Value', header: true },
    ],
    ...summaryRows(facts),
  ]);
  if (facts.extracted && facts.extracted.largest.length > 0) {
    const { largest, files } = facts.extracted;
    core.summary.addHeading(largest.length < files ? `Largest files (${largest.length} of ${files})` : 'Files', 4).addTable([
      [
        { data: 'File', header: true },
        { data: 'Size', header: true },
      ],
      ...largest.map((f) => [code(f.name), bytes(f.size)]),
    ]);
  }
  await core.summary.write();
}
