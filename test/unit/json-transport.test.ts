import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describeConnectionError } from '../../src/together/connection-errors.js';
import { API_DEADLINE_MS, apiDeadlineMs, BodyTooLargeError, bodyTooLarge, boundedFetch } from '../../src/together/json-transport.js';

const URL_ = 'https://api.together.ai/v1';

/** `fetch failed` with the given causes below it, as undici reports a failure. */
function fetchFailed(...causes: object[]): Error {
  let cause: unknown;
  for (const c of causes.reverse()) cause = Object.assign(new Error(String((c as { message?: string }).message ?? '')), { ...c, cause });
  return new TypeError('fetch failed', { cause });
}

describe('describeConnectionError', () => {
  test('a name that does not resolve', () => {
    const p = describeConnectionError(
      fetchFailed({ message: 'getaddrinfo ENOTFOUND api.x.invalid', code: 'ENOTFOUND', hostname: 'api.x.invalid' }),
      URL_,
    );
    assert.equal(p?.reason, 'the host name api.x.invalid did not resolve (ENOTFOUND)');
    assert.equal(p?.retryable, true);
  });

  test('an address that refuses', () => {
    const p = describeConnectionError(
      fetchFailed({ message: 'connect ECONNREFUSED 10.0.0.1:443', code: 'ECONNREFUSED', address: '10.0.0.1', port: 443 }),
      URL_,
    );
    assert.equal(p?.reason, '10.0.0.1:443 refused the connection (ECONNREFUSED)');
  });

  test('a certificate that is not trusted: not retried, NODE_EXTRA_CA_CERTS hinted, Node 24 advice dropped', () => {
    const message = 'self-signed certificate; if the root CA is installed locally, try running Node.js with --use-system-ca';
    const p = describeConnectionError(fetchFailed({ message, code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }), URL_);
    assert.equal(p?.reason, 'the certificate of api.together.ai is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT: self-signed certificate)');
    assert.match(p?.hint ?? '', /NODE_EXTRA_CA_CERTS/);
    assert.equal(p?.retryable, false);
    const altName = describeConnectionError(
      fetchFailed({ message: "Hostname/IP does not match certificate's altnames", code: 'ERR_TLS_CERT_ALTNAME_INVALID' }),
      URL_,
    );
    assert.match(altName?.reason ?? '', /not valid for that name/);
  });

  test("a proxy's refusal, by status: 407 asks for credentials and is not retried, 502 is", () => {
    const refusal = (status: number) =>
      fetchFailed(
        { message: 'Request was cancelled.' },
        { message: `Proxy response (${status}) !== 200 when HTTP Tunneling`, code: 'UND_ERR_ABORTED' },
      );
    const p = describeConnectionError(refusal(407), URL_, 'http://proxy.corp:3128');
    assert.equal(
      p?.reason,
      'the proxy http://proxy.corp:3128 answered HTTP 407 Proxy Authentication Required when asked to connect to api.together.ai',
    );
    assert.match(p?.hint ?? '', /user:password/);
    assert.equal(p?.retryable, false);
    assert.equal(describeConnectionError(refusal(502), URL_)?.retryable, true);
  });

  test('a reset or a body cut short is a retryable connection failure; an HTTP error is none', () => {
    assert.equal(describeConnectionError(fetchFailed({ message: 'read ECONNRESET', code: 'ECONNRESET' }), URL_)?.retryable, true);
    assert.match(
      describeConnectionError(new TypeError('terminated', { cause: new Error('other side closed') }), URL_)?.reason ?? '',
      /failed \(other side closed\)/,
    );
    assert.equal(describeConnectionError(new Error('HTTP 500'), URL_), undefined);
    assert.equal(describeConnectionError(new SyntaxError('Unexpected token'), URL_), undefined);
  });
});

describe('boundedFetch', () => {
  const respond =
    (body: ConstructorParameters<typeof Response>[0], headers: Record<string, string> = {}) =>
    async () =>
      new Response(body, { status: 200, headers });

  test('passes a small body through, and the dispatcher on to fetch', async () => {
    let seen: RequestInit | undefined;
    const inner = async (_: string | URL | Request, init?: RequestInit) => {
      seen = init;
      return new Response('{"ok":true}', { headers: { 'content-type': 'application/json' } });
    };
    const res = await boundedFetch('DISPATCHER', 100, inner)('https://x', { method: 'GET' });
    assert.deepEqual(await res.json(), { ok: true });
    assert.equal((seen as { dispatcher?: unknown }).dispatcher, 'DISPATCHER');
  });

  test('refuses an announced length over the limit without reading the body', async () => {
    let pulled = 0;
    const body = new ReadableStream({
      pull(c) {
        pulled++;
        c.enqueue(new Uint8Array(10));
      },
    });
    await assert.rejects(
      boundedFetch(undefined, 100, respond(body, { 'content-length': '101' }))('https://x'),
      (e) => e instanceof BodyTooLargeError && e.announced,
    );
    assert.ok(pulled <= 1, `${pulled} chunks pulled`);
  });

  test('cuts a chunked body off once it passes the limit', async () => {
    const body = new ReadableStream({
      pull(c) {
        c.enqueue(new Uint8Array(40));
      },
    });
    const res = await boundedFetch(undefined, 100, respond(body))('https://x');
    const error = await res.text().then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(bodyTooLarge(error), `not a BodyTooLargeError: ${String(error)}`);
  });

  test('a body of exactly the limit is fine', async () => {
    const res = await boundedFetch(undefined, 100, respond('x'.repeat(100)))('https://x');
    assert.equal((await res.text()).length, 100);
  });
});

test('the deadline per attempt is a minute, and only a preloaded global can change it, up to two minutes', () => {
  const g = globalThis as { TOGETHER_DOWNLOAD_TEST_API_DEADLINE_MS?: unknown };
  assert.equal(apiDeadlineMs(), API_DEADLINE_MS);
  assert.equal(API_DEADLINE_MS, 60_000);
  try {
    g.TOGETHER_DOWNLOAD_TEST_API_DEADLINE_MS = 1500;
    assert.equal(apiDeadlineMs(), 1500);
    g.TOGETHER_DOWNLOAD_TEST_API_DEADLINE_MS = 10 * 60_000;
    assert.equal(apiDeadlineMs(), API_DEADLINE_MS, 'no more than two minutes');
    g.TOGETHER_DOWNLOAD_TEST_API_DEADLINE_MS = '1500';
    assert.equal(apiDeadlineMs(), API_DEADLINE_MS);
  } finally {
    delete g.TOGETHER_DOWNLOAD_TEST_API_DEADLINE_MS;
  }
});
