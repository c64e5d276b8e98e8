/**
 * The redirect policy of `redirects.ts`, held over tool-cache. The probe resolves the redirects,
 * but the archive's own request can be redirected again, and tool-cache's http-client would follow
 * that on its own: keeping the key on another port of the API's host or after a detour, fetching
 * an `ftp:` Location as http, and quoting the new URL's query in its messages. http-client sends
 * every hop through `HttpClient.prototype.requestRaw`, so while tool-cache runs that method is
 * wrapped: each hop is checked against the one before it (per client, so each of tool-cache's
 * attempts starts a chain of its own), loses the key once the chain has left the API's origin, and
 * has its query registered as a secret before the request is made.
 */
import * as httpm from '@actions/http-client';
import * as log from '../log.js';
import { firstHop, type Hop, nextHop } from './redirects.js';

type RequestInfo = Parameters<httpm.HttpClient['requestRaw']>[0];

/**
 * Guards the requests http-client makes until `restore` is called. `apiOrigin` is the origin that
 * may receive the key: none when tool-cache is given no key. A refused hop fails the request with
 * `refuse(reason)`, an error tool-cache does not retry.
 */
export function guardToolCacheHops(apiOrigin: string | undefined, refuse: (reason: Error) => Error): { restore: () => void } {
  const proto = httpm.HttpClient.prototype;
  const original = proto.requestRaw;
  const chains = new WeakMap<object, Hop>();
  const origin = apiOrigin ?? 'null';
  proto.requestRaw = function requestRaw(this: httpm.HttpClient, info: RequestInfo, data: Parameters<typeof original>[1]) {
    let hop: Hop;
    try {
      const previous = chains.get(this);
      hop = previous ? nextHop(previous, info.parsedUrl.href, origin) : firstHop(info.parsedUrl.href, origin);
    } catch (error) {
      return Promise.reject(refuse(error as Error));
    }
    chains.set(this, hop);
    if (hop.url.search.length > 1) log.registerSecret(hop.url.search.slice(1));
    if (!hop.sendAuth) dropAuthorization(info.options.headers as Record<string, unknown> | undefined);
    return original.call(this, info, data);
  };
  return {
    restore() {
      proto.requestRaw = original;
    },
  };
}

function dropAuthorization(headers: Record<string, unknown> | undefined): void {
  for (const name of Object.keys(headers ?? {})) {
    if (name.toLowerCase() === 'authorization') delete (headers as Record<string, unknown>)[name];
  }
}
