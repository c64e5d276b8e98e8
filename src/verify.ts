import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { type ArchiveFormat, describeBytes, sniffFormat } from './archive-format.js';
import { ActionError } from './errors.js';

export interface Verified {
  size: number;
  sha256: string;
}

/**
 * Checks a finished download: its size matches what the server announced, and it starts like
 * the archive format the probe saw. Returns its size and sha256 (one streaming read).
 */
export async function verifyArchive(file: string, expected: { total?: number; format: ArchiveFormat }): Promise<Verified> {
  const hash = createHash('sha256');
  let size = 0;
  let head = Buffer.alloc(0);
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    const buf = chunk as Buffer;
    if (head.length < 4) head = Buffer.concat([head, buf.subarray(0, 4 - head.length)]);
    hash.update(buf);
    size += buf.length;
  }
  if (expected.total !== undefined && size !== expected.total) {
    throw new ActionError(
      `The download is incomplete: ${size} bytes arrived but Together announced ${expected.total}. Nothing was saved; run the job again.`,
    );
  }
  const format = sniffFormat(head);
  if (format !== expected.format) {
    throw new ActionError(
      `The downloaded file is not the ${expected.format} archive Together announced (first bytes: ${describeBytes(head)}). Nothing was saved; run the job again, and report it to Together if it persists.`,
    );
  }
  return { size, sha256: hash.digest('hex') };
}
