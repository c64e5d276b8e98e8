import type { FakeJob } from './fake-together.js';

export const SAMPLE_JOB_ID = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';

/** A finished LoRA job serving `adapter` as its adapter, its merged model and its step-10 checkpoint. */
export function sampleLoraJob(adapter: Buffer): FakeJob {
  return {
    id: SAMPLE_JOB_ID,
    status: 'completed',
    model: 'meta-llama/Meta-Llama-3.1-8B-Instruct-Reference',
    model_output_name: 'user@example.com/Meta-Llama-3.1-8B-Instruct-Reference-my_suffix-abc123',
    training_type: { type: 'Lora', lora_r: 8, lora_alpha: 16, lora_dropout: 0.05, lora_trainable_modules: 'all-linear' },
    checkpoints: [
      { step: 10, checkpoint_type: 'Intermediate', checkpoint: 'adapter' },
      { step: 20, checkpoint_type: 'Final Adapter', checkpoint: 'adapter' },
    ],
    archives: { adapter, 'adapter@10': adapter, merged: adapter },
  };
}
