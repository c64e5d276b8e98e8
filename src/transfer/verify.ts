import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { type ArchiveFormat, describeBytes, sniffFormat } from '../archive/format.js';
import { ActionError } from '../errors.js';

export interface Verified {
  size: number;
  sha256: string;
}

/** Size, first bytes and sha256 of a file, in one streaming read. */
export async function hashFile(file: string): Promise<Verified & { head: Buffer }> {
  const hash = createHash('sha256');
  let size = 0;
  let head = Buffer.alloc(0);
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) {
    const buf = chunk as Buffer;
    if (head.length < 4) head = Buffer.concat([head, buf.subarray(0, 4 - head.length)]);
    hash.update(buf);
    size += buf.length;
  }
  return { size, sha256: hash.digest('hex'), head };
}

async function sizeAndHead(file: string): Promise<{ size: number; head: Buffer }> {
  const handle = await fs.promises.open(file, 'r');
  try {
    const head = Buffer.alloc(4);
    const { bytesRead } = await handle.read(head, 0, 4, 0);
    return { size: (await handle.stat()).size, head: head.subarray(0, bytesRead) };
  } finally {
    await handle.close();
  }
}

/**
 * Checks a finished download: its size matches what the server announced, and it starts like
 * the archive format the probe saw. A sha256 already computed while downloading is trusted;
 * otherwise the file is read once to compute it.
 */
export async function verifyArchive(
  file: string,
  expected: { total?: number; format: ArchiveFormat },
  knownSha256?: string,
): Promise<Verified> {
  const { size, head, sha256 } = knownSha256 ? { ...(await sizeAndHead(file)), sha256: knownSha256 } : await hashFile(file);
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
  return { size, sha256 };
}
