import type { RawInputs } from '../../src/inputs.js';

export const VALID_JOB_ID = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';

/** A valid set of raw inputs, as a runner with the declared defaults would give them. */
export function rawInputs(overrides: Partial<RawInputs> = {}): RawInputs {
  return {
    'job-id': VALID_JOB_ID,
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
    connections: '',
    'stall-timeout': '',
    workspace: '/work/space',
    ...overrides,
  };
}
