import type { RawInputs } from '../../src/inputs.js';
import { SAMPLE_JOB_ID } from './sample-job.js';

/** A valid set of raw inputs, as a runner with the declared defaults would give them. */
export function rawInputs(overrides: Partial<RawInputs> = {}): RawInputs {
  return {
    'job-id': SAMPLE_JOB_ID,
    step: '',
    'checkpoint-type': '',
    path: '',
    'api-key': 'key-123',
    'base-url': '',
    'upload-artifact': false,
    'artifact-name': '',
    'retention-days': '',
    wait: false,
    'wait-timeout-minutes': '',
    extract: false,
    'extract-path': '',
    'keep-archive': true,
    cache: false,
    'dry-run': false,
    'verify-contents': true,
    connections: '',
    'stall-timeout': '',
    workspace: '/work/space',
    ...overrides,
  };
}
