import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConnectError, ProxyRefusedError } from '../../src/transfer/connection.js';
import { describeNetworkError } from '../../src/transfer/net-errors.js';
import { stripQueries } from '../../src/transfer/one-stream.js';
import { firstHop, MAX_REDIRECTS, nextHop } from '../../src/transfer/redirects.js';

const API = 'https://api.together.ai';
const start = `${API}/v1/finetune/download?ft_id=ft-a`;

test('the key goes to the API origin only, and never again once the chain has left it', () => {
  const first = firstHop(start, API);
  assert.equal(first.sendAuth, true);
  // Same origin, other path: still the API.
  const again = nextHop(first, '/v1/other', API);
  assert.equal(again.sendAuth, true);
  assert.equal(again.relativeRedirect, true);
  // Another port of the API's host is another origin.
  assert.equal(nextHop(first, 'https://api.together.ai:8443/x', API).sendAuth, false);
  // So is another scheme... (https to http is refused anyway: see below) and another host.
  const storage = nextHop(first, 'https://storage.example/bucket/x?sig=1', API);
  assert.equal(storage.sendAuth, false);
  // Back to the API's origin: no key, the chain has left it.
  const back = nextHop(storage, `${API}/v1/finetune/download?again=1`, API);
  assert.equal(back.url.origin, API);
  assert.equal(back.sendAuth, false);
  assert.equal(back.leftApiOrigin, true);
  // An http API redirected to https storage: allowed, no key.
  const plain = firstHop('http://127.0.0.1:8000/v1/finetune/download', 'http://127.0.0.1:8000');
  assert.equal(nextHop(plain, 'https://127.0.0.2:8443/x', 'http://127.0.0.1:8000').sendAuth, false);
  // Default ports are the same origin.
  assert.equal(nextHop(first, 'https://api.together.ai:443/y', API).sendAuth, true);
});

test('only http and https, never from https down to http, at most 10 redirects', () => {
  const first = firstHop(start, API);
  for (const location of ['ftp://files.example/x', 'gopher://x/', 'file:///etc/passwd', 'javascript:alert(1)', 'data:,x']) {
    assert.throws(() => nextHop(first, location, API), /unsupported URL scheme/, location);
  }
  assert.throws(() => nextHop(first, 'http://storage.example/x', API), /from https to plain http/);
  assert.throws(() => firstHop('ftp://x/', API), /unsupported URL scheme/);
  let hop = first;
  for (let i = 0; i < MAX_REDIRECTS; i++) hop = nextHop(hop, `/hop/${i}`, API);
  assert.throws(() => nextHop(hop, '/one-more', API), /more than 10 times/);
});

test('error text keeps no query of a URL or path it quotes', () => {
  assert.equal(
    stripQueries('Request timeout: /bucket/model.tar.zst?X-Amz-Signature=abc&X-Amz-Date=1'),
    'Request timeout: /bucket/model.tar.zst?…',
  );
  assert.equal(stripQueries('GET https://s3.example/b/k?sig=1 failed'), 'GET https://s3.example/b/k?… failed');
  assert.equal(stripQueries('what? no URL here'), 'what? no URL here');
});

test('connection errors name their cause', () => {
  const dns = Object.assign(new Error('getaddrinfo ENOTFOUND storage.example'), { code: 'ENOTFOUND', hostname: 'storage.example' });
  assert.match(
    describeNetworkError(new ConnectError(dns, 'storage.example:443', false)).message,
    /host name storage\.example did not resolve \(ENOTFOUND\)/,
  );
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.2:9'), { code: 'ECONNREFUSED', address: '127.0.0.2', port: 9 });
  assert.match(describeNetworkError(new ConnectError(refused, '127.0.0.2:9', false)).message, /127\.0\.0\.2:9 refused the connection/);
  const cert = Object.assign(new Error('unable to verify the first certificate'), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  const untrusted = describeNetworkError(new ConnectError(cert, 'storage.example:443', false, 'storage.example'));
  assert.match(untrusted.message, /certificate of storage\.example is not trusted/);
  assert.match(untrusted.message, /NODE_EXTRA_CA_CERTS/);
  assert.equal(untrusted.retryable, false);
  const proxy = describeNetworkError(
    new ProxyRefusedError(407, 'Proxy Authentication Required', new URL('http://user:pw@proxy.corp:3128'), 'storage.example:443'),
  );
  assert.match(proxy.message, /the proxy http:\/\/proxy\.corp:3128 refused to open a tunnel to storage\.example:443: HTTP 407/);
  assert.doesNotMatch(proxy.message, /pw/);
  assert.equal(proxy.retryable, false);
});
