import * as path from 'node:path';
import * as core from '@actions/core';
import { checkArtifactUpload } from './artifact.js';
import { type CheckpointPlan, planCheckpoint, requireCompleted, requireStep, trainingKind } from './checkpoint.js';
import { resolveDestination } from './destination.js';
import { formatBytes } from './format.js';
import type { Inputs } from './inputs.js';
import { defaultFileName } from './naming.js';
import { type ProbeResult, downloadUrl, probeArchive } from './probe.js';
import type { Job, TogetherApi } from './together.js';

export interface DownloadPlan {
  job: Job;
  step?: number;
  checkpoint: CheckpointPlan;
  probe: ProbeResult;
  /** Absolute path the archive ends up at. */
  target: string;
  artifactName?: string;
}

/** Looks the job up and checks that what was asked for exists: a listed step, or a finished job. */
export async function lookUpJob(api: TogetherApi, inputs: Inputs): Promise<{ job: Job; checkpoint: CheckpointPlan }> {
  const job = await api.getJob(inputs.jobId);
  const kind = trainingKind(job.trainingType);
  core.info(`Job ${job.id}: status ${job.status}, ${kind === 'lora' ? 'LoRA' : 'full'} fine-tuning of ${job.model ?? 'an unnamed model'}`);
  if (job.modelOutputName) core.info(`Output model: ${job.modelOutputName}`);
  const checkpoint = planCheckpoint(kind, inputs.checkpointType);
  if (inputs.step === undefined) {
    requireCompleted(job);
  } else {
    const checkpoints = await api.listCheckpoints(inputs.jobId);
    core.info(`Checkpoints saved: ${checkpoints.length === 0 ? 'none' : [...new Set(checkpoints.map((c) => c.step))].join(', ')}`);
    requireStep(inputs.jobId, inputs.step, checkpoints);
  }
  return { job, checkpoint };
}

/** Probes the archive and decides where it goes; prints the plan before anything is written. */
export async function planDownload(inputs: Inputs, job: Job, checkpoint: CheckpointPlan): Promise<DownloadPlan> {
  const url = downloadUrl(inputs.baseUrl, { jobId: inputs.jobId, step: inputs.step, checkpoint: checkpoint.query });
  const context = { what: 'probing the download', jobId: inputs.jobId, step: inputs.step };
  const probe = await probeArchive(url, inputs.apiKey, context);
  const destination = resolveDestination(inputs.path, inputs.workspace);
  const name =
    destination.name ??
    defaultFileName({ modelOutputName: job.modelOutputName, jobId: inputs.jobId, step: inputs.step, fetched: checkpoint.fetched, format: probe.format });
  const target = path.join(destination.dir, name);
  const plan: DownloadPlan = { job, step: inputs.step, checkpoint, probe, target };
  if (inputs.uploadArtifact) {
    plan.artifactName = inputs.artifactName ?? name;
    checkArtifactUpload(plan.artifactName, inputs.artifactName !== undefined);
  }
  logPlan(url, plan);
  return plan;
}

function logPlan(url: string, plan: DownloadPlan): void {
  const { probe } = plan;
  core.info(`Checkpoint: ${plan.checkpoint.fetched}${plan.step === undefined ? ', final model' : `, step ${plan.step}`}`);
  core.info(`Source: ${url}`);
  core.info(`Size: ${probe.total === undefined ? 'unknown (the server did not say)' : `${formatBytes(probe.total)} (${probe.total} bytes)`}`);
  core.info(`Format: ${probe.format === 'zstd' ? 'zstd-compressed tar' : 'gzip-compressed tar'}`);
  core.info(`Range requests: ${probe.rangesHonoured ? 'honoured' : 'not honoured'}`);
  core.info(`Destination: ${plan.target}`);
  if (plan.artifactName) core.info(`Artifact: ${plan.artifactName}`);
}
