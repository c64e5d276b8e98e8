import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { EntryValidator, foldName, UnsafeArchiveError } from '../../src/archive/entries.js';
import { bytesOnDisk, diskErrorIn, folderNameFor, largestFiles, listArchive, resolveExtractDir } from '../../src/archive/extract.js';
import { readTarEntries, TarFormatError } from '../../src/archive/tar.js';
import { InputError } from '../../src/errors.js';
import { makeArchive } from '../support/archives.js';
import { gnuLong, pax, type RawEntry, tarOf, zstdCompress } from '../support/tar-writer.js';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'together-extract-unit-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

async function* chunks(data: Buffer, size = 100): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function entriesOf(data: Buffer) {
  const out = [];
  for await (const e of readTarEntries(chunks(data))) out.push(e);
  return out;
}

/** Runs the validator over hand-made entries (through the real parser). */
async function validate(entries: RawEntry[]) {
  const validator = new EntryValidator();
  for await (const e of readTarEntries(chunks(tarOf(entries)))) validator.add(e);
  return validator.result();
}

async function rejects(entries: RawEntry[], reason: RegExp) {
  await assert.rejects(validate(entries), (error: unknown) => {
    assert.ok(error instanceof UnsafeArchiveError, `expected UnsafeArchiveError, got ${String(error)}`);
    assert.match(error.message, reason);
    return true;
  });
}

const file = (name: string, data = 'x'): RawEntry => ({ name, data: Buffer.from(data) });
const dir = (name: string): RawEntry => ({ name, type: '5' });
const symlink = (name: string, linkName: string): RawEntry => ({ name, type: '2', linkName });
const hardlink = (name: string, linkName: string): RawEntry => ({ name, type: '1', linkName });

describe('reading tar headers', () => {
  test('names, types, sizes and link targets of a GNU tar archive', async () => {
    const tar = tarOf([
      dir('m/'),
      file('m/config.json', '{}'),
      symlink('m/latest', 'config.json'),
      hardlink('m/copy.json', 'm/config.json'),
    ]);
    const entries = await entriesOf(tar);
    assert.deepEqual(
      entries.map((e) => [e.name, e.type, e.size, e.linkName]),
      [
        ['m/', '5', 0, ''],
        ['m/config.json', '0', 2, ''],
        ['m/latest', '2', 0, 'config.json'],
        ['m/copy.json', '1', 0, 'm/config.json'],
      ],
    );
  });

  test('pax path and linkpath, GNU long names and the ustar prefix apply to the next entry', async () => {
    const long = `${'d'.repeat(120)}/weights.safetensors`;
    const entries = await entriesOf(
      tarOf([
        pax({ path: 'pax/named.bin', mtime: '1700000000.5' }),
        file('ignored-name'),
        gnuLong(long),
        file('short'),
        { name: 'file.txt', prefix: 'a/b', data: Buffer.from('p') },
        pax({ linkpath: 'pax/named.bin' }),
        symlink('link', 'short-target'),
      ]),
    );
    assert.deepEqual(
      entries.map((e) => [e.name, e.linkName]),
      [
        ['pax/named.bin', ''],
        [long, ''],
        ['a/b/file.txt', ''],
        ['link', 'pax/named.bin'],
      ],
    );
  });

  test('a pax size and a base-256 size are honoured, so the entries after them are found', async () => {
    const data = Buffer.alloc(700, 7);
    const entries = await entriesOf(
      tarOf([
        { name: 'big', data, base256Size: true, gnu: true },
        pax({ size: '3' }),
        { name: 'three', data: Buffer.from('abc'), size: 0 },
        file('last'),
      ]),
    );
    assert.deepEqual(
      entries.map((e) => [e.name, e.size]),
      [
        ['big', 700],
        ['three', 3],
        ['last', 1],
      ],
    );
  });

  test('a real archive made by GNU tar (zstd and gzip) lists every file with its size', async () => {
    const files = {
      'config.json': Buffer.from('{"a":1}'),
      'model-00001.safetensors': Buffer.alloc(5000, 1),
      'sub/tokenizer.json': Buffer.alloc(10, 2),
    };
    for (const format of ['zstd', 'gzip'] as const) {
      const archive = path.join(scratch, `real.${format}`);
      fs.writeFileSync(archive, await makeArchive(files, format, { topDir: 'merged' }));
      const listing = await listArchive(archive, format);
      assert.equal(listing.topLevelDir, 'merged');
      assert.deepEqual(listing.files.map((f) => [f.name, f.size]).sort(), [
        ['merged/config.json', 7],
        ['merged/model-00001.safetensors', 5000],
        ['merged/sub/tokenizer.json', 10],
      ]);
      assert.equal(listing.totalBytes, 5017);
    }
  });

  test('an archive with its files at the root has no top-level folder', async () => {
    const archive = path.join(scratch, 'root.tar.zst');
    fs.writeFileSync(
      archive,
      await makeArchive({ 'adapter_config.json': Buffer.from('{}'), 'adapter_model.safetensors': Buffer.alloc(8) }, 'zstd'),
    );
    const listing = await listArchive(archive, 'zstd');
    assert.equal(listing.topLevelDir, undefined);
    assert.equal(listing.files.length, 2);
  });

  test('one top-level file is not a folder', async () => {
    assert.equal((await validate([file('only.bin')])).topLevelDir, undefined);
    assert.equal((await validate([dir('./'), dir('./m/'), file('./m/a')])).topLevelDir, 'm');
    assert.equal((await validate([file('m/a'), file('n/b')])).topLevelDir, undefined);
  });

  test('a bad checksum, a truncated entry and a global pax path are format errors', async () => {
    await assert.rejects(entriesOf(tarOf([{ ...file('a'), badChecksum: true }])), TarFormatError);
    const whole = tarOf([file('a', 'x'.repeat(2000))], { end: false });
    await assert.rejects(entriesOf(whole.subarray(0, 1000)), /truncated/);
    await assert.rejects(entriesOf(whole.subarray(0, 300)), /inside a header/);
    await assert.rejects(entriesOf(tarOf([pax({ path: '/etc/passwd' }, 'g'), file('a')])), /global pax header/);
  });

  test('what tars read differently is refused: a lone zero block before more entries, two pax headers or long names for one entry', async () => {
    const lone = Buffer.concat([tarOf([file('a')], { end: false }), Buffer.alloc(512), tarOf([file('../hidden')])]);
    await assert.rejects(entriesOf(lone), /lone zero block/);
    assert.equal(
      (await entriesOf(Buffer.concat([tarOf([file('a')], { end: false }), Buffer.alloc(512)]))).length,
      1,
      'one zero block at the very end is fine',
    );
    await assert.rejects(entriesOf(tarOf([pax({ path: 'innocent' }), pax({ mtime: '1' }), file('../x')])), /two pax headers/);
    await assert.rejects(entriesOf(tarOf([gnuLong('a'), gnuLong('b'), file('c')])), /two GNU long names/);
  });

  test('an archive ending on an entry boundary without end blocks is complete', async () => {
    assert.equal((await entriesOf(tarOf([file('a'), file('b')], { end: false }))).length, 2);
  });

  test('corrupt compressed data is a format error, not a crash', async () => {
    const zst = path.join(scratch, 'corrupt.tar.zst');
    fs.writeFileSync(zst, Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(600, 0x41)]));
    await assert.rejects(
      listArchive(zst, 'zstd'),
      (e: Error) => e instanceof TarFormatError && /zstd could not decompress/.test(e.message),
    );
    const gz = path.join(scratch, 'corrupt.tar.gz');
    fs.writeFileSync(gz, gzipSync(tarOf([file('a', 'y'.repeat(5000))])).subarray(0, 60));
    await assert.rejects(listArchive(gz, 'gzip'), TarFormatError);
  });
});

describe('checking entries', () => {
  test('accepts ordinary model layouts, links that stay inside included', async () => {
    const listing = await validate([
      dir('./'),
      dir('model/'),
      file('model/config.json'),
      file('model/./weights.bin', 'abcd'),
      symlink('model/latest.json', 'config.json'),
      symlink('model/sub/up.json', '../config.json'),
      hardlink('model/copy.json', 'model/config.json'),
      hardlink('model/copy2.json', './model/copy.json'),
      dir('model/snapshots/abc/'),
      file('model/blobs/123'),
      symlink('model/snapshots/abc/model.bin', '../../blobs/123'),
      symlink('model/self', '.'),
      symlink('model/root', '..'),
    ]);
    assert.equal(listing.topLevelDir, 'model');
    assert.deepEqual(
      listing.files.map((f) => f.name),
      ['model/config.json', 'model/weights.bin', 'model/blobs/123'],
    );
  });

  test('rejects absolute paths', () => rejects([file('/etc/cron.d/x')], /absolute path/));
  test('rejects Windows drive paths', () => rejects([file('C:/Windows/x')], /absolute path/));
  test('rejects ..', () => rejects([file('../x')], /"\.\." component/));
  test('rejects .. in the middle', () => rejects([file('a/b/../../../x')], /"\.\." component/));
  test('rejects backslashes', () => rejects([file('a\\..\\..\\x')], /backslash/));
  test('rejects a pax path that climbs out', () => rejects([pax({ path: '../../x' }), file('innocent')], /"\.\." component/));
  test('rejects a GNU long name that is absolute', () => rejects([gnuLong(`/tmp/${'x'.repeat(120)}`), file('innocent')], /absolute path/));
  test('rejects a symlink to an absolute path', () => rejects([symlink('etc', '/etc')], /symbolic link to "\/etc", outside/));
  test('rejects a symlink that climbs out', () => rejects([symlink('a/b', '../../x')], /outside the folder/));
  test('rejects a top-level symlink to ..', () => rejects([symlink('up', '..')], /outside the folder/));
  test('rejects a symlink that climbs after descending (chains of links)', () =>
    rejects([symlink('a', '.'), symlink('b', 'a/a/a/..')], /goes back up after going down/));
  test('rejects a hard link to ../x', () => rejects([hardlink('h', '../x')], /hard link to "\.\.\/x".*"\.\." component/));
  test('rejects a hard link to an absolute path', () => rejects([hardlink('h', '/etc/shadow')], /absolute path/));
  test('rejects a hard link to nothing in the archive', () => rejects([hardlink('h', 'missing')], /not a file earlier in the archive/));
  test('rejects a hard link to a symlink (it would copy the link to another folder)', () =>
    rejects([symlink('d/s', '../x'), hardlink('h', 'd/s')], /not a file earlier/));
  test('rejects writing through an earlier symlink', () => rejects([symlink('l', 'sub'), file('l/x')], /through the symbolic link "l"/));
  test('rejects writing through a symlink differing only in case', () =>
    rejects([symlink('L', 'sub'), file('l/x')], /through the symbolic link/));
  test('rejects a name that appears twice', () => rejects([file('a'), symlink('a', 'b')], /appears twice/));
  test('rejects replacing a folder by a symlink', () => rejects([file('d/f'), symlink('d', '.')], /appears twice/));
  test('rejects a character device', () => rejects([{ name: 'dev', type: '3' }], /character device/));
  test('rejects a block device', () => rejects([{ name: 'dev', type: '4' }], /block device/));
  test('rejects a FIFO', () => rejects([{ name: 'pipe', type: '6' }], /FIFO/));
  test('rejects unknown entry types', () => rejects([{ name: 'vol', type: 'V' }], /entry type "V"/));
  test('rejects sparse files', () => rejects([pax({ 'GNU.sparse.name': '/etc/x', 'GNU.sparse.major': '1' }), file('a')], /sparse/));
  test('rejects a file whose name ends in / (GNU tar makes it a folder and reads its data as entries)', async () => {
    const hidden = tarOf([file('../hidden')], { end: false });
    await rejects([{ name: 'model/', data: hidden }], /"model\/" is a file whose name ends in "\/"/);
    await rejects([{ name: 'model/', type: '7', data: hidden }], /ends in "\/"/);
    await rejects([pax({ path: 'model/' }), { name: 'innocent', data: hidden }], /ends in "\/"/);
  });
  test('rejects a pax linkpath with a NUL (tar cuts the target there)', () =>
    rejects([pax({ linkpath: '..\0x' }), symlink('l', 'placeholder')], /NUL character in its target/));
  test('rejects a link that claims data', () =>
    rejects([{ name: 'l', type: '2', linkName: 'x', size: 512, data: Buffer.alloc(512) }], /claims 512 bytes/));
  for (const [name, collides] of [
    ['β', 'ϐ'],
    ['s', 'ſ'],
    ['ss', 'ß'],
    ['ß', 'ẞ'],
    ['σ', 'ς'],
    ['i', 'ı'],
    ['k', '\u212a'],
    ['é', 'e\u0301'],
    ['fi', 'ﬁ'],
    ['ab', 'a\u200bb'],
  ]) {
    test(`a symbolic link ${JSON.stringify(`a/${collides}`)} and a file inside ${JSON.stringify(`a/${name}/`)} collide, as on APFS and NTFS`, () =>
      rejects([dir('a/'), symlink(`a/${collides}`, '.'), file(`a/${name}/x`)], /through the symbolic link/));
  }
  test('names that only look alike on screen stay apart (Latin a and Cyrillic а)', async () => {
    assert.equal((await validate([file('a'), file('\u0430')])).files.length, 2);
  });
  test('the folding matches what case-insensitive file systems do, or is stricter', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 12 }), (name) => {
        const key = foldName(name);
        assert.equal(foldName(name.toUpperCase()), key);
        assert.equal(foldName(name.toLowerCase()), key);
        assert.equal(foldName(name.normalize('NFD')), key);
        assert.equal(foldName(key), key);
      }),
    );
  });
  for (const [what, bad] of [
    ['a newline', 'a\nb'],
    ['an escape', 'a\u001b[31mb'],
    ['a C1 control', 'a\u0085b'],
    ['a line separator', 'a\u2028b'],
    ['a paragraph separator', 'a\u2029b'],
    ['DEL', 'a\u007fb'],
  ]) {
    test(`rejects ${what} in a name, a link target and a hard link target`, async () => {
      await rejects([file(`m/${bad}`)], /control character in its path/);
      await rejects([pax({ path: `m/${bad}` }), file('innocent')], /control character in its path/);
      await rejects([symlink('m/l', bad)], /control character in its target/);
      await rejects([file('m/x'), hardlink('m/h', `m/${bad}`)], /control character in its path/);
    });
  }
  test('repeated directory entries are fine', async () => {
    assert.equal((await validate([dir('a/'), dir('a/'), file('a/b')])).files.length, 1);
  });

  test('hostile archives compressed with zstd are rejected by listArchive', async () => {
    const archive = path.join(scratch, 'hostile.tar.zst');
    fs.writeFileSync(archive, await zstdCompress(tarOf([file('fine'), symlink('evil', '/etc')])));
    await assert.rejects(listArchive(archive, 'zstd'), UnsafeArchiveError);
  });
});

describe('where to extract', () => {
  const ws = path.join(scratch, 'ws');
  fs.mkdirSync(path.join(ws, 'models'), { recursive: true });
  const env = { RUNNER_TOOL_CACHE: path.join(scratch, 'tool-cache'), RUNNER_TEMP: path.join(scratch, 'temp') };

  test('folder names drop the archive suffix', () => {
    assert.equal(folderNameFor('org--model.tar.zst'), 'org--model');
    assert.equal(folderNameFor('a.tar.gz'), 'a');
    assert.equal(folderNameFor('a.TGZ'), 'a');
    assert.equal(folderNameFor('weights.bin'), 'weights.bin-extracted');
    assert.equal(folderNameFor('.tar.zst'), '.tar.zst-extracted');
  });

  test('default: beside the archive; relative extract-path: against the workspace', () => {
    const archive = path.join(ws, 'models', 'm.tar.zst');
    assert.equal(resolveExtractDir('', archive, ws, env), path.join(fs.realpathSync(ws), 'models', 'm'));
    assert.equal(resolveExtractDir('out/m', archive, ws, env), path.join(fs.realpathSync(ws), 'out', 'm'));
  });

  for (const [input, what] of [
    ['.', /the workspace/],
    ['..', /the workspace/],
    ['/', /the workspace/],
    ['models', /the archive itself/],
  ] as const) {
    test(`extract-path ${JSON.stringify(input)} is refused: it holds ${what.source}`, () => {
      assert.throws(
        () => resolveExtractDir(input, path.join(ws, 'models', 'm.tar.zst'), ws, env),
        (e: unknown) => e instanceof InputError && e.input === 'extract-path' && what.test(e.message),
      );
    });
  }

  test("the runner's tool cache and temp folder are refused", () => {
    assert.throws(() => resolveExtractDir(env.RUNNER_TOOL_CACHE, path.join(ws, 'm.tar.zst'), ws, env), /tool cache/);
    assert.throws(() => resolveExtractDir(env.RUNNER_TEMP, path.join(ws, 'm.tar.zst'), ws, env), /runner's temp folder/);
  });

  test('a file in the way is refused', () => {
    fs.writeFileSync(path.join(ws, 'a-file'), 'x');
    assert.throws(() => resolveExtractDir('a-file', path.join(ws, 'm.tar.zst'), ws, env), /is a file, not a folder/);
  });
});

describe('space and disk faults', () => {
  test('each file takes whole blocks: 12,000 one-byte files need 12,000 blocks, not 12,000 bytes', async () => {
    const listing = await validate([dir('m/'), ...Array.from({ length: 12_000 }, (_, i) => file(`m/${i}`, 'x'))]);
    assert.equal(listing.totalBytes, 12_000);
    assert.equal(listing.folders, 1);
    assert.ok(bytesOnDisk(listing, 4096) >= 12_000 * 4096);
    assert.equal(bytesOnDisk(listing, 4096), (12_000 + 1 + 1) * 4096);
  });

  test('sizes round up to the block; folders the entries imply and symbolic links take a block each', async () => {
    const listing = await validate([file('a/b/c', 'x'.repeat(4097)), file('a/d', ''), symlink('a/l', 'd'), dir('e/')]);
    assert.deepEqual([listing.folders, listing.symlinks], [3, 1]);
    assert.equal(bytesOnDisk(listing, 4096), 2 * 4096 + 0 + (3 + 1 + 1) * 4096);
    assert.equal(bytesOnDisk(listing, 65536), 65536 + (3 + 1 + 1) * 65536);
  });

  test("tar's words for disk faults, GNU tar's and bsdtar's, become their codes", () => {
    const cases: Array<[string, string | undefined]> = [
      [
        'tar: m/model.safetensors: Cannot write: No space left on device\ntar: Exiting with failure status due to previous errors',
        'ENOSPC',
      ],
      ['m/model.safetensors: Write failed: No space left on device', 'ENOSPC'],
      ['tar: m/x: Cannot open: Disk quota exceeded', 'EDQUOT'],
      ['m/x: Write failed: Disc quota exceeded', 'EDQUOT'],
      ['tar: m/big: Cannot write: File too large', 'EFBIG'],
      ['tar: m: Cannot mkdir: Read-only file system', 'EROFS'],
      ["bsdtar: m/x: Can't create 'm/x': Permission denied", 'EACCES'],
      ['tar: Unexpected EOF in archive', undefined],
    ];
    for (const [stderr, code] of cases) assert.equal(diskErrorIn(stderr)?.code, code, stderr);
  });
});

test('largest files: biggest first, ties by name, at most 20', () => {
  const files = Array.from({ length: 30 }, (_, i) => ({ name: `f${String(i).padStart(2, '0')}`, size: i % 10 }));
  const top = largestFiles(files);
  assert.equal(top.length, 20);
  assert.deepEqual(top.slice(0, 4), [
    { name: 'f09', size: 9 },
    { name: 'f19', size: 9 },
    { name: 'f29', size: 9 },
    { name: 'f08', size: 8 },
  ]);
});
