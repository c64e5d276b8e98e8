import * as path from 'node:path';
import { resolveExtractDir } from './archive/extract.js';
import type { ArchiveFormat } from './archive/format.js';
import { defaultFileName } from './archive/naming.js';
import { formatBytes } from './format.js';
import type { Inputs } from './inputs.js';
import * as log from './log.js';
import { requireUsableFileName } from './runner/artifact-service.js';
import type { CachedArchive } from './runner/cache.js';
import type { Checkpoint, Job, TogetherApi } from './together/api.js';
import { type CheckpointPlan, planCheckpoint, requireCompleted, requireStep, resolveStep, trainingKind } from './together/checkpoint.js';
import type { Seen } from './together/wait.js';
import { requireReplaceable, resolveDestination } from './transfer/destination.js';
import { downloadUrl, type ProbeResult, probeArchive } from './transfer/probe.js';

interface PlanBase {
  job: Job;
  step?: number;
  checkpoint: CheckpointPlan;
  /** Absolute path the archive ends up at. */
  target: string;
  format: ArchiveFormat;
  /** The archive's size in bytes, when known before downloading. */
  size?: number;
  /** The folder to unpack into, with `extract: true`. */
  extractDir?: string;
  artifactName?: string;
}

/** The archive comes from Together. */
export interface DownloadPlan extends PlanBase {
  source: 'download';
  probe: ProbeResult;
}

/** The archive is already in the runner's tool cache. */
export interface CachedPlan extends PlanBase {
  source: 'cache';
  cached: CachedArchive;
}

export type Plan = DownloadPlan | CachedPlan;

/** The job as looked up: what will be fetched, at which step (`latest` resolved), and every saved checkpoint. */
export interface LookedUp {
  job: Job;
  checkpoint: CheckpointPlan;
  step?: number;
  checkpoints: Checkpoint[];
}

/**
 * Looks the job up (or takes what the wait saw) and checks that what was asked for exists: a
 * listed step, or a finished job. Lists the checkpoints either way, for the outputs.
 */
export async function lookUpJob(api: TogetherApi, inputs: Inputs, seen?: Seen): Promise<LookedUp> {
  const job = seen?.job ?? (await api.getJob(inputs.jobId));
  const kind = trainingKind(job.trainingType);
  log.info(`Job ${job.id}: status ${job.status}, ${kind === 'lora' ? 'LoRA' : 'full'} fine-tuning of ${job.model ?? 'an unnamed model'}`);
  if (job.modelOutputName) log.info(`Output model: ${job.modelOutputName}`);
  const checkpoint = planCheckpoint(kind, inputs.checkpointType);
  if (inputs.step === undefined) requireCompleted(job);
  const checkpoints = seen?.checkpoints ?? (await api.listCheckpoints(inputs.jobId));
  log.info(
    `Checkpoints saved: ${checkpoints.length === 0 ? 'none' : [...new Set(checkpoints.map((c) => c.step))].sort((a, b) => a - b).join(', ')}`,
  );
  const step = resolveStep(inputs.jobId, inputs.step, job.status, checkpoints);
  if (inputs.step === 'latest') log.info(`step: latest is step ${step}`);
  if (step !== undefined) requireStep(inputs.jobId, step, checkpoints);
  return { job, checkpoint, step, checkpoints };
}

/**
 * Probes the archive (unless the tool cache has it) and decides where it goes, and where it is
 * unpacked; prints the plan before anything is written.
 */
export async function planDownload(
  inputs: Inputs & { step?: number },
  job: Job,
  checkpoint: CheckpointPlan,
  cached?: CachedArchive,
): Promise<Plan> {
  const url = downloadUrl(inputs.baseUrl, { jobId: inputs.jobId, step: inputs.step, checkpoint: checkpoint.query });
  const context = { what: 'probing the download', jobId: inputs.jobId, step: inputs.step };
  const origin = cached
    ? { source: 'cache' as const, cached, format: cached.meta.format, size: cached.meta.size }
    : await probeArchive(url, inputs.apiKey, context).then((probe) => ({
        source: 'download' as const,
        probe,
        format: probe.format,
        size: probe.total,
      }));
  const destination = resolveDestination(inputs.path, inputs.workspace);
  const name =
    destination.name ??
    defaultFileName({
      modelOutputName: job.modelOutputName,
      jobId: inputs.jobId,
      step: inputs.step,
      fetched: checkpoint.fetched,
      format: origin.format,
    });
  const target = path.join(destination.dir, name);
  // A name chosen by `path` was checked with the inputs; a default one can be checked only now.
  if (destination.name === undefined) requireReplaceable(target);
  const plan: Plan = { job, step: inputs.step, checkpoint, target, ...origin };
  if (inputs.extract) plan.extractDir = resolveExtractDir(inputs.extractPath, target, inputs.workspace);
  if (inputs.uploadArtifact) {
    plan.artifactName = inputs.artifactName ?? name;
    if (inputs.artifactName === undefined) requireUsableFileName(name);
  }
  logPlan(url, plan, inputs);
  return plan;
}

function logPlan(url: string, plan: Plan, inputs: Pick<Inputs, 'cache' | 'keepArchive'>): void {
  log.info(`Checkpoint: ${plan.checkpoint.fetched}${plan.step === undefined ? ', final model' : `, step ${plan.step}`}`);
  log.info(plan.source === 'cache' ? `Source: the runner's tool cache, ${plan.cached.archive} (nothing to download)` : `Source: ${url}`);
  log.info(`Size: ${plan.size === undefined ? 'unknown (the server did not say)' : `${formatBytes(plan.size)} (${plan.size} bytes)`}`);
  log.info(`Format: ${plan.format === 'zstd' ? 'zstd-compressed tar' : 'gzip-compressed tar'}`);
  if (plan.source === 'download') log.info(`Range requests: ${plan.probe.rangesHonoured ? 'honoured' : 'not honoured'}`);
  log.info(`Destination: ${plan.target}`);
  if (plan.source === 'download' && inputs.cache && process.env.RUNNER_TOOL_CACHE)
    log.info('Tool cache: not there yet; the archive is stored in it after the download');
  if (plan.extractDir) log.info(`Extract into: ${plan.extractDir}${inputs.keepArchive ? '' : ', then remove the archive'}`);
  if (plan.artifactName) log.info(`Artifact: ${plan.artifactName}`);
}
