import * as fs from 'node:fs';
import * as path from 'node:path';
import * as core from '@actions/core';
import { type Asked, ContentsError, type ContentsReport, checkContents, describeContents } from './archive/contents.js';
import { type Extracted, extractArchive, largestFiles } from './archive/extract.js';
import type { ArchiveFormat } from './archive/format.js';
import { ActionError, messageOf } from './errors.js';
import { formatBytes, formatDuration } from './format.js';
import { type Inputs, readInputs } from './inputs.js';
import * as log from './log.js';
import { type DownloadPlan, lookUpJob, type Plan, planDownload } from './plan.js';
import type { UploadedArtifact } from './runner/artifact.js';
import { requireArtifactService } from './runner/artifact-service.js';
import { type CachedArchive, type CacheKey, findCachedArchive, restoreFromCache, storeInCache } from './runner/cache.js';
import { type SummaryFacts, writeSummary } from './runner/summary.js';
import { TogetherApi } from './together/api.js';
import { checkpointOutputs } from './together/checkpoint.js';
import { readTrainingMetrics } from './together/metrics.js';
import { waitForJob } from './together/wait.js';
import { prepareDirectory, requireFreeSpace, tempPathFor, trackTempFile } from './transfer/destination.js';
import { type DownloadResult, type DownloadSettings, downloadArchive } from './transfer/download.js';
import { FileInUseError, renameWithRetry } from './transfer/rename.js';
import { type Verified, verifyArchive } from './transfer/verify.js';

/**
 * One download, start to end: inputs, (wait,) job, (cache,) plan, download or the cache, verify,
 * (extract,) outputs, artifact, summary.
 */
export async function run(): Promise<void> {
  try {
    const inputs = readInputs();
    if (inputs.uploadArtifact) requireArtifactService();
    const api = new TogetherApi(inputs.baseUrl, inputs.apiKey);

    const seen = inputs.wait
      ? await log.group('Wait', () =>
          waitForJob(api, { jobId: inputs.jobId, step: inputs.step, timeoutMs: inputs.waitTimeoutMinutes * 60_000 }),
        )
      : undefined;
    const { job, checkpoint, step, checkpoints } = await log.group('Job', () => lookUpJob(api, inputs, seen));
    const jobOutputs = checkpointOutputs(checkpoints);
    const cacheKey = { jobId: inputs.jobId, step, checkpointType: checkpoint.fetched };
    const contents = new ContentCheck(inputs, { fetched: checkpoint.fetched, step });
    const cached = inputs.cache ? await log.group('Cache', () => lookInCache(cacheKey, inputs, contents)) : undefined;
    const plan = await log.group('Plan', () => planDownload({ ...inputs, step }, job, checkpoint, cached));
    if (inputs.dryRun) return await reportDryRun(plan, inputs, jobOutputs, api);

    const { download, verified } =
      plan.source === 'cache'
        ? await log.group('Restore', () => restoreFromCache(plan.cached, plan.target))
        : await fetchArchive(plan, downloadSettings(inputs), contents.inspect);

    if (inputs.cache && plan.source === 'download') {
      await log.group('Cache', () => storeInCache(cacheKey, plan.target, { format: plan.format, ...verified }));
    }
    const extracted = plan.extractDir
      ? await log.group('Extract', () => extractArchive(plan.target, plan.format, plan.extractDir as string))
      : undefined;

    setOutputs(plan, verified, {
      ...jobOutputs,
      'cache-hit': cacheHit(inputs, plan),
      'model-dir': extracted?.modelDir,
      'base-model': contents.report?.baseModel,
      'lora-rank': contents.report?.loraRank?.toString(),
    });
    const artifact = plan.artifactName
      ? await log.group('Artifact', () => upload(plan.target, plan.artifactName as string, verified.sha256, inputs.retentionDays))
      : undefined;
    if (artifact) setArtifactOutputs(artifact);
    const archiveRemoved = extracted !== undefined && !inputs.keepArchive && (await removeArchive(plan.target));

    await writeSummary({
      ...planFacts(plan, inputs),
      metrics: await readTrainingMetrics(api, inputs.jobId, plan.step),
      size: verified.size,
      sha256: verified.sha256,
      elapsedMs: download.elapsedMs,
      contents: inputs.verifyContents ? contents.report && contentFacts(contents.report) : false,
      extracted: extracted && extractionFacts(extracted),
      archiveRemoved,
      artifact,
    });
  } catch (error) {
    log.fail(messageOf(error));
  }
}

/**
 * The content check (`verify-contents`): what the archive holds against what was asked for, every
 * safetensors file whole. `inspect` reads the compressed archive as it is handed over, in the same
 * pass as the download or the cache's own check (a dry run reads none); a mismatch throws.
 */
class ContentCheck {
  report?: ContentsReport;
  readonly inspect?: (archive: AsyncIterable<Uint8Array>, format: ArchiveFormat) => Promise<void>;

  constructor(inputs: Inputs, asked: Asked) {
    if (inputs.verifyContents && !inputs.dryRun) this.inspect = (archive, format) => this.check(archive, format, asked);
  }

  private async check(archive: AsyncIterable<Uint8Array>, format: ArchiveFormat, asked: Asked): Promise<void> {
    const started = Date.now();
    const report = await checkContents(archive, format, asked);
    log.info(`${describeContents(report)}; checked in ${formatDuration((Date.now() - started) / 1000)}`);
    for (const note of report.notes) log.warning(`From the archive: ${note}.`);
    this.report = report;
  }
}

/** A verified entry of the runner's tool cache, checked as it is read. */
async function lookInCache(key: CacheKey, inputs: Inputs, contents: ContentCheck): Promise<CachedArchive | undefined> {
  try {
    return await findCachedArchive(key, { verify: !inputs.dryRun, inspect: contents.inspect });
  } catch (error) {
    if (!(error instanceof ContentsError)) throw error;
    throw new ActionError(
      `${error.message} This archive came from the runner's tool cache, stored there without the check; nothing was written.`,
    );
  }
}

function downloadSettings(inputs: Inputs): DownloadSettings {
  return {
    apiKey: inputs.apiKey,
    apiOrigin: new URL(inputs.baseUrl).origin,
    connections: inputs.connections,
    stallTimeoutMs: inputs.stallTimeoutSeconds * 1000,
  };
}

/**
 * Downloads into a temp file beside the target and moves it into place only once verified (and its
 * contents checked, when `inspect` is given), so a failure leaves neither a partial file nor a
 * changed target behind.
 */
async function fetchArchive(
  plan: DownloadPlan,
  settings: DownloadSettings,
  inspect?: (archive: AsyncIterable<Uint8Array>, format: ArchiveFormat) => Promise<void>,
): Promise<{ download: DownloadResult; verified: Verified }> {
  const directory = await prepareDirectory(path.dirname(plan.target));
  const temp = tempPathFor(plan.target);
  const removeTemp = trackTempFile(temp);
  let placed = false;
  try {
    await requireFreeSpace(path.dirname(plan.target), plan.probe.total);
    const context = { what: 'downloading the archive', jobId: plan.job.id, step: plan.step };
    // The content check reads the archive's bytes as they arrive, in the download's own pass.
    const follow = inspect
      ? (archive: AsyncIterable<Uint8Array>) =>
          inspect(archive, plan.format).catch((error: unknown) => {
            throw error instanceof ActionError ? new ActionError(`${error.message} Nothing was saved.`, { cause: error }) : error;
          })
      : undefined;
    const download = await log.group('Download', () => downloadArchive(plan.probe, settings, temp, context, follow));
    const verified = await log.group('Verify', async () => {
      const result = await verifyArchive(temp, plan.probe, download.sha256);
      log.info(`Size ${formatBytes(result.size)} (${result.size} bytes) as announced; sha256 ${result.sha256}`);
      await placeVerified(temp, plan.target, result.sha256);
      placed = true;
      log.info(`Saved ${plan.target}`);
      return result;
    });
    return { download, verified };
  } finally {
    await removeTemp();
    if (!placed) await directory.removeIfCreated();
  }
}

/**
 * Moves the verified download over the target. When something holds the target open for longer
 * than the rename waits (Windows), the verified file is kept beside it rather than thrown away.
 */
async function placeVerified(temp: string, target: string, sha256: string): Promise<void> {
  try {
    await renameWithRetry(temp, target);
  } catch (error) {
    if (!(error instanceof FileInUseError)) throw error;
    const kept = `${target}.verified`;
    await renameWithRetry(temp, kept).catch(() => {
      throw error;
    });
    throw new ActionError(
      `${error.message} The verified download (sha256 ${sha256}) is kept at ${kept}: move it over ${target} once nothing holds that file, or run the step again.`,
    );
  }
}

/** Sets the outputs that have a value; `extra` holds those of the optional features. */
function setOutputs(plan: Plan, verified: Partial<Verified>, extra: Record<string, string | undefined> = {}): void {
  const outputs: Record<string, string | undefined> = {
    path: plan.target,
    size: verified.size === undefined ? undefined : String(verified.size),
    sha256: verified.sha256,
    'checkpoint-type': plan.checkpoint.fetched,
    step: plan.step === undefined ? '' : String(plan.step),
    ...extra,
  };
  log.startGroup('Outputs');
  for (const [name, value] of Object.entries(outputs)) {
    if (value === undefined) continue;
    setOutput(name, value);
  }
  log.endGroup();
}

/**
 * Sets an output and logs it. Some outputs hold text that came from a server or an archive; none
 * may carry a raw control character into a later step's `${{ }}` expression.
 */
function setOutput(name: string, value: string): void {
  core.setOutput(name, log.escapeControls(value));
  log.info(`${name}: ${value}`);
}

/** The artifact client is loaded only when needed: it is most of the action's memory. */
async function upload(file: string, name: string, sha256: string, retentionDays?: number): Promise<UploadedArtifact> {
  const { uploadArtifact } = await import('./runner/artifact.js');
  return uploadArtifact(file, name, sha256, retentionDays);
}

function setArtifactOutputs(artifact: UploadedArtifact): void {
  for (const [name, value] of [
    ['artifact-id', String(artifact.id)],
    ['artifact-url', artifact.url],
    ['artifact-digest', artifact.digest],
  ] as const) {
    core.setOutput(name, log.escapeControls(value));
  }
  log.info(`Artifact ${artifact.name} (id ${artifact.id}): ${artifact.url}`);
}

/** `cache-hit` is `true` or `false` with `cache: true`, and not set without it. */
function cacheHit(inputs: Inputs, plan: Plan): string | undefined {
  return inputs.cache ? String(plan.source === 'cache') : undefined;
}

/** A dry run ends after the plan: it sets the outputs known without the archive and writes the plan as the summary. */
async function reportDryRun(plan: Plan, inputs: Inputs, jobOutputs: Record<string, string>, api: TogetherApi): Promise<void> {
  log.info('dry-run: the plan above is complete; nothing was downloaded or written.');
  setOutputs(plan, { size: plan.size }, { ...jobOutputs, 'cache-hit': cacheHit(inputs, plan) });
  const metrics = await readTrainingMetrics(api, inputs.jobId, plan.step);
  await writeSummary({ ...planFacts(plan, inputs), size: plan.size, dryRun: true, extractDir: plan.extractDir, metrics });
}

function planFacts(plan: Plan, inputs: Inputs): Pick<SummaryFacts, 'jobId' | 'model' | 'checkpointType' | 'step' | 'file' | 'source'> {
  return {
    jobId: plan.job.id,
    model: plan.job.modelOutputName ?? plan.job.model,
    checkpointType: plan.checkpoint.fetched,
    step: plan.step,
    file: plan.target,
    source: inputs.cache ? plan.source : undefined,
  };
}

function contentFacts(report: ContentsReport): Exclude<NonNullable<SummaryFacts['contents']>, false> {
  return {
    kind: report.kind,
    baseModel: report.baseModel,
    loraRank: report.loraRank,
    architecture: report.architecture,
    weightFiles: report.weights.length,
    safetensorsFiles: report.safetensors.files,
    tensors: report.safetensors.tensors,
  };
}

function extractionFacts(extracted: Extracted): NonNullable<SummaryFacts['extracted']> {
  const { listing } = extracted;
  return {
    dir: extracted.dir,
    modelDir: extracted.modelDir,
    files: listing.files.length,
    bytes: listing.totalBytes,
    largest: largestFiles(listing.files),
  };
}

/** `keep-archive: false`: the archive goes once it is unpacked (and uploaded, when asked). */
async function removeArchive(file: string): Promise<true> {
  await fs.promises.rm(file, { force: true });
  log.info(`Removed the archive ${file} (keep-archive: false)`);
  return true;
}
