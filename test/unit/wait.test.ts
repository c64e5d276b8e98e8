import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Checkpoint, FineTuneEvent, Job } from '../../src/together/api.js';
import { lastErrorEvent, MAX_POLL_INTERVAL_MS, pollIntervalMs, type WaitClock, waitForJob } from '../../src/together/wait.js';

const JOB = 'ft-fe94af08-1c61-41d2-8494-6d7ff5386262';

/** A virtual clock: sleeping advances time instantly and is recorded. */
function virtualClock(): WaitClock & { sleeps: number[]; t: number } {
  const clock = {
    t: 0,
    sleeps: [] as number[],
    now: () => clock.t,
    sleep: async (ms: number) => {
      clock.sleeps.push(ms);
      clock.t += ms;
    },
  };
  return clock;
}

/** A fake API whose job status and checkpoints follow a script indexed by poll number. */
function scriptedApi(statuses: string[], opts: { steps?: number[][]; events?: FineTuneEvent[] } = {}) {
  let poll = 0;
  const calls = { job: 0, checkpoints: 0, events: 0 };
  return {
    calls,
    async getJob(): Promise<Job> {
      calls.job++;
      const status = statuses[Math.min(poll, statuses.length - 1)];
      poll++;
      return { id: JOB, status };
    },
    async listCheckpoints(): Promise<Checkpoint[]> {
      calls.checkpoints++;
      const steps = opts.steps?.[Math.min(poll - 1, (opts.steps?.length ?? 1) - 1)] ?? [];
      return steps.map((step) => ({ step, checkpointType: 'Intermediate' }));
    },
    async listEvents(): Promise<FineTuneEvent[]> {
      calls.events++;
      return opts.events ?? [];
    },
  };
}

describe('poll intervals', () => {
  test('start at 2 s and grow by half each time', () => {
    assert.deepEqual([0, 1, 2, 3].map(pollIntervalMs), [2000, 3000, 4500, 6750]);
  });
  test('never shrink and are capped at 60 s', () => {
    let previous = 0;
    for (let n = 0; n < 100; n++) {
      const ms = pollIntervalMs(n);
      assert.ok(ms >= previous && ms <= MAX_POLL_INTERVAL_MS);
      previous = ms;
    }
    assert.equal(pollIntervalMs(9), 60_000);
    assert.equal(pollIntervalMs(1000), 60_000);
  });
  test('two hours of waiting is a bounded number of polls', () => {
    let t = 0;
    let polls = 1;
    for (let n = 0; t < 2 * 3600_000; n++, polls++) t += pollIntervalMs(n);
    assert.ok(polls < 130, `${polls} polls`);
  });
});

describe('waitForJob', () => {
  test('polls until completed, with growing sleeps', async () => {
    const api = scriptedApi(['queued', 'queued', 'running', 'running', 'completed']);
    const clock = virtualClock();
    const seen = await waitForJob(api, { jobId: JOB, timeoutMs: 3600_000 }, clock);
    assert.equal(seen.job.status, 'completed');
    assert.equal(seen.checkpoints, undefined, 'no checkpoints were asked for');
    assert.deepEqual(clock.sleeps, [2000, 3000, 4500, 6750]);
    assert.equal(api.calls.checkpoints, 0);
  });

  test('an already completed job returns at once', async () => {
    const clock = virtualClock();
    await waitForJob(scriptedApi(['completed']), { jobId: JOB, timeoutMs: 1000 }, clock);
    assert.deepEqual(clock.sleeps, []);
  });

  test('at the timeout it fails with the last status; the last poll is at the deadline', async () => {
    const api = scriptedApi(['running']);
    const clock = virtualClock();
    await assert.rejects(
      waitForJob(api, { jobId: JOB, timeoutMs: 10_000 }, clock),
      /still `running` after waiting 10s.*wait-timeout-minutes/,
    );
    assert.deepEqual(clock.sleeps, [2000, 3000, 4500, 500]);
    assert.equal(api.calls.job, 5);
  });

  for (const status of ['error', 'user_error', 'cancelled']) {
    test(`a job that ends ${status} fails with its last error event`, async () => {
      const events: FineTuneEvent[] = [
        { type: 'job_error', level: 'error', message: 'first problem' },
        { type: 'job_error', level: 'error', message: 'Training failed:\n  CUDA out of memory' },
        { type: 'job_stopped', level: 'info', message: 'stopped' },
      ];
      const api = scriptedApi(['running', status], { events });
      await assert.rejects(
        waitForJob(api, { jobId: JOB, timeoutMs: 60_000 }, virtualClock()),
        new RegExp(`status \`${status}\`.*Together says: Training failed: CUDA out of memory$`),
      );
      assert.equal(api.calls.events, 1);
    });
  }

  test('an ended job without error events says so', async () => {
    await assert.rejects(waitForJob(scriptedApi(['cancelled']), { jobId: JOB, timeoutMs: 1 }, virtualClock()), /no error message/);
  });

  test('with a step: waits until the checkpoint is listed, even while the job runs on; returns what the last poll saw', async () => {
    const api = scriptedApi(['running'], { steps: [[], [5], [5, 10]] });
    const clock = virtualClock();
    const seen = await waitForJob(api, { jobId: JOB, step: 10, timeoutMs: 3600_000 }, clock);
    assert.deepEqual(clock.sleeps, [2000, 3000]);
    assert.equal(api.calls.checkpoints, 3);
    assert.equal(seen.job.status, 'running');
    assert.deepEqual(
      seen.checkpoints?.map((c) => c.step),
      [5, 10],
    );
  });

  test('step latest: waits until any checkpoint is listed', async () => {
    const api = scriptedApi(['queued', 'running', 'running'], { steps: [[], [], [7]] });
    const clock = virtualClock();
    const seen = await waitForJob(api, { jobId: JOB, step: 'latest', timeoutMs: 3600_000 }, clock);
    assert.deepEqual(clock.sleeps, [2000, 3000]);
    assert.deepEqual(
      seen.checkpoints?.map((c) => c.step),
      [7],
    );
  });

  test('step latest: a job that completes without any checkpoint fails at once', async () => {
    const api = scriptedApi(['running', 'completed'], { steps: [[], []] });
    await assert.rejects(
      waitForJob(api, { jobId: JOB, step: 'latest', timeoutMs: 3600_000 }, virtualClock()),
      /completed without saving any checkpoint.*`step: latest`/,
    );
  });

  test('step latest: a job that ends in error before its first checkpoint fails with its last error event', async () => {
    const events: FineTuneEvent[] = [{ type: 'job_error', level: 'error', message: 'bad data' }];
    await assert.rejects(
      waitForJob(
        scriptedApi(['running', 'error'], { steps: [[], []], events }),
        { jobId: JOB, step: 'latest', timeoutMs: 3600_000 },
        virtualClock(),
      ),
      /status `error` before saving a checkpoint.*Together says: bad data/,
    );
  });

  test('step latest: at the timeout it fails with the last status', async () => {
    await assert.rejects(
      waitForJob(scriptedApi(['running'], { steps: [[]] }), { jobId: JOB, step: 'latest', timeoutMs: 5000 }, virtualClock()),
      /still `running` after waiting 5s/,
    );
  });

  test('with a step: a completed job without that step fails at once, listing the steps', async () => {
    const api = scriptedApi(['completed'], { steps: [[5, 10]] });
    await assert.rejects(
      waitForJob(api, { jobId: JOB, step: 7, timeoutMs: 3600_000 }, virtualClock()),
      /without a checkpoint at step 7\. Steps that exist: 5, 10/,
    );
  });

  test('with a step: a failed job that did save it is fine', async () => {
    await waitForJob(scriptedApi(['error'], { steps: [[5]] }), { jobId: JOB, step: 5, timeoutMs: 1 }, virtualClock());
  });
});

test('lastErrorEvent picks the last error, one line, bounded', () => {
  assert.equal(lastErrorEvent([]), undefined);
  assert.equal(lastErrorEvent([{ type: 'job_start', level: 'info', message: 'hi' }]), undefined);
  assert.equal(lastErrorEvent([{ type: 'warning', level: 'legacy_ierror', message: 'old\tstyle' }]), 'old style');
  assert.equal(lastErrorEvent([{ type: 'job_error', message: 'x'.repeat(600) }])?.length, 501);
});
