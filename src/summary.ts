import * as core from '@actions/core';
import { formatBytes, formatDuration, formatSpeed } from './format.js';

export interface SummaryFacts {
  jobId: string;
  model?: string;
  checkpointType: string;
  step?: number;
  file: string;
  size: number;
  sha256: string;
  elapsedMs: number;
  artifact?: { name: string; url: string };
}

/** Summary cells are raw HTML: anything that came from a server or a user must be escaped. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function summaryRows(facts: SummaryFacts): Array<[string, string]> {
  const seconds = facts.elapsedMs / 1000;
  const code = (text: string) => `<code>${escapeHtml(text)}</code>`;
  const rows: Array<[string, string]> = [
    ['Job', code(facts.jobId)],
    ['Model', facts.model ? code(facts.model) : '–'],
    ['Checkpoint type', escapeHtml(facts.checkpointType)],
    ['Step', facts.step === undefined ? 'final' : String(facts.step)],
    ['File', code(facts.file)],
    ['Size', `${formatBytes(facts.size)} (${facts.size} bytes)`],
    ['SHA-256', code(facts.sha256)],
    ['Time', formatDuration(seconds)],
    ['Speed', seconds > 0 ? formatSpeed(facts.size / seconds) : '–'],
  ];
  if (facts.artifact) {
    rows.push(['Artifact', `<a href="${escapeHtml(facts.artifact.url)}">${escapeHtml(facts.artifact.name)}</a>`]);
  }
  return rows;
}

export async function writeSummary(facts: SummaryFacts): Promise<void> {
  if (!process.env.GITHUB_STEP_SUMMARY) return; // Not on a runner: nowhere to write it.
  await core.summary
    .addHeading('Together fine-tuning download', 3)
    .addTable([
      [
        { data: 'Field', header: true },
        { data: 'Value', header: true },
      ],
      ...summaryRows(facts),
    ])
    .write();
}
