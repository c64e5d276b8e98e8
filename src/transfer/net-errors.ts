/**
 * What went wrong on the way to a server, in words a workflow author can act on: the host that
 * did not resolve, the address that refused, the certificate that is not trusted, the proxy's
 * answer. Each is also classed as worth another attempt or not.
 */
import { displayUrl } from '../format.js';
import { ConnectError, DeadlineError, ProxyRefusedError, StallError } from './connection.js';
import { ProtocolError } from './http-head.js';

export interface NetworkFailure {
  message: string;
  retryable: boolean;
}

const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REJECTED',
]);
const CERTIFICATE_PROBLEMS: Record<string, string> = {
  CERT_HAS_EXPIRED: 'has expired',
  CERT_NOT_YET_VALID: 'is not valid yet',
  ERR_TLS_CERT_ALTNAME_INVALID: 'is not issued for that name',
};
const NOT_RESOLVED = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_NODATA', 'EAI_FAIL']);

/**
 * Describes an error from connecting, a broken connection or a response that breaks HTTP. A bare
 * system or TLS error (another library's) is described the same way; `host` then names the server.
 */
export function describeNetworkError(error: unknown, host?: string): NetworkFailure {
  if (error instanceof ProxyRefusedError) {
    const proxy = displayUrl(error.proxy.href).replace(/\/$/, '');
    const hint =
      error.status === 407
        ? ' The proxy wants credentials: put them in the proxy variable (`https_proxy: http://user:password@host:port`), or exempt the host with `no_proxy`.'
        : '';
    return {
      message: `the proxy ${proxy} refused to open a tunnel to ${error.target}: HTTP ${error.status}${error.reason ? ` ${error.reason}` : ''}.${hint}`,
      retryable: error.status >= 500 || error.status === 408 || error.status === 429,
    };
  }
  const bare = error as NodeJS.ErrnoException | undefined;
  if (!(error instanceof ConnectError) && bare?.code && isConnectCode(bare.code)) {
    return describeNetworkError(new ConnectError(error as Error, host ?? '?', false, host));
  }
  if (error instanceof ConnectError) {
    const cause = error.cause as NodeJS.ErrnoException & { hostname?: string; address?: string; port?: number };
    const code = cause.code ?? '';
    const through = error.viaProxy ? 'the proxy at ' : '';
    if (NOT_RESOLVED.has(code)) {
      const host = cause.hostname ?? error.endpoint.replace(/:\d+$/, '');
      return { message: `the host name ${host}${error.viaProxy ? ' (the proxy)' : ''} did not resolve (${code})`, retryable: true };
    }
    if (code === 'ECONNREFUSED') {
      const where = cause.address ? `${cause.address}:${cause.port}` : error.endpoint;
      return { message: `${through}${where} refused the connection (ECONNREFUSED)`, retryable: true };
    }
    if (UNTRUSTED.has(code)) {
      return {
        message: `the TLS certificate of ${error.tlsHost ?? error.endpoint} is not trusted (${code}: ${cause.message}). If the server uses a private certificate authority, point NODE_EXTRA_CA_CERTS at that authority's PEM file in the step's env`,
        retryable: false,
      };
    }
    if (CERTIFICATE_PROBLEMS[code]) {
      return {
        message: `the TLS certificate of ${error.tlsHost ?? error.endpoint} ${CERTIFICATE_PROBLEMS[code]} (${code}: ${cause.message})`,
        retryable: false,
      };
    }
    return { message: `could not connect to ${through}${error.endpoint}: ${cause.message}${code ? ` (${code})` : ''}`, retryable: true };
  }
  if (error instanceof StallError) return { message: `no data for ${error.ms / 1000} s`, retryable: true };
  if (error instanceof DeadlineError) return { message: `no complete answer within ${error.ms / 1000} s`, retryable: true };
  if (error instanceof ProtocolError) return { message: `the response broke HTTP/1.1: ${error.message}`, retryable: true };
  return {
    message: `the connection broke: ${bare?.message ?? String(error)}${bare?.code && !bare.message?.includes(bare.code) ? ` (${bare.code})` : ''}`,
    retryable: true,
  };
}

/** Codes that come from reaching a server (its name, its address, its certificate), not from a connection that broke. */
function isConnectCode(code: string): boolean {
  return NOT_RESOLVED.has(code) || code === 'ECONNREFUSED' || UNTRUSTED.has(code) || code in CERTIFICATE_PROBLEMS;
}
