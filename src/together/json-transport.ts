/**
 * Bounds on what Together's JSON endpoints may cost: a body larger than `MAX_JSON_BYTES` is refused
 * as soon as that is known (from `content-length`, or once that many bytes have arrived), so no
 * answer is ever read whole into memory; and each attempt has one deadline for head and body, so a
 * server that trickles a byte at a time cannot hold the step.
 */

/** The largest JSON answer read: a job document or a list is kilobytes; 16 MiB is far beyond any real one. */
export const MAX_JSON_BYTES = 16 * 1024 * 1024;
/** The time one attempt of a JSON request may take, head and body together. */
export const API_DEADLINE_MS = 60_000;
/** The most any deadline may be, whatever a test asks for. */
export const MAX_API_DEADLINE_MS = 120_000;

/**
 * The deadline per attempt. Tests shorten it with a preload (`test/support/api-deadline.mjs`) that
 * sets a global: nothing in a workflow's environment can change it.
 */
export function apiDeadlineMs(): number {
  const asked = (globalThis as { TOGETHER_DOWNLOAD_TEST_API_DEADLINE_MS?: unknown }).TOGETHER_DOWNLOAD_TEST_API_DEADLINE_MS;
  return typeof asked === 'number' && asked > 0 && asked <= MAX_API_DEADLINE_MS ? asked : API_DEADLINE_MS;
}

/** A JSON answer over `MAX_JSON_BYTES`; `announced` when `content-length` said so before any byte was read. */
export class BodyTooLargeError extends Error {
  constructor(
    readonly bytes: number,
    readonly announced: boolean,
  ) {
    super(
      announced
        ? `the answer announces ${bytes} bytes (content-length), over the ${MAX_JSON_BYTES / 1024 / 1024} MiB this action reads`
        : `the answer passed ${MAX_JSON_BYTES / 1024 / 1024} MiB, the most this action reads, and was cut off there`,
    );
    this.name = 'BodyTooLargeError';
  }
}

type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/**
 * A `fetch` for the SDK whose responses refuse to be read past `limit` bytes. `dispatcher` (the
 * runner's proxy, when one applies) is passed on to every request.
 */
export function boundedFetch(dispatcher: unknown, limit = MAX_JSON_BYTES, inner: Fetch = fetch): Fetch {
  return async (input, init) => {
    const response = await inner(input, dispatcher ? ({ ...init, dispatcher } as RequestInit) : init);
    const announced = Number(response.headers.get('content-length') ?? Number.NaN);
    if (announced > limit) {
      await response.body?.cancel().catch(() => undefined);
      throw new BodyTooLargeError(announced, true);
    }
    if (response.body === null) return response;
    let seen = 0;
    const counted = response.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          seen += chunk.byteLength;
          if (seen > limit) controller.error(new BodyTooLargeError(seen, false));
          else controller.enqueue(chunk);
        },
      }),
    );
    return new Response(counted, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

/** The BodyTooLargeError somewhere in an error's cause chain (the SDK wraps what `fetch` throws). */
export function bodyTooLarge(error: unknown): BodyTooLargeError | undefined {
  for (let e = error, n = 0; typeof e === 'object' && e !== null && n < 8; e = (e as { cause?: unknown }).cause, n++) {
    if (e instanceof BodyTooLargeError) return e;
  }
  return undefined;
}
