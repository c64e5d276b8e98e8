// Preloaded with `node --import` in tests: host names under `.test` (RFC 2606) resolve to
// 127.0.0.1, so the action can talk to a local server under a name that is not loopback-looking,
// as a real API host would be (http-client never proxies 127.* or localhost). Names under
// `.invalid` (RFC 6761) fail at once, as a name that does not resolve.
import dns from 'node:dns';

const lookup = dns.lookup;
dns.lookup = function testLookup(hostname, options, callback) {
  if (typeof hostname === 'string' && hostname.endsWith('.test')) {
    const cb = typeof options === 'function' ? options : callback;
    const all = typeof options === 'object' && options !== null && options.all;
    process.nextTick(() => (all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4)));
    return {};
  }
  if (typeof hostname === 'string' && hostname.endsWith('.invalid')) {
    const cb = typeof options === 'function' ? options : callback;
    const error = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname });
    process.nextTick(() => cb(error));
    return {};
  }
  return lookup.call(this, hostname, options, callback);
};
