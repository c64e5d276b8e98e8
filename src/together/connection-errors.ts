/**
 * What a failed connection means. `fetch` reports every failure as `TypeError: fetch failed`; the
 * cause chain below it says which: a name that did not resolve, an address that refused, a
 * certificate that is not trusted, a proxy that said no. The message names that cause and what to
 * change, and whether another attempt could help.
 */

export interface ConnectionProblem {
  /** What happened, e.g. `the host name api.example.invalid did not resolve (ENOTFOUND)`. */
  reason: string;
  /** What to do about it. */
  hint: string;
  /** Whether another attempt could cure it (a refused port may open; an untrusted certificate stays untrusted). */
  retryable: boolean;
}

interface ErrorLike {
  message?: unknown;
  code?: unknown;
  hostname?: unknown;
  address?: unknown;
  port?: unknown;
  cause?: unknown;
}

const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA', 'EAI_NONAME']);
const CERTIFICATE_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);
const PROXY_STATUS_TEXT: Record<number, string> = {
  403: 'Forbidden',
  407: 'Proxy Authentication Required',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** The error and its causes, outermost first (bounded: a cause chain can loop). */
function chainOf(error: unknown): ErrorLike[] {
  const chain: ErrorLike[] = [];
  for (let e = error; typeof e === 'object' && e !== null && chain.length < 8; e = (e as ErrorLike).cause) chain.push(e as ErrorLike);
  return chain;
}

const text = (value: unknown): string | undefined => (typeof value === 'string' && value !== '' ? value : undefined);

/** The first line of a message, without Node's advice for another audience (`try running Node.js with ...`). */
function firstClause(message: string): string {
  return message.split('\n')[0].replace(/; if the root CA is installed locally.*$/, '');
}

/**
 * Explains a connection failure to `url`, or returns undefined when the error is not one (an HTTP
 * status, a parse error). `proxy` is the proxy the request went through, if any, without credentials.
 */
export function describeConnectionError(error: unknown, url: string, proxy?: string): ConnectionProblem | undefined {
  const chain = chainOf(error);
  const host = new URL(url).host;
  const proxyName = proxy ? `the proxy ${proxy}` : 'the proxy';

  const proxyRefusal = chain.map((e) => /Proxy response \((\d{3})\)/.exec(text(e.message) ?? '')).find((m) => m !== null);
  if (proxyRefusal) {
    const status = Number(proxyRefusal[1]);
    const statusText = PROXY_STATUS_TEXT[status] ? ` ${PROXY_STATUS_TEXT[status]}` : '';
    return {
      reason: `${proxyName} answered HTTP ${status}${statusText} when asked to connect to ${host}`,
      hint:
        status === 407
          ? 'The proxy wants credentials: put them in the proxy variable (`https_proxy=http://user:password@proxy:port`), or list the API host in `no_proxy` if it needs no proxy.'
          : 'Check the proxy variables (`https_proxy`, `http_proxy`, `no_proxy`) and whether the proxy lets this runner reach the API host.',
      retryable: status >= 500,
    };
  }

  for (const e of chain) {
    const code = text(e.code);
    if (code === undefined) continue;
    if (DNS_CODES.has(code)) {
      const name = text(e.hostname) ?? new URL(url).hostname;
      return {
        reason: `the host name ${name} did not resolve (${code})`,
        hint: 'Check the `base-url` input (or TOGETHER_BASE_URL) and the runner\u2019s DNS.',
        retryable: true,
      };
    }
    if (code === 'ECONNREFUSED') {
      const address = text(e.address) ? `${e.address}${typeof e.port === 'number' ? `:${e.port}` : ''}` : host;
      return {
        reason: `${address} refused the connection (ECONNREFUSED)`,
        hint: proxy
          ? `Nothing accepts connections there: check ${proxyName} and the \`base-url\` input.`
          : 'Nothing accepts connections there: check the `base-url` input (or TOGETHER_BASE_URL), or whether a proxy is needed (`https_proxy`).',
        retryable: true,
      };
    }
    if (CERTIFICATE_CODES.has(code)) {
      const detail = text(e.message) ? firstClause(e.message as string) : code;
      return {
        reason:
          code === 'ERR_TLS_CERT_ALTNAME_INVALID'
            ? `the certificate of ${host} is not valid for that name (${detail})`
            : `the certificate of ${host} is not trusted (${code}: ${detail})`,
        hint: 'If this network inspects TLS with its own certificate authority (a corporate proxy or firewall), set the environment variable NODE_EXTRA_CA_CERTS to that authority\u2019s certificate file (PEM) for this step; otherwise check `base-url`.',
        retryable: false,
      };
    }
    if (
      ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL'].includes(code) ||
      code.startsWith('UND_ERR_')
    ) {
      const detail = text(e.message) ? firstClause(e.message as string) : code;
      return {
        reason: `the connection to ${host} failed (${detail})`,
        hint: 'Check the network, a proxy, or the `base-url` input.',
        retryable: true,
      };
    }
  }
  if (chain.some((e) => text(e.message) === 'bad port')) {
    return {
      reason: `fetch refuses to connect to port ${new URL(url).port} (a port reserved for another protocol)`,
      hint: 'Check the port in the `base-url` input.',
      retryable: true,
    };
  }
  // `fetch failed` with nothing more precise below it; still a connection problem.
  const isFetchFailure = chain.some((e) => /fetch failed|terminated|socket|network/i.test(text(e.message) ?? ''));
  if (!isFetchFailure) return undefined;
  const detail = chain
    .map((e) => text(e.message))
    .filter((m) => m !== undefined && m !== 'fetch failed' && m !== 'Connection error.')
    .at(-1);
  return {
    reason: `the connection to ${host} failed${detail ? ` (${firstClause(detail)})` : ''}`,
    hint: 'Check the network, a proxy, or the `base-url` input.',
    retryable: true,
  };
}
