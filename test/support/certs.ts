/**
 * A private certificate authority and a server certificate it signed, made with openssl: what a
 * storage server behind TLS needs in the tests and the benchmark. The client trusts the
 * authority through NODE_EXTRA_CA_CERTS (or curl's --cacert), as a runner behind a corporate CA
 * would.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestCertificates {
  dir: string;
  /** The authority's certificate (PEM): what NODE_EXTRA_CA_CERTS points at. */
  caFile: string;
  cert: Buffer;
  key: Buffer;
  certFile: string;
  keyFile: string;
  remove(): void;
}

/** A CA and a server certificate for `names` (DNS names and IP addresses). */
export async function makeCertificates(
  names: string[] = ['127.0.0.1', '127.0.0.2', 'localhost', 'storage.test'],
): Promise<TestCertificates> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'together-certs-'));
  const file = (name: string) => path.join(dir, name);
  const san = names.map((n) => (/^[\d.]+$/.test(n) || n.includes(':') ? `IP:${n}` : `DNS:${n}`)).join(',');
  fs.writeFileSync(
    file('server.ext'),
    `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`,
  );
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    file('ca.key'),
    '-out',
    file('ca.pem'),
    '-days',
    '30',
    '-subj',
    '/CN=together-download test CA',
  ]);
  await run('openssl', ['req', ...ec, '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', `/CN=${names[0]}`]);
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    file('server.csr'),
    '-CA',
    file('ca.pem'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-out',
    file('server.pem'),
    '-days',
    '30',
    '-extfile',
    file('server.ext'),
  ]);
  return {
    dir,
    caFile: file('ca.pem'),
    cert: fs.readFileSync(file('server.pem')),
    key: fs.readFileSync(file('server.key')),
    certFile: file('server.pem'),
    keyFile: file('server.key'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
