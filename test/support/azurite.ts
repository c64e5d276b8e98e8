/**
 * Starts a throw-away Azurite blob emulator for tests.
 *
 * The account name and key are random and are handed to Azurite through
 * AZURITE_ACCOUNTS, so no emulator key is hard-coded anywhere. Storage is in
 * memory and the port is chosen by the OS (`--blobPort 0`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';

export interface Azurite {
  /** `http://127.0.0.1:PORT/<account>` */
  blobEndpoint: string;
  port: number;
  account: string;
  /** base64 account key */
  key: string;
  credential: StorageSharedKeyCredential;
  readBlob(container: string, blob: string): Promise<Buffer>;
  listBlobs(container: string): Promise<string[]>;
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5_000;
const LISTEN_RE = /successfully listens on http:\/\/127\.0\.0\.1:(\d+)/;

const projectRoot = fileURLToPath(new URL('../../', import.meta.url));
const azuriteBlobBin = path.join(projectRoot, 'node_modules', '.bin', 'azurite-blob');

function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startAzurite(): Promise<Azurite> {
  const account = `acct${randomBytes(6).toString('hex')}`;
  const key = randomBytes(64).toString('base64');

  const child = spawn(
    process.execPath,
    [
      azuriteBlobBin,
      '--blobHost',
      '127.0.0.1',
      '--blobPort',
      '0',
      '--inMemoryPersistence',
      '--disableTelemetry',
      '--skipApiVersionCheck',
      '--silent',
    ],
    {
      cwd: projectRoot,
      env: { ...process.env, AZURITE_ACCOUNTS: `${account}:${key}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );

  // If the test process dies without calling stop(), do not leak the emulator.
  const killOnExit = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    let settled = false;
    const finish = (err: Error | null, value?: number): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      if (err) reject(err);
      else resolve(value as number);
    };
    const onData = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
      const m = LISTEN_RE.exec(output);
      if (m) finish(null, Number(m[1]));
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(
        new Error(
          `Azurite did not report "successfully listens on http://127.0.0.1:<port>" within ` +
            `${START_TIMEOUT_MS / 1000} s (${azuriteBlobBin}). Output so far:\n${output}`,
        ),
      );
    }, START_TIMEOUT_MS);
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    child.once('error', (err) => finish(new Error(`Could not start Azurite (${azuriteBlobBin}): ${err.message}`)));
    child.once('exit', (code, signal) =>
      finish(new Error(`Azurite exited before it was ready (code ${code}, signal ${signal}). Output:\n${output}`)),
    );
  }).catch(async (err: unknown) => {
    process.off('exit', killOnExit);
    await waitForExit(child);
    throw err;
  });

  // Keep draining the pipes so the child never blocks on a full buffer.
  child.stdout?.resume();
  child.stderr?.resume();

  const blobEndpoint = `http://127.0.0.1:${port}/${account}`;
  const credential = new StorageSharedKeyCredential(account, key);
  const service = new BlobServiceClient(blobEndpoint, credential);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      process.off('exit', killOnExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = waitForExit(child);
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), STOP_GRACE_MS);
      });
      const forced = await Promise.race([exited.then(() => false), timedOut]);
      clearTimeout(timer);
      if (forced) {
        child.kill('SIGKILL');
        await exited;
      }
    })();
    return stopping;
  };

  return {
    blobEndpoint,
    port,
    account,
    key,
    credential,
    async readBlob(container, blob) {
      return service.getContainerClient(container).getBlobClient(blob).downloadToBuffer();
    },
    async listBlobs(container) {
      const names: string[] = [];
      for await (const item of service.getContainerClient(container).listBlobsFlat()) {
        names.push(item.name);
      }
      return names;
    },
    stop,
  };
}
