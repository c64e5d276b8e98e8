/**
 * The extraction check is only as good as its agreement with the tar that does the extracting (GNU
 * tar on Linux, bsdtar on macOS and Windows): an entry tar reads but the check never saw is an entry
 * nobody checked. Random archives built from the shapes where tars are known to differ (names
 * ending in `/`, links and folders that carry data, data that looks like a header, pax and GNU long
 * names) are checked, and every one the check accepts is extracted by each tar, fed on its standard
 * input with the options the action uses, which must write nothing the check did not list.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { EntryValidator, UnsafeArchiveError } from '../../src/archive/entries.js';
import { readTarEntries, type TarEntry, TarFormatError } from '../../src/archive/tar.js';
import { gnuLong, pax, type RawEntry, tarOf } from '../support/tar-writer.js';

/** Extracts `archive`, given on standard input, into `dir`; true when tar succeeded. */
function extract(tar: string, args: string[], archive: Buffer, dir: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const child = spawn(tar, ['-x', '-f', '-', '-C', dir, ...args], { stdio: ['pipe', 'ignore', 'ignore'] });
    child.on('error', reject);
    child.on('close', (code) => resolve(code === 0));
    child.stdin.on('error', () => undefined);
    child.stdin.end(archive);
  });
}
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'together-tar-differential-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

async function* chunks(data: Buffer): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += 512) yield data.subarray(i, i + 512);
}

/** The entries the check accepted, or undefined when it refused the archive. */
async function checked(archive: Buffer): Promise<TarEntry[] | undefined> {
  const validator = new EntryValidator();
  const entries: TarEntry[] = [];
  try {
    for await (const entry of readTarEntries(chunks(archive))) {
      validator.add(entry);
      entries.push(entry);
    }
    validator.result();
  } catch (error) {
    if (error instanceof UnsafeArchiveError || error instanceof TarFormatError) return undefined;
    throw error;
  }
  return entries;
}

type Kind = 'file' | 'dir' | `symlink -> ${string}`;

/** What the accepted entries may put on disk: each path (parents included) and its kind. */
function allowed(entries: TarEntry[]): Map<string, Set<Kind>> {
  const paths = new Map<string, Set<Kind>>();
  const allow = (p: string, kind: Kind) => paths.set(p, (paths.get(p) ?? new Set()).add(kind));
  for (const entry of entries) {
    const parts = entry.name.split('/').filter((c) => c !== '' && c !== '.');
    for (let i = 1; i < parts.length; i++) allow(parts.slice(0, i).join('/'), 'dir');
    if (parts.length === 0) continue;
    const kind: Kind = entry.type === '5' ? 'dir' : entry.type === '2' ? `symlink -> ${entry.linkName}` : 'file';
    allow(parts.join('/'), kind);
  }
  return paths;
}

/** What GNU tar wrote into `dir`: each path and its kind. */
function written(dir: string, prefix = ''): Map<string, Kind> {
  const out = new Map<string, Kind>();
  for (const name of fs.readdirSync(dir)) {
    const full = path.join(dir, name);
    const rel = prefix ? `${prefix}/${name}` : name;
    const stat = fs.lstatSync(full);
    if (stat.isSymbolicLink()) out.set(rel, `symlink -> ${fs.readlinkSync(full)}`);
    else if (stat.isDirectory()) {
      out.set(rel, 'dir');
      for (const [p, k] of written(full, rel)) out.set(p, k);
    } else out.set(rel, 'file');
  }
  return out;
}

/** Data that GNU tar would read as one more entry if it took it for headers. */
const HIDDEN = tarOf([{ name: 'hidden.txt', data: Buffer.from('hidden') }], { end: false });

const name = fc.constantFrom('a', 'b', 'a/', 'b/', 'a/x', 'a/b/', './', './a', 'a//', 'c/.', 'd/e');
const linkName = fc.constantFrom('a', 'b', 'a/x', 'x', '.', '..', '../a', '..\0x', 'a\0/../..');
const data = fc.constantFrom(Buffer.alloc(0), Buffer.from('hi'), HIDDEN);
const plain = fc.record({
  name,
  type: fc.constantFrom('0', '7', '1', '2', '5'),
  linkName,
  data,
});
const entry: fc.Arbitrary<RawEntry[]> = fc.oneof(
  { weight: 4, arbitrary: plain.map((e) => [e]) },
  { weight: 1, arbitrary: fc.tuple(name, plain).map(([p, e]) => [pax({ path: p }), e]) },
  { weight: 1, arbitrary: fc.tuple(linkName, plain).map(([l, e]) => [pax({ linkpath: l }), e]) },
  { weight: 1, arbitrary: fc.tuple(name, plain).map(([p, e]) => [gnuLong(p), e]) },
);

for (const [name, tar, args] of [
  ['GNU tar', 'tar', ['--no-same-owner', '--no-same-permissions', '--warning=no-unknown-keyword']],
  ['bsdtar', '/usr/bin/bsdtar', []],
] as const) {
  test(`every archive the check accepts is extracted by ${name} to exactly what the check listed, or less`, async () => {
    let extracted = 0;
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 4 }), async (groups) => {
        const archive = tarOf([...groups.flat(), { name: 'after.txt', data: Buffer.from('ok') }]);
        const entries = await checked(archive);
        if (entries === undefined) return;
        const dir = path.join(scratch, `${name}-${runs++}`);
        fs.mkdirSync(dir);
        try {
          // When tar fails, the action keeps nothing it wrote.
          if (!(await extract(tar, [...args], archive, dir))) return;
          extracted++;
          const may = allowed(entries);
          for (const [p, kind] of written(dir)) {
            assert.ok(
              may.get(p)?.has(kind),
              `${name} wrote ${JSON.stringify(p)} (${kind}), which the check never saw; it listed ${JSON.stringify([...may.keys()])}`,
            );
          }
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 1500 },
    );
    // The property says nothing unless tar extracted a good number of the archives.
    assert.ok(extracted >= 100, `${name} extracted only ${extracted} of 1500 random archives`);
  });
}
