import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeBytes, sniffFormat } from '../../src/archive/format.js';
import { displayUrl, formatBytes, formatDuration, formatSpeed } from '../../src/format.js';
import { escapeHtml, summaryRows } from '../../src/runner/summary.js';
import { ProgressReporter, progressLine } from '../../src/transfer/progress.js';

test('formatBytes uses binary units', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(16 * 1024 ** 3), '16.0 GiB');
  assert.equal(formatSpeed(10 * 1024 * 1024), '10.0 MiB/s');
});

test('formatDuration', () => {
  assert.equal(formatDuration(4.4), '4s');
  assert.equal(formatDuration(125), '2m 05s');
  assert.equal(formatDuration(3725), '1h 02m 05s');
  assert.equal(formatDuration(Infinity), '?');
});

test('displayUrl hides a query string that may hold a signature', () => {
  assert.equal(
    displayUrl('https://bucket.s3.amazonaws.com/a/b.tar.zst?X-Amz-Signature=secret'),
    'https://bucket.s3.amazonaws.com/a/b.tar.zst?…',
  );
  assert.equal(displayUrl('https://host/path'), 'https://host/path');
});

test('progressLine: bytes, total, percent, speed, ETA', () => {
  assert.equal(progressLine(512 * 1024 ** 2, 1024 ** 3, 10_000), '512.0 MiB / 1.0 GiB, 50.0%, 51.2 MiB/s, ETA 10s');
  assert.equal(progressLine(1024, undefined, 1000), '1.0 KiB, 1.0 KiB/s');
  assert.equal(progressLine(0, 100, 0), '0 B / 100 B, 0.0%, 0 B/s, ETA ?');
});

test('ProgressReporter logs at most once per interval, and once at the end', () => {
  let now = 0;
  const lines: string[] = [];
  const progress = new ProgressReporter(
    1000,
    (l) => lines.push(l),
    () => now,
    5000,
  );
  for (now = 0; now <= 12_000; now += 1000) progress.update(now / 12);
  assert.equal(lines.length, 2, lines.join('\n'));
  progress.finish(1000);
  assert.equal(lines.length, 3);
  assert.match(lines[2], /^1000 B \/ 1000 B, 100\.0%, .*, done in 13s$/);
});

test('sniffFormat knows zstd and gzip, also from a two-byte prefix', () => {
  assert.equal(sniffFormat(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0])), 'zstd');
  assert.equal(sniffFormat(Buffer.from([0x1f, 0x8b, 8])), 'gzip');
  assert.equal(sniffFormat(Buffer.from([0x28, 0xb5]), { partial: true }), 'zstd');
  assert.equal(sniffFormat(Buffer.from([0x28, 0xb5])), undefined);
  assert.equal(sniffFormat(Buffer.from('<html>')), undefined);
  assert.equal(sniffFormat(Buffer.alloc(0), { partial: true }), undefined);
  assert.match(describeBytes(Buffer.from('<!DOCTYPE html>')), /HTML/);
});

test('summary cells escape what came from outside', () => {
  assert.equal(escapeHtml('<a href="x">&\'</a>'), '&#60;a href=&#34;x&#34;&#62;&#38;&#39;&#60;/a&#62;');
  const rows = summaryRows({
    jobId: 'ft-a',
    model: '<script>',
    checkpointType: 'adapter',
    step: 5,
    file: '/w/f',
    size: 2048,
    sha256: 'ab',
    elapsedMs: 2000,
  });
  const model = rows.find(([k]) => k === 'Model')?.[1] ?? '';
  assert.ok(!model.includes('<script>'));
  assert.deepEqual(
    rows.map(([k]) => k),
    ['Job', 'Model', 'Checkpoint type', 'Step', 'File', 'Size', 'SHA-256', 'Time', 'Speed'],
  );
  assert.equal(rows.find(([k]) => k === 'Speed')?.[1], '1.0 KiB/s');
});
