/**
 * The download's own HTTP/1.1 client: the response-head parser, chunked bodies, and a connection
 * that reads into buffers it lends to a sink. A sink here copies a region only when it hands it
 * back, late, so a read that lands in memory still lent shows as corrupt data.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';
import { HttpConnection } from '../../src/transfer/connection.js';
import { DownloadClient } from '../../src/transfer/http-client.js';
import { bodyFraming, ChunkedDecoder, HeadParser, ProtocolError, parseContentRange, parseHead } from '../../src/transfer/http-head.js';
import { makeCertificates, type TestCertificates } from '../support/certs.js';

describe('the response-head parser', () => {
  test('finds the end of a head split at every byte, and leaves the body where it is', () => {
    const head = 'HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nContent-Range: bytes 10-14/100\r\nX-Two: a\r\nx-two: b\r\n\r\n';
    const wire = Buffer.from(`${head}hello`);
    for (let cut = 1; cut < head.length; cut++) {
      const parser = new HeadParser();
      assert.equal(parser.feed(wire, 0, cut), -1, `cut at ${cut}`);
      const at = parser.feed(wire, cut, wire.length);
      assert.equal(at, head.length, `cut at ${cut}`);
      const parsed = parser.parse();
      assert.equal(parsed.status, 206);
      assert.deepEqual(parsed.headers.get('x-two'), ['a', 'b']);
      assert.equal(wire.subarray(at).toString(), 'hello');
    }
  });

  for (const [name, text] of [
    ['not HTTP/1.x', 'HTTP/2 200\r\n\r\n'],
    ['a bare LF', 'HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n'],
    ['a folded header', 'HTTP/1.1 200 OK\r\nA: b\r\n  c\r\n\r\n'],
    ['a header without a name', 'HTTP/1.1 200 OK\r\n: x\r\n\r\n'],
    ['a space in a header name', 'HTTP/1.1 200 OK\r\nContent Length: 1\r\n\r\n'],
    ['a control character in a value', 'HTTP/1.1 200 OK\r\nA: b\u0001c\r\n\r\n'],
  ]) {
    test(`refuses ${name}`, () => {
      assert.throws(() => parseHead(text), ProtocolError);
    });
  }

  test('refuses a head over 64 KiB', () => {
    const parser = new HeadParser();
    const line = Buffer.from(`X-Pad: ${'a'.repeat(1000)}\r\n`);
    assert.throws(() => {
      parser.feed(Buffer.from('HTTP/1.1 200 OK\r\n'), 0, 17);
      for (let i = 0; i < 70; i++) parser.feed(line, 0, line.length);
    }, /larger than 64 KiB/);
  });

  test('body framing: length, chunked, until close; conflicting lengths and other codings refused', () => {
    const head = (lines: string) => parseHead(`HTTP/1.1 200 OK\r\n${lines}\r\n`);
    assert.deepEqual(bodyFraming(head('Content-Length: 12\r\n')), { kind: 'length', length: 12 });
    assert.deepEqual(bodyFraming(head('Content-Length: 12, 12\r\n')), { kind: 'length', length: 12 });
    assert.deepEqual(bodyFraming(head('Transfer-Encoding: chunked\r\nContent-Length: 3\r\n')), { kind: 'chunked' });
    assert.deepEqual(bodyFraming(head('')), { kind: 'close' });
    assert.deepEqual(bodyFraming(parseHead('HTTP/1.1 204 No Content\r\n\r\n')), { kind: 'none' });
    assert.throws(() => bodyFraming(head('Content-Length: 12\r\nContent-Length: 13\r\n')), /invalid Content-Length/);
    assert.throws(() => bodyFraming(head('Content-Length: -1\r\n')), /invalid Content-Length/);
    assert.throws(() => bodyFraming(head('Transfer-Encoding: gzip, chunked\r\n')), /unsupported Transfer-Encoding/);
    assert.throws(() => bodyFraming(head('Transfer-Encoding: gzip\r\n')), /unsupported Transfer-Encoding/);
  });

  test('Content-Range', () => {
    assert.deepEqual(parseContentRange('bytes 0-1/12345'), { first: 0, last: 1, total: 12345 });
    assert.deepEqual(parseContentRange('bytes 5-9/*'), { first: 5, last: 9, total: undefined });
    assert.equal(parseContentRange('bytes 9-5/10'), undefined);
    assert.equal(parseContentRange('bytes=0-1/2'), undefined);
    assert.equal(parseContentRange(undefined), undefined);
  });
});

describe('the chunked decoder', () => {
  test('yields the data of a chunked body fed a byte at a time, and where the body ends', () => {
    const body = Buffer.from('5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT');
    const decoder = new ChunkedDecoder();
    const out: string[] = [];
    let end = -1;
    for (let i = 0; i < body.length && end === -1; i++) {
      const { done, rest } = decoder.push(body, i, i + 1, (a, b) => out.push(body.subarray(a, b).toString()));
      if (done) end = rest;
    }
    assert.equal(out.join(''), 'hello world');
    assert.equal(body.subarray(end).toString(), 'NEXT');
  });

  test('refuses a malformed chunk', () => {
    assert.throws(() => new ChunkedDecoder().push(Buffer.from('zz\r\n'), 0, 4, () => {}), ProtocolError);
    assert.throws(() => new ChunkedDecoder().push(Buffer.from('2\r\nabX'), 0, 6, () => {}), ProtocolError);
  });
});

/** A sink that keeps each region for a while and copies it only when it gives it back. */
function lateCopySink(out: Buffer, from: number, maxDelayMs: number) {
  let offset = from;
  let pending = 0;
  let idle: (() => void) | undefined;
  return {
    sink: {
      data(buf: Buffer, start: number, end: number, done: () => void) {
        const at = offset;
        offset += end - start;
        pending++;
        setTimeout(() => {
          buf.copy(out, at, start, end);
          done();
          if (--pending === 0) idle?.();
        }, Math.random() * maxDelayMs);
      },
    },
    drained: () => (pending === 0 ? Promise.resolve() : new Promise<void>((resolve) => (idle = resolve))),
  };
}

describe('a connection lends its buffers, and never reads into one still lent', () => {
  const data = randomBytes(24 * 1024 * 1024);
  let certs: TestCertificates;
  let plain: http.Server;
  let secure: tls.Server;
  const answer = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
    const [a, b] = m ? [Number(m[1]), Number(m[2])] : [0, data.length - 1];
    res.writeHead(m ? 206 : 200, { 'content-length': b - a + 1, 'content-range': `bytes ${a}-${b}/${data.length}` });
    res.end(data.subarray(a, b + 1));
  };

  before(async () => {
    certs = await makeCertificates(['127.0.0.1']);
    plain = http.createServer(answer);
    // TLS in front of the same handler: a TLS socket hands over data even after a read said stop.
    const inner = http.createServer(answer);
    secure = tls.createServer({ key: certs.key, cert: certs.cert }, (socket) => {
      secureSockets.add(socket);
      inner.emit('connection', socket);
    });
    await Promise.all([
      new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve)),
      new Promise<void>((resolve) => secure.listen(0, '127.0.0.1', resolve)),
    ]);
  });
  const secureSockets = new Set<net.Socket>();
  after(() => {
    plain.closeAllConnections();
    plain.close();
    for (const socket of secureSockets) socket.destroy();
    secure.close();
    certs.remove();
  });

  for (const scheme of ['http', 'https'] as const) {
    test(`${scheme}: every byte as sent, through slow hand-backs, over one kept-alive connection`, async () => {
      const port = ((scheme === 'http' ? plain : secure).address() as AddressInfo).port;
      const origin = `${scheme}://127.0.0.1:${port}`;
      // The test's own CA, as NODE_EXTRA_CA_CERTS gives it to the action.
      const connection = await HttpConnection.open({ origin: new URL(origin) }, { timeoutMs: 5000, ca: fs.readFileSync(certs.caFile) });
      const out = Buffer.alloc(data.length);
      const piece = 8 * 1024 * 1024;
      for (let start = 0; start < data.length; start += piece) {
        const end = Math.min(data.length, start + piece) - 1;
        connection.watch({ stallMs: 10_000 });
        const head = await connection.request(new URL(`${origin}/f`), [['Range', `bytes=${start}-${end}`]]);
        assert.equal(head.status, 206);
        const { sink, drained } = lateCopySink(out, start, 8);
        await connection.readBody(sink);
        await drained();
      }
      assert.ok(out.equals(data), 'the bytes differ from what was sent');
      assert.equal(connection.requests, 3, 'one connection carried every request');
      assert.ok(connection.isReusable);
      connection.destroy();
    });
  }

  test('a body longer than asked for is cut at the range, and the connection is not reused', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(206, { 'content-length': '100', 'content-range': 'bytes 0-9/100' });
      res.end(Buffer.alloc(100, 7));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const connection = await HttpConnection.open({ origin: new URL(origin) }, { timeoutMs: 5000 });
    await connection.request(new URL(`${origin}/`), []);
    connection.limitBody(10);
    let got = 0;
    await connection.readBody({
      data(_buf, start, end, done) {
        got += end - start;
        done();
      },
    });
    assert.equal(got, 10);
    assert.equal(connection.isReusable, false);
    server.closeAllConnections();
    server.close();
  });

  test('a head that trickles in byte by byte, then the body in the same reads', async () => {
    const server = net.createServer((socket) => {
      socket.once('data', async () => {
        const wire = Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world');
        for (const byte of wire) {
          socket.write(Buffer.from([byte]));
          await new Promise((r) => setTimeout(r, 1));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = new DownloadClient({ apiKey: 'k', apiOrigin: 'http://nowhere.invalid' });
    const answer = await client.get(`http://127.0.0.1:${(server.address() as AddressInfo).port}/x`, {
      headers: {},
      stallMs: 5000,
      print: () => undefined,
    });
    assert.equal(answer.status, 200);
    assert.equal((await answer.readSmall(100)).toString(), 'hello world');
    client.close();
    server.close();
  });
});
