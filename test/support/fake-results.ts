/**
 * A fake GitHub Actions "results" service: the Twirp JSON API that
 * @actions/artifact talks to (github.actions.results.api.v1.ArtifactService).
 *
 * Uploads go to a real Azurite instance through a real service SAS, so block
 * semantics and signature checks are those of Azure storage.
 *
 * Rules the fake sticks to, because of how the client retries:
 *  - every answer has a JSON body (a non-JSON body is retried 5 times, slowly);
 *  - it never answers 5xx or 429 (those are retried for ~30 s).
 */

import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  BlobSASPermissions,
  BlobServiceClient,
  type ContainerClient,
  generateBlobSASQueryParameters,
  SASProtocol,
} from '@azure/storage-blob';
import type { Azurite } from './azurite.js';

export interface ArtifactRecord {
  id: number;
  name: string;
  size?: number;
  /** `sha256:<hex>` as sent by the client (or `finalizeHashOverride`) */
  hash?: string;
  container: string;
  blob: string;
  expiresAt?: string;
  mimeType?: string;
  finalized: boolean;
}

export interface ResultsFaults {
  /** CreateArtifact answers this status with a Twirp error body, e.g. 409 already_exists or 400 invalid_argument. Must be a non-retryable 4xx. */
  createStatus?: { status: number; code: string; msg: string };
  /** CreateArtifact answers 200 `{"ok":false}` (the client throws InvalidResponseError). */
  createNotOk?: boolean;
  /** CreateArtifact answers like a full storage quota: 403 permission_denied "insufficient usage to create artifact" (the client throws UsageError). */
  quotaExceeded?: boolean;
  /** FinalizeArtifact records (and ListArtifacts reports) this hash instead of the one the client sent. */
  finalizeHashOverride?: string;
}

export interface FakeResults {
  /** `http://127.0.0.1:PORT`: use as ACTIONS_RESULTS_URL */
  url: string;
  runId: string;
  jobId: string;
  /** a runtime token whose `scp` contains `Actions.Results:<runId>:<jobId>`: use as ACTIONS_RUNTIME_TOKEN */
  token: string;
  artifacts: ArtifactRecord[];
  /** every request, in order; `method` is the Twirp method name (e.g. `CreateArtifact`) */
  requests: Array<{ method: string; body: unknown; authorized: boolean }>;
  setFaults(f: ResultsFaults): void;
  close(): Promise<void>;
}

const TWIRP_PREFIX = '/twirp/github.actions.results.api.v1.ArtifactService/';
const SAS_LIFETIME_MS = 10 * 60_000;

/** base64url of a JSON value, no padding (JWT segment encoding) */
function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/**
 * A runtime token in the shape the runner hands out. The client only decodes
 * the payload; the signature is not checked by anyone, so it is a dummy.
 */
export function runtimeToken(runId: string, jobId: string): string {
  const header = { typ: 'JWT', alg: 'RS256' };
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    scp: `Actions.ExampleScope Actions.Results:${runId}:${jobId}`,
    iat: now,
    exp: now + 3600,
  };
  return `${b64url(header)}.${b64url(payload)}.${Buffer.from('fake-signature').toString('base64url')}`;
}

class TwirpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    msg: string,
  ) {
    super(msg);
  }
}

type Json = Record<string, unknown>;

function str(body: Json, key: string): string | undefined {
  const v = body[key];
  return typeof v === 'string' ? v : undefined;
}

/** Returns the `Actions.Results:<run>:<job>` scopes of a bearer token, or an error text. */
function tokenScopes(authorization: string | undefined): { run: string; job: string }[] | string {
  if (!authorization) return 'missing Authorization header';
  const m = /^Bearer (.+)$/.exec(authorization);
  if (!m) return 'Authorization is not a Bearer token';
  const parts = m[1]!.split('.');
  if (parts.length < 2) return 'token is not a JWT';
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
  } catch {
    return 'token payload is not JSON';
  }
  const scp = (payload as { scp?: unknown } | null)?.scp;
  if (typeof scp !== 'string') return 'token has no scp claim';
  const scopes: { run: string; job: string }[] = [];
  for (const scope of scp.split(' ')) {
    const p = scope.split(':');
    if (p.length === 3 && p[0] === 'Actions.Results') scopes.push({ run: p[1]!, job: p[2]! });
  }
  return scopes;
}

export async function startFakeResults(azurite: Azurite): Promise<FakeResults> {
  const runId = randomUUID();
  const jobId = randomUUID();
  const token = runtimeToken(runId, jobId);
  const artifacts: ArtifactRecord[] = [];
  const requests: FakeResults['requests'] = [];
  let faults: ResultsFaults = {};
  let nextId = 1000;

  const service = new BlobServiceClient(azurite.blobEndpoint, azurite.credential);
  const containerName = `results-${runId.replace(/-/g, '').slice(0, 20)}`;
  let container: Promise<ContainerClient> | undefined;
  const getContainer = (): Promise<ContainerClient> => {
    container ??= (async () => {
      const c = service.getContainerClient(containerName);
      await c.createIfNotExists();
      return c;
    })();
    // do not cache a failure
    container.catch(() => {
      container = undefined;
    });
    return container;
  };

  const sasUrl = (blob: string, permissions: string): string => {
    const now = Date.now();
    const sas = generateBlobSASQueryParameters(
      {
        containerName,
        blobName: blob,
        permissions: BlobSASPermissions.parse(permissions),
        startsOn: new Date(now - 60_000),
        expiresOn: new Date(now + SAS_LIFETIME_MS),
        protocol: SASProtocol.HttpsAndHttp,
      },
      azurite.credential,
    );
    return `${service.getContainerClient(containerName).getBlobClient(blob).url}?${sas.toString()}`;
  };

  const live = (name: string): ArtifactRecord | undefined => artifacts.find((a) => a.name === name);

  const handlers: Record<string, (body: Json) => Promise<Json>> = {
    async CreateArtifact(body) {
      const name = str(body, 'name');
      if (!name) throw new TwirpError(400, 'invalid_argument', 'name is required');
      if (faults.quotaExceeded) {
        throw new TwirpError(403, 'permission_denied', 'insufficient usage to create artifact');
      }
      if (faults.createStatus) {
        const { status, code, msg } = faults.createStatus;
        throw new TwirpError(status, code, msg);
      }
      if (faults.createNotOk) return { ok: false };
      if (live(name)) {
        throw new TwirpError(409, 'already_exists', `an artifact with this name already exists on the workflow run: ${name}`);
      }
      const c = await getContainer();
      const id = nextId++;
      const blob = `${runId}/${id}/${name}`;
      artifacts.push({
        id,
        name,
        container: c.containerName,
        blob,
        expiresAt: str(body, 'expires_at'),
        mimeType: str(body, 'mime_type'),
        finalized: false,
      });
      return { ok: true, signed_upload_url: sasUrl(blob, 'cw') };
    },

    async FinalizeArtifact(body) {
      const name = str(body, 'name') ?? '';
      const rec = live(name);
      if (!rec) throw new TwirpError(404, 'not_found', `artifact not found: ${name}`);
      if (rec.finalized) {
        throw new TwirpError(412, 'failed_precondition', `artifact already finalized: ${name}`);
      }
      const sizeText = str(body, 'size') ?? '0';
      if (!/^\d+$/.test(sizeText)) {
        throw new TwirpError(400, 'invalid_argument', `size is not an int64 string: ${sizeText}`);
      }
      const size = Number(sizeText);
      const blobClient = service.getContainerClient(rec.container).getBlobClient(rec.blob);
      let actual: number | undefined;
      try {
        actual = (await blobClient.getProperties()).contentLength;
      } catch (err) {
        const status = (err as { statusCode?: number }).statusCode;
        if (status === 404) {
          throw new TwirpError(400, 'invalid_argument', `no blob was uploaded for artifact ${name}`);
        }
        throw new TwirpError(400, 'invalid_argument', `could not read blob for ${name}: ${String(err)}`);
      }
      if (actual !== size) {
        throw new TwirpError(400, 'invalid_argument', `size mismatch for ${name}: request says ${size}, blob has ${actual}`);
      }
      rec.size = size;
      rec.hash = faults.finalizeHashOverride ?? str(body, 'hash');
      rec.finalized = true;
      return { ok: true, artifact_id: String(rec.id) };
    },

    async ListArtifacts(body) {
      const nameFilter = str(body, 'name_filter');
      const idFilter = str(body, 'id_filter');
      const list = artifacts
        .filter((a) => a.finalized)
        .filter((a) => nameFilter === undefined || a.name === nameFilter)
        .filter((a) => idFilter === undefined || String(a.id) === idFilter)
        .map((a) => ({
          workflow_run_backend_id: runId,
          workflow_job_run_backend_id: jobId,
          database_id: String(a.id),
          name: a.name,
          size: String(a.size ?? 0),
          ...(a.hash ? { digest: a.hash } : {}),
        }));
      return { artifacts: list };
    },

    async GetSignedArtifactURL(body) {
      const name = str(body, 'name') ?? '';
      const rec = live(name);
      if (!rec?.finalized) throw new TwirpError(404, 'not_found', `artifact not found: ${name}`);
      return { signed_url: sasUrl(rec.blob, 'r') };
    },

    async DeleteArtifact(body) {
      const name = str(body, 'name') ?? '';
      const rec = live(name);
      if (!rec) throw new TwirpError(404, 'not_found', `artifact not found: ${name}`);
      artifacts.splice(artifacts.indexOf(rec), 1);
      await service.getContainerClient(rec.container).getBlobClient(rec.blob).deleteIfExists();
      return { ok: true, artifact_id: String(rec.id) };
    },
  };

  const send = (res: http.ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const method = path.startsWith(TWIRP_PREFIX) ? path.slice(TWIRP_PREFIX.length) : path;

    let body: unknown = raw;
    let parsed: Json | undefined;
    try {
      body = raw === '' ? {} : JSON.parse(raw);
      if (body !== null && typeof body === 'object' && !Array.isArray(body)) parsed = body as Json;
    } catch {
      // keep the raw text in the record
    }

    // Authorization: a scope for exactly this run/job, and the body's ids must match it.
    let authError: string | undefined;
    const scopes = tokenScopes(req.headers.authorization);
    if (typeof scopes === 'string') authError = scopes;
    else if (!scopes.some((s) => s.run === runId && s.job === jobId)) {
      authError = `token has no Actions.Results:${runId}:${jobId} scope`;
    } else if (parsed && (str(parsed, 'workflow_run_backend_id') !== runId || str(parsed, 'workflow_job_run_backend_id') !== jobId)) {
      authError = 'workflow_run_backend_id / workflow_job_run_backend_id do not match the token';
    }
    requests.push({ method, body, authorized: authError === undefined });

    if (req.method !== 'POST' || !path.startsWith(TWIRP_PREFIX) || !(method in handlers)) {
      send(res, 404, { code: 'bad_route', msg: `no handler for ${req.method} ${path}` });
      return;
    }
    if (authError !== undefined) {
      send(res, 401, { code: 'unauthenticated', msg: authError });
      return;
    }
    if (!parsed) {
      send(res, 400, { code: 'malformed', msg: 'request body is not a JSON object' });
      return;
    }
    try {
      send(res, 200, await handlers[method]!(parsed));
    } catch (err) {
      if (err instanceof TwirpError) send(res, err.status, { code: err.code, msg: err.message });
      // Never 5xx: the client would retry for ~30 s. 400 fails fast.
      else send(res, 400, { code: 'internal', msg: `fake results service error: ${String(err)}` });
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (!res.headersSent) send(res, 400, { code: 'internal', msg: String(err) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    runId,
    jobId,
    token,
    artifacts,
    requests,
    setFaults(f) {
      const s = f.createStatus?.status;
      if (s !== undefined && (s < 400 || s >= 500 || s === 429)) {
        throw new Error(`createStatus ${s} is not allowed: use a non-retryable 4xx (the client retries 5xx/429 for ~30 s)`);
      }
      faults = { ...f };
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}
