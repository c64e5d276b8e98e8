/**
 * The redirect policy of every download request. The API key belongs to the API's origin
 * (scheme, host and port): it goes only there, and never again once a redirect chain has left
 * that origin, even to a hop that comes back. Every hop is `http:` or `https:`, and `https` never
 * goes down to `http`.
 */
import { ActionError } from '../errors.js';
import { displayUrl } from '../format.js';

export const MAX_REDIRECTS = 10;
export const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** Where a chain of redirects stands. */
export interface Hop {
  url: URL;
  /** Whether this hop may carry the API key. */
  sendAuth: boolean;
  /** The chain has been somewhere other than the API's origin. */
  leftApiOrigin: boolean;
  /** How many redirects led here. */
  redirects: number;
  /** A redirect on the way had a relative `Location`. */
  relativeRedirect: boolean;
}

/** The first hop of a chain: the API's own URL. */
export function firstHop(url: string, apiOrigin: string): Hop {
  const parsed = new URL(url);
  requireHttp(parsed);
  const onApi = parsed.origin === apiOrigin;
  return { url: parsed, sendAuth: onApi, leftApiOrigin: !onApi, redirects: 0, relativeRedirect: false };
}

/** The hop a redirect's `Location` leads to, or an ActionError that says why it is refused. */
export function nextHop(current: Hop, location: string, apiOrigin: string): Hop {
  if (current.redirects >= MAX_REDIRECTS) {
    throw new ActionError(`The download redirected more than ${MAX_REDIRECTS} times; last hop: ${displayUrl(current.url.href)}.`);
  }
  let next: URL;
  try {
    next = new URL(location, current.url);
  } catch {
    throw new ActionError(`The download redirected to a malformed URL (from ${displayUrl(current.url.href)}).`);
  }
  requireHttp(next);
  if (current.url.protocol === 'https:' && next.protocol === 'http:') {
    throw new ActionError(`The download redirected from https to plain http (${displayUrl(next.href)}); refusing to continue without TLS.`);
  }
  next.hash = '';
  const leftApiOrigin = current.leftApiOrigin || next.origin !== apiOrigin;
  return {
    url: next,
    sendAuth: !leftApiOrigin,
    leftApiOrigin,
    redirects: current.redirects + 1,
    relativeRedirect: current.relativeRedirect || !/^[a-z][a-z0-9+.-]*:/i.test(location.trim()),
  };
}

function requireHttp(url: URL): void {
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ActionError(`The download redirected to an unsupported URL scheme (${url.protocol}); only http and https are followed.`);
  }
}
