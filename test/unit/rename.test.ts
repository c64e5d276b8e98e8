import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FileInUseError, RENAME_PATIENCE_MS, renameWithRetry } from '../../src/transfer/rename.js';

/** A rename that fails with `code` the first `failures` times, on a clock that only moves when waited on. */
function heldOpen(code: string, failures: number) {
  let clock = 0;
  const calls: string[] = [];
  const waits: number[] = [];
  return {
    calls,
    waits,
    options: {
      rename: async (from: string, to: string) => {
        calls.push(`${from}->${to}`);
        if (calls.length <= failures) throw Object.assign(new Error(`${code}: operation not permitted, rename`), { code });
      },
      now: () => clock,
      wait: async (ms: number) => {
        waits.push(ms);
        clock += ms;
      },
    },
  };
}

describe('renameWithRetry', () => {
  for (const code of ['EPERM', 'EBUSY', 'EACCES']) {
    test(`on Windows, ${code} is retried with growing waits until the holder lets go`, async () => {
      const fake = heldOpen(code, 4);
      await renameWithRetry('a', 'b', { platform: 'win32', ...fake.options });
      assert.equal(fake.calls.length, 5);
      assert.deepEqual(fake.waits, [50, 100, 200, 400]);
    });
  }

  test('on Windows, a file held for longer than a minute fails naming it and saying what holds it', async () => {
    const fake = heldOpen('EPERM', Number.POSITIVE_INFINITY);
    await assert.rejects(renameWithRetry('tmp', 'C:\\models\\m.tar.zst', { platform: 'win32', ...fake.options }), (error: unknown) => {
      assert.ok(error instanceof FileInUseError);
      assert.match(error.message, /C:\\models\\m\.tar\.zst/);
      assert.match(error.message, /another process holds it open \(EPERM\)/);
      assert.match(error.message, /after 60 s/);
      return true;
    });
    const waited = fake.waits.reduce((a, b) => a + b, 0);
    assert.equal(waited, RENAME_PATIENCE_MS);
    assert.ok(
      fake.waits.every((w) => w <= 2_000),
      'no single wait above 2 s',
    );
  });

  test('elsewhere, EPERM and EACCES are real errors: no retry', async () => {
    for (const platform of ['linux', 'darwin'] as const) {
      const fake = heldOpen('EACCES', 1);
      await assert.rejects(renameWithRetry('a', 'b', { platform, ...fake.options }), { code: 'EACCES' });
      assert.equal(fake.calls.length, 1);
    }
  });

  test('other errors are never retried, not even on Windows', async () => {
    const fake = heldOpen('ENOENT', 1);
    await assert.rejects(renameWithRetry('a', 'b', { platform: 'win32', ...fake.options }), { code: 'ENOENT' });
    assert.equal(fake.calls.length, 1);
  });
});
