import type { FakeJob } from './fake-together.js';

export const SAMPLE_JOB_ID = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';
export const SAMPLE_MODEL = 'meta-llama/Meta-Llama-3.1-8B-Instruct-Reference';
export const SAMPLE_OUTPUT_NAME = 'user@example.com/Meta-Llama-3.1-8B-Instruct-Reference-my_suffix-abc123';
/** The default file name's stem for SAMPLE_OUTPUT_NAME, as the README documents it. */
export const SAMPLE_SLUG = 'user@example.com--meta-llama-3.1-8b-instruct-reference-my-suffix-abc123';
export const LORA_TRAINING: NonNullable<FakeJob['training_type']> = {
  type: 'Lora',
  lora_r: 8,
  lora_alpha: 16,
  lora_dropout: 0.05,
  lora_trainable_modules: 'all-linear',
};

/** A finished LoRA job of the sample model; the scenario gives its checkpoints and archives. */
export function loraJob(scenario: Pick<FakeJob, 'archives'> & Partial<FakeJob>): FakeJob {
  return {
    id: SAMPLE_JOB_ID,
    status: 'completed',
    model: SAMPLE_MODEL,
    model_output_name: SAMPLE_OUTPUT_NAME,
    training_type: LORA_TRAINING,
    ...scenario,
  };
}

/** The demo's job: `adapter` as its adapter, its merged model and its step-10 checkpoint. */
export function sampleLoraJob(adapter: Buffer): FakeJob {
  return loraJob({
    checkpoints: [
      { step: 10, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
      { step: 20, checkpoint_type: 'Final Adapter', checkpoint: 'adapter' },
    ],
    archives: { adapter, 'adapter@10': adapter, merged: adapter },
  });
}
