import * as fs from 'node:fs';
import * as path from 'node:path';
import * as core from '@actions/core';
import { type UploadedArtifact, uploadArtifact } from './artifact.js';
import { prepareDirectory, requireFreeSpace, tempPathFor, trackTempFile } from './destination.js';
import { type DownloadResult, downloadWithToolCache } from './download.js';
import { messageOf, redact } from './errors.js';
import { formatBytes } from './format.js';
import { readInputs } from './inputs.js';
import { type DownloadPlan, lookUpJob, planDownload } from './plan.js';
import { writeSummary } from './summary.js';
import { TogetherApi } from './together.js';
import { type Verified, verifyArchive } from './verify.js';

/** One download, start to end: inputs, job, plan, download, verify, outputs, artifact, summary. */
export async function run(): Promise<void> {
  const secrets: string[] = [];
  try {
    const inputs = readInputs();
    secrets.push(inputs.apiKey);
    const api = new TogetherApi(inputs.baseUrl, inputs.apiKey);

    const { job, checkpoint } = await core.group('Job', () => lookUpJob(api, inputs));
    const plan = await core.group('Plan', () => planDownload(inputs, job, checkpoint));
    const { download, verified } = await fetchArchive(plan, inputs.apiKey);

    setOutputs(plan, verified);
    const artifact = plan.artifactName
      ? await core.group('Artifact', () => uploadArtifact(plan.target, plan.artifactName as string, verified.sha256, inputs.retentionDays))
      : undefined;
    if (artifact) setArtifactOutputs(artifact);

    await writeSummary({
      jobId: job.id,
      model: job.modelOutputName ?? job.model,
      checkpointType: plan.checkpoint.fetched,
      step: plan.step,
      file: plan.target,
      size: verified.size,
      sha256: verified.sha256,
      elapsedMs: download.elapsedMs,
      artifact,
    });
  } catch (error) {
    core.setFailed(redact(messageOf(error), secrets));
  }
}

/**
 * Downloads into a temp file beside the target and moves it into place only once verified, so a
 * failure leaves neither a partial file nor a changed target behind.
 */
async function fetchArchive(plan: DownloadPlan, apiKey: string): Promise<{ download: DownloadResult; verified: Verified }> {
  const directory = await prepareDirectory(path.dirname(plan.target));
  const temp = tempPathFor(plan.target);
  const removeTemp = trackTempFile(temp);
  let placed = false;
  try {
    await requireFreeSpace(path.dirname(plan.target), plan.probe.total);
    const context = { what: 'downloading the archive', jobId: plan.job.id, step: plan.step };
    const download = await core.group('Download', () => downloadWithToolCache(plan.probe, apiKey, temp, context));
    const verified = await core.group('Verify', async () => {
      const result = await verifyArchive(temp, plan.probe);
      core.info(`Size ${formatBytes(result.size)} (${result.size} bytes) as announced; sha256 ${result.sha256}`);
      await fs.promises.rename(temp, plan.target);
      placed = true;
      core.info(`Saved ${plan.target}`);
      return result;
    });
    return { download, verified };
  } finally {
    await removeTemp();
    if (!placed) await directory.removeIfCreated();
  }
}

function setOutputs(plan: DownloadPlan, verified: Verified): void {
  const outputs: Record<string, string> = {
    path: plan.target,
    size: String(verified.size),
    sha256: verified.sha256,
    'checkpoint-type': plan.checkpoint.fetched,
    step: plan.step === undefined ? '' : String(plan.step),
  };
  core.startGroup('Outputs');
  for (const [name, value] of Object.entries(outputs)) {
    core.setOutput(name, value);
    core.info(`${name}: ${value}`);
  }
  core.endGroup();
}

function setArtifactOutputs(artifact: UploadedArtifact): void {
  core.setOutput('artifact-id', String(artifact.id));
  core.setOutput('artifact-url', artifact.url);
  core.setOutput('artifact-digest', artifact.digest);
  core.info(`Artifact ${artifact.name} (id ${artifact.id}): ${artifact.url}`);
}
