export const id = 687;
export const ids = [687];
export const modules = {

/***/ 25625:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   $e: () => (/* binding */ warning),
/* harmony export */   E$: () => (/* binding */ redact),
/* harmony export */   Lx: () => (/* binding */ hasControls),
/* harmony export */   N4: () => (/* binding */ endGroup),
/* harmony export */   Oh: () => (/* binding */ startGroup),
/* harmony export */   Os: () => (/* binding */ group),
/* harmony export */   UN: () => (/* binding */ escapeControls),
/* harmony export */   Yz: () => (/* binding */ debug),
/* harmony export */   cl: () => (/* binding */ registerSecret),
/* harmony export */   fJ: () => (/* binding */ fail),
/* harmony export */   hD: () => (/* binding */ quote),
/* harmony export */   pq: () => (/* binding */ info),
/* harmony export */   z3: () => (/* binding */ error)
/* harmony export */ });
/* unused harmony export safeLine */
/* harmony import */ var _actions_core__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(33838);
/**
 * Every line the action prints goes through here. Text from Together, a storage host, an archive
 * or the file system is untrusted: a newline in it followed by `::warning::` or `::stop-commands::`
 * would become a workflow command, and a secret in it would be printed. So each line is escaped
 * (no control or line-separator character is printed raw), redacted (every registered secret
 * becomes `***`), and a line that would start with `::` is marked, so that the only workflow
 * commands in the log are the ones written by `@actions/core` on the action's behalf.
 */

const secrets = new Set();
/**
 * Registers a secret: masked by the runner (`::add-mask::`) and replaced by `***` in every line
 * this module prints. Call it before anything could print the value.
 */
function registerSecret(secret) {
    if (secret === '' || secrets.has(secret))
        return;
    secrets.add(secret);
    _actions_core__WEBPACK_IMPORTED_MODULE_0__/* .setSecret */ .Pq(secret);
}
/** Replaces every registered secret in `text` (and any given in `extra`) by `***`. */
function redact(text, extra = []) {
    let out = text;
    // Longest first, so that a secret containing another is replaced whole.
    const all = [...secrets, ...extra];
    // A secret with a control character in it may also appear escaped (`\n`) in text that was.
    const forms = new Set([...all, ...all.map(escapeControls)]);
    for (const secret of [...forms].sort((a, b) => b.length - a.length)) {
        if (secret.length > 0)
            out = out.split(secret).join('***');
    }
    return out;
}
// C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
// biome-ignore lint/suspicious/noControlCharactersInRegex: these are exactly the characters to escape
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const NAMED = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
/** Shows control and separator characters escaped (`\n`, `\u001b`, ...), so that text stays on one line. */
function escapeControls(text) {
    return text.replace(UNSAFE, (c) => NAMED[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
/** True when `text` holds a character `escapeControls` would escape. */
function hasControls(text) {
    UNSAFE.lastIndex = 0;
    const found = UNSAFE.test(text);
    UNSAFE.lastIndex = 0;
    return found;
}
/** A line that is safe to print: escaped, redacted, and never starting with `::`. */
function safeLine(text) {
    const line = redact(escapeControls(text));
    return /^\s*::/.test(line) ? `\\${line}` : line;
}
/**
 * An untrusted value to put inside a message: quoted, shortened to `max` characters, escaped.
 * The quotes show where the value starts and ends.
 */
function quote(value, max = 80) {
    const shown = value.length > max ? `${value.slice(0, max)}…` : value;
    // JSON escapes C0 controls, quotes and backslashes; the rest (DEL, C1, U+2028/9) is escaped here.
    return escapeControls(JSON.stringify(shown));
}
function info(text) {
    _actions_core__WEBPACK_IMPORTED_MODULE_0__/* .info */ .pq(safeLine(text));
}
function warning(text) {
    _actions_core__WEBPACK_IMPORTED_MODULE_0__/* .warning */ .$e(safeLine(text));
}
function error(text) {
    _actions_core__WEBPACK_IMPORTED_MODULE_0__/* .error */ .z3(safeLine(text));
}
function debug(text) {
    _actions_core__WEBPACK_IMPORTED_MODULE_0__/* .debug */ .Yz(safeLine(text));
}
/** Fails the step with `text` as its error annotation. */
function fail(text) {
    _actions_core__WEBPACK_IMPORTED_MODULE_0__/* .setFailed */ .C1(safeLine(text));
}
/** Runs `fn` inside a collapsible group of the log. */
function group(name, fn) {
    return _actions_core__WEBPACK_IMPORTED_MODULE_0__/* .group */ .Os(safeLine(name), fn);
}
function startGroup(name) {
    _actions_core__WEBPACK_IMPORTED_MODULE_0__/* .startGroup */ .Oh(safeLine(name));
}
function endGroup() {
    _actions_core__WEBPACK_IMPORTED_MODULE_0__/* .endGroup */ .N4();
}


/***/ }),

/***/ 43687:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

// ESM COMPAT FLAG
__webpack_require__.r(__webpack_exports__);

// EXPORTS
__webpack_require__.d(__webpack_exports__, {
  run: () => (/* binding */ run)
});

// EXTERNAL MODULE: external "node:fs"
var external_node_fs_ = __webpack_require__(73024);
var external_node_fs_default = /*#__PURE__*/__webpack_require__.n(external_node_fs_);
// EXTERNAL MODULE: external "node:path"
var external_node_path_ = __webpack_require__(76760);
// EXTERNAL MODULE: ./node_modules/@actions/core/lib/core.js + 7 modules
var core = __webpack_require__(33838);
// EXTERNAL MODULE: ./src/errors.ts
var errors = __webpack_require__(83916);
// EXTERNAL MODULE: ./src/log.ts
var log = __webpack_require__(25625);
// EXTERNAL MODULE: external "node:child_process"
var external_node_child_process_ = __webpack_require__(31421);
// EXTERNAL MODULE: external "node:zlib"
var external_node_zlib_ = __webpack_require__(38522);
;// CONCATENATED MODULE: ./src/archive/decompress.ts
/**
 * Decompressing an archive as a stream, for whoever reads its tar: gzip with node:zlib; zstd with
 * the `zstd` program where it is on PATH, else with node:zlib where this Node.js has it (22.15 and
 * later). The program comes first: it decodes weights about 1.8 times as fast as node:zlib's zstd
 * and on a core of its own, so the check costs less CPU and keeps up with faster downloads. Windows
 * of up to 2 GiB are accepted (`--long=31`), the most zstd's own tools write.
 */



/** Bytes per piece of decompressed output: large enough that the per-piece work does not count. */
const CHUNK_BYTES = 256 * 1024;
/** node:zlib's zstd decoder, when this Node.js has one. */
function nodeZstd() {
    const z = external_node_zlib_;
    const windowLogMax = z.constants.ZSTD_d_windowLogMax;
    if (typeof z.createZstdDecompress !== 'function' || windowLogMax === undefined)
        return undefined;
    const create = z.createZstdDecompress;
    return (options) => create({ ...options, params: { ...options.params, [windowLogMax]: 31 } });
}
const INSTALL_ZSTD = 'Install zstd (Ubuntu: `sudo apt-get install -y zstd`; macOS: `brew install zstd`; Windows: `choco install zstandard`, `winget install Meta.Zstandard` or `scoop install zstd`)';
/** zstd is needed and neither node:zlib nor the program can provide it. */
class ZstdMissingError extends errors/* ActionError */.lZ {
    constructor(need, advice) {
        super(`${need} needs zstd: the \`zstd\` program is not on PATH and this Node.js (${process.version}) has no zstd in node:zlib (Node.js 22.15 and later do). ${INSTALL_ZSTD}, or ${advice}.`);
        this.name = 'ZstdMissingError';
    }
}
/** The compressed data is not what its format says: corrupt, truncated or not compressed at all. */
class DecompressError extends Error {
    constructor(message) {
        super(message);
        this.name = 'DecompressError';
    }
}
function zlibDecoder(stream, what) {
    let failure;
    const finished = new Promise((resolve) => {
        stream.once('error', (error) => {
            failure ??= new DecompressError(`${what} could not decompress it (${error.message})`);
            resolve(failure);
        });
        stream.once('close', () => resolve(failure));
    });
    return { input: stream, output: stream, finished, stop: () => stream.destroy() };
}
/** The `zstd` program as a decoder, once it has started; undefined when it is not on PATH. */
async function programDecoder(advice) {
    const child = (0,external_node_child_process_.spawn)('zstd', ['-d', '-c', '-q', '--long=31'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const started = await new Promise((resolve) => {
        child.once('spawn', () => resolve(undefined));
        child.once('error', (error) => resolve(error));
    });
    if (started?.code === 'ENOENT')
        return undefined;
    if (started)
        throw new errors/* ActionError */.lZ(`Could not run zstd (${started.message}); check its installation, or ${advice}.`);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d) => {
        if (stderr.length < 4096)
            stderr += d;
    });
    // Writing to a zstd that has stopped reading fails with EPIPE: its exit status says why.
    child.stdin.on('error', () => undefined);
    const finished = new Promise((resolve) => {
        child.once('close', (code, signal) => {
            if (code === 0 || signal !== null)
                return resolve(undefined);
            resolve(new DecompressError(`zstd could not decompress it (${stderr.trim().replace(/\s+/g, ' ') || `exit code ${code}`})`));
        });
    });
    return {
        input: child.stdin,
        output: child.stdout,
        finished,
        stop: () => {
            child.stdout.destroy();
            child.stdin.destroy();
            if (child.exitCode === null && child.signalCode === null && child.pid !== undefined)
                child.kill('SIGTERM');
        },
    };
}
async function decoderFor(format, options) {
    if (format === 'gzip')
        return zlibDecoder(external_node_zlib_.createGunzip({ chunkSize: CHUNK_BYTES }), 'gzip');
    const create = nodeZstd();
    if (options.zstd !== 'node') {
        const program = await programDecoder(options.advice);
        if (program)
            return program;
    }
    if (options.zstd === 'program' || !create)
        throw new ZstdMissingError(options.need, options.advice);
    return zlibDecoder(create({ chunkSize: CHUNK_BYTES }), 'zstd');
}
/**
 * Runs `consume` over the decompressed bytes of `source`. When `consume` returns before the end
 * (at the tar's end-of-archive blocks), the decoder is stopped and the rest of `source` is read
 * and dropped, so that whoever feeds it can finish; when it throws, `source` is closed at once.
 * A decoder's failure is reported in place of the truncated tar it causes.
 */
async function withDecompressed(source, format, consume, options) {
    let decoder;
    try {
        decoder = await decoderFor(format, options);
    }
    catch (error) {
        await source[Symbol.asyncIterator]().return?.();
        throw error;
    }
    let stopped = false;
    let failed = false;
    let sourceError;
    let consumed = () => undefined;
    const done = new Promise((resolve) => {
        consumed = resolve;
    });
    const pump = (async () => {
        try {
            for await (const chunk of source) {
                // A decoder that has stopped taking input (it failed, or it is past the end) makes the
                // pump wait for the reader's verdict: read on and drop the rest, or stop reading.
                if (!stopped && !failed && decoder.input.destroyed)
                    await done;
                if (failed)
                    break;
                if (stopped || decoder.input.destroyed)
                    continue;
                // Written through before the next chunk is asked for: the source may reuse its buffer.
                await written(decoder.input, chunk);
            }
            if (!stopped && !failed)
                decoder.input.end();
        }
        catch (error) {
            sourceError = error;
            decoder.output.destroy(error);
        }
    })();
    let result;
    try {
        result = await consume(decoder.output);
    }
    catch (error) {
        failed = true;
        consumed();
        // A broken stream shows up as a truncated tar: the decoder's own message says more. Read to
        // its end, the decoder is finishing on its own; else it is stopped first.
        const ended = settle(decoder);
        const problem = await decoder.finished;
        await pump;
        if (sourceError !== undefined)
            throw sourceError;
        throw problem && (ended || !isVerdict(error)) ? problem : error;
    }
    stopped = true;
    consumed();
    const ended = settle(decoder);
    const problem = await decoder.finished;
    await pump;
    if (sourceError !== undefined)
        throw sourceError;
    if (ended && problem)
        throw problem;
    return result;
}
/**
 * Once the reader is done: a decoder whose output has not ended is stopped; one whose output has
 * ended has its input closed too, since the program's pipes must all close before it counts as
 * finished. True when the output had ended.
 */
function settle(decoder) {
    const ended = decoder.output.readableEnded;
    if (ended)
        decoder.input.destroy();
    else
        decoder.stop();
    return ended;
}
/**
 * An error the reader raised about what it read (an unsafe entry, a wrong model, a damaged weights
 * file, a bad tar header), as opposed to a tar cut short, which a failing decoder causes.
 */
function isVerdict(error) {
    if (!(error instanceof Error))
        return false;
    if (error.name === 'TarFormatError')
        return !error.message.includes('ends inside');
    return error instanceof errors/* ActionError */.lZ || error.name === 'SafetensorsError';
}
/** Writes `chunk`; resolves once the stream is done with it (handed on, failed or closed). */
function written(stream, chunk) {
    return new Promise((resolve) => {
        const done = () => {
            stream.off('close', done);
            resolve();
        };
        stream.on('close', done);
        stream.write(chunk, done);
    });
}

;// CONCATENATED MODULE: ./src/archive/entries.ts
/**
 * The check every archive entry passes before anything is written: no absolute paths, no `..`,
 * no links leading outside the folder, no devices, no control characters, no names that collide on
 * a case-insensitive file system.
 */


/** An archive entry that could write outside the folder, or something no model archive holds. */
class UnsafeArchiveError extends errors/* ActionError */.lZ {
    entry;
    constructor(entry, reason) {
        super(`entry ${shown(entry)} ${reason}`);
        this.entry = entry;
        this.name = 'UnsafeArchiveError';
    }
}
function shown(name) {
    return (0,log/* quote */.hD)(name, 120);
}
/** Splits a `/`-separated archive path into its components, dropping empty ones and `.`. */
function components(name) {
    return name.split('/').filter((c) => c !== '' && c !== '.');
}
/** Characters that some file systems (HFS+) leave out of the names they compare: zero-width spaces and joiners, variation selectors. */
const IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu;
/**
 * The name as a case-insensitive, normalization-insensitive file system sees it, or more
 * conservatively: compatibility normalization (NFKC: `ſ` is `s`, `ϐ` is `β`, `ﬁ` is `fi`), then
 * upper- and lower-casing until nothing changes, which gives full case folding (`ß` and `ẞ` are
 * `ss`, `ς` is `σ`) and NTFS's upper-case comparison (`ı` meets `i`). APFS and NTFS collide no two
 * names this keeps apart.
 */
function foldName(name) {
    let key = name.replace(IGNORABLE, '').normalize('NFKC');
    for (let i = 0; i < 4; i++) {
        const next = key.toUpperCase().toLowerCase().normalize('NFKC').replace(IGNORABLE, '');
        if (next === key)
            break;
        key = next;
    }
    return key;
}
function keyOf(parts) {
    return foldName(parts.join('/'));
}
const FILE_TYPES = new Set(['0', '7']);
const TYPE_NAMES = {
    '3': 'a character device',
    '4': 'a block device',
    '6': 'a FIFO',
};
/**
 * Checks archive entries one by one, in order, before anything is written. Rejects absolute
 * paths, `..`, backslashes, devices and FIFOs, links whose target leads outside the folder,
 * entries written through an earlier symbolic link, and names that appear twice.
 */
class EntryValidator {
    entries = 0;
    folders = 0;
    symlinks = 0;
    files = [];
    kinds = new Map();
    topLevel = new Map();
    add(entry) {
        this.entries++;
        const parts = this.checkName(entry.name, entry.name);
        if (entry.paxKeys.some((k) => k.startsWith('GNU.sparse'))) {
            throw new UnsafeArchiveError(entry.name, 'is a sparse file, which this action does not extract');
        }
        const type = entry.type;
        if (TYPE_NAMES[type])
            throw new UnsafeArchiveError(entry.name, `is ${TYPE_NAMES[type]}; an archive of model files has none`);
        if (!FILE_TYPES.has(type) && !['1', '2', '5'].includes(type)) {
            throw new UnsafeArchiveError(entry.name, `has the tar entry type ${JSON.stringify(type)}, which this action does not extract`);
        }
        if (!FILE_TYPES.has(type) && entry.size !== 0) {
            throw new UnsafeArchiveError(entry.name, `is a ${type === '5' ? 'directory' : 'link'} that claims ${entry.size} bytes of data`);
        }
        if (FILE_TYPES.has(type) && entry.name.endsWith('/')) {
            // GNU tar extracts such a file as a folder and then reads its data as further entries,
            // which this check would never see.
            throw new UnsafeArchiveError(entry.name, 'is a file whose name ends in "/": tar would make it a folder and read its data as more entries');
        }
        if (parts.length === 0) {
            if (type !== '5')
                throw new UnsafeArchiveError(entry.name, 'has an empty name');
            return; // `./`: the folder itself.
        }
        // Nothing may be written through a symbolic link the archive made earlier.
        for (let i = 1; i < parts.length; i++) {
            const kind = this.kinds.get(keyOf(parts.slice(0, i)));
            if (kind === 'symlink') {
                throw new UnsafeArchiveError(entry.name, `would be written through the symbolic link ${shown(parts.slice(0, i).join('/'))}`);
            }
            if (kind !== undefined && kind !== 'dir') {
                throw new UnsafeArchiveError(entry.name, `is inside ${shown(parts.slice(0, i).join('/'))}, which is not a folder`);
            }
        }
        const key = keyOf(parts);
        const existing = this.kinds.get(key);
        if (existing !== undefined && !(existing === 'dir' && type === '5')) {
            throw new UnsafeArchiveError(entry.name, 'appears twice in the archive (names are compared ignoring case)');
        }
        if (type === '2')
            this.checkSymlink(entry, parts);
        if (type === '1')
            this.checkHardLink(entry);
        for (let i = 1; i < parts.length; i++) {
            const parent = keyOf(parts.slice(0, i));
            if (!this.kinds.has(parent))
                this.folders++;
            this.kinds.set(parent, 'dir');
        }
        if (type === '5' && existing === undefined)
            this.folders++;
        if (type === '2')
            this.symlinks++;
        this.kinds.set(key, type === '5' ? 'dir' : type === '2' ? 'symlink' : type === '1' ? 'hardlink' : 'file');
        const isDir = type === '5' || parts.length > 1;
        this.topLevel.set(parts[0], (this.topLevel.get(parts[0]) ?? false) || isDir);
        if (FILE_TYPES.has(type))
            this.files.push({ name: parts.join('/'), size: entry.size });
    }
    result() {
        const tops = [...this.topLevel.entries()];
        const topLevelDir = tops.length === 1 && tops[0][1] ? tops[0][0] : undefined;
        const totalBytes = this.files.reduce((sum, f) => sum + f.size, 0);
        return { entries: this.entries, files: this.files, totalBytes, folders: this.folders, symlinks: this.symlinks, topLevelDir };
    }
    /** The name's components; throws for anything that is not a plain relative path. */
    checkName(name, entry, what = 'has') {
        if (name.includes('\0'))
            throw new UnsafeArchiveError(entry, `${what} a NUL character in its path`);
        if ((0,log/* hasControls */.Lx)(name))
            throw new UnsafeArchiveError(entry, `${what} a control character in its path`);
        if (name.includes('\\'))
            throw new UnsafeArchiveError(entry, `${what} a backslash in its path, a separator on Windows`);
        if (name.startsWith('/') || /^[A-Za-z]:/.test(name))
            throw new UnsafeArchiveError(entry, `${what} an absolute path`);
        const parts = components(name);
        if (parts.includes('..'))
            throw new UnsafeArchiveError(entry, `${what} a ".." component that leads outside the folder`);
        return parts;
    }
    /**
     * A symlink's target is resolved from the link's own folder. It may climb with leading `..`
     * only as far as the extraction folder, and may not climb again after descending: a later
     * `..` could be walked through another link and end up outside.
     */
    checkSymlink(entry, parts) {
        const target = entry.linkName;
        const outside = `is a symbolic link to ${shown(target)}, outside the folder`;
        if (target === '')
            throw new UnsafeArchiveError(entry.name, 'is a symbolic link with an empty target');
        // tar would cut the target at the NUL: the link it makes is not the one checked here.
        if (target.includes('\0'))
            throw new UnsafeArchiveError(entry.name, 'is a symbolic link with a NUL character in its target');
        if ((0,log/* hasControls */.Lx)(target))
            throw new UnsafeArchiveError(entry.name, 'is a symbolic link with a control character in its target');
        if (target.includes('\\'))
            throw new UnsafeArchiveError(entry.name, `is a symbolic link to ${shown(target)}, with a backslash in it`);
        if (target.startsWith('/') || /^[A-Za-z]:/.test(target))
            throw new UnsafeArchiveError(entry.name, outside);
        const steps = components(target);
        const climbs = steps.findIndex((s) => s !== '..');
        const up = climbs === -1 ? steps.length : climbs;
        if (steps.slice(up).includes('..')) {
            throw new UnsafeArchiveError(entry.name, `is a symbolic link to ${shown(target)}, which goes back up after going down`);
        }
        if (up > parts.length - 1)
            throw new UnsafeArchiveError(entry.name, outside);
        // Walking down through an earlier link is fine only because that link was checked the same way.
    }
    /** A hard link names an earlier regular file of the archive, by its path from the folder's root. */
    checkHardLink(entry) {
        const target = entry.linkName;
        const parts = this.checkName(target, entry.name, `is a hard link to ${shown(target)}, which has`);
        if (parts.length === 0)
            throw new UnsafeArchiveError(entry.name, 'is a hard link with an empty target');
        for (let i = 1; i < parts.length; i++) {
            if (this.kinds.get(keyOf(parts.slice(0, i))) === 'symlink') {
                throw new UnsafeArchiveError(entry.name, `is a hard link through the symbolic link ${shown(parts.slice(0, i).join('/'))}`);
            }
        }
        const kind = this.kinds.get(keyOf(parts));
        if (kind !== 'file' && kind !== 'hardlink') {
            throw new UnsafeArchiveError(entry.name, `is a hard link to ${shown(target)}, which is not a file earlier in the archive`);
        }
    }
}

;// CONCATENATED MODULE: ./src/archive/safetensors.ts
/** The library refuses longer headers (`MAX_HEADER_SIZE` in safetensors' tensor.rs). */
const MAX_HEADER_BYTES = 100_000_000;
/** Bits per element of the dtypes the safetensors library knows. */
const DTYPE_BITS = {
    BOOL: 8,
    U8: 8,
    I8: 8,
    F8_E5M2: 8,
    F8_E4M3: 8,
    F8_E8M0: 8,
    F4: 4,
    F6_E2M3: 6,
    F6_E3M2: 6,
    I16: 16,
    U16: 16,
    F16: 16,
    BF16: 16,
    I32: 32,
    U32: 32,
    F32: 32,
    I64: 64,
    U64: 64,
    F64: 64,
    C64: 64,
};
/** A file that is not a whole safetensors file; `tensor` is the tensor at fault, when one is. */
class SafetensorsError extends Error {
    tensor;
    constructor(message, tensor) {
        super(message);
        this.tensor = tensor;
        this.name = 'SafetensorsError';
    }
}
const safetensors_shown = (name) => JSON.stringify(name.length > 120 ? `${name.slice(0, 120)}…` : name);
function isCount(value) {
    return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
/** The header's length from the file's first 8 bytes, checked against the file's size. */
function headerLength(first8, fileSize) {
    if (fileSize < 8 || first8.length < 8) {
        throw new SafetensorsError(`it is ${fileSize} bytes long, too short for a safetensors file (its first 8 bytes give the header's length)`);
    }
    const n = first8.readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new SafetensorsError(`its first 8 bytes give a header of ${n} bytes, more than the ${MAX_HEADER_BYTES} the safetensors library reads: this is not a safetensors file, or it is corrupt`);
    }
    if (Number(n) > fileSize - 8) {
        throw new SafetensorsError(`its first 8 bytes give a header of ${n} bytes, but the file holds only ${fileSize - 8} bytes after them`);
    }
    return Number(n);
}
function parseHeader(header) {
    let text;
    try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(header);
    }
    catch {
        throw new SafetensorsError('its header is not UTF-8 text');
    }
    let json;
    try {
        json = JSON.parse(text);
    }
    catch (error) {
        throw new SafetensorsError(`its header is not valid JSON (${error.message})`);
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json))
        throw new SafetensorsError('its header is not a JSON object');
    return json;
}
function tensorInfo(name, value) {
    const fault = (what) => new SafetensorsError(`tensor ${safetensors_shown(name)} ${what}`, name);
    if (value === null || typeof value !== 'object' || Array.isArray(value))
        throw fault('is not described by a JSON object');
    const { dtype, shape, data_offsets: offsets } = value;
    if (typeof dtype !== 'string')
        throw fault('has no dtype');
    if (!Array.isArray(shape) || !shape.every(isCount))
        throw fault('has no shape (a list of non-negative integers)');
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
        throw fault(`has data_offsets ${JSON.stringify(offsets)}, not [begin, end] with begin <= end`);
    }
    return { name, dtype, shape: shape, begin: offsets[0], end: offsets[1] };
}
/**
 * Checks a parsed header against the size of the data section that follows it: every tensor is
 * described in full, lies inside the data section, has as many bytes as its dtype and shape say,
 * and the tensors cover the data section exactly, one after the other.
 */
function checkHeader(header, dataBytes) {
    const json = parseHeader(header);
    const tensors = [];
    for (const [name, value] of Object.entries(json)) {
        if (name === '__metadata__') {
            const ok = value !== null && typeof value === 'object' && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');
            if (!ok)
                throw new SafetensorsError('its __metadata__ is not a map of names to strings, which the safetensors library refuses');
            continue;
        }
        tensors.push(tensorInfo(name, value));
    }
    const unknownDtypes = [];
    for (const t of tensors) {
        const bits = DTYPE_BITS[t.dtype];
        if (bits === undefined) {
            unknownDtypes.push(t.name);
            continue;
        }
        const bitsNeeded = t.shape.reduce((n, d) => n * BigInt(d), 1n) * BigInt(bits);
        const length = t.end - t.begin;
        if (bitsNeeded !== BigInt(length) * 8n) {
            throw new SafetensorsError(`tensor ${safetensors_shown(t.name)} is ${t.dtype} of shape [${t.shape.join(', ')}], which takes ${bitsNeeded % 8n === 0n ? `${bitsNeeded / 8n} bytes` : `${bitsNeeded} bits`}, but its data_offsets [${t.begin}, ${t.end}] give ${length} bytes`, t.name);
        }
    }
    tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
    let end = 0;
    let previous;
    for (const t of tensors) {
        if (t.end > dataBytes) {
            throw new SafetensorsError(`tensor ${safetensors_shown(t.name)} has data_offsets [${t.begin}, ${t.end}], past the end of the data section (${dataBytes} bytes): the file is cut short, or its header lies`, t.name);
        }
        if (t.begin !== end) {
            const after = previous ? `the tensor before it, ${safetensors_shown(previous.name)}, ends at ${end}` : 'the data section starts at 0';
            throw new SafetensorsError(`tensor ${safetensors_shown(t.name)} starts at byte ${t.begin} of the data section, but ${after}: tensors must follow one another without gaps or overlaps`, t.name);
        }
        end = t.end;
        previous = t;
    }
    if (end !== dataBytes) {
        throw new SafetensorsError(`its tensors end at byte ${end} of the data section, but the file holds ${dataBytes} bytes of data: ${dataBytes - end} bytes after the last tensor${previous ? ` (${safetensors_shown(previous.name)})` : ''}, so the header does not describe the file`, previous?.name);
    }
    return { tensors: tensors.length, dataBytes, unknownDtypes };
}
/**
 * Checks the safetensors file that is the tar reader's current entry (`size` bytes), reading only
 * its header; the data is left for the reader to skip.
 */
async function checkSafetensorsEntry(tar, size) {
    const n = headerLength(await tar.read(8), size);
    return checkHeader(await tar.read(n), size - 8 - n);
}

;// CONCATENATED MODULE: ./src/archive/tar.ts
/**
 * Reads the headers of a tar stream (ustar, GNU and pax) without extracting anything: what each
 * entry is called, what kind it is, where a link points and how big it is. File data is handed out
 * piece by piece to whoever asks for it, and skipped otherwise, never buffered, so an archive of any
 * size is read in constant memory.
 */
const BLOCK = 512;
/** The most a GNU long name or pax header may hold; real ones are a few hundred bytes. */
const MAX_METADATA_BYTES = 1024 * 1024;
class TarFormatError extends Error {
    constructor(message) {
        super(message);
        this.name = 'TarFormatError';
    }
}
/** Pulls exact byte counts out of an async stream of chunks. */
class ByteReader {
    source;
    chunks = [];
    length = 0;
    done = false;
    /** Total bytes consumed, for error messages. */
    offset = 0;
    constructor(source) {
        this.source = source;
    }
    async fill(n) {
        while (this.length < n && !this.done) {
            const next = await this.source.next();
            if (next.done) {
                this.done = true;
            }
            else if (next.value.length > 0) {
                const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
                this.chunks.push(chunk);
                this.length += chunk.length;
            }
        }
    }
    /** Exactly `n` bytes, or fewer only at the end of the stream. */
    async read(n) {
        await this.fill(n);
        const take = Math.min(n, this.length);
        const out = Buffer.alloc(take);
        let written = 0;
        while (written < take) {
            const head = this.chunks[0];
            const part = Math.min(head.length, take - written);
            head.copy(out, written, 0, part);
            written += part;
            if (part === head.length)
                this.chunks.shift();
            else
                this.chunks[0] = head.subarray(part);
        }
        this.length -= take;
        this.offset += take;
        return out;
    }
    /** Drops `n` bytes; false when the stream ended first. */
    async skip(n) {
        let left = n;
        while (left > 0) {
            if (this.length === 0) {
                await this.fill(1);
                if (this.length === 0)
                    return false;
            }
            const head = this.chunks[0];
            const part = Math.min(head.length, left);
            if (part === head.length)
                this.chunks.shift();
            else
                this.chunks[0] = head.subarray(part);
            this.length -= part;
            this.offset += part;
            left -= part;
        }
        return true;
    }
    /** The next bytes as they came, at most `max` of them, without copying; empty at the end of the stream. */
    async chunk(max) {
        if (this.length === 0)
            await this.fill(1);
        if (this.length === 0)
            return Buffer.alloc(0);
        const head = this.chunks[0];
        const part = Math.min(head.length, max);
        if (part === head.length)
            this.chunks.shift();
        else
            this.chunks[0] = head.subarray(part);
        this.length -= part;
        this.offset += part;
        return head.subarray(0, part);
    }
}
function cString(block, start, length) {
    const field = block.subarray(start, start + length);
    const end = field.indexOf(0);
    return field.subarray(0, end === -1 ? field.length : end).toString('utf8');
}
/** An octal number field, or GNU's base-256 form (high bit set) used for sizes of 8 GiB and more. */
function parseNumber(block, start, length) {
    const field = block.subarray(start, start + length);
    if (field.length > 0 && (field[0] & 0x80) !== 0) {
        if ((field[0] & 0x40) !== 0)
            throw new TarFormatError('a negative number in a tar header');
        let value = field[0] & 0x3f;
        for (let i = 1; i < field.length; i++) {
            value = value * 256 + field[i];
            if (!Number.isSafeInteger(value))
                throw new TarFormatError('a number too large in a tar header');
        }
        return value;
    }
    const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
    if (text === '')
        return 0;
    if (!/^[0-7]+$/.test(text))
        throw new TarFormatError(`a malformed number ${JSON.stringify(text)} in a tar header`);
    const value = parseInt(text, 8);
    if (!Number.isSafeInteger(value))
        throw new TarFormatError('a number too large in a tar header');
    return value;
}
function checksumMatches(block) {
    const stored = parseNumber(block, 148, 8);
    let unsigned = 0;
    let signed = 0;
    for (let i = 0; i < BLOCK; i++) {
        const byte = i >= 148 && i < 156 ? 0x20 : block[i];
        unsigned += byte;
        signed += byte > 127 ? byte - 256 : byte;
    }
    return stored === unsigned || stored === signed;
}
/** Parses pax extended header records: `<length> <key>=<value>\n`, repeated. */
function parsePax(data) {
    const records = new Map();
    let pos = 0;
    while (pos < data.length) {
        if (data[pos] === 0)
            break; // padding
        const space = data.indexOf(0x20, pos);
        if (space === -1)
            throw new TarFormatError('a malformed pax header record');
        const lengthText = data.subarray(pos, space).toString('latin1');
        const length = /^[0-9]+$/.test(lengthText) ? Number(lengthText) : NaN;
        if (!Number.isSafeInteger(length) || length <= space - pos + 1 || pos + length > data.length) {
            throw new TarFormatError('a malformed pax header record');
        }
        const record = data.subarray(space + 1, pos + length);
        if (record[record.length - 1] !== 0x0a)
            throw new TarFormatError('a malformed pax header record');
        const text = record.subarray(0, record.length - 1).toString('utf8');
        const eq = text.indexOf('=');
        if (eq <= 0)
            throw new TarFormatError('a malformed pax header record');
        records.set(text.slice(0, eq), text.slice(eq + 1));
        pos += length;
    }
    return records;
}
function paxSize(value) {
    const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n))
        throw new TarFormatError(`a malformed pax size ${JSON.stringify(value)}`);
    return n;
}
/**
 * A tar stream, entry by entry. `next()` gives the next entry (metadata entries, GNU long names
 * `L`/`K` and pax `x`/`g`, are applied to the entry they describe and not given themselves);
 * between two calls the entry's data can be read with `read`/`chunk`, and whatever is not read is
 * skipped. Stops at the end-of-archive blocks or at the end of the stream on an entry boundary; a
 * stream cut inside an entry, a bad header checksum or malformed metadata throws a TarFormatError.
 */
class TarReader {
    reader;
    globals = new Map();
    current;
    /** Data bytes of the current entry not read yet, and the padding after them. */
    left = 0;
    pad = 0;
    ended = false;
    constructor(source) {
        this.reader = new ByteReader(source[Symbol.asyncIterator]());
    }
    /** Bytes of the current entry's data not read yet. */
    get remaining() {
        return this.left;
    }
    /** The next entry, or undefined at the end of the archive. */
    async next() {
        if (this.ended)
            return undefined;
        if (this.current !== undefined) {
            const name = this.current.name;
            this.current = undefined;
            if (!(await this.reader.skip(this.left + this.pad))) {
                throw new TarFormatError(`the archive ends inside the data of ${JSON.stringify(name)}: it is truncated`);
            }
            this.left = 0;
            this.pad = 0;
        }
        const entry = await this.readHeader();
        if (entry === undefined) {
            this.ended = true;
            return undefined;
        }
        // Only these carry data after the header; links, directories and devices do not, whatever size says.
        const hasData = entry.type === '0' || entry.type === '7' || !'123456'.includes(entry.type);
        this.current = entry;
        this.left = hasData ? entry.size : 0;
        this.pad = hasData ? padding(entry.size) : 0;
        return entry;
    }
    /** The next piece of the current entry's data, at most `max` bytes, as it came; empty at the entry's end. */
    async chunk(max = Number.POSITIVE_INFINITY) {
        if (this.left === 0)
            return Buffer.alloc(0);
        const piece = await this.reader.chunk(Math.min(max, this.left));
        if (piece.length === 0)
            this.truncated();
        this.left -= piece.length;
        return piece;
    }
    /** Exactly `n` bytes of the current entry's data (fewer only when the entry holds fewer). */
    async read(n) {
        const take = Math.min(n, this.left);
        const data = await this.reader.read(take);
        if (data.length < take)
            this.truncated();
        this.left -= take;
        return data;
    }
    truncated() {
        throw new TarFormatError(`the archive ends inside the data of ${JSON.stringify(this.current?.name ?? '')}: it is truncated`);
    }
    async metadata(size, what) {
        if (size > MAX_METADATA_BYTES)
            throw new TarFormatError(`a ${what} of ${size} bytes, more than any real archive has`);
        const data = await this.reader.read(size);
        if (data.length < size || !(await this.reader.skip(padding(size))))
            throw new TarFormatError(`the archive ends inside a ${what}`);
        return data;
    }
    /** Reads headers up to the next real entry; undefined at the end of the archive. */
    async readHeader() {
        const reader = this.reader;
        let pax = new Map();
        let paxSeen = false;
        let longName;
        let longLink;
        for (;;) {
            const block = await reader.read(BLOCK);
            if (block.length === 0)
                return undefined; // Ended on an entry boundary without end-of-archive blocks: tar accepts that.
            if (block.length < BLOCK)
                throw new TarFormatError(`the archive ends inside a header (at byte ${reader.offset})`);
            if (block.every((b) => b === 0)) {
                // End of archive: two zero blocks. A lone zero block followed by more headers is read
                // differently by different tars, so it is refused rather than guessed at.
                const next = await reader.read(BLOCK);
                if (next.length === 0 || next.every((b) => b === 0))
                    return undefined;
                throw new TarFormatError(`a lone zero block at byte ${reader.offset - 2 * BLOCK} is followed by more entries`);
            }
            if (!checksumMatches(block)) {
                throw new TarFormatError(`the header at byte ${reader.offset - BLOCK} has a bad checksum: this is not a tar archive, or it is corrupt`);
            }
            const type = String.fromCharCode(block[156] || 0x30);
            const headerSize = parseNumber(block, 124, 12);
            if (type === 'L' || type === 'K') {
                // Two of them for one entry: tars disagree on which one counts.
                if ((type === 'L' ? longName : longLink) !== undefined)
                    throw new TarFormatError('two GNU long names for one entry');
                const name = cString(await this.metadata(headerSize, 'GNU long name'), 0, headerSize);
                if (type === 'L')
                    longName = name;
                else
                    longLink = name;
                continue;
            }
            if (type === 'x' || type === 'g') {
                const records = parsePax(await this.metadata(headerSize, 'pax header'));
                if (type === 'g') {
                    // A global name, link or size would apply to every later entry; tar implementations
                    // disagree on honouring them, so a listing could not be trusted to match the extraction.
                    const key = ['path', 'linkpath', 'size'].find((k) => records.has(k));
                    if (key)
                        throw new TarFormatError(`a global pax header sets \`${key}\` for every entry, which this action does not accept`);
                    for (const [k, v] of records)
                        this.globals.set(k, v);
                }
                else {
                    if (paxSeen)
                        throw new TarFormatError('two pax headers for one entry');
                    pax = records;
                    paxSeen = true;
                }
                continue;
            }
            const magic = block.subarray(257, 263).toString('latin1');
            // POSIX ustar ("ustar\0") splits long names into prefix + name; GNU ("ustar  ") uses that space otherwise.
            const prefix = magic === 'ustar\0' ? cString(block, 345, 155) : '';
            const headerName = cString(block, 0, 100);
            const attrs = new Map([...this.globals, ...pax]);
            const name = attrs.get('path') ?? longName ?? (prefix ? `${prefix}/${headerName}` : headerName);
            const linkName = attrs.get('linkpath') ?? longLink ?? cString(block, 157, 100);
            const size = attrs.has('size') ? paxSize(attrs.get('size')) : headerSize;
            return { name, type, linkName, size, mode: parseNumber(block, 100, 8), paxKeys: [...attrs.keys()] };
        }
    }
}
/** The entries of a tar stream, in order, their data skipped (see TarReader). */
async function* readTarEntries(source) {
    const tar = new TarReader(source);
    for (let entry = await tar.next(); entry !== undefined; entry = await tar.next())
        yield entry;
}
function padding(size) {
    return (BLOCK - (size % BLOCK)) % BLOCK;
}

;// CONCATENATED MODULE: ./src/archive/contents.ts
/**
 * What the archive holds, read from its tar headers and its small JSON files without extracting
 * anything, checked against what was asked for: an adapter (`adapter_config.json` and adapter
 * weights) or a merged or full model (`config.json` and weights, with an index naming every shard
 * when they are sharded). Every `.safetensors` file is checked as it streams past. Memory stays
 * bounded whatever the model's size: tensor data is skipped, only headers and configs are kept.
 */






/** The archive does not hold what was asked for, or a weights file in it is damaged. */
class ContentsError extends errors/* ActionError */.lZ {
    constructor(message) {
        super(message);
        this.name = 'ContentsError';
    }
}
/** A config is a few kilobytes; a file this large under that name is not one. */
const MAX_CONFIG_BYTES = 1024 * 1024;
/** The shard index of the largest models is a few megabytes. */
const MAX_INDEX_BYTES = 32 * 1024 * 1024;
const ADAPTER_CONFIG = 'adapter_config.json';
const CONFIG = 'config.json';
const ADAPTER_WEIGHTS = ['adapter_model.safetensors', 'adapter_model.bin'];
const INDEX = /\.index\.json$/;
const SHARD = /-\d+-of-\d+\.(?:safetensors|bin)$/;
/** `.bin` files a Trainer saves beside the weights that are not weights. */
const NOT_WEIGHTS = /^(?:training_args|optimizer|scheduler|rng_state)[^/]*\.bin$/;
const basename = (p) => p.slice(p.lastIndexOf('/') + 1);
const dirname = (p) => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');
function capFor(name) {
    if (name === ADAPTER_CONFIG || name === CONFIG)
        return MAX_CONFIG_BYTES;
    if (INDEX.test(name))
        return MAX_INDEX_BYTES;
    return undefined;
}
/** Reads the tar once: its file names, its small JSON files, and every safetensors header. */
async function survey(plain) {
    const tar = new TarReader(plain);
    const seen = { files: new Set(), tops: new Map(), json: new Map(), safetensors: { files: 0, tensors: 0, bytes: 0 } };
    for (let entry = await tar.next(); entry !== undefined; entry = await tar.next()) {
        const parts = components(entry.name);
        if (parts.length === 0)
            continue;
        const isDir = entry.type === '5' || parts.length > 1;
        seen.tops.set(parts[0], (seen.tops.get(parts[0]) ?? false) || isDir);
        const regular = entry.type === '0' || entry.type === '7';
        if (!regular && entry.type !== '1')
            continue;
        const file = parts.join('/');
        seen.files.add(file);
        if (!regular)
            continue;
        if (/\.safetensors$/i.test(file)) {
            try {
                const facts = await checkSafetensorsEntry(tar, entry.size);
                seen.safetensors.files++;
                seen.safetensors.tensors += facts.tensors;
                seen.safetensors.bytes += facts.dataBytes;
            }
            catch (error) {
                if (!(error instanceof SafetensorsError))
                    throw error;
                throw new ContentsError(`The archive holds a damaged weights file, ${(0,log/* quote */.hD)(file, 200)} (${entry.size} bytes): ${error.message}. Loading the model would fail. Run the job again; if it persists, report it to Together with the job id. To keep the archive anyway, set \`verify-contents: false\`.`);
            }
            continue;
        }
        const cap = parts.length <= 2 ? capFor(basename(file)) : undefined;
        if (cap !== undefined)
            seen.json.set(file, { size: entry.size, data: entry.size <= cap ? await tar.read(entry.size) : undefined });
    }
    return seen;
}
/** The model's folder: the archive's one top-level folder when it has one, otherwise its root. */
function modelFolder(tops) {
    const all = [...tops.entries()];
    return all.length === 1 && all[0][1] ? all[0][0] : '';
}
const folderText = (folder) => (folder === '' ? 'the archive root' : `the folder ${(0,log/* quote */.hD)(`${folder}/`)}`);
const listed = (names, max = 8) => names.length === 0
    ? 'nothing'
    : `${names
        .slice(0, max)
        .map((n) => (0,log/* quote */.hD)(n))
        .join(', ')}${names.length > max ? `, … (${names.length} in all)` : ''}`;
function readJson(folder, name, file) {
    const where = (0,log/* quote */.hD)(folder ? `${folder}/${name}` : name);
    const cap = capFor(name) ?? MAX_CONFIG_BYTES;
    if (file.data === undefined) {
        throw new ContentsError(`The archive's ${where} is ${file.size} bytes, more than the ${cap} bytes such a file ever holds: it is not a ${INDEX.test(name) ? 'shard index' : 'model config'}. If the archive is right nonetheless, set \`verify-contents: false\`.`);
    }
    let json;
    try {
        json = JSON.parse(file.data.toString('utf8'));
    }
    catch (error) {
        throw new ContentsError(`The archive's ${where} is not valid JSON (${error.message}). If the archive is right nonetheless, set \`verify-contents: false\`.`);
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) {
        throw new ContentsError(`The archive's ${where} is not a JSON object. If the archive is right nonetheless, set \`verify-contents: false\`.`);
    }
    return json;
}
const kindName = (kind, fetched) => kind === 'adapter' ? 'an adapter' : fetched === 'model' ? 'a full model' : 'a merged model';
const forWhat = (asked) => (asked.step === undefined ? 'as the final checkpoint' : `for step ${asked.step}`);
/** A value from the archive that may become an output: no control characters, a sane length. */
function outputValue(value, name, max, notes) {
    if (value === undefined || value === null)
        return undefined;
    if (typeof value !== 'string' || value === '' || value.length > max || (0,log/* hasControls */.Lx)(value)) {
        notes.push(`${name} ${(0,log/* quote */.hD)(typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value)))} was not passed on: ${typeof value !== 'string' || value === '' ? 'it is not a name' : value.length > max ? `it is longer than ${max} characters` : 'it holds control characters'}`);
        return undefined;
    }
    return value;
}
/**
 * Decides what the surveyed archive holds and whether that is what was asked for; throws a
 * ContentsError that says what was found instead.
 */
function judge(seen, asked) {
    const folder = modelFolder(seen.tops);
    const prefix = folder === '' ? '' : `${folder}/`;
    const here = [...seen.files]
        .filter((f) => dirname(f) === folder)
        .map(basename)
        .sort();
    // Folders inside the model's folder, to show when it holds no model.
    const below = [
        ...new Set([...seen.files]
            .filter((f) => f.startsWith(prefix) && f.slice(prefix.length).includes('/'))
            .map((f) => f.slice(prefix.length).split('/')[0])),
    ].sort();
    const has = (name) => here.includes(name);
    const adapterWeights = ADAPTER_WEIGHTS.filter(has);
    const weights = here.filter((n) => /\.(?:safetensors|bin)$/.test(n) && !ADAPTER_WEIGHTS.includes(n) && !NOT_WEIGHTS.test(n));
    const isAdapter = has(ADAPTER_CONFIG) && adapterWeights.length > 0;
    const isModel = has(CONFIG) && weights.length > 0;
    const wanted = asked.fetched === 'adapter' ? 'adapter' : 'model';
    const found = isAdapter ? 'adapter' : isModel ? 'model' : undefined;
    const ok = wanted === 'adapter' ? isAdapter : isModel;
    const notes = [];
    if (!ok) {
        const folders = below.length > 0 ? ` (and the folder${below.length === 1 ? '' : 's'} ${listed(below.map((b) => `${b}/`))})` : '';
        const holds = `${folderText(folder)} holds ${here.length > 0 ? listed(here) : 'no files'}${folders}`;
        if (found !== undefined) {
            const why = asked.step === undefined
                ? 'The archive does not hold what `checkpoint-type` asked for; report it to Together with the job id.'
                : `Together's API may ignore \`checkpoint\` when \`checkpoint_step\` is given (its published spec says so) and send what it saved at that step. Ask for \`checkpoint-type: ${found === 'adapter' ? 'adapter' : 'merged'}\` at step ${asked.step}, or leave \`step\` out for the final ${wanted === 'adapter' ? 'adapter' : 'model'}.`;
            throw new ContentsError(`Together sent ${kindName(found, asked.fetched)} ${forWhat(asked)}, not ${kindName(wanted, asked.fetched)}: ${holds}. ${why} To keep this archive as it is, set \`verify-contents: false\`.`);
        }
        const needs = wanted === 'adapter'
            ? `${ADAPTER_CONFIG} and adapter weights (${ADAPTER_WEIGHTS.join(' or ')})`
            : `${CONFIG} and weights (*.safetensors or *.bin)`;
        throw new ContentsError(`The archive Together sent ${forWhat(asked)} is not ${kindName(wanted, asked.fetched)}: ${kindName(wanted, asked.fetched)} needs ${needs} in its folder, and ${holds}. Run the job again; if it persists, report it to Together with the job id. If the archive is right nonetheless, set \`verify-contents: false\`.`);
    }
    const report = {
        kind: wanted === 'adapter' ? 'adapter' : asked.fetched,
        folder,
        files: seen.files.size,
        weights: wanted === 'adapter' ? adapterWeights : weights,
        safetensors: seen.safetensors,
        notes,
    };
    if (wanted === 'adapter') {
        const config = readJson(folder, ADAPTER_CONFIG, seen.json.get(`${prefix}${ADAPTER_CONFIG}`));
        report.baseModel = outputValue(config.base_model_name_or_path, 'base_model_name_or_path', 512, notes);
        const r = config.r;
        if (typeof r === 'number' && Number.isSafeInteger(r) && r > 0)
            report.loraRank = r;
        else if (r !== undefined)
            notes.push(`the LoRA rank r ${(0,log/* quote */.hD)(JSON.stringify(r) ?? String(r))} was not passed on: it is not a positive integer`);
        return report;
    }
    const config = readJson(folder, CONFIG, seen.json.get(`${prefix}${CONFIG}`));
    const architecture = Array.isArray(config.architectures) ? config.architectures[0] : config.model_type;
    report.architecture = outputValue(architecture, 'the architecture', 200, notes);
    checkShards(folder, here, seen);
    return report;
}
/** Sharded weights need an index, and every file an index names must be in the folder. */
function checkShards(folder, here, seen) {
    const prefix = folder === '' ? '' : `${folder}/`;
    const indexes = here.filter((n) => INDEX.test(n) && /\.(?:safetensors|bin)\.index\.json$/.test(n));
    for (const name of indexes) {
        const index = readJson(folder, name, seen.json.get(`${prefix}${name}`));
        const map = index.weight_map;
        if (map === null || typeof map !== 'object' || Array.isArray(map) || !Object.values(map).every((v) => typeof v === 'string')) {
            throw new ContentsError(`The archive's ${(0,log/* quote */.hD)(`${prefix}${name}`)} has no weight_map naming the file of each tensor, so the sharded model cannot be loaded. Run the job again; if it persists, report it to Together with the job id, or set \`verify-contents: false\`.`);
        }
        const named = [...new Set(Object.values(map))].sort();
        const missing = named.filter((f) => !seen.files.has(components(`${prefix}${f}`).join('/')));
        if (missing.length > 0) {
            throw new ContentsError(`The archive's ${(0,log/* quote */.hD)(`${prefix}${name}`)} names ${named.length} weight files, and ${missing.length} of them ${missing.length === 1 ? 'is' : 'are'} not in the archive: ${listed(missing)}. The model is incomplete and would not load. Run the job again; if it persists, report it to Together with the job id, or set \`verify-contents: false\`.`);
        }
    }
    const shards = here.filter((n) => SHARD.test(n));
    if (shards.length > 0 && indexes.length === 0) {
        throw new ContentsError(`The archive holds sharded weights (${listed(shards, 3)}) but no index file (such as model.safetensors.index.json) that says which tensor is in which shard, so the model would not load. Run the job again; if it persists, report it to Together with the job id, or set \`verify-contents: false\`.`);
    }
}
/**
 * Reads the compressed archive from `source` once, decompressing it on the way, and checks that it
 * holds what was asked for; throws a ContentsError (or a ZstdMissingError, or the source's own
 * error) otherwise. Nothing is written anywhere.
 */
async function checkContents(source, format, asked, options = {}) {
    let seen;
    try {
        seen = await withDecompressed(source, format, survey, {
            need: "Checking the archive's contents",
            advice: 'set `verify-contents: false`',
            zstd: options.zstd,
        });
    }
    catch (error) {
        if (!(error instanceof Error) || error instanceof errors/* ActionError */.lZ)
            throw error;
        if (error.name === 'TarFormatError' || error.name === 'DecompressError') {
            throw new ContentsError(`The archive cannot be read as a ${format === 'zstd' ? 'zstd' : 'gzip'}-compressed tar: ${error.message}. Run the job again; if it persists, report it to Together with the job id. To keep it anyway, set \`verify-contents: false\`.`);
        }
        throw error;
    }
    return judge(seen, asked);
}
/** One line for the log: what was found. */
function describeContents(report) {
    const where = report.folder === '' ? 'at the archive root' : `in ${(0,log/* quote */.hD)(`${report.folder}/`)}`;
    const what = report.kind === 'adapter'
        ? `an adapter${report.baseModel ? ` of ${(0,log/* quote */.hD)(report.baseModel)}` : ''}${report.loraRank ? `, LoRA rank ${report.loraRank}` : ''}`
        : `${report.kind === 'model' ? 'a full model' : 'a merged model'}${report.architecture ? ` (${report.architecture})` : ''}, ${report.weights.length} weight file${report.weights.length === 1 ? '' : 's'}`;
    const st = report.safetensors;
    return `Contents: ${what}, ${where}; ${st.files} safetensors file${st.files === 1 ? '' : 's'} whole (${st.tensors} tensors)`;
}

// EXTERNAL MODULE: external "node:stream/promises"
var promises_ = __webpack_require__(46466);
// EXTERNAL MODULE: ./src/format.ts
var src_format = __webpack_require__(16264);
// EXTERNAL MODULE: external "node:crypto"
var external_node_crypto_ = __webpack_require__(77598);
;// CONCATENATED MODULE: ./src/transfer/disk-errors.ts
/**
 * Disk faults: a full disk, a quota, a file too large for the file system, a read-only file system
 * or a folder the runner may not write. None of them is cured by another attempt, and none is the
 * network's fault, so each is reported at once, naming the input that chose the folder, the folder
 * and its free space.
 */



const DISK_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG', 'EROFS', 'EACCES']);
/** True for an error that no retry can cure because the disk refused the write. */
function isDiskError(error) {
    const code = error?.code;
    return typeof code === 'string' && DISK_CODES.has(code);
}
/** Free bytes for the runner's user on the file system holding `dir`, or undefined when it cannot be told. */
async function freeSpace(dir) {
    try {
        const stats = await external_node_fs_.promises.statfs(dir);
        return stats.bavail * stats.bsize;
    }
    catch {
        return undefined;
    }
}
const ADVICE = {
    path: 'choose another `path`',
    'extract-path': 'choose another `extract-path`',
    cache: 'set `cache: false`',
};
/**
 * The message for a disk fault while writing into `dir`, the folder `input` chose. `error` must
 * satisfy `isDiskError`.
 */
async function explainDiskError(error, input, dir, what) {
    const free = await freeSpace(dir);
    const freeText = free === undefined ? 'free space unknown' : `${(0,src_format/* formatBytes */.z3)(free)} (${free} bytes) free`;
    const where = `${dir} (\`${input}\`; ${freeText})`;
    const advice = ADVICE[input];
    const reasons = {
        ENOSPC: `the disk is full while ${what} in ${where}. Free up space (for example remove preinstalled tools), ${advice}, or use a larger runner.`,
        EDQUOT: `the disk quota of the runner's user is used up while ${what} in ${where}. Free up space in the quota, or ${advice}.`,
        EFBIG: `the file grew larger than the file system or a file size limit allows while ${what} in ${where} (FAT32 holds at most 4 GiB per file; \`ulimit -f\` can set a lower limit). Use a folder on another file system: ${advice}.`,
        EROFS: `the file system is read-only, so nothing can be written while ${what} in ${where}. ${capitalise(advice)}.`,
        EACCES: `the runner's user may not write there while ${what} in ${where}. Give the folder write permission, or ${advice}.`,
    };
    const code = error.code ?? 'EIO';
    return new errors/* ActionError */.lZ(`${code}: ${reasons[code] ?? `${error.message} (${where})`}`, { cause: error });
}
function capitalise(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
}

;// CONCATENATED MODULE: ./src/transfer/destination.ts







/**
 * Where the `path` input points. An existing directory, or a value ending in a separator, is a
 * directory; anything else names the file itself. Relative paths resolve against the workspace.
 */
function resolveDestination(input, workspace) {
    if (input === '')
        return { dir: external_node_path_.resolve(workspace) };
    if (input.includes('\0'))
        throw new errors/* InputError */.dz('path', 'contains a NUL character.');
    const absolute = external_node_path_.resolve(workspace, input);
    const endsWithSeparator = /[\\/]$/.test(input);
    if (endsWithSeparator || isDirectory(absolute))
        return { dir: absolute };
    return { dir: external_node_path_.dirname(absolute), name: external_node_path_.basename(absolute) };
}
const PATH_HINT = 'Give a directory, or a file path whose parent can be created.';
/** What an existing file system entry is, in words, for one that is not a regular file. */
function kindOf(stat) {
    if (stat.isDirectory())
        return 'a directory';
    if (stat.isSymbolicLink())
        return 'a symbolic link';
    if (stat.isFIFO())
        return 'a FIFO (named pipe)';
    if (stat.isSocket())
        return 'a socket';
    if (stat.isCharacterDevice())
        return 'a character device';
    if (stat.isBlockDevice())
        return 'a block device';
    return 'not a regular file';
}
/**
 * Refuses a target that exists and is not a regular file: the download replaces what is at its
 * target, and only a file may be replaced (never a pipe a reader waits on, a device, a socket, a
 * link or a folder).
 */
function requireReplaceable(target) {
    let stat;
    try {
        stat = external_node_fs_.lstatSync(target, { throwIfNoEntry: false });
    }
    catch (error) {
        if (error.code !== 'ENOTDIR')
            throw error;
        throw new errors/* InputError */.dz('path', `cannot create the directory ${external_node_path_.dirname(target)}: a file is in the way. ${PATH_HINT}`);
    }
    if (stat === undefined || stat.isFile())
        return;
    throw new errors/* InputError */.dz('path', `${target} exists and is ${kindOf(stat)}. Only a regular file there is replaced by the download: remove it, or give another \`path\` (a directory, or the path of a file).`);
}
function isDirectory(p) {
    try {
        return external_node_fs_.statSync(p).isDirectory();
    }
    catch {
        return false;
    }
}
/**
 * Creates the destination directory, remembering what it created so that a failed download can
 * leave the file system as it found it.
 */
async function prepareDirectory(dir, input = 'path') {
    let created;
    try {
        created = await makeDirectories(dir);
    }
    catch (error) {
        if (isDiskError(error))
            throw await explainDiskError(error, input, nearestExisting(dir), `creating the directory ${dir}`);
        const code = error.code;
        const why = code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : error.message;
        const hint = input === 'path' ? PATH_HINT : 'Give a folder that can be created.';
        throw new errors/* InputError */.dz(input, `cannot create the directory ${dir}: ${why}. ${hint}`);
    }
    return {
        removeIfCreated: async () => {
            if (!created)
                return;
            // Remove only empty directories, deepest first, up to the first one we created.
            for (let d = dir; d.startsWith(created); d = external_node_path_.dirname(d)) {
                try {
                    await external_node_fs_.promises.rmdir(d);
                }
                catch {
                    return;
                }
                if (d === created)
                    return;
            }
        },
    };
}
/**
 * `mkdir -p`, one level at a time: a recursive `fs.mkdir` reports ENOENT where the file system
 * refused the write (a read-only disk, for one), which would send the user looking for a missing
 * folder. Returns the first folder it created, like `fs.mkdir` with `recursive`.
 */
async function makeDirectories(dir) {
    const missing = [];
    for (let d = external_node_path_.resolve(dir); !external_node_fs_.existsSync(d); d = external_node_path_.dirname(d)) {
        missing.unshift(d);
        if (external_node_path_.dirname(d) === d)
            break;
    }
    for (const d of missing) {
        await external_node_fs_.promises.mkdir(d).catch((error) => {
            if (error.code !== 'EEXIST' || !external_node_fs_.statSync(d).isDirectory())
                throw error;
        });
    }
    return missing[0];
}
/** The deepest folder of `dir`'s ancestors that exists: where a failed mkdir was refused. */
function nearestExisting(dir) {
    let current = external_node_path_.resolve(dir);
    while (!external_node_fs_.existsSync(current) && external_node_path_.dirname(current) !== current)
        current = external_node_path_.dirname(current);
    return current;
}
/** A hidden temp path beside the target, so the final rename stays on one file system. */
function tempPathFor(target, suffix = 'partial') {
    return external_node_path_.join(external_node_path_.dirname(target), `.${external_node_path_.basename(target)}.${(0,external_node_crypto_.randomBytes)(6).toString('hex')}.${suffix}`);
}
/** Temp files (and temp folders, such as a half-done extraction) to remove if the process is cancelled before it can clean up after itself. */
const pendingTempFiles = new Set();
let signalHandlersInstalled = false;
function trackTempFile(file) {
    installSignalHandlers();
    pendingTempFiles.add(file);
    return async () => {
        pendingTempFiles.delete(file);
        await external_node_fs_.promises.rm(file, { force: true, recursive: true });
    };
}
function installSignalHandlers() {
    if (signalHandlersInstalled)
        return;
    signalHandlersInstalled = true;
    for (const [signal, code] of [
        ['SIGINT', 130],
        ['SIGTERM', 143],
    ]) {
        process.once(signal, () => {
            for (const file of pendingTempFiles) {
                try {
                    external_node_fs_.rmSync(file, { force: true, recursive: true });
                }
                catch {
                    // Best effort: the process is exiting either way.
                }
            }
            log/* error */.z3(`Cancelled (${signal}); the partial download was removed.`);
            process.exit(code);
        });
    }
}
const ARCHIVE_AT_PATH = { what: 'the archive needs', advice: 'choose another `path`' };
/** Fails early, quoting both numbers, when `bytes` cannot fit on the disk that holds `dir`. */
async function requireFreeSpace(dir, bytes, need = ARCHIVE_AT_PATH) {
    if (bytes === undefined)
        return;
    let free;
    try {
        const stats = await external_node_fs_.promises.statfs(dir);
        free = stats.bavail * stats.bsize;
    }
    catch {
        return; // No statfs on this platform or file system: the download itself will tell.
    }
    if (free < bytes) {
        throw new errors/* ActionError */.lZ(`Not enough disk space in ${dir}: ${need.what} ${(0,src_format/* formatBytes */.z3)(bytes)} (${bytes} bytes) but only ${(0,src_format/* formatBytes */.z3)(free)} (${free} bytes) is free. Free up space (for example remove preinstalled tools), ${need.advice}, or use a larger runner.`);
    }
}

// EXTERNAL MODULE: ./src/transfer/rename.ts
var rename = __webpack_require__(44877);
;// CONCATENATED MODULE: ./src/archive/naming.ts
/**
 * Turns a model name into something safe for one path component: `/` becomes `--`, `_` and spaces
 * become `-`, everything is lowercased, any other character outside `[a-z0-9.@+-]` becomes `-`,
 * and leading dots go, so the result can be neither hidden nor `.`/`..`. `defaultFileName` also
 * drops trailing dots and caps the length, for Windows.
 */
function slugify(name) {
    return name
        .replaceAll('/', '--')
        .replace(/[_ ]/g, '-')
        .toLowerCase()
        .replace(/[^a-z0-9.@+-]/g, '-')
        .replace(/^\.+/, '');
}
/** The longest model part of a default name: with a workspace and the model's own files, paths stay well under Windows' 260 characters. */
const MAX_MODEL_PART = 100;
/** Names Windows reserves for devices, with or without an extension. */
const WINDOWS_DEVICE = /^(?:con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(?:\.|$)/i;
/**
 * A name Windows keeps as it is: no trailing dots or spaces (Windows tools strip them, so the file
 * would not be found under its own name) and no device name such as `con` or `nul.tar.zst`.
 */
function windowsSafe(name) {
    const trimmed = name.replace(/[. ]+$/, '');
    return WINDOWS_DEVICE.test(trimmed) ? trimmed.replace(/^[^.]*/, '$&-') : trimmed;
}
const ARCHIVE_EXTENSIONS = {
    zstd: '.tar.zst',
    gzip: '.tar.gz',
};
/** The default file name of a download, e.g. `org--model-abc123-step-10-adapter.tar.zst`. */
function defaultFileName(opts) {
    // The job id is validated to [A-Za-z0-9-], so it is always a usable fallback.
    const base = windowsSafe(slugify(opts.modelOutputName ?? '').slice(0, MAX_MODEL_PART)) || windowsSafe(slugify(opts.jobId).slice(0, MAX_MODEL_PART));
    const step = opts.step === undefined ? '' : `-step-${opts.step}`;
    const adapter = opts.fetched === 'adapter' ? '-adapter' : '';
    return `${base}${step}${adapter}${ARCHIVE_EXTENSIONS[opts.format]}`;
}

;// CONCATENATED MODULE: ./src/archive/extract.ts
/**
 * Unpacking a downloaded archive safely: every entry is listed and checked first (no absolute
 * paths, no `..`, no links leading outside the folder, no devices, no control characters), the
 * free space is checked in the file system's blocks, and only then is the archive decompressed
 * and streamed into `tar -x -f -` (no temp tar on disk, the same archives read on every platform),
 * into a hidden folder that is moved into place at the end.
 */















/** How many of the largest files the job summary lists. */
const LARGEST_FILES = 20;
// ---------------------------------------------------------------------------------------------
// Where to extract
const ARCHIVE_SUFFIX = /\.(tar\.zst|tar\.zstd|tzst|tar\.gz|tgz)$/i;
/** The longest default extraction folder name, so that the model's paths stay short enough for Windows. */
const MAX_FOLDER_NAME = 128;
/**
 * `model.tar.zst` -> `model`; a name without an archive suffix gets `-extracted` appended. No
 * trailing dots or spaces (Windows would strip them), no device name, at most MAX_FOLDER_NAME
 * characters.
 */
function folderNameFor(archiveName) {
    const stripped = archiveName.replace(ARCHIVE_SUFFIX, '');
    const name = stripped === archiveName || stripped === '' ? `${archiveName}-extracted` : stripped;
    return windowsSafe(name.slice(0, MAX_FOLDER_NAME)) || 'extracted';
}
/** The real path of `p`, following symlinks of the part that exists. */
function realPathOf(p) {
    const rest = [];
    let current = external_node_path_.resolve(p);
    for (;;) {
        try {
            return external_node_path_.join(external_node_fs_.realpathSync.native(current), ...rest.reverse());
        }
        catch {
            const parent = external_node_path_.dirname(current);
            if (parent === current)
                return external_node_path_.resolve(p);
            rest.push(external_node_path_.basename(current));
            current = parent;
        }
    }
}
function isInside(child, parent) {
    const relative = external_node_path_.relative(parent, child);
    return relative === '' || (!relative.startsWith('..') && !external_node_path_.isAbsolute(relative));
}
/**
 * The extraction folder: `extract-path` (relative to the workspace), or beside the archive a folder
 * named after it. The folder is replaced as a whole, so it must not hold the workspace, the archive
 * or the runner's own folders.
 */
function resolveExtractDir(input, archive, workspace, env = process.env) {
    if (input.includes('\0'))
        throw new errors/* InputError */.dz('extract-path', 'contains a NUL character.');
    const chosen = input === '' ? external_node_path_.join(external_node_path_.dirname(archive), folderNameFor(external_node_path_.basename(archive))) : external_node_path_.resolve(workspace, input);
    const dir = realPathOf(chosen);
    const stat = external_node_fs_.statSync(dir, { throwIfNoEntry: false });
    if (stat && !stat.isDirectory()) {
        throw new errors/* InputError */.dz('extract-path', `${dir} is a file, not a folder. Give a folder to extract into.`);
    }
    const guarded = [
        [workspace, 'the workspace'],
        [archive, 'the archive itself'],
        [env.RUNNER_TOOL_CACHE, "the runner's tool cache"],
        [env.RUNNER_TEMP, "the runner's temp folder"],
    ];
    for (const [guardedPath, what] of guarded) {
        if (guardedPath && isInside(realPathOf(guardedPath), dir)) {
            throw new errors/* InputError */.dz('extract-path', `${dir} holds ${what}. The extraction folder is replaced as a whole, so give a folder of its own, e.g. \`models/my-model\`.`);
        }
    }
    return dir;
}
// ---------------------------------------------------------------------------------------------
// Listing
const EXTRACTING = { need: 'Extracting the archive', advice: 'set `extract: false` and unpack the archive yourself' };
/** Lists and checks every entry of the archive without writing anything. */
async function listArchive(file, format, options = {}) {
    const source = external_node_fs_.createReadStream(file, { highWaterMark: 1024 * 1024 });
    return withDecompressed(source, format, async (tar) => {
        const validator = new EntryValidator();
        for await (const entry of readTarEntries(tar))
            validator.add(entry);
        return validator.result();
    }, { ...EXTRACTING, zstd: options.zstd }).catch((error) => {
        if (error instanceof Error && error.name === 'DecompressError')
            throw new TarFormatError(error.message);
        throw error;
    });
}
// ---------------------------------------------------------------------------------------------
// Space
/**
 * What the extracted files take on a file system of `blockSize`-byte blocks: each file its size
 * rounded up to whole blocks, each folder and symbolic link a block. 12,000 one-byte files take
 * 12,000 blocks, not 12,000 bytes.
 */
function bytesOnDisk(listing, blockSize) {
    const block = blockSize > 0 ? blockSize : 4096;
    let bytes = (listing.folders + listing.symlinks + 1) * block; // +1: the extraction folder itself.
    for (const file of listing.files)
        bytes += Math.ceil(file.size / block) * block;
    return bytes;
}
/** Fails before tar writes anything when the files, or their inodes, cannot fit into `dir`'s file system. */
async function requireExtractionSpace(dir, listing) {
    const stats = await external_node_fs_.promises.statfs(dir).catch(() => undefined);
    if (!stats)
        return; // No statfs here: tar itself will tell.
    const bytes = bytesOnDisk(listing, stats.bsize);
    await requireFreeSpace(dir, bytes, {
        what: `the ${listing.files.length} extracted files and ${listing.folders} folders need, counted in whole ${stats.bsize}-byte blocks of this file system,`,
        advice: 'choose another `extract-path` (or set `keep-archive: false` and a `path` on a larger disk)',
    });
    const inodes = listing.files.length + listing.folders + listing.symlinks + 1;
    // Some file systems (btrfs, and statfs on Windows) report no inode count: nothing to check there.
    if (stats.files > 0 && stats.ffree < inodes) {
        throw new errors/* ActionError */.lZ(`Not enough free inodes in ${dir} (\`extract-path\`): the archive makes ${inodes} files, folders and links, but the file system has room for ${stats.ffree} more. Free some up, or choose another \`extract-path\`.`);
    }
}
function exitOf(child) {
    return new Promise((resolve) => {
        child.once('error', (error) => resolve({ code: null, signal: null, error }));
        child.once('close', (code, signal) => resolve({ code, signal }));
    });
}
async function capture(command, args) {
    return new Promise((resolve) => {
        const child = (0,external_node_child_process_.spawn)(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
        let stdout = '';
        child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
        child.once('error', (error) => resolve({ code: null, stdout, error }));
        child.once('close', (code) => resolve({ code, stdout }));
    });
}
/** Whether the `tar` on PATH is GNU tar (else bsdtar, as on macOS and Windows), and its version line. */
async function tarFlavour() {
    const { stdout, error } = await capture('tar', ['--version']);
    if (error)
        throw new errors/* ActionError */.lZ(`Extracting needs the \`tar\` program, and it could not be run: ${error.message}. Install tar, or set \`extract: false\` and unpack the archive yourself.`);
    const firstLine = stdout.split('\n')[0].trim();
    return { gnu: /GNU tar/i.test(firstLine), version: firstLine || 'unknown tar' };
}
/** The system error texts tar prints (GNU tar and bsdtar alike), and the codes they stand for. */
const DISK_ERROR_TEXTS = [
    [/No space left on device/i, 'ENOSPC'],
    [/Dis[ck] quota exceeded/i, 'EDQUOT'],
    [/File too large/i, 'EFBIG'],
    [/Read-only file system/i, 'EROFS'],
    [/Permission denied/i, 'EACCES'],
];
/** The disk fault tar's messages report, if any: tar says what the system said, in words. */
function diskErrorIn(stderr) {
    for (const [text, code] of DISK_ERROR_TEXTS) {
        const line = stderr.split('\n').find((l) => text.test(l));
        if (line)
            return Object.assign(new Error(line.trim()), { code });
    }
    return undefined;
}
/**
 * GNU tar reports a write cut short without the system's reason ("Wrote only 6144 of 10240
 * bytes"): a full disk, or a file size limit. Which one the free space left tells.
 */
async function shortWriteIn(stderr, dir) {
    const line = stderr.split('\n').find((l) => /Wrote only \d+ of \d+ bytes/.test(l));
    if (!line)
        return undefined;
    const free = await freeSpace(dir);
    return Object.assign(new Error(line.trim()), { code: free !== undefined && free < 1024 * 1024 ? 'ENOSPC' : 'EFBIG' });
}
/** What tar wrote to stderr, kept short. */
function stderrOf(child) {
    let text = '';
    child.stderr?.setEncoding('utf8').on('data', (d) => {
        if (text.length < 16_384)
            text += d;
    });
    return () => text.trim();
}
/**
 * Decompresses `archive` into `tar -x -f -` running in `staging`: the `zstd` program's output goes
 * straight into tar; without the program (or for gzip), node:zlib decompresses and this process
 * feeds tar.
 */
async function unpack(archive, format, staging, options) {
    const flavour = await tarFlavour();
    // Ownership and permission bits from the archive are not restored: the files belong to the runner's user.
    const own = flavour.gnu ? ['--no-same-owner', '--no-same-permissions', '--warning=no-unknown-keyword'] : [];
    // GNU tar on Windows (Git's) reads `C:\\x` as a remote host; `/` separators it takes as a path.
    const into = process.platform === 'win32' && flavour.gnu ? staging.replace(/\\/g, '/') : staging;
    const tarArgs = ['-x', '-f', '-', '-C', into, ...own];
    let zstd;
    if (format === 'zstd' && options.zstd !== 'node') {
        zstd = (0,external_node_child_process_.spawn)('zstd', ['-d', '-c', '-q', '--long=31', '--', archive], { stdio: ['ignore', 'pipe', 'pipe'] });
        const started = await new Promise((resolve) => {
            zstd?.once('spawn', () => resolve(undefined));
            zstd?.once('error', (error) => resolve(error));
        });
        if (started) {
            zstd = undefined;
            if (started.code !== 'ENOENT' || options.zstd === 'program' || !nodeZstd()) {
                throw started.code === 'ENOENT'
                    ? new ZstdMissingError(EXTRACTING.need, EXTRACTING.advice)
                    : new errors/* ActionError */.lZ(`Could not run zstd (${started.message}); check its installation, or ${EXTRACTING.advice}.`);
            }
            log/* info */.pq('The `zstd` program is not on PATH: decompressing with node:zlib');
        }
    }
    // Without the program (or for gzip), node:zlib decompresses and this process feeds tar.
    const decoder = zstd ? undefined : format === 'gzip' ? (0,external_node_zlib_.createGunzip)({ chunkSize: 256 * 1024 }) : nodeZstd()?.({ chunkSize: 256 * 1024 });
    if (!zstd && !decoder)
        throw new ZstdMissingError(EXTRACTING.need, EXTRACTING.advice);
    const tar = (0,external_node_child_process_.spawn)('tar', tarArgs, { stdio: [zstd?.stdout ?? 'pipe', 'ignore', 'pipe'] });
    // tar has its own end of the pipe now.
    zstd?.stdout?.destroy();
    const tarStderr = stderrOf(tar);
    const zstdStderr = zstd ? stderrOf(zstd) : () => '';
    const tarExit = exitOf(tar);
    const zstdExit = zstd ? exitOf(zstd) : Promise.resolve({ code: 0, signal: null });
    let feedError;
    if (decoder && tar.stdin) {
        await (0,promises_.pipeline)(external_node_fs_.createReadStream(archive, { highWaterMark: 1024 * 1024 }), decoder, tar.stdin).catch((error) => {
            // tar stopping early breaks the pipe: its own exit status says why.
            if (error.code !== 'EPIPE' && error.code !== 'ERR_STREAM_PREMATURE_CLOSE')
                feedError = error;
        });
    }
    const [t, z] = await Promise.all([tarExit, zstdExit]);
    if (t.error)
        throw new errors/* ActionError */.lZ(`Could not run tar (${t.error.message}); check its installation, or ${EXTRACTING.advice}.`);
    const disk = t.code !== 0 ? (diskErrorIn(tarStderr()) ?? (await shortWriteIn(tarStderr(), staging))) : undefined;
    if (disk)
        throw await explainDiskError(disk, 'extract-path', external_node_path_.dirname(staging), 'extracting the archive');
    // tar may stop reading at the end-of-archive blocks: zstd then dies writing what follows them.
    const zstdFailed = z.error !== undefined || (z.code !== 0 && z.signal !== 'SIGPIPE' && !/Broken pipe/i.test(zstdStderr()));
    if (zstdFailed || feedError) {
        const why = feedError?.message ?? z.error?.message ?? (zstdStderr() || `exit code ${z.code ?? z.signal}`);
        throw new errors/* ActionError */.lZ(`The archive could not be decompressed while it was extracted (${log/* escapeControls */.UN(why)}). Nothing was extracted; the archive is still at ${archive}. Run the job again; if it persists, report it to Together with the job id.`);
    }
    if (t.code !== 0) {
        const said = tarStderr().split('\n').slice(-3).join(' ');
        throw new errors/* ActionError */.lZ(`tar could not extract the archive (${log/* escapeControls */.UN(said) || `exit code ${t.code ?? t.signal}`}). Nothing was extracted; the archive is still at ${archive}.`);
    }
}
/** Puts the finished folder at `dir`, replacing what was there only now that it is complete. */
async function moveIntoPlace(staging, dir) {
    const old = tempPathFor(dir, 'old');
    const removeOld = trackTempFile(old);
    let moved = false;
    try {
        await (0,rename/* renameWithRetry */.fU)(dir, old).then(() => (moved = true), (error) => {
            if (error.code !== 'ENOENT')
                throw error;
        });
        await (0,rename/* renameWithRetry */.fU)(staging, dir);
    }
    catch (error) {
        if (moved)
            await (0,rename/* renameWithRetry */.fU)(old, dir).catch(() => undefined);
        throw error;
    }
    finally {
        await removeOld();
    }
}
/**
 * Checks every entry, then extracts `archive` into `dir`: into a hidden folder beside it first,
 * moved into place when complete, so a rejected or failed extraction leaves no files behind and
 * an older folder at `dir` untouched.
 */
async function extractArchive(archive, format, dir, options = {}) {
    const started = Date.now();
    let listing;
    try {
        listing = await listArchive(archive, format, options);
    }
    catch (error) {
        const nothing = `Nothing was extracted; the archive is still at ${archive}.`;
        if (error instanceof UnsafeArchiveError) {
            throw new errors/* ActionError */.lZ(`The archive is not safe to unpack: ${error.message}. ${nothing} Report this to Together with the job id; do not unpack it by hand.`);
        }
        if (error instanceof TarFormatError)
            throw new errors/* ActionError */.lZ(`The archive could not be read as a tar archive: ${error.message}. ${nothing}`);
        throw error;
    }
    log/* info */.pq(`Checked ${listing.entries} entries: no absolute paths, no "..", no links leading outside, no devices, no control characters. ${listing.files.length} files, ${(0,src_format/* formatBytes */.z3)(listing.totalBytes)} in all.`);
    const parentDir = external_node_path_.dirname(dir);
    const parent = await prepareDirectory(parentDir, 'extract-path');
    const staging = tempPathFor(dir);
    const removeStaging = trackTempFile(staging);
    let placed = false;
    try {
        await requireExtractionSpace(parentDir, listing);
        await external_node_fs_.promises.mkdir(staging);
        await unpack(archive, format, staging, options);
        await moveIntoPlace(staging, dir);
        placed = true;
    }
    catch (error) {
        if (isDiskError(error))
            throw await explainDiskError(error, 'extract-path', parentDir, 'extracting the archive');
        throw error;
    }
    finally {
        await removeStaging();
        if (!placed)
            await parent.removeIfCreated();
    }
    const modelDir = listing.topLevelDir === undefined ? dir : external_node_path_.join(dir, listing.topLevelDir);
    const elapsedMs = Date.now() - started;
    log/* info */.pq(`Extracted into ${dir} in ${(0,src_format/* formatDuration */.a3)(elapsedMs / 1000)}`);
    if (listing.topLevelDir !== undefined)
        log/* info */.pq(`The archive holds one folder, ${listing.topLevelDir}: model-dir is ${modelDir}`);
    return { dir, modelDir, listing, elapsedMs };
}
/** The largest files, biggest first (ties by name), for the job summary. */
function largestFiles(files, count = LARGEST_FILES) {
    return [...files].sort((a, b) => b.size - a.size || a.name.localeCompare(b.name)).slice(0, count);
}

// EXTERNAL MODULE: ./src/runner/artifact-service.ts
var artifact_service = __webpack_require__(40148);
;// CONCATENATED MODULE: ./src/together/checkpoint.ts


const CHECKPOINT_TYPES = ['default', 'merged', 'adapter'];
/**
 * The job's kind of training. Jobs from before LoRA existed carry no `training_type`; they were
 * full fine-tunes, so that is what its absence means.
 */
function trainingKind(trainingType) {
    return trainingType?.type?.toLowerCase() === 'lora' ? 'lora' : 'full';
}
/** Maps the `checkpoint-type` input onto what a job of this kind can serve. */
function planCheckpoint(kind, choice) {
    if (kind === 'lora') {
        const fetched = choice === 'adapter' ? 'adapter' : 'merged';
        return { fetched, query: fetched };
    }
    if (choice !== 'default') {
        throw new errors/* InputError */.dz('checkpoint-type', `\`${choice}\` is only available for LoRA jobs, and this is a full fine-tuning job: it has no adapter and nothing to merge. Use \`default\` (or leave the input out) to download the full model.`);
    }
    return { fetched: 'model', query: 'model_output_path' };
}
const FAILED_STATUSES = new Set(['cancelled', 'cancel_requested', 'error', 'user_error']);
/** Throws unless the job's final model can be downloaded. */
function requireCompleted(job) {
    if (job.status === 'completed')
        return;
    const status = job.status || 'unknown';
    if (FAILED_STATUSES.has(status)) {
        throw new errors/* ActionError */.lZ(`Fine-tuning job ${job.id} has status \`${status}\`, so it has no final model to download. Check the job on Together, or give \`step\` to fetch one of its saved checkpoints.`);
    }
    throw new errors/* ActionError */.lZ(`Fine-tuning job ${job.id} is not finished yet (status \`${status}\`), so its final model cannot be downloaded. Set \`wait: true\` to wait for it, or run this step again once the job is \`completed\`; checkpoints it has already saved can be fetched now with the \`step\` input.`);
}
/** Throws, listing the steps that exist, unless `step` is one of the job's checkpoints. */
function requireStep(jobId, step, checkpoints) {
    const steps = [...new Set(checkpoints.map((c) => c.step))].sort((a, b) => a - b);
    if (steps.includes(step))
        return;
    const available = steps.length === 0 ? 'The job has no saved checkpoints yet.' : `Steps that exist: ${steps.join(', ')}.`;
    throw new errors/* InputError */.dz('step', `job ${jobId} has no checkpoint at step ${step}. ${available}`);
}
/**
 * The step to fetch: the given one, or for `latest` the highest saved step. A job without any
 * saved checkpoint has no latest one; the error names its status.
 */
function resolveStep(jobId, choice, status, checkpoints) {
    if (choice !== 'latest')
        return choice;
    if (checkpoints.length > 0)
        return checkpoints.reduce((max, c) => Math.max(max, c.step), 0);
    throw new errors/* ActionError */.lZ(`Fine-tuning job ${jobId} has no saved checkpoints yet (status \`${status || 'unknown'}\`), so \`step: latest\` has nothing to fetch. Set \`wait: true\` to wait for its first checkpoint, or give a step once one is listed.`);
}
// JSON.stringify escapes C0 controls; DEL, C1 and the line separators pass through it raw.
const RAW_IN_JSON = /[\u007f-\u009f\u2028\u2029]/g;
/** JSON whose every control and separator character is escaped, so that the text stays one line of plain ASCII-safe JSON. */
function safeJson(value) {
    return JSON.stringify(value).replace(RAW_IN_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
/**
 * The `checkpoints` and `steps` outputs: every saved checkpoint sorted by step (the API's label
 * and date as strings, secrets redacted), and the distinct steps alone, for a matrix.
 */
function checkpointOutputs(checkpoints) {
    const sorted = [...checkpoints].sort((a, b) => a.step - b.step);
    return {
        checkpoints: safeJson(sorted.map((c) => ({
            step: c.step,
            checkpoint_type: (0,log/* redact */.E$)(c.checkpointType),
            created_at: c.createdAt === undefined ? null : (0,log/* redact */.E$)(c.createdAt),
        }))),
        steps: safeJson([...new Set(sorted.map((c) => c.step))]),
    };
}

// EXTERNAL MODULE: external "node:events"
var external_node_events_ = __webpack_require__(78474);
// EXTERNAL MODULE: external "node:os"
var external_node_os_ = __webpack_require__(48161);
// EXTERNAL MODULE: external "node:timers/promises"
var external_node_timers_promises_ = __webpack_require__(58500);
// EXTERNAL MODULE: ./node_modules/@actions/http-client/lib/index.js
var lib = __webpack_require__(22779);
// EXTERNAL MODULE: ./node_modules/@actions/http-client/lib/proxy.js
var proxy = __webpack_require__(19783);
// EXTERNAL MODULE: ./node_modules/together-ai/index.mjs + 83 modules
var together_ai = __webpack_require__(45160);
// EXTERNAL MODULE: ./src/transfer/retryable.ts
var retryable = __webpack_require__(19833);
;// CONCATENATED MODULE: ./src/transfer/test-hooks.ts
function testHook(name, fallback) {
    const value = globalThis[`TOGETHER_DOWNLOAD_TEST_${name}`];
    return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : fallback;
}

;// CONCATENATED MODULE: ./src/transfer/retry.ts




/** The longest wait a server's `retry-after` or `retry-after-ms` can ask for; longer asks are cut to this. */
const MAX_SERVER_WAIT_MS = 60_000;
/**
 * How long to wait before the next attempt: what the server asked for, capped at
 * `MAX_SERVER_WAIT_MS`, or else a backoff. `note` says so when the server's ask was cut.
 */
function nextWaitMs(asked, backoff) {
    if (asked === undefined)
        return { waitMs: backoff(), note: '' };
    const cap = testHook('MAX_SERVER_WAIT_MS', MAX_SERVER_WAIT_MS);
    if (asked <= cap)
        return { waitMs: asked, note: ' (as the server asked)' };
    return {
        waitMs: cap,
        note: ` (the server asked for ${(asked / 1000).toFixed(0)} s; ${cap / 1000} s is the most this action waits)`,
    };
}
const DEFAULT_BACKOFF = { baseMs: 500, capMs: 30_000 };
/** The backoff every retry loop starts from (tests shorten its base). */
function defaultBackoff() {
    return { ...DEFAULT_BACKOFF, baseMs: testHook('BACKOFF_BASE_MS', DEFAULT_BACKOFF.baseMs) };
}
/** Full-jitter exponential backoff: a random wait up to base * 2^attempt, never above the cap. */
function backoffMs(attempt, { baseMs, capMs } = defaultBackoff(), random = Math.random) {
    return Math.round(random() * Math.min(capMs, baseMs * 2 ** attempt));
}
/** Thrown when every attempt failed; carries how many there were and the last failure. */
class RetriesExhaustedError extends Error {
    what;
    attempts;
    last;
    constructor(what, attempts, last) {
        super(`${what} failed after ${attempts} attempts; the last one: ${last.message}`);
        this.what = what;
        this.attempts = attempts;
        this.last = last;
        this.name = 'RetriesExhaustedError';
    }
}
/**
 * Runs `attempt` until it succeeds, throws something other than a RetryableError, or runs out of
 * attempts. Waits honour the server's retry-after, capped so that a hostile value cannot stall a job.
 */
async function withRetries(what, attempt, { attempts = 5, backoff = defaultBackoff() } = {}) {
    for (let n = 0;; n++) {
        try {
            return await attempt(n);
        }
        catch (error) {
            if (!(error instanceof retryable/* RetryableError */.dw))
                throw error;
            if (n + 1 >= attempts)
                throw new RetriesExhaustedError(what, attempts, error);
            const { waitMs, note } = nextWaitMs(error.waitMs, () => backoffMs(n, backoff));
            log/* info */.pq(`${what}: ${error.message}; attempt ${n + 2} of ${attempts} in ${(waitMs / 1000).toFixed(1)} s${note}`);
            await new Promise((resolve) => setTimeout(resolve, waitMs));
        }
    }
}

;// CONCATENATED MODULE: ./src/together/connection-errors.ts
/**
 * What a failed connection means. `fetch` reports every failure as `TypeError: fetch failed`; the
 * cause chain below it says which: a name that did not resolve, an address that refused, a
 * certificate that is not trusted, a proxy that said no. The message names that cause and what to
 * change, and whether another attempt could help.
 */
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
const PROXY_STATUS_TEXT = {
    403: 'Forbidden',
    407: 'Proxy Authentication Required',
    502: 'Bad Gateway',
    503: 'Service Unavailable',
    504: 'Gateway Timeout',
};
/** The error and its causes, outermost first (bounded: a cause chain can loop). */
function chainOf(error) {
    const chain = [];
    for (let e = error; typeof e === 'object' && e !== null && chain.length < 8; e = e.cause)
        chain.push(e);
    return chain;
}
const connection_errors_text = (value) => (typeof value === 'string' && value !== '' ? value : undefined);
/** The first line of a message, without Node's advice for another audience (`try running Node.js with ...`). */
function firstClause(message) {
    return message.split('\n')[0].replace(/; if the root CA is installed locally.*$/, '');
}
/**
 * Explains a connection failure to `url`, or returns undefined when the error is not one (an HTTP
 * status, a parse error). `proxy` is the proxy the request went through, if any, without credentials.
 */
function describeConnectionError(error, url, proxy) {
    const chain = chainOf(error);
    const host = new URL(url).host;
    const proxyName = proxy ? `the proxy ${proxy}` : 'the proxy';
    const proxyRefusal = chain.map((e) => /Proxy response \((\d{3})\)/.exec(connection_errors_text(e.message) ?? '')).find((m) => m !== null);
    if (proxyRefusal) {
        const status = Number(proxyRefusal[1]);
        const statusText = PROXY_STATUS_TEXT[status] ? ` ${PROXY_STATUS_TEXT[status]}` : '';
        return {
            reason: `${proxyName} answered HTTP ${status}${statusText} when asked to connect to ${host}`,
            hint: status === 407
                ? 'The proxy wants credentials: put them in the proxy variable (`https_proxy=http://user:password@proxy:port`), or list the API host in `no_proxy` if it needs no proxy.'
                : 'Check the proxy variables (`https_proxy`, `http_proxy`, `no_proxy`) and whether the proxy lets this runner reach the API host.',
            retryable: status >= 500,
        };
    }
    for (const e of chain) {
        const code = connection_errors_text(e.code);
        if (code === undefined)
            continue;
        if (DNS_CODES.has(code)) {
            const name = connection_errors_text(e.hostname) ?? new URL(url).hostname;
            return {
                reason: `the host name ${name} did not resolve (${code})`,
                hint: 'Check the `base-url` input (or TOGETHER_BASE_URL) and the runner\u2019s DNS.',
                retryable: true,
            };
        }
        if (code === 'ECONNREFUSED') {
            const address = connection_errors_text(e.address) ? `${e.address}${typeof e.port === 'number' ? `:${e.port}` : ''}` : host;
            return {
                reason: `${address} refused the connection (ECONNREFUSED)`,
                hint: proxy
                    ? `Nothing accepts connections there: check ${proxyName} and the \`base-url\` input.`
                    : 'Nothing accepts connections there: check the `base-url` input (or TOGETHER_BASE_URL), or whether a proxy is needed (`https_proxy`).',
                retryable: true,
            };
        }
        if (CERTIFICATE_CODES.has(code)) {
            const detail = connection_errors_text(e.message) ? firstClause(e.message) : code;
            return {
                reason: code === 'ERR_TLS_CERT_ALTNAME_INVALID'
                    ? `the certificate of ${host} is not valid for that name (${detail})`
                    : `the certificate of ${host} is not trusted (${code}: ${detail})`,
                hint: 'If this network inspects TLS with its own certificate authority (a corporate proxy or firewall), set the environment variable NODE_EXTRA_CA_CERTS to that authority\u2019s certificate file (PEM) for this step; otherwise check `base-url`.',
                retryable: false,
            };
        }
        if (['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL'].includes(code) ||
            code.startsWith('UND_ERR_')) {
            const detail = connection_errors_text(e.message) ? firstClause(e.message) : code;
            return {
                reason: `the connection to ${host} failed (${detail})`,
                hint: 'Check the network, a proxy, or the `base-url` input.',
                retryable: true,
            };
        }
    }
    if (chain.some((e) => connection_errors_text(e.message) === 'bad port')) {
        return {
            reason: `fetch refuses to connect to port ${new URL(url).port} (a port reserved for another protocol)`,
            hint: 'Check the port in the `base-url` input.',
            retryable: true,
        };
    }
    // `fetch failed` with nothing more precise below it; still a connection problem.
    const isFetchFailure = chain.some((e) => /fetch failed|terminated|socket|network/i.test(connection_errors_text(e.message) ?? ''));
    if (!isFetchFailure)
        return undefined;
    const detail = chain
        .map((e) => connection_errors_text(e.message))
        .filter((m) => m !== undefined && m !== 'fetch failed' && m !== 'Connection error.')
        .at(-1);
    return {
        reason: `the connection to ${host} failed${detail ? ` (${firstClause(detail)})` : ''}`,
        hint: 'Check the network, a proxy, or the `base-url` input.',
        retryable: true,
    };
}

;// CONCATENATED MODULE: ./src/together/json-transport.ts
/**
 * Bounds on what Together's JSON endpoints may cost: a body larger than `MAX_JSON_BYTES` is refused
 * as soon as that is known (from `content-length`, or once that many bytes have arrived), so no
 * answer is ever read whole into memory; and each attempt has one deadline for head and body, so a
 * server that trickles a byte at a time cannot hold the step.
 */
/** The largest JSON answer read: a job document or a list is kilobytes; 16 MiB is far beyond any real one. */
const MAX_JSON_BYTES = 16 * 1024 * 1024;
/** The time one attempt of a JSON request may take, head and body together. */
const API_DEADLINE_MS = 60_000;
/** The most any deadline may be, whatever a test asks for. */
const MAX_API_DEADLINE_MS = 120_000;
/**
 * The deadline per attempt. Tests shorten it with a preload (`test/support/api-deadline.mjs`) that
 * sets a global: nothing in a workflow's environment can change it.
 */
function apiDeadlineMs() {
    const asked = globalThis.TOGETHER_DOWNLOAD_TEST_API_DEADLINE_MS;
    return typeof asked === 'number' && asked > 0 && asked <= MAX_API_DEADLINE_MS ? asked : API_DEADLINE_MS;
}
/** A JSON answer over `MAX_JSON_BYTES`; `announced` when `content-length` said so before any byte was read. */
class BodyTooLargeError extends Error {
    bytes;
    announced;
    constructor(bytes, announced) {
        super(announced
            ? `the answer announces ${bytes} bytes (content-length), over the ${MAX_JSON_BYTES / 1024 / 1024} MiB this action reads`
            : `the answer passed ${MAX_JSON_BYTES / 1024 / 1024} MiB, the most this action reads, and was cut off there`);
        this.bytes = bytes;
        this.announced = announced;
        this.name = 'BodyTooLargeError';
    }
}
/**
 * A `fetch` for the SDK whose responses refuse to be read past `limit` bytes. `dispatcher` (the
 * runner's proxy, when one applies) is passed on to every request.
 */
function boundedFetch(dispatcher, limit = MAX_JSON_BYTES, inner = fetch) {
    return async (input, init) => {
        const response = await inner(input, dispatcher ? { ...init, dispatcher } : init);
        const announced = Number(response.headers.get('content-length') ?? Number.NaN);
        if (announced > limit) {
            await response.body?.cancel().catch(() => undefined);
            throw new BodyTooLargeError(announced, true);
        }
        if (response.body === null)
            return response;
        let seen = 0;
        const counted = response.body.pipeThrough(new TransformStream({
            transform(chunk, controller) {
                seen += chunk.byteLength;
                if (seen > limit)
                    controller.error(new BodyTooLargeError(seen, false));
                else
                    controller.enqueue(chunk);
            },
        }));
        return new Response(counted, { status: response.status, statusText: response.statusText, headers: response.headers });
    };
}
/** The BodyTooLargeError somewhere in an error's cause chain (the SDK wraps what `fetch` throws). */
function bodyTooLarge(error) {
    for (let e = error, n = 0; typeof e === 'object' && e !== null && n < 8; e = e.cause, n++) {
        if (e instanceof BodyTooLargeError)
            return e;
    }
    return undefined;
}

;// CONCATENATED MODULE: ./src/together/api.ts








/** The attempts for the job, checkpoint and event requests: 408/409/429/5xx, connection errors and deadlines are retried. */
const API_ATTEMPTS = 5;
/** The metrics only feed the summary: one attempt (one deadline), then the summary goes without them. */
const METRICS_ATTEMPTS = 1;
/**
 * A failed attempt that another may cure; `explain` gives the step's error once no attempt is
 * left, knowing how many there were.
 */
class FailedAttempt extends retryable/* RetryableError */.dw {
    explain;
    constructor(message, explain, waitMs, status) {
        super(message, waitMs, status);
        this.explain = explain;
    }
}
/**
 * Together's JSON endpoints, through the official SDK. The retries are ours, not the SDK's
 * (`maxRetries: 0`): the same policy as the download's (`withRetries`: a server's `retry-after`
 * capped at 60 s, every wait logged), and a retry can cover what the SDK's cannot: a body that
 * breaks or trickles after the head. Each attempt has one deadline for head and body.
 */
class TogetherApi {
    baseUrl;
    client;
    /** The proxy the API calls go through, without credentials, for error messages. */
    proxy;
    constructor(baseUrl, apiKey) {
        this.baseUrl = baseUrl;
        // fetch, which the SDK uses, ignores https_proxy and no_proxy; the runner's proxy settings
        // reach it through the same dispatcher http-client would use for this URL.
        const dispatcher = new lib/* HttpClient */.Qq('together-download').getAgentDispatcher(baseUrl);
        if (dispatcher)
            this.proxy = (0,proxy/* getProxyUrl */.s)(new URL(baseUrl))?.origin;
        this.client = new together_ai/* default */.Ay({
            apiKey,
            baseURL: baseUrl,
            fetch: boundedFetch(dispatcher),
            maxRetries: 0,
            // The SDK's own timeout covers only the head; ours (apiDeadlineMs, at most this) comes first.
            timeout: MAX_API_DEADLINE_MS + 1000,
            // The SDK would otherwise write its own warnings to the console, outside our log format.
            logLevel: 'off',
        });
    }
    async getJob(jobId) {
        const job = await this.call({ what: 'looking up the job', jobId }, (o) => this.client.fineTuning.retrieve(jobId, o));
        return {
            id: job.id || jobId,
            status: String(job.status ?? 'unknown'),
            model: job.model,
            modelOutputName: job.model_output_name,
            trainingType: job.training_type ?? undefined,
        };
    }
    /** The checkpoints that can be asked for by step (a positive whole number). */
    async listCheckpoints(jobId) {
        const list = await this.call({ what: 'listing the checkpoints', jobId }, (o) => this.client.fineTuning.listCheckpoints(jobId, o));
        return (Array.isArray(list.data) ? list.data : [])
            .filter((c) => Number.isSafeInteger(c?.step) && c.step > 0)
            .map((c) => ({
            step: c.step,
            checkpointType: String(c.checkpoint_type ?? ''),
            checkpoint: typeof c.checkpoint === 'string' ? c.checkpoint : undefined,
            createdAt: typeof c.created_at === 'string' ? c.created_at : undefined,
        }));
    }
    async listEvents(jobId) {
        const list = await this.call({ what: 'reading the job events', jobId }, (o) => this.client.fineTuning.listEvents(jobId, o));
        return (Array.isArray(list.data) ? list.data : []).map((e) => ({
            type: String(e.type ?? ''),
            level: e.level ?? undefined,
            message: String(e.message ?? ''),
            createdAt: e.created_at,
        }));
    }
    /** Every metrics snapshot, in the order logged (no filter: the spec's "omit the body to get them all"). */
    async listMetrics(jobId) {
        const list = await this.call({ what: 'reading the training metrics', jobId }, (o) => this.client.fineTuning.listMetrics(jobId, {}, o), METRICS_ATTEMPTS);
        const snapshots = Array.isArray(list.metrics) ? list.metrics : [];
        return snapshots.flatMap((m) => {
            if (typeof m !== 'object' || m === null)
                return [];
            const values = Object.entries(m).filter(([, v]) => typeof v === 'number' && Number.isFinite(v));
            return values.length === 0 ? [] : [Object.fromEntries(values)];
        });
    }
    async call(context, request, attempts = API_ATTEMPTS) {
        log/* debug */.Yz(`Together API: ${context.what} for ${context.jobId}`);
        try {
            return await withRetries(`Together API, ${context.what}`, () => this.attempt(context, request), { attempts });
        }
        catch (error) {
            if (error instanceof RetriesExhaustedError && error.last instanceof FailedAttempt)
                throw error.last.explain(attempts);
            throw error;
        }
    }
    /** One request, head and body within the deadline; failures classified for `withRetries`. */
    async attempt(context, request) {
        const deadlineMs = apiDeadlineMs();
        const controller = new AbortController();
        const timer = setTimeout(() => controller.abort(), deadlineMs);
        try {
            const body = await request({ signal: controller.signal });
            if (typeof body !== 'object' || body === null || Array.isArray(body)) {
                throw new errors/* ActionError */.lZ(`Together's answer while ${context.what} for job ${context.jobId} is not a JSON object, so it is not Together's API answering. Check the \`base-url\` input (or TOGETHER_BASE_URL): it must be Together's API, e.g. https://api.together.ai/v1.`);
            }
            return body;
        }
        catch (error) {
            if (controller.signal.aborted)
                throw tooSlow(context, deadlineMs);
            throw this.classify(error, context);
        }
        finally {
            clearTimeout(timer);
        }
    }
    classify(error, context) {
        if (error instanceof errors/* ActionError */.lZ)
            return error;
        const tooLarge = bodyTooLarge(error);
        if (tooLarge)
            return explainTooLarge(tooLarge, context);
        if (error instanceof together_ai/* APIError */.LG && typeof error.status === 'number') {
            const status = error.status;
            const detail = serverMessage(error.error);
            if (!(0,retryable/* isRetryableStatus */.PS)(status) && status !== 409)
                return explainHttpStatus(status, detail, context, 1);
            const headers = error.headers ? Object.fromEntries(error.headers.entries()) : {};
            return new FailedAttempt(`HTTP ${status}`, (n) => explainHttpStatus(status, detail, context, n), (0,retryable/* retryAfterMs */.Vs)(headers), status);
        }
        const problem = describeConnectionError(error, this.baseUrl, this.proxy);
        if (problem) {
            const explain = (attempts) => new errors/* ActionError */.lZ(`Could not reach the Together API at ${this.baseUrl} while ${context.what}${attempts > 1 ? `, after ${attempts} attempts` : ''}: ${problem.reason}. ${problem.hint}`, { cause: error });
            return problem.retryable ? new FailedAttempt(problem.reason, explain) : explain(1);
        }
        if (error instanceof SyntaxError) {
            return new errors/* ActionError */.lZ(`Together's answer while ${context.what} for job ${context.jobId} is not valid JSON (${error.message}). Run the job again later; if it persists, check \`base-url\`.`);
        }
        return error;
    }
}
function tooSlow(context, deadlineMs) {
    const seconds = deadlineMs / 1000;
    return new FailedAttempt(`no complete answer within ${seconds} s`, (attempts) => new errors/* ActionError */.lZ(`The Together API was too slow while ${context.what} for job ${context.jobId}: its answer (head and body) was not complete after ${seconds} s of waiting${attempts > 1 ? `, on the last of ${attempts} attempts` : ''}. This is a problem on Together's side or the network; run the job again later.`));
}
function explainTooLarge(error, context) {
    return new errors/* ActionError */.lZ(`Together's answer while ${context.what} for job ${context.jobId} was refused: ${error.message}. A real answer is a few kilobytes; check the \`base-url\` input (or TOGETHER_BASE_URL), or run the job again later.`);
}
/** The `message` of a Together error body (`{"error": {"message": ...}}`), if there is one. */
function serverMessage(body) {
    if (typeof body !== 'object' || body === null)
        return undefined;
    const inner = body.error ?? body;
    const message = typeof inner === 'object' && inner !== null ? inner.message : inner;
    if (typeof message !== 'string' || message.trim() === '')
        return undefined;
    const oneLine = message.replace(/\s+/g, ' ').trim();
    return oneLine.length > 300 ? `${oneLine.slice(0, 300)}…` : oneLine;
}
/** The message for an HTTP error status from any Together endpoint. */
function explainHttpStatus(status, detail, context, attempts) {
    const said = detail ? ` Together said: ${detail}` : '';
    const where = `HTTP ${status} while ${context.what}`;
    switch (status) {
        case 401:
            return new errors/* ActionError */.lZ(`Together rejected the API key (${where}). Check the \`api-key\` input (or TOGETHER_API_KEY): it must be a valid Together API key, e.g. \`api-key: \${{ secrets.TOGETHER_API_KEY }}\`.${said}`);
        case 403:
            return new errors/* ActionError */.lZ(`The API key may not access job ${context.jobId} (${where}). Check that \`api-key\` belongs to the account or project that owns the job.${said}`);
        case 404:
            return new errors/* ActionError */.lZ(context.step === undefined
                ? `Together has no fine-tuning job ${context.jobId} (${where}). Check \`job-id\`: it must be the id of one of your fine-tuning jobs, as \`together fine-tuning list\` prints it.${said}`
                : `Together has no checkpoint at step ${context.step} of job ${context.jobId} (${where}). Check \`job-id\` and \`step\`.${said}`);
        case 400:
            return new errors/* ActionError */.lZ(`Together refused the request (${where}) for job ${context.jobId}. Check \`job-id\`, \`step\` and \`checkpoint-type\`.${said}`);
        default:
            if (status === 408 || status === 429 || status >= 500) {
                return new errors/* ActionError */.lZ(`The Together API still failed after ${attempts} attempts (last status: ${where}). This is a temporary problem on Together's side or the network; run the job again later.${said}`);
            }
            return new errors/* ActionError */.lZ(`The Together API answered ${where}.${said}`);
    }
}

;// CONCATENATED MODULE: ./src/transfer/follow.ts
/**
 * The archive's bytes, in order, for a consumer that follows the download (the content check):
 * read back from the part of the temp file that is already written without a gap, in large
 * slices, as it grows. A consumer slower than the download lags behind, reading from the disk;
 * nothing is buffered for it beyond the slice it holds. The slices share one buffer: a slice is
 * the consumer's until it asks for the next one. A fresh buffer per slice cost the content check
 * about 0.7 CPU-s per GiB, mostly in garbage collection (a 1 GiB model archive, 2 cores).
 */

const FOLLOW_SLICE_BYTES = 4 * 1024 * 1024;
/** How far a file is known to be written, told by the download as it goes. */
class WrittenPrefix {
    available = 0;
    final;
    failure;
    wakers = [];
    /** Bytes `[0, bytes)` are on disk. */
    grew(bytes) {
        if (bytes <= this.available)
            return;
        this.available = bytes;
        this.wake();
    }
    /** The download is complete at `total` bytes. */
    finish(total) {
        this.available = total;
        this.final = total;
        this.wake();
    }
    /** The download failed: a reader waiting or reading on gets `error`. */
    fail(error) {
        this.failure ??= error;
        this.wake();
    }
    /** Resolves with how many bytes past `offset` are readable: 0 at the end, throws once the download failed. */
    async readable(offset) {
        for (;;) {
            if (this.failure)
                throw this.failure;
            if (this.available > offset)
                return this.available - offset;
            if (this.final !== undefined && offset >= this.final)
                return 0;
            await new Promise((resolve) => this.wakers.push(resolve));
        }
    }
    wake() {
        const wakers = this.wakers;
        this.wakers = [];
        for (const wake of wakers)
            wake();
    }
}
/**
 * The bytes of `file` in order as `prefix` says they are written, each slice valid until the next
 * is asked for. The file is opened for each slice, so that nothing holds it open between reads (on
 * Windows an open file cannot be replaced).
 */
async function* readGrowing(file, prefix, sliceBytes = FOLLOW_SLICE_BYTES) {
    let offset = 0;
    let buffer;
    for (;;) {
        const readable = await prefix.readable(offset);
        if (readable === 0)
            return;
        buffer ??= Buffer.allocUnsafe(sliceBytes);
        const slice = buffer.subarray(0, Math.min(sliceBytes, readable));
        const handle = await external_node_fs_.promises.open(file, 'r');
        let got = 0;
        try {
            while (got < slice.length) {
                const { bytesRead } = await handle.read(slice, got, slice.length - got, offset + got);
                if (bytesRead === 0)
                    throw new Error(`${file} ended at ${offset + got} bytes, before the ${offset + slice.length} already written`);
                got += bytesRead;
            }
        }
        finally {
            await handle.close();
        }
        offset += got;
        yield slice;
    }
}
/** How long a failed download waits for its follower to stop before it reports its own failure anyway. */
const FOLLOWER_STOP_MS = 30_000;
/**
 * Runs `follower` alongside `download`: the result comes once both are done. A follower that
 * fails aborts the download (through `abort`) and its error is the one thrown; a download that
 * fails makes the follower's iterable throw, and the download's error is the one thrown.
 */
async function withFollower(follower, archive, prefix, abort, download) {
    if (!follower)
        return download();
    let followerError;
    const following = Promise.resolve()
        .then(() => follower(archive()))
        .catch((error) => {
        followerError = { error };
        abort(error instanceof Error ? error : new Error(String(error)));
    });
    let result;
    try {
        result = await download();
    }
    catch (error) {
        if (followerError)
            throw followerError.error;
        prefix.fail(error instanceof Error ? error : new Error(String(error)));
        // Let the follower see the failure and let go of the file, but not for ever.
        let timer;
        await Promise.race([following, new Promise((resolve) => (timer = setTimeout(resolve, FOLLOWER_STOP_MS)))]);
        clearTimeout(timer);
        throw error;
    }
    await following;
    if (followerError)
        throw followerError.error;
    return result;
}

// EXTERNAL MODULE: ./src/transfer/http-client.ts
var http_client = __webpack_require__(27095);
;// CONCATENATED MODULE: ./src/transfer/in-order-hash.ts
/**
 * The archive's SHA-256, computed during the download, in file order. Bytes that arrive at the
 * in-order frontier are hashed straight from the connection's buffer as they are handed to the
 * disk; bytes that arrived ahead of it are read back (recent, so from the page cache) in large
 * slices when the frontier reaches them. No worker thread, no second pass over the file.
 */


const READ_BACK_BYTES = 1024 * 1024;
class InOrderHasher {
    fd;
    total;
    writtenTo;
    /** Bytes hashed so far: the frontier. */
    hashed = 0;
    /** Of those, bytes read back from the file rather than hashed from a connection's buffer. */
    readBack = 0;
    hash = (0,external_node_crypto_.createHash)('sha256');
    buffer;
    reading = false;
    failure;
    onDone;
    digestHex;
    stopped = false;
    idle;
    /**
     * @param fd the file, open for reading
     * @param total its final size
     * @param writtenTo how many bytes from the start are on disk without a gap
     */
    constructor(fd, total, writtenTo) {
        this.fd = fd;
        this.total = total;
        this.writtenTo = writtenTo;
    }
    /** Bytes `buf[start, end)` are about to be written at `offset`: hashed now if they are next in order. */
    offer(offset, buf, start, end) {
        if (this.reading || offset !== this.hashed || end <= start)
            return;
        this.hash.update(buf.subarray(start, end));
        this.hashed += end - start;
        this.settleIfDone();
    }
    /** Something was written: read back what now lies on disk past the frontier. */
    catchUp() {
        if (this.reading || this.failure || this.digestHex || this.stopped)
            return;
        const to = this.writtenTo();
        if (to <= this.hashed) {
            this.settleIfDone();
            return;
        }
        this.reading = true;
        this.buffer ??= Buffer.allocUnsafe(READ_BACK_BYTES);
        const length = Math.min(READ_BACK_BYTES, to - this.hashed);
        const position = this.hashed;
        external_node_fs_.read(this.fd, this.buffer, 0, length, position, (error, bytesRead) => {
            this.reading = false;
            if (this.stopped) {
                this.idle?.();
                return;
            }
            if (error || bytesRead === 0) {
                this.fail(error ?? new Error(`the file ended at ${position} bytes while hashing it`));
                return;
            }
            this.hash.update(this.buffer.subarray(0, bytesRead));
            this.hashed += bytesRead;
            this.readBack += bytesRead;
            this.catchUp();
        });
    }
    /** The hex digest, once every byte is hashed. */
    digest() {
        if (this.digestHex)
            return Promise.resolve(this.digestHex);
        if (this.failure)
            return Promise.reject(this.failure);
        const done = new Promise((resolve, reject) => {
            this.onDone = { resolve, reject };
        });
        this.catchUp();
        return done;
    }
    /** Stops reading back; resolves once no read is under way, so that the file can be closed. */
    stop() {
        this.stopped = true;
        if (!this.reading)
            return Promise.resolve();
        return new Promise((resolve) => {
            this.idle = resolve;
        });
    }
    settleIfDone() {
        if (this.hashed !== this.total || this.digestHex)
            return;
        this.digestHex = this.hash.digest('hex');
        this.buffer = undefined;
        this.onDone?.resolve(this.digestHex);
    }
    fail(error) {
        this.failure = error;
        this.onDone?.reject(error);
    }
}

// EXTERNAL MODULE: ./src/transfer/pieces.ts
var pieces = __webpack_require__(33284);
;// CONCATENATED MODULE: ./src/archive/format.ts
const MAGIC = {
    zstd: [0x28, 0xb5, 0x2f, 0xfd],
    gzip: [0x1f, 0x8b],
};
/**
 * The archive format that `bytes` begins with. A prefix shorter than the magic number is matched
 * as far as it goes, so the two bytes of a `Range: bytes=0-1` probe are enough to tell them apart.
 */
function sniffFormat(bytes, { partial = false } = {}) {
    for (const format of Object.keys(MAGIC)) {
        const magic = MAGIC[format];
        const length = partial ? Math.min(magic.length, bytes.length) : magic.length;
        if (length === 0 || bytes.length < length)
            continue;
        if (magic.slice(0, length).every((byte, i) => bytes[i] === byte))
            return format;
    }
    return undefined;
}
/** Hex of the first bytes, for error messages about unexpected content. */
function describeBytes(bytes) {
    const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
    const text = Buffer.from(bytes.subarray(0, 16)).toString('latin1');
    if (/^\s*</.test(text))
        return `${head} (looks like HTML or XML, not an archive)`;
    if (/^\s*[{[]/.test(text))
        return `${head} (looks like JSON, not an archive)`;
    return head || '(no bytes)';
}

// EXTERNAL MODULE: ./src/transfer/connection.ts
var connection = __webpack_require__(62895);
// EXTERNAL MODULE: ./src/transfer/http-head.ts
var http_head = __webpack_require__(45562);
// EXTERNAL MODULE: ./src/transfer/net-errors.ts
var net_errors = __webpack_require__(46142);
;// CONCATENATED MODULE: ./src/transfer/probe.ts











const PROBE_ATTEMPTS = 5;
/** Each probe attempt, head and body, redirects included, must be done within this. */
const PROBE_DEADLINE_MS = 120_000;
/** The download endpoint's URL; every parameter goes through URLSearchParams. */
function downloadUrl(baseUrl, query) {
    const url = new URL(`${baseUrl}/finetune/download`);
    url.searchParams.set('ft_id', query.jobId);
    if (query.step !== undefined)
        url.searchParams.set('checkpoint_step', String(query.step));
    url.searchParams.set('checkpoint', query.checkpoint);
    return url.href;
}
/** Parses `Content-Range: bytes a-b/total`; undefined total for `*` or a malformed header. */
function totalFromContentRange(header) {
    return parseContentRange(header)?.total;
}
/** The probe got no complete answer in time: a server that sends too slowly. */
class TooSlowError extends retryable/* RetryableError */.dw {
}
/**
 * Asks for the first two bytes of the archive to learn its size, its format and whether the
 * server honours ranges. A server that ignores the range gets its body cut off after the first
 * bytes. The query of every URL redirected to is masked before anything can print it, since the
 * one-stream download hands the final URL to tool-cache.
 */
async function probeArchive(url, apiKey, context) {
    const client = new http_client/* DownloadClient */.sE({ apiKey, apiOrigin: new URL(url).origin });
    const deadlineMs = testHook('PROBE_DEADLINE_MS', PROBE_DEADLINE_MS);
    try {
        return await withRetries('Probing the archive', async () => {
            let answer;
            try {
                answer = await client.get(url, {
                    headers: { Range: 'bytes=0-1', Accept: 'application/octet-stream' },
                    stallMs: deadlineMs,
                    deadlineMs,
                    print: log/* info */.pq,
                    maskQuery: log/* registerSecret */.cl,
                });
            }
            catch (error) {
                throw asProbeFailure(error, deadlineMs);
            }
            try {
                return await readProbe(answer, url, context);
            }
            catch (error) {
                answer.abandon();
                throw asProbeFailure(error, deadlineMs);
            }
        }, { attempts: PROBE_ATTEMPTS });
    }
    catch (error) {
        if (error instanceof RetriesExhaustedError) {
            if (error.last.status !== undefined)
                throw explainHttpStatus(error.last.status, undefined, context, error.attempts);
            if (error.last instanceof TooSlowError) {
                throw new errors/* ActionError */.lZ(`The download at ${(0,src_format/* displayUrl */.Qy)(url)} was too slow to answer: no complete answer to the probe within ${deadlineMs / 1000} s, in each of ${error.attempts} attempts. The server sends too slowly; run the job again later.`);
            }
            throw new errors/* ActionError */.lZ(`Could not reach the download at ${(0,src_format/* displayUrl */.Qy)(url)} after ${error.attempts} attempts (${error.last.message}). Check the network or a proxy, then run the job again.`);
        }
        throw error;
    }
    finally {
        client.close();
    }
}
async function readProbe(answer, url, context) {
    const status = answer.status;
    if (status === 206 || status === 200) {
        const encoding = (0,connection/* contentEncoding */.R1)(answer.head);
        if (encoding !== undefined) {
            throw new errors/* ActionError */.lZ(`The archive of job ${context.jobId} is served with Content-Encoding ${JSON.stringify(encoding)} although the action asked for none: its bytes would not be the archive's. Report it to Together with the job id.`);
        }
        let total;
        if (status === 206) {
            const range = (0,http_head/* parseContentRange */.C5)(answer.header('content-range'));
            if (range?.first !== 0) {
                throw new errors/* ActionError */.lZ(`The server answered the probe for bytes 0-1 with Content-Range ${JSON.stringify(answer.header('content-range') ?? '')}: not the range asked for. Run the job again; if it persists, report it to Together with the job id.`);
            }
            total = range.total;
        }
        else {
            total = answer.connection.bodyFraming.kind === 'length' ? (0,http_head/* contentLength */.Y)(answer.head) : undefined;
        }
        const head = await answer.readSmall(16).catch((error) => {
            throw new retryable/* RetryableError */.dw(`the probe's body broke off: ${(0,net_errors/* describeNetworkError */.g)(error).message}`);
        });
        const format = sniffFormat(head, { partial: true });
        if (!format || head.length === 0) {
            throw new errors/* ActionError */.lZ(`Together answered the download of job ${context.jobId} with something that is not a zstd or gzip archive (content-type ${answer.header('content-type') ?? 'none'}, first bytes ${describeBytes(head)}). Try again later; if it persists, report it to Together with the job id.`);
        }
        return {
            total,
            rangesHonoured: status === 206,
            format,
            url: answer.url,
            sendAuth: answer.hop.sendAuth,
            requestUrl: url,
            relativeRedirect: answer.hop.relativeRedirect,
        };
    }
    if (status === 416) {
        answer.abandon();
        throw new errors/* ActionError */.lZ(`Together served an empty archive for job ${context.jobId} (HTTP 416 for its first bytes). Check that the job finished correctly.`);
    }
    const body = await answer.readSmall(64 * 1024).catch(() => Buffer.alloc(0));
    if ((0,retryable/* isRetryableStatus */.PS)(status))
        throw new retryable/* RetryableError */.dw(`HTTP ${status}`, (0,retryable/* retryAfterMs */.Vs)(Object.fromEntries(answer.head.headers)), status);
    throw answer.hop.sendAuth ? explainHttpStatus(status, detailOf(body), context, 1) : explainStorageStatus(status, answer.url, context);
}
function asProbeFailure(error, deadlineMs) {
    if (error instanceof errors/* ActionError */.lZ || error instanceof retryable/* RetryableError */.dw)
        return error;
    if (error instanceof connection/* DeadlineError */.j3)
        return new TooSlowError(`no complete answer within ${deadlineMs / 1000} s`);
    if (error instanceof http_head/* ProtocolError */.bd)
        return new retryable/* RetryableError */.dw(`the response broke HTTP/1.1: ${error.message}`);
    const failure = (0,net_errors/* describeNetworkError */.g)(error);
    if (!failure.retryable)
        return new errors/* ActionError */.lZ(`Could not probe the download: ${failure.message}.`);
    return new retryable/* RetryableError */.dw(failure.message);
}
/**
 * A refusal from the storage host the API redirected to: it never saw the API key, so the key is
 * not the problem (a signed URL that expired or was refused is).
 */
function explainStorageStatus(status, url, context) {
    return new errors/* ActionError */.lZ(`The storage server Together redirected the download of job ${context.jobId} to (${(0,src_format/* displayUrl */.Qy)(url)}) answered HTTP ${status}. Its signed link may have expired: run the job again; if it persists, report it to Together with the job id.`);
}
function detailOf(body) {
    try {
        return serverMessage(JSON.parse(body.toString('utf8')));
    }
    catch {
        return undefined;
    }
}

;// CONCATENATED MODULE: ./src/transfer/progress.ts


const PROGRESS_INTERVAL_MS = 5_000;
/** One progress line: bytes so far, total, percent, speed and ETA (the last three when known). */
function progressLine(bytes, total, elapsedMs) {
    const seconds = elapsedMs / 1000;
    const speed = seconds > 0 ? bytes / seconds : 0;
    const parts = [total === undefined ? (0,src_format/* formatBytes */.z3)(bytes) : `${(0,src_format/* formatBytes */.z3)(bytes)} / ${(0,src_format/* formatBytes */.z3)(total)}`];
    if (total !== undefined && total > 0)
        parts.push(`${((100 * bytes) / total).toFixed(1)}%`);
    parts.push((0,src_format/* formatSpeed */.DB)(speed));
    if (total !== undefined && bytes < total) {
        parts.push(speed > 0 ? `ETA ${(0,src_format/* formatDuration */.a3)((total - bytes) / speed)}` : 'ETA ?');
    }
    return parts.join(', ');
}
/**
 * Logs download progress at most once per interval, and once at the end, so a multi-GB download
 * shows life without flooding the log.
 */
class ProgressReporter {
    total;
    print;
    now;
    intervalMs;
    startedAt;
    lastLoggedAt;
    constructor(total, print = log/* info */.pq, now = Date.now, intervalMs = PROGRESS_INTERVAL_MS) {
        this.total = total;
        this.print = print;
        this.now = now;
        this.intervalMs = intervalMs;
        this.startedAt = now();
        this.lastLoggedAt = this.startedAt;
    }
    update(bytes) {
        const now = this.now();
        if (now - this.lastLoggedAt < this.intervalMs)
            return;
        this.lastLoggedAt = now;
        this.print(progressLine(bytes, this.total, now - this.startedAt));
    }
    /** Logs the closing line and returns the elapsed time in ms. */
    finish(bytes) {
        const elapsed = this.now() - this.startedAt;
        this.print(`${progressLine(bytes, this.total, elapsed)}, done in ${(0,src_format/* formatDuration */.a3)(elapsed / 1000)}`);
        return elapsed;
    }
}

// EXTERNAL MODULE: ./src/transfer/range-fetch.ts
var range_fetch = __webpack_require__(20931);
// EXTERNAL MODULE: ./src/transfer/receive-worker.ts
var receive_worker = __webpack_require__(84449);
;// CONCATENATED MODULE: ./src/transfer/ranged-download.ts




















const DEFAULT_CONNECTIONS = 6;
const DEFAULT_STALL_TIMEOUT_SECONDS = 60;
/** Consecutive failures of one piece, without progress in between, before the download gives up. */
const PIECE_ATTEMPTS = 6;
/**
 * Downloads the archive as byte ranges over parallel keep-alive connections, each read written
 * in place into `tempFile` at its offset straight from the connection's buffer. Each piece is
 * retried and resumed on its own from its last byte on disk; a connection that receives nothing
 * for the stall timeout is dropped and its piece resumed; the sha256 follows the in-order
 * frontier, so no pass over the file is needed afterwards.
 */
async function downloadRanged(probe, apiKey, tempFile, options, context, follower) {
    const total = probe.total;
    const connections = Math.max(1, Math.min(options.connections, (0,pieces/* planPieces */.D3)(total, options.connections).length));
    const planned = (0,pieces/* planPieces */.D3)(total, options.connections).length;
    log/* info */.pq(`Downloading ${(0,src_format/* formatBytes */.z3)(total)} as ${planned} range${planned === 1 ? '' : 's'} over ${connections} connection${connections === 1 ? '' : 's'}`);
    const dir = external_node_path_.dirname(tempFile);
    const file = await external_node_fs_.promises.open(tempFile, 'w+').catch(async (error) => {
        throw await diskFailure(error, dir, "creating the download's temp file");
    });
    const queue = new pieces/* PieceQueue */.wZ(total, options.connections);
    const hasher = new InOrderHasher(file.fd, total, () => queue.writtenPrefix());
    const disk = new range_fetch/* DiskQueue */.nE(file.fd);
    const prefix = new WrittenPrefix();
    const progress = new ProgressReporter(total);
    const client = new http_client/* DownloadClient */.sE({ apiKey, apiOrigin: options.apiOrigin });
    const target = { requestUrl: probe.requestUrl, total, stallTimeoutMs: options.stallTimeoutMs };
    const workerCount = Math.min(connections, options.receiveWorkers ?? testHook('RECEIVE_WORKERS', defaultReceiveWorkers()));
    const threads = Array.from({ length: workerCount }, () => new receive_worker.ReceiveThread({ fd: file.fd, apiKey, apiOrigin: options.apiOrigin, target }, log/* debug */.Yz));
    if (workerCount > 0)
        log/* debug */.Yz(`Receiving on ${workerCount} worker thread${workerCount === 1 ? '' : 's'}`);
    const abort = new AbortController();
    // Each connection listens for the abort while it waits for an answer or a retry.
    (0,external_node_events_.setMaxListeners)(4 * connections + 16, abort.signal);
    /** Workers waiting for the window to move on. */
    const waiting = new Set();
    const wakeAll = () => {
        for (const wake of waiting)
            wake();
        waiting.clear();
    };
    const onAbort = () => {
        client.close();
        for (const thread of threads)
            thread.abort();
        wakeAll();
    };
    abort.signal.addEventListener('abort', onAbort);
    let received = 0;
    let diskFault;
    let fellBack = false;
    const written = (bytes) => {
        received += bytes;
        progress.update(received);
        hasher.catchUp();
        prefix.grew(queue.writtenPrefix());
        wakeAll();
    };
    const onDiskFault = (error) => {
        diskFault ??= error;
        abort.abort(error);
    };
    const nextPiece = async () => {
        for (;;) {
            if (abort.signal.aborted)
                return undefined;
            const piece = queue.take();
            if (piece !== null)
                return piece;
            // The window is full: wait until more is on disk.
            await new Promise((resolve) => waiting.add(resolve));
        }
    };
    /** One attempt at a piece, on this thread or on connection `slot`'s receive worker. */
    const attempt = (piece, slot) => {
        const thread = threads[slot % Math.max(1, threads.length)];
        if (thread?.usable)
            return thread.fetch(piece, written);
        if (thread && !fellBack) {
            fellBack = true;
            log/* info */.pq('The receive worker stopped: the download goes on on the main thread.');
        }
        const sink = { disk, offer: hasher.offer.bind(hasher), written, onDiskFault };
        return (0,range_fetch/* fetchRange */.sj)(client, target, piece, sink, abort.signal, log/* debug */.Yz);
    };
    const worker = async (slot) => {
        for (let piece = await nextPiece(); piece; piece = await nextPiece())
            await fetchPiece(piece, slot);
    };
    const fetchPiece = async (piece, slot) => {
        for (let failures = 0;;) {
            const before = piece.received;
            try {
                await attempt(piece, slot);
                return;
            }
            catch (error) {
                if (diskFault)
                    throw await diskFailure(diskFault, dir, 'writing the download');
                if (error instanceof range_fetch/* DiskFault */.YD)
                    throw await diskFailure(error.cause, dir, 'writing the download');
                if (error instanceof range_fetch/* RangeStatusError */.sA) {
                    throw error.sendAuth
                        ? explainHttpStatus(error.status, undefined, context, 1)
                        : explainStorageStatus(error.status, error.url, context);
                }
                if (!(error instanceof retryable/* RetryableError */.dw) || abort.signal.aborted)
                    throw error;
                // Progress since the last failure means the connection works: start counting afresh.
                failures = piece.received > before ? 1 : failures + 1;
                if (failures >= PIECE_ATTEMPTS) {
                    throw new errors/* ActionError */.lZ(`The download from ${(0,src_format/* displayUrl */.Qy)(probe.url)} failed: bytes ${piece.start + piece.received}-${piece.end} still failed after ${PIECE_ATTEMPTS} attempts (${error.message}). Run the job again; the connection to the server keeps breaking.`);
                }
                const { waitMs: wait, note } = nextWaitMs(error.waitMs, () => backoffMs(failures - 1));
                log/* info */.pq(`Range ${piece.start + piece.received}-${piece.end}: ${error.message}; resuming in ${(wait / 1000).toFixed(1)} s${note}`);
                // Another piece's failure ends the download: stop waiting at once rather than start a request.
                await (0,external_node_timers_promises_.setTimeout)(wait, undefined, { signal: abort.signal }).catch(() => undefined);
                if (abort.signal.aborted)
                    throw new errors/* ActionError */.lZ('aborted');
            }
        }
    };
    const download = async () => {
        try {
            await file.truncate(total);
        }
        catch (error) {
            throw await diskFailure(error, dir, 'setting the size of the download');
        }
        // The first failure is the cause; the others are workers it aborted.
        let failure;
        await Promise.all(Array.from({ length: connections }, (_, slot) => worker(slot).catch((error) => {
            failure ??= { error };
            abort.abort(error);
        })));
        if (failure)
            throw failure.error;
        if (abort.signal.aborted)
            throw abort.signal.reason ?? new errors/* ActionError */.lZ('aborted');
        const lastByteAt = Date.now();
        const elapsedMs = progress.finish(received);
        prefix.finish(total);
        const sha256 = await hasher.digest().catch((error) => {
            throw new errors/* ActionError */.lZ(`Computing the sha256 of the download failed: ${error.message}`);
        });
        return { bytes: received, elapsedMs, sha256, hashTailMs: Date.now() - lastByteAt, readBackBytes: hasher.readBack };
    };
    try {
        return await withFollower(follower, () => readGrowing(tempFile, prefix), prefix, (reason) => abort.abort(reason), download);
    }
    finally {
        abort.abort();
        abort.signal.removeEventListener('abort', onAbort);
        client.close();
        // The workers write through this descriptor: they end before it closes.
        await Promise.all(threads.map((thread) => thread.close()));
        await hasher.stop();
        await file.close();
    }
}
/**
 * One receive worker where there is a second core: the main thread then only hashes (reading
 * everything back), and the receive runs beside it; measured faster on two cores over HTTP and
 * HTTPS alike (docs/benchmark). On one core the threads would only take turns.
 */
function defaultReceiveWorkers() {
    return external_node_os_.availableParallelism() >= 2 ? 1 : 0;
}
async function diskFailure(error, dir, what) {
    if (isDiskError(error))
        return explainDiskError(error, 'path', dir, what);
    return new errors/* ActionError */.lZ(`Writing the download to disk failed (${what} in ${dir}): ${error.message}. Check the free space and permissions of the destination.`, { cause: error });
}

;// CONCATENATED MODULE: ./src/inputs.ts








const DEFAULT_BASE_URL = 'https://api.together.ai/v1';

// Letters, digits and `-` only: the id is placed in a URL path and query, so nothing else may pass.
const JOB_ID = /^(ft-[A-Za-z0-9-]+)(?::([0-9]+|[Ll][Aa][Tt][Ee][Ss][Tt]))?$/;
const JOB_ID_FORM = '`ft-<id>`, `ft-<id>:<step>` or `ft-<id>:latest`, e.g. ft-fe94af08-1c61-41d2-8494-6d7ff5386262 or ft-fe94af08-1c61-41d2-8494-6d7ff5386262:120';
/** Reads the action's inputs, masking the API key before anything else can print it. */
function readInputs(env = process.env) {
    // Registered before any input is parsed, so that no message about another input can echo it.
    const apiKey = core/* getInput */.V4('api-key') || env.TOGETHER_API_KEY?.trim() || '';
    (0,log/* registerSecret */.cl)(apiKey);
    return parseInputs({
        'job-id': core/* getInput */.V4('job-id'),
        step: core/* getInput */.V4('step'),
        'checkpoint-type': core/* getInput */.V4('checkpoint-type'),
        path: core/* getInput */.V4('path'),
        'api-key': apiKey,
        'base-url': core/* getInput */.V4('base-url') || env.TOGETHER_BASE_URL?.trim() || '',
        // The runner always passes the declared default; an unset input (a local run) means false.
        'upload-artifact': booleanInput('upload-artifact', false),
        'artifact-name': core/* getInput */.V4('artifact-name'),
        'retention-days': core/* getInput */.V4('retention-days'),
        wait: booleanInput('wait', false),
        'wait-timeout-minutes': core/* getInput */.V4('wait-timeout-minutes'),
        extract: booleanInput('extract', false),
        'extract-path': core/* getInput */.V4('extract-path'),
        'keep-archive': booleanInput('keep-archive', true),
        cache: booleanInput('cache', false),
        'dry-run': booleanInput('dry-run', false),
        'verify-contents': booleanInput('verify-contents', true),
        connections: core/* getInput */.V4('connections'),
        'stall-timeout': core/* getInput */.V4('stall-timeout'),
        workspace: env.GITHUB_WORKSPACE || process.cwd(),
    });
}
function parseInputs(raw) {
    const { jobId, step: stepInJobId } = parseJobId(raw['job-id']);
    const stepInput = parseStep(raw.step);
    if (stepInJobId !== undefined && stepInput !== undefined && stepInJobId !== stepInput) {
        throw new errors/* InputError */.dz('step', `${stepInput} disagrees with the step ${stepInJobId} in \`job-id\`. Give the step in one place, or the same step in both.`);
    }
    const apiKey = parseApiKey(raw['api-key']);
    return {
        jobId,
        step: stepInJobId ?? stepInput,
        checkpointType: parseCheckpointType(raw['checkpoint-type']),
        path: parsePath(raw.path, raw.workspace),
        workspace: raw.workspace,
        apiKey,
        baseUrl: parseBaseUrl(raw['base-url']),
        uploadArtifact: raw['upload-artifact'],
        artifactName: (0,artifact_service/* parseArtifactName */.TZ)(raw['artifact-name']),
        retentionDays: parseRetentionDays(raw['retention-days']),
        wait: raw.wait,
        waitTimeoutMinutes: parseWaitTimeoutMinutes(raw['wait-timeout-minutes']),
        ...parseExtraction(raw),
        cache: raw.cache,
        dryRun: raw['dry-run'],
        verifyContents: raw['verify-contents'],
        connections: parseIntegerInRange('connections', raw.connections, DEFAULT_CONNECTIONS, 1, 32, 'parallel connections'),
        stallTimeoutSeconds: parseIntegerInRange('stall-timeout', raw['stall-timeout'], DEFAULT_STALL_TIMEOUT_SECONDS, 1, 3600, 'seconds'),
    };
}
/** The `path` input, with a file it names checked before any request: only a regular file is replaced. */
function parsePath(value, workspace) {
    const trimmed = value.trim();
    const destination = resolveDestination(trimmed, workspace);
    if (destination.name !== undefined)
        requireReplaceable(external_node_path_.join(destination.dir, destination.name));
    return trimmed;
}
/**
 * A boolean input. The runner always passes the declared default; an unset input (a local run)
 * means `fallback`. Anything but true/false fails naming the input.
 */
function booleanInput(name, fallback) {
    const value = core/* getInput */.V4(name);
    if (value === '')
        return fallback;
    try {
        return core/* getBooleanInput */.Vt(name);
    }
    catch {
        throw new errors/* InputError */.dz(name, `${(0,log/* quote */.hD)(value)} is not a boolean. Use \`true\` or \`false\`.`);
    }
}
const DEFAULT_WAIT_TIMEOUT_MINUTES = 120;
function parseWaitTimeoutMinutes(value) {
    const trimmed = value.trim();
    if (trimmed === '')
        return DEFAULT_WAIT_TIMEOUT_MINUTES;
    const minutes = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/.test(trimmed) ? Number(trimmed) : NaN;
    if (!Number.isFinite(minutes) || minutes <= 0) {
        throw new errors/* InputError */.dz('wait-timeout-minutes', `${(0,log/* quote */.hD)(trimmed)} is not valid. Use a positive number of minutes, such as 120 or 0.5.`);
    }
    return minutes;
}
/** `extract`, `extract-path` and `keep-archive`, which only make sense together. */
function parseExtraction(raw) {
    const extractPath = raw['extract-path'].trim();
    if (!raw.extract && extractPath !== '') {
        throw new errors/* InputError */.dz('extract-path', 'is set but `extract` is not `true`. Set `extract: true` to unpack the archive there, or remove `extract-path`.');
    }
    if (!raw.extract && !raw['keep-archive']) {
        throw new errors/* InputError */.dz('keep-archive', '`false` removes the archive once it is unpacked, so it needs `extract: true`; without it nothing would be left. Set `extract: true`, or remove `keep-archive`.');
    }
    return { extract: raw.extract, extractPath, keepArchive: raw['keep-archive'] };
}
function parseJobId(value) {
    const trimmed = value.trim();
    if (trimmed === '') {
        throw new errors/* InputError */.dz('job-id', `is required. Expected ${JOB_ID_FORM}.`);
    }
    const match = JOB_ID.exec(trimmed);
    if (!match) {
        throw new errors/* InputError */.dz('job-id', `${(0,log/* quote */.hD)(trimmed)} is not a fine-tuning job id. Expected ${JOB_ID_FORM}.`);
    }
    if (match[2]?.toLowerCase() === 'latest')
        return { jobId: match[1], step: 'latest' };
    const step = match[2] === undefined ? undefined : toPositiveInteger(match[2]);
    if (match[2] !== undefined && step === undefined) {
        throw new errors/* InputError */.dz('job-id', `the step after \`:\` must be a positive integer, got ${(0,log/* quote */.hD)(match[2])}. Expected ${JOB_ID_FORM}.`);
    }
    return { jobId: match[1], step };
}
function parseStep(value) {
    const trimmed = value.trim();
    if (trimmed === '')
        return undefined;
    if (trimmed.toLowerCase() === 'latest')
        return 'latest';
    const step = /^[0-9]+$/.test(trimmed) ? toPositiveInteger(trimmed) : undefined;
    if (step === undefined) {
        throw new errors/* InputError */.dz('step', `${(0,log/* quote */.hD)(trimmed)} is not valid. Give a checkpoint step (a positive integer such as 120), \`latest\` for the highest saved step, or leave it empty for the final model.`);
    }
    return step;
}
function parseCheckpointType(value) {
    const normalized = value.trim().toLowerCase() || 'default';
    if (CHECKPOINT_TYPES.includes(normalized))
        return normalized;
    throw new errors/* InputError */.dz('checkpoint-type', `${(0,log/* quote */.hD)(value.trim())} is not valid. Use one of: ${CHECKPOINT_TYPES.join(', ')}.`);
}
function parseApiKey(value) {
    if (value === '') {
        throw new errors/* InputError */.dz('api-key', 
        // biome-ignore lint/suspicious/noTemplateCurlyInString: a workflow expression to copy, not a template
        'no Together API key was given. Set `api-key: ${{ secrets.TOGETHER_API_KEY }}` or the TOGETHER_API_KEY environment variable.');
    }
    // Never echo the key: only say what is wrong with it.
    // Printable ASCII without spaces is all a header value can carry safely.
    if (/[^\x21-\x7e]/.test(value)) {
        throw new errors/* InputError */.dz('api-key', 'contains whitespace, control or non-ASCII characters that cannot be sent in an HTTP header. Check the secret for a stray newline or quote.');
    }
    return value;
}
function parseBaseUrl(value) {
    const trimmed = value.trim() || DEFAULT_BASE_URL;
    let url;
    try {
        url = new URL(trimmed);
    }
    catch {
        throw new errors/* InputError */.dz('base-url', `${(0,log/* quote */.hD)(trimmed)} is not a URL. Expected something like ${DEFAULT_BASE_URL}.`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        throw new errors/* InputError */.dz('base-url', `must be an http or https URL, got ${(0,log/* quote */.hD)(trimmed)}. Expected something like ${DEFAULT_BASE_URL}.`);
    }
    if (url.username || url.password || url.search || url.hash) {
        throw new errors/* InputError */.dz('base-url', `must not carry credentials, a query or a fragment. Expected something like ${DEFAULT_BASE_URL}.`);
    }
    return url.href.replace(/\/+$/, '');
}
function parseRetentionDays(value) {
    const trimmed = value.trim();
    if (trimmed === '')
        return undefined;
    const days = /^[0-9]+$/.test(trimmed) ? Number(trimmed) : NaN;
    if (!Number.isInteger(days) || days < 1 || days > 90) {
        throw new errors/* InputError */.dz('retention-days', `${(0,log/* quote */.hD)(trimmed)} is not valid. Use a whole number of days from 1 to 90, or leave it empty for the repository default.`);
    }
    return days;
}
/** A whole number within bounds; empty means the default. */
function parseIntegerInRange(input, value, fallback, min, max, unit) {
    const trimmed = value.trim();
    if (trimmed === '')
        return fallback;
    const n = /^[0-9]+$/.test(trimmed) ? Number(trimmed) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
        throw new errors/* InputError */.dz(input, `${(0,log/* quote */.hD)(trimmed)} is not valid. Use a whole number of ${unit} from ${min} to ${max} (default ${fallback}).`);
    }
    return n;
}
function toPositiveInteger(digits) {
    const n = Number(digits);
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

;// CONCATENATED MODULE: ./src/plan.ts









/**
 * Looks the job up (or takes what the wait saw) and checks that what was asked for exists: a
 * listed step, or a finished job. Lists the checkpoints either way, for the outputs.
 */
async function lookUpJob(api, inputs, seen) {
    const job = seen?.job ?? (await api.getJob(inputs.jobId));
    const kind = trainingKind(job.trainingType);
    log/* info */.pq(`Job ${job.id}: status ${job.status}, ${kind === 'lora' ? 'LoRA' : 'full'} fine-tuning of ${job.model ?? 'an unnamed model'}`);
    if (job.modelOutputName)
        log/* info */.pq(`Output model: ${job.modelOutputName}`);
    const checkpoint = planCheckpoint(kind, inputs.checkpointType);
    if (inputs.step === undefined)
        requireCompleted(job);
    const checkpoints = seen?.checkpoints ?? (await api.listCheckpoints(inputs.jobId));
    log/* info */.pq(`Checkpoints saved: ${checkpoints.length === 0 ? 'none' : [...new Set(checkpoints.map((c) => c.step))].sort((a, b) => a - b).join(', ')}`);
    const step = resolveStep(inputs.jobId, inputs.step, job.status, checkpoints);
    if (inputs.step === 'latest')
        log/* info */.pq(`step: latest is step ${step}`);
    if (step !== undefined)
        requireStep(inputs.jobId, step, checkpoints);
    return { job, checkpoint, step, checkpoints };
}
/**
 * Probes the archive (unless the tool cache has it) and decides where it goes, and where it is
 * unpacked; prints the plan before anything is written.
 */
async function planDownload(inputs, job, checkpoint, cached) {
    const url = downloadUrl(inputs.baseUrl, { jobId: inputs.jobId, step: inputs.step, checkpoint: checkpoint.query });
    const context = { what: 'probing the download', jobId: inputs.jobId, step: inputs.step };
    const origin = cached
        ? { source: 'cache', cached, format: cached.meta.format, size: cached.meta.size }
        : await probeArchive(url, inputs.apiKey, context).then((probe) => ({
            source: 'download',
            probe,
            format: probe.format,
            size: probe.total,
        }));
    const destination = resolveDestination(inputs.path, inputs.workspace);
    const name = destination.name ??
        defaultFileName({
            modelOutputName: job.modelOutputName,
            jobId: inputs.jobId,
            step: inputs.step,
            fetched: checkpoint.fetched,
            format: origin.format,
        });
    const target = external_node_path_.join(destination.dir, name);
    // A name chosen by `path` was checked with the inputs; a default one can be checked only now.
    if (destination.name === undefined)
        requireReplaceable(target);
    const plan = { job, step: inputs.step, checkpoint, target, ...origin };
    if (inputs.extract)
        plan.extractDir = resolveExtractDir(inputs.extractPath, target, inputs.workspace);
    if (inputs.uploadArtifact) {
        plan.artifactName = inputs.artifactName ?? name;
        if (inputs.artifactName === undefined)
            (0,artifact_service/* requireUsableFileName */.Ve)(name);
    }
    logPlan(url, plan, inputs);
    return plan;
}
function logPlan(url, plan, inputs) {
    log/* info */.pq(`Checkpoint: ${plan.checkpoint.fetched}${plan.step === undefined ? ', final model' : `, step ${plan.step}`}`);
    log/* info */.pq(plan.source === 'cache' ? `Source: the runner's tool cache, ${plan.cached.archive} (nothing to download)` : `Source: ${url}`);
    log/* info */.pq(`Size: ${plan.size === undefined ? 'unknown (the server did not say)' : `${(0,src_format/* formatBytes */.z3)(plan.size)} (${plan.size} bytes)`}`);
    log/* info */.pq(`Format: ${plan.format === 'zstd' ? 'zstd-compressed tar' : 'gzip-compressed tar'}`);
    if (plan.source === 'download')
        log/* info */.pq(`Range requests: ${plan.probe.rangesHonoured ? 'honoured' : 'not honoured'}`);
    log/* info */.pq(`Destination: ${plan.target}`);
    if (plan.source === 'download' && inputs.cache && process.env.RUNNER_TOOL_CACHE)
        log/* info */.pq('Tool cache: not there yet; the archive is stored in it after the download');
    if (plan.extractDir)
        log/* info */.pq(`Extract into: ${plan.extractDir}${inputs.keepArchive ? '' : ', then remove the archive'}`);
    if (plan.artifactName)
        log/* info */.pq(`Artifact: ${plan.artifactName}`);
}

// EXTERNAL MODULE: ./node_modules/@actions/tool-cache/lib/tool-cache.js + 2 modules
var tool_cache = __webpack_require__(59805);
;// CONCATENATED MODULE: ./src/archive/feed.ts
/**
 * Hands the chunks one reader reads to a second reader, in order, so that two checks share one
 * read of a file (the tool cache's sha256 and the content check). The second reader sets the pace:
 * `push` resolves once it has taken the chunk, or at once when it has stopped reading.
 */
class Feed {
    chunk;
    ended = false;
    closed = false;
    taken;
    waiting;
    /** Hands `chunk` on; resolves once the reader has it, or at once when the reader has stopped. */
    push(chunk) {
        if (this.closed || this.ended)
            return Promise.resolve();
        if (this.waiting) {
            const deliver = this.waiting;
            this.waiting = undefined;
            deliver({ value: chunk, done: false });
            return Promise.resolve();
        }
        this.chunk = chunk;
        return new Promise((resolve) => {
            this.taken = resolve;
        });
    }
    /** No more chunks. */
    end() {
        this.ended = true;
        this.waiting?.({ value: undefined, done: true });
        this.waiting = undefined;
    }
    /** True once the reader has stopped reading. */
    get stopped() {
        return this.closed;
    }
    [Symbol.asyncIterator]() {
        return {
            next: () => {
                if (this.chunk !== undefined) {
                    const value = this.chunk;
                    this.chunk = undefined;
                    this.release();
                    return Promise.resolve({ value, done: false });
                }
                if (this.ended || this.closed)
                    return Promise.resolve({ value: undefined, done: true });
                return new Promise((resolve) => {
                    this.waiting = resolve;
                });
            },
            return: () => {
                this.closed = true;
                this.chunk = undefined;
                this.release();
                return Promise.resolve({ value: undefined, done: true });
            },
        };
    }
    release() {
        const taken = this.taken;
        this.taken = undefined;
        taken?.();
    }
}

;// CONCATENATED MODULE: ./src/transfer/verify.ts




/** Size, first bytes and sha256 of a file, in one streaming read. */
async function hashFile(file) {
    const hash = (0,external_node_crypto_.createHash)('sha256');
    let size = 0;
    let head = Buffer.alloc(0);
    for await (const chunk of external_node_fs_.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) {
        const buf = chunk;
        if (head.length < 4)
            head = Buffer.concat([head, buf.subarray(0, 4 - head.length)]);
        hash.update(buf);
        size += buf.length;
    }
    return { size, sha256: hash.digest('hex'), head };
}
async function sizeAndHead(file) {
    const handle = await external_node_fs_.promises.open(file, 'r');
    try {
        const head = Buffer.alloc(4);
        const { bytesRead } = await handle.read(head, 0, 4, 0);
        return { size: (await handle.stat()).size, head: head.subarray(0, bytesRead) };
    }
    finally {
        await handle.close();
    }
}
/**
 * Checks a finished download: its size matches what the server announced, and it starts like
 * the archive format the probe saw. A sha256 already computed while downloading is trusted;
 * otherwise the file is read once to compute it.
 */
async function verifyArchive(file, expected, knownSha256) {
    const { size, head, sha256 } = knownSha256 ? { ...(await sizeAndHead(file)), sha256: knownSha256 } : await hashFile(file);
    if (expected.total !== undefined && size !== expected.total) {
        throw new errors/* ActionError */.lZ(`The download is incomplete: ${size} bytes arrived but Together announced ${expected.total}. Nothing was saved; run the job again.`);
    }
    const format = sniffFormat(head);
    if (format !== expected.format) {
        throw new errors/* ActionError */.lZ(`The downloaded file is not the ${expected.format} archive Together announced (first bytes: ${describeBytes(head)}). Nothing was saved; run the job again, and report it to Together if it persists.`);
    }
    return { size, sha256 };
}

;// CONCATENATED MODULE: ./src/runner/cache.ts
/**
 * Keeping downloaded archives in the runner's tool cache (`RUNNER_TOOL_CACHE`), so that a
 * self-hosted runner downloads a checkpoint once. A checkpoint never changes once written, so an
 * entry needs no revalidation with Together; its sha256 is still checked on every hit.
 *
 * Layout (tool-cache's own, so `tc.find` finds it):
 *   $RUNNER_TOOL_CACHE/together-model/0.0.0-<job id>.<final|step-N>.<type>/any/
 *     archive.tar.zst           the archive (a hard link to the download when on one file system)
 *     together-download.json    what it is: key, format, size, sha256
 *   $RUNNER_TOOL_CACHE/together-model/0.0.0-<...>/any.complete
 */












const CACHE_TOOL = 'together-model';
/** A model is the same on every architecture; one fixed arch keeps store and lookup in step. */
const CACHE_ARCH = 'any';
const META_FILE = 'together-download.json';
/** semver refuses longer versions, and tool-cache would then never find the entry. */
const MAX_VERSION_LENGTH = 256;
const cache_JOB_ID = /^ft-[0-9A-Za-z-]+$/;
const TYPES = ['merged', 'adapter', 'model'];
/**
 * The key as a semver version tool-cache can find: `0.0.0-<job id>.<final|step-N>.<type>`. Each
 * prerelease identifier holds only [0-9A-Za-z-], none is empty and none is all digits (so none can
 * have a forbidden leading zero), and the three are separated by dots.
 */
function cacheVersion(key) {
    if (!cache_JOB_ID.test(key.jobId))
        throw new Error(`cannot cache job id ${JSON.stringify(key.jobId)}: only ft- followed by letters, digits and - is supported`);
    if (key.step !== undefined && !(Number.isSafeInteger(key.step) && key.step > 0))
        throw new Error(`cannot cache step ${key.step}`);
    if (!TYPES.includes(key.checkpointType))
        throw new Error(`cannot cache checkpoint type ${JSON.stringify(key.checkpointType)}`);
    const version = `0.0.0-${key.jobId}.${key.step === undefined ? 'final' : `step-${key.step}`}.${key.checkpointType}`;
    if (version.length > MAX_VERSION_LENGTH)
        throw new Error(`the job id is too long to be a tool-cache version (${version.length} > ${MAX_VERSION_LENGTH} characters)`);
    return version;
}
/** The inverse of `cacheVersion`; undefined for anything it did not make. */
function parseCacheVersion(version) {
    const match = /^0\.0\.0-(ft-[0-9A-Za-z-]+)\.(?:final|step-([1-9][0-9]*))\.(merged|adapter|model)$/.exec(version);
    if (!match)
        return undefined;
    const step = match[2] === undefined ? undefined : Number(match[2]);
    if (step !== undefined && !Number.isSafeInteger(step))
        return undefined;
    return step === undefined
        ? { jobId: match[1], checkpointType: match[3] }
        : { jobId: match[1], step, checkpointType: match[3] };
}
function describeKey(key) {
    return `${key.jobId}, ${key.step === undefined ? 'final model' : `step ${key.step}`}, ${key.checkpointType}`;
}
/** The tool cache's root, or undefined (with a warning, once: at the lookup) when not on a runner. */
function cacheRoot({ warn = true } = {}) {
    const root = process.env.RUNNER_TOOL_CACHE;
    if (!root && warn) {
        log/* warning */.$e('`cache: true` needs the runner tool cache, but RUNNER_TOOL_CACHE is not set (this is not a GitHub Actions runner). Downloading without the cache.');
    }
    return root || undefined;
}
/** A record is a few hundred bytes; anything much larger was not written by this action. */
const MAX_META_BYTES = 64 * 1024;
/**
 * The first symbolic link on the way from the cache root down to `target` (the root itself may be
 * one: runners link it), or undefined. An entry reached through a link could lie anywhere on the
 * disk, so such an entry is neither used nor written.
 */
function linkOnTheWay(root, target) {
    const relative = external_node_path_.relative(root, target);
    if (relative.startsWith('..') || external_node_path_.isAbsolute(relative))
        return target;
    let current = root;
    for (const part of relative.split(external_node_path_.sep).filter(Boolean)) {
        current = external_node_path_.join(current, part);
        if (external_node_fs_.lstatSync(current, { throwIfNoEntry: false })?.isSymbolicLink())
            return current;
    }
    return undefined;
}
/** Why `file` cannot be one of an entry's files (it must be a regular file, not a link, a FIFO or a folder), or undefined. */
function notARegularFile(file, maxBytes) {
    const stat = external_node_fs_.lstatSync(file, { throwIfNoEntry: false });
    if (stat === undefined)
        return `${external_node_path_.basename(file)} is missing`;
    if (!stat.isFile())
        return `${external_node_path_.basename(file)} is not a regular file`;
    if (maxBytes !== undefined && stat.size > maxBytes)
        return `${external_node_path_.basename(file)} is ${stat.size} bytes, more than a record holds`;
    return undefined;
}
function readMeta(dir, key) {
    let meta;
    const odd = notARegularFile(external_node_path_.join(dir, META_FILE), MAX_META_BYTES);
    if (odd)
        return odd;
    try {
        meta = JSON.parse(external_node_fs_.readFileSync(external_node_path_.join(dir, META_FILE), 'utf8'));
    }
    catch (error) {
        return `its ${META_FILE} cannot be read (${error.message})`;
    }
    const sameKey = meta.jobId === key.jobId && (meta.step ?? undefined) === key.step && meta.checkpointType === key.checkpointType;
    if (!sameKey)
        return `it belongs to ${meta.jobId}/${meta.step ?? 'final'}/${meta.checkpointType}`;
    if (meta.format !== 'zstd' && meta.format !== 'gzip')
        return 'its format is unknown';
    if (typeof meta.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(meta.sha256))
        return 'it has no sha256';
    if (!Number.isSafeInteger(meta.size) || meta.size < 0)
        return 'it has no size';
    if (typeof meta.file !== 'string' || external_node_path_.basename(meta.file) !== meta.file || meta.file.startsWith('.'))
        return 'it names no archive';
    return meta;
}
/** Removes an entry: the marker first, so that nobody finds a half-removed folder. */
async function evict(dir) {
    await external_node_fs_.promises.rm(`${dir}.complete`, { force: true });
    await external_node_fs_.promises.rm(dir, { recursive: true, force: true });
}
/** The sha256 of `file`, and what `inspect` made of the same bytes (its error, if it failed). */
async function hashAndInspect(file, format, inspect) {
    if (!inspect)
        return { sha256: (await hashFile(file)).sha256 };
    const hash = (0,external_node_crypto_.createHash)('sha256');
    const feed = new Feed();
    const inspected = inspect(feed, format).then(() => ({ failure: undefined }), (failure) => ({ failure }));
    try {
        for await (const chunk of external_node_fs_.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) {
            hash.update(chunk);
            await feed.push(chunk);
        }
    }
    finally {
        feed.end();
    }
    return { sha256: hash.digest('hex'), ...(await inspected) };
}
/**
 * The cached archive for `key`, or undefined on a miss. A hit has its sha256 checked against what
 * was stored (unless `verify` is false, for a dry run); an entry that fails any check counts as a
 * miss, with a warning, and is removed (a dry run leaves it). `inspect` reads the archive in the
 * same pass as the sha256; when it fails on an archive whose sha256 is right, its error is thrown.
 */
async function findCachedArchive(key, { verify = true, inspect } = {}) {
    if (!cacheRoot())
        return undefined;
    let version;
    try {
        version = cacheVersion(key);
    }
    catch (error) {
        log/* warning */.$e(`Not using the tool cache: ${error.message}.`);
        return undefined;
    }
    const dir = tool_cache/* find */.I6(CACHE_TOOL, version, CACHE_ARCH);
    if (!dir) {
        log/* info */.pq(`Cache miss: ${describeKey(key)} is not in the runner's tool cache (${CACHE_TOOL} ${version})`);
        return undefined;
    }
    const link = linkOnTheWay(cacheRoot({ warn: false }), dir);
    if (link !== undefined) {
        log/* warning */.$e(`Not using the tool-cache entry ${dir}: ${link} is a symbolic link, so the entry could be anywhere on the disk. Remove the link; downloading instead.`);
        return undefined;
    }
    const reject = async (why) => {
        if (!verify) {
            // A dry run writes nothing, not even a removal.
            log/* warning */.$e(`The tool-cache entry ${dir} is unusable: ${why}. A run without \`dry-run\` removes it and downloads again.`);
            return undefined;
        }
        log/* warning */.$e(`The tool-cache entry ${dir} is unusable: ${why}. It was removed; downloading again.`);
        await evict(dir);
        return undefined;
    };
    const meta = readMeta(dir, key);
    if (typeof meta === 'string')
        return reject(meta);
    const archive = external_node_path_.join(dir, meta.file);
    const oddArchive = notARegularFile(archive);
    if (oddArchive)
        return reject(oddArchive);
    const size = external_node_fs_.statSync(archive, { throwIfNoEntry: false })?.size;
    if (size !== meta.size)
        return reject(size === undefined ? 'its archive is missing' : `its archive has ${size} bytes, not ${meta.size}`);
    if (verify) {
        const started = Date.now();
        const actual = await hashAndInspect(archive, meta.format, inspect);
        if (actual.sha256 !== meta.sha256)
            return reject(`its archive's sha256 is ${actual.sha256}, not the ${meta.sha256} stored with it`);
        if (actual.failure !== undefined)
            throw actual.failure;
        log/* info */.pq(`Cache hit: ${describeKey(key)}, ${(0,src_format/* formatBytes */.z3)(meta.size)}, sha256 ${meta.sha256} checked in ${(0,src_format/* formatDuration */.a3)((Date.now() - started) / 1000)}`);
    }
    else {
        log/* info */.pq(`Cache hit: ${describeKey(key)}, ${(0,src_format/* formatBytes */.z3)(meta.size)}, sha256 ${meta.sha256} (not re-checked in a dry run)`);
    }
    log/* info */.pq(`Cached at ${archive}`);
    return { dir, archive, meta, version };
}
/**
 * A hard link when both paths are on one file system (no second copy of many GB), else a copy
 * (after checking that it fits).
 */
async function linkOrCopy(source, dest, size, need) {
    try {
        await external_node_fs_.promises.link(source, dest);
        return 'hard link';
    }
    catch (error) {
        const code = error.code;
        if (code === 'EEXIST' || code === 'ENOENT')
            throw error;
    }
    await requireFreeSpace(external_node_path_.dirname(dest), size, need);
    await external_node_fs_.promises.copyFile(source, dest);
    return 'copy';
}
/**
 * Puts the cached archive at `target` (through a temp file beside it, as a download would), and
 * returns what a download would: how long it took, and the archive's size and sha256.
 */
async function restoreFromCache(cached, target) {
    const started = Date.now();
    const directory = await prepareDirectory(external_node_path_.dirname(target));
    const temp = tempPathFor(target);
    const removeTemp = trackTempFile(temp);
    let placed = false;
    try {
        const how = await linkOrCopy(cached.archive, temp, cached.meta.size).catch(async (error) => {
            throw isDiskError(error)
                ? await explainDiskError(error, 'path', external_node_path_.dirname(target), 'copying the archive from the tool cache')
                : error;
        });
        await (0,rename/* renameWithRetry */.fU)(temp, target);
        placed = true;
        log/* info */.pq(`Saved ${target} from the tool cache (${how}); nothing was downloaded`);
        return { download: { elapsedMs: Date.now() - started }, verified: { size: cached.meta.size, sha256: cached.meta.sha256 } };
    }
    finally {
        await removeTemp();
        if (!placed)
            await directory.removeIfCreated();
    }
}
/**
 * Stores a verified download in the tool cache. Failing to store is a warning, never a failure:
 * the download itself is good.
 */
async function storeInCache(key, archive, facts) {
    const root = cacheRoot({ warn: false });
    if (!root)
        return;
    let removeStaging;
    try {
        const version = cacheVersion(key);
        const versionDir = external_node_path_.join(root, CACHE_TOOL, version);
        const dir = external_node_path_.join(versionDir, CACHE_ARCH);
        const link = linkOnTheWay(root, dir);
        if (link !== undefined) {
            log/* warning */.$e(`Not storing the archive in the tool cache: ${link} is a symbolic link, so the entry would be written wherever it points. Remove the link. The download itself is fine.`);
            return;
        }
        if (external_node_fs_.existsSync(`${dir}.complete`)) {
            log/* info */.pq(`Already in the tool cache: ${dir}`);
            return;
        }
        await makeDirectories(versionDir);
        const staging = external_node_path_.join(versionDir, `.${CACHE_ARCH}.${(0,external_node_crypto_.randomBytes)(6).toString('hex')}.partial`);
        removeStaging = trackTempFile(staging);
        await external_node_fs_.promises.mkdir(staging);
        const file = `archive${ARCHIVE_EXTENSIONS[facts.format]}`;
        const how = await linkOrCopy(archive, external_node_path_.join(staging, file), facts.size, {
            what: 'a copy of the archive needs',
            advice: 'set `cache: false`',
        });
        const meta = {
            jobId: key.jobId,
            step: key.step ?? null,
            checkpointType: key.checkpointType,
            format: facts.format,
            size: facts.size,
            sha256: facts.sha256,
            file,
            storedAt: new Date().toISOString(),
        };
        await external_node_fs_.promises.writeFile(external_node_path_.join(staging, META_FILE), `${JSON.stringify(meta, null, 2)}\n`);
        // A folder without its marker is a leftover of an interrupted store: replace it.
        await external_node_fs_.promises.rm(dir, { recursive: true, force: true });
        await (0,rename/* renameWithRetry */.fU)(staging, dir);
        await external_node_fs_.promises.writeFile(`${dir}.complete`, '');
        log/* info */.pq(`Stored in the tool cache (${how}): ${dir}`);
    }
    catch (error) {
        const why = isDiskError(error)
            ? (await explainDiskError(error, 'cache', root, 'storing the archive in the tool cache')).message
            : error.message;
        log/* warning */.$e(`Could not store the archive in the tool cache: ${why} The download itself is fine; the next run downloads it again.`);
    }
    finally {
        await removeStaging?.();
    }
}

;// CONCATENATED MODULE: ./src/together/metrics.ts
/**
 * The training metrics the job summary shows: the training loss and, where logged, the evaluation
 * loss nearest the fetched step. They only inform: when Together has none, or the request fails,
 * the summary goes without them and the step carries on.
 */


// Names as logged through Weights & Biases (the spec's example: `train/loss`, `train/global_step`),
// and the plain Hugging Face Trainer names.
const STEP_KEYS = ['train/global_step', 'eval/global_step', 'global_step', 'step'];
const TRAIN_LOSS_KEYS = ['train/loss', 'train_loss', 'loss'];
const EVAL_LOSS_KEYS = ['eval/loss', 'eval_loss', 'validation/loss', 'val/loss', 'valid/loss'];
function stepOf(snapshot) {
    const key = STEP_KEYS.find((k) => Number.isSafeInteger(snapshot[k]) && snapshot[k] >= 0);
    return key === undefined ? undefined : snapshot[key];
}
/** Every (value, step) of the first of `keys` each snapshot has, in the order logged. */
function series(snapshots, keys) {
    return snapshots.flatMap((s) => {
        const step = stepOf(s);
        const key = keys.find((k) => k in s);
        return step === undefined || key === undefined ? [] : [{ value: s[key], step }];
    });
}
/** The value logged nearest `target`: the earlier step on a tie, the later entry at one step. */
function nearest(values, target) {
    let best;
    for (const v of values) {
        if (best === undefined) {
            best = v;
            continue;
        }
        const d = Math.abs(v.step - target);
        const bestD = Math.abs(best.step - target);
        if (d < bestD || (d === bestD && v.step <= best.step))
            best = v;
    }
    return best;
}
/** The losses logged nearest `step` (the last logged step when undefined), or undefined when there are none. */
function nearestMetrics(snapshots, step) {
    const train = series(snapshots, TRAIN_LOSS_KEYS);
    const evaluation = series(snapshots, EVAL_LOSS_KEYS);
    const all = [...train, ...evaluation];
    if (all.length === 0)
        return undefined;
    const target = step ?? all.reduce((max, v) => Math.max(max, v.step), 0);
    return { target: step, trainLoss: nearest(train, target), evalLoss: nearest(evaluation, target) };
}
/** `0.4523`, `1.235e-7`: four significant digits, no trailing zeros. */
function formatMetric(value) {
    return String(Number(value.toPrecision(4)));
}
function describeMetrics(metrics) {
    const parts = [
        metrics.trainLoss && `training loss ${formatMetric(metrics.trainLoss.value)} (step ${metrics.trainLoss.step})`,
        metrics.evalLoss && `evaluation loss ${formatMetric(metrics.evalLoss.value)} (step ${metrics.evalLoss.step})`,
    ].filter((p) => p !== undefined);
    return parts.join(', ');
}
/**
 * Reads the job's metrics for the summary. Never throws: without metrics (none, or a failed
 * request) it logs one line and returns undefined.
 */
async function readTrainingMetrics(api, jobId, step) {
    let metrics;
    try {
        metrics = nearestMetrics(await api.listMetrics(jobId), step);
    }
    catch (error) {
        log/* info */.pq(`Training metrics: not shown in the summary (${(0,errors/* messageOf */.bD)(error)})`);
        return undefined;
    }
    if (metrics === undefined) {
        log/* info */.pq('Training metrics: Together has none for this job');
        return undefined;
    }
    log/* info */.pq(`Training metrics nearest ${step === undefined ? 'the end of training' : `step ${step}`}: ${describeMetrics(metrics)}`);
    return metrics;
}

;// CONCATENATED MODULE: ./src/runner/summary.ts



/**
 * Summary cells are raw HTML: anything that came from a server, an archive or a user is escaped,
 * control and separator characters included. A raw newline could end the HTML block (GitHub
 * renders what follows a blank line as Markdown), so it becomes a character reference too.
 */
function escapeHtml(text) {
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what must not pass raw
    return text.replace(/[&<>"'`|\\[\]()*_!\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `&#${c.charCodeAt(0)};`);
}
const code = (text) => `<code>${escapeHtml(text)}</code>`;
const bytes = (n) => `${(0,src_format/* formatBytes */.z3)(n)} (${n} bytes)`;
function summaryRows(facts) {
    const rows = [
        ['Job', code(facts.jobId)],
        ['Model', facts.model ? code(facts.model) : '–'],
        ['Checkpoint type', escapeHtml(facts.checkpointType)],
        ['Step', facts.step === undefined ? 'final' : String(facts.step)],
        ['File', code(facts.file)],
        ['Size', facts.size === undefined ? 'unknown' : bytes(facts.size)],
    ];
    if (facts.sha256 !== undefined)
        rows.push(['SHA-256', code(facts.sha256)]);
    if (facts.source !== undefined)
        rows.push(['Source', facts.source === 'cache' ? 'runner tool cache (nothing downloaded)' : 'Together (not in the tool cache yet)']);
    if (facts.elapsedMs !== undefined) {
        const seconds = facts.elapsedMs / 1000;
        rows.push(['Time', (0,src_format/* formatDuration */.a3)(seconds)]);
        if (facts.source !== 'cache')
            rows.push(['Speed', seconds > 0 && facts.size !== undefined ? (0,src_format/* formatSpeed */.DB)(facts.size / seconds) : '–']);
    }
    if (facts.contents === false)
        rows.push(['Contents', 'not checked (<code>verify-contents: false</code>)']);
    else if (facts.contents)
        rows.push(...contentRows(facts.contents));
    if (facts.extractDir !== undefined)
        rows.push(['Extract into', code(facts.extractDir)]);
    if (facts.extracted) {
        rows.push(['Extracted to', code(facts.extracted.dir)]);
        rows.push(['Model folder', code(facts.extracted.modelDir)]);
        rows.push(['Files', `${facts.extracted.files} files, ${bytes(facts.extracted.bytes)}`]);
    }
    if (facts.archiveRemoved)
        rows.push(['Archive', 'removed after extraction (<code>keep-archive: false</code>)']);
    for (const [label, logged] of [
        ['Training loss', facts.metrics?.trainLoss],
        ['Evaluation loss', facts.metrics?.evalLoss],
    ]) {
        if (logged)
            rows.push([label, `${escapeHtml(formatMetric(logged.value))} (logged at step ${logged.step})`]);
    }
    if (facts.artifact) {
        rows.push(['Artifact', `<a href="${escapeHtml(facts.artifact.url)}">${escapeHtml(facts.artifact.name)}</a>`]);
    }
    return rows;
}
const CONTENT_KINDS = { adapter: 'LoRA adapter', merged: 'merged model', model: 'full model' };
function contentRows(contents) {
    const kind = CONTENT_KINDS[contents.kind] ?? escapeHtml(contents.kind);
    const detail = [
        contents.loraRank === undefined ? undefined : `rank ${contents.loraRank}`,
        contents.architecture === undefined ? undefined : code(contents.architecture),
        `${contents.weightFiles} weight file${contents.weightFiles === 1 ? '' : 's'}`,
    ].filter((d) => d !== undefined);
    const whole = `${contents.safetensorsFiles} safetensors file${contents.safetensorsFiles === 1 ? '' : 's'} whole (${contents.tensors} tensors)`;
    const rows = [['Contents', `${kind} (${detail.join(', ')}); ${whole}`]];
    if (contents.baseModel !== undefined)
        rows.push(['Base model', code(contents.baseModel)]);
    return rows;
}
async function writeSummary(facts) {
    if (!process.env.GITHUB_STEP_SUMMARY)
        return; // Not on a runner: nowhere to write it.
    core/* summary */.z.addHeading(facts.dryRun ? 'Together fine-tuning download (dry run)' : 'Together fine-tuning download', 3);
    if (facts.dryRun)
        core/* summary */.z.addRaw('<p><strong>dry-run</strong>: this is the plan; nothing was downloaded or written.</p>', true);
    core/* summary */.z.addTable([
        [
            { data: 'Field', header: true },
            { data: 'Value', header: true },
        ],
        ...summaryRows(facts),
    ]);
    if (facts.extracted && facts.extracted.largest.length > 0) {
        const { largest, files } = facts.extracted;
        core/* summary */.z.addHeading(largest.length < files ? `Largest files (${largest.length} of ${files})` : 'Files', 4).addTable([
            [
                { data: 'File', header: true },
                { data: 'Size', header: true },
            ],
            ...largest.map((f) => [code(f.name), bytes(f.size)]),
        ]);
    }
    await core/* summary */.z.write();
}

;// CONCATENATED MODULE: ./src/together/wait.ts



/** The first wait between two polls; each next one is 1.5 times longer, up to the cap. */
const FIRST_POLL_INTERVAL_MS = 2_000;
const POLL_GROWTH = 1.5;
const MAX_POLL_INTERVAL_MS = 60_000;
/** Statuses a job never leaves for `completed`. */
const ENDED_STATUSES = new Set(['error', 'user_error', 'cancelled', 'cancel_requested']);
/** The wait before poll number `n + 1` (n = 0 is the wait after the first poll). */
function pollIntervalMs(n) {
    return Math.min(MAX_POLL_INTERVAL_MS, Math.round(FIRST_POLL_INTERVAL_MS * POLL_GROWTH ** n));
}
const realClock = {
    now: () => Date.now(),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};
/**
 * Polls the job until it is `completed` (or, with a step, until that checkpoint is listed),
 * logging one line per change of status. Fails with the job's last error event when it ends
 * without the result, and with its last status at the timeout.
 */
async function waitForJob(api, target, clock = realClock) {
    const start = clock.now();
    const deadline = start + target.timeoutMs;
    const awaited = target.step === undefined ? 'to complete' : `to list ${checkpointName(target.step)}`;
    log/* info */.pq(`Waiting up to ${(0,src_format/* formatDuration */.a3)(target.timeoutMs / 1000)} for job ${target.jobId} ${awaited}`);
    let lastStatus;
    let lastSteps = '';
    for (let n = 0;; n++) {
        const poll = await pollOnce(api, target);
        const elapsed = (0,src_format/* formatDuration */.a3)((clock.now() - start) / 1000);
        if (poll.job.status !== lastStatus) {
            log/* info */.pq(`[${elapsed}] status: ${poll.job.status}`);
            lastStatus = poll.job.status;
        }
        if (!poll.done && poll.steps !== undefined && poll.steps.join(', ') !== lastSteps) {
            lastSteps = poll.steps.join(', ');
            if (lastSteps)
                log/* info */.pq(`[${elapsed}] checkpoints saved: ${lastSteps}`);
        }
        if (poll.done) {
            log/* info */.pq(`[${elapsed}] ${target.step === undefined ? 'the job is completed' : `${checkpointName(target.step)} is listed`}`);
            return { job: poll.job, checkpoints: poll.checkpoints };
        }
        if (ENDED_STATUSES.has(poll.job.status))
            throw await endedError(api, target, poll.job.status);
        if (poll.job.status === 'completed') {
            // Completed, yet the step is not there: it never will be.
            throw new errors/* ActionError */.lZ(target.step === 'latest'
                ? `Fine-tuning job ${target.jobId} completed without saving any checkpoint, so \`step: latest\` has nothing to fetch. Leave \`step\` empty to download the final model.`
                : `Fine-tuning job ${target.jobId} completed without a checkpoint at step ${target.step}. Steps that exist: ${lastSteps || 'none'}. Check \`step\`.`);
        }
        const now = clock.now();
        if (now >= deadline) {
            throw new errors/* ActionError */.lZ(`Fine-tuning job ${target.jobId} is still \`${poll.job.status}\` after waiting ${(0,src_format/* formatDuration */.a3)((now - start) / 1000)} (\`wait-timeout-minutes\`). Raise \`wait-timeout-minutes\`, or run this step again later.`);
        }
        // The last poll happens at the deadline itself, so a job finishing just in time is seen.
        await clock.sleep(Math.min(pollIntervalMs(n), deadline - now));
    }
}
/** `the checkpoint at step 10`, or for `latest`, `a checkpoint`. */
function checkpointName(step) {
    return step === 'latest' ? 'a checkpoint (step: latest)' : `the checkpoint at step ${step}`;
}
async function pollOnce(api, target) {
    const job = await api.getJob(target.jobId);
    if (target.step === undefined)
        return { done: job.status === 'completed', job };
    const checkpoints = await api.listCheckpoints(target.jobId);
    const steps = [...new Set(checkpoints.map((c) => c.step))].sort((a, b) => a - b);
    const done = target.step === 'latest' ? steps.length > 0 : steps.includes(target.step);
    return { done, job, checkpoints, steps };
}
/** The message for a job that ended without the result: its last error event says why. */
async function endedError(api, target, status) {
    let events = [];
    try {
        events = await api.listEvents(target.jobId);
    }
    catch (error) {
        log/* warning */.$e(`Could not read the job's events: ${error.message}`);
    }
    const why = lastErrorEvent(events);
    const said = why ? ` Together says: ${why}` : ' Together recorded no error message for it.';
    return new errors/* ActionError */.lZ(`Fine-tuning job ${target.jobId} ended with status \`${status}\`${target.step === undefined ? '' : ` before saving ${checkpointName(target.step)}`}.${said}`);
}
/** The message of the last error event (level `error`, or type `job_error`), one line, bounded. */
function lastErrorEvent(events) {
    const errors = events.filter((e) => /error/i.test(e.level ?? '') || e.type === 'job_error');
    const message = errors.at(-1)?.message?.replace(/\s+/g, ' ').trim();
    if (!message)
        return undefined;
    return message.length > 500 ? `${message.slice(0, 500)}…` : message;
}

// EXTERNAL MODULE: external "node:module"
var external_node_module_ = __webpack_require__(98995);
// EXTERNAL MODULE: ./src/transfer/redirects.ts
var redirects = __webpack_require__(95334);
;// CONCATENATED MODULE: ./src/transfer/tool-cache-hops.ts
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



/**
 * Guards the requests http-client makes until `restore` is called. `apiOrigin` is the origin that
 * may receive the key: none when tool-cache is given no key. A refused hop fails the request with
 * `refuse(reason)`, an error tool-cache does not retry.
 */
function guardToolCacheHops(apiOrigin, refuse) {
    const proto = lib/* HttpClient */.Qq.prototype;
    const original = proto.requestRaw;
    const chains = new WeakMap();
    const origin = apiOrigin ?? 'null';
    proto.requestRaw = function requestRaw(info, data) {
        let hop;
        try {
            const previous = chains.get(this);
            hop = previous ? (0,redirects/* nextHop */.Fz)(previous, info.parsedUrl.href, origin) : (0,redirects/* firstHop */.Wk)(info.parsedUrl.href, origin);
        }
        catch (error) {
            return Promise.reject(refuse(error));
        }
        chains.set(this, hop);
        if (hop.url.search.length > 1)
            log/* registerSecret */.cl(hop.url.search.slice(1));
        if (!hop.sendAuth)
            dropAuthorization(info.options.headers);
        return original.call(this, info, data);
    };
    return {
        restore() {
            proto.requestRaw = original;
        },
    };
}
function dropAuthorization(headers) {
    for (const name of Object.keys(headers ?? {})) {
        if (name.toLowerCase() === 'authorization')
            delete headers[name];
    }
}

;// CONCATENATED MODULE: ./src/transfer/one-stream.ts
/**
 * The one-stream download, for a server that ignores range requests: `@actions/tool-cache` fetches
 * the archive (it honours the runner's proxy settings and retries on its own), while the action
 * keeps what tool-cache cannot:
 * - the redirects are resolved by the probe under the action's policy (the key only to the API's
 *   origin, never down from https), and tool-cache gets only the final URL, whose query is
 *   registered as a secret before tool-cache can print it; a redirect tool-cache meets itself is
 *   held to the same policy (`tool-cache-hops.ts`);
 * - a disk fault stops tool-cache at once instead of three downloads 10-20 s apart;
 * - the sha256 follows the file as it grows, and a retried attempt must send the same bytes.
 */

















/** tool-cache makes this many attempts itself. */
const TOOL_CACHE_ATTEMPTS = 3;
/** How often tool-cache is started again after it refused to go on over its own leftover file. */
const LEFTOVER_RESTARTS = 2;
const POLL_MS = 200;
const SLICE_BYTES = 4 * 1024 * 1024;
/** Downloads the archive into `tempFile` with tool-cache. */
async function downloadWithToolCache(probe, apiKey, tempFile, context, follower) {
    // tool-cache writes into a folder of its own. When a response breaks before tool-cache's file is
    // open, the open can finish after tool-cache removed the file for its next attempt (Node.js 20;
    // Node.js 24's stream.pipeline waits for the open): the file is back, every later attempt
    // refuses to start ("already exists"), and the file would outlive the run. Such a refusal is
    // recognised below, and a late open into the removed folder fails instead.
    const folder = `${tempFile}.d`;
    const dir = external_node_path_.dirname(tempFile);
    const removeFolder = trackTempFile(folder);
    const file = external_node_path_.join(folder, 'archive');
    const prefix = new WrittenPrefix();
    const progress = new ProgressReporter(probe.total);
    const hasher = new GrowingFileHasher(file, prefix, (bytes) => progress.update(bytes));
    const guard = interceptWrites(file);
    const hops = guardToolCacheHops(probe.sendAuth ? new URL(probe.url).origin : undefined, (reason) => new StopToolCache(reason));
    hasher.failed.catch((error) => guard.stop(error));
    const auth = probe.sendAuth ? `Bearer ${apiKey}` : undefined;
    try {
        await external_node_fs_.promises.mkdir(folder).catch(async (error) => {
            throw isDiskError(error) ? await explainDiskError(error, 'path', dir, "creating the download's temp folder") : error;
        });
        const download = async () => {
            hasher.start();
            for (let restarts = 0;; restarts++) {
                try {
                    await withRedactedOutput(() => Promise.race([tool_cache/* downloadTool */.bq(probe.url, file, auth, { accept: 'application/octet-stream' }), hasher.failed, guard.stopped]));
                    break;
                }
                catch (error) {
                    if (!isLeftoverRefusal(error, file))
                        throw await explainDownloadError(error, probe, context, dir);
                    if (restarts === LEFTOVER_RESTARTS) {
                        throw new errors/* ActionError */.lZ(`The download from ${(0,src_format/* displayUrl */.Qy)(probe.url)} failed: ${restarts + 1} times the response broke off before its first byte was saved. The server accepts the request but does not send the archive; run the job again later.`, { cause: error });
                    }
                    log/* info */.pq('A response broke off before its first byte was saved, and tool-cache will not retry over the empty file it left behind: removed it, starting again.');
                    await external_node_fs_.promises.rm(file, { force: true });
                }
            }
            const { bytes, sha256 } = await hasher.finish();
            prefix.finish(bytes);
            return { bytes, sha256, elapsedMs: progress.finish(bytes) };
        };
        const result = await withFollower(follower, () => readGrowing(file, prefix), prefix, (reason) => guard.stop(reason), download);
        await (0,rename/* renameWithRetry */.fU)(file, tempFile);
        return result;
    }
    finally {
        guard.restore();
        hops.restore();
        await hasher.stop();
        await removeFolder();
    }
}
/** tool-cache's refusal to start an attempt because the file from a failed one is still there. */
function isLeftoverRefusal(error, file) {
    return error instanceof Error && error.message === `Destination file path ${file} already exists`;
}
/**
 * Stops tool-cache without a retry: it retries every failure but an HTTP status below 500 (other
 * than 408 and 429), so a stop is dressed as one.
 */
class StopToolCache extends tool_cache/* HTTPError */.Hl {
    reason;
    constructor(reason) {
        super(499);
        this.reason = reason;
        this.message = reason.message;
    }
}
/**
 * Watches the write stream tool-cache opens for `file`: a disk fault on it (or `stop`) ends
 * tool-cache's download at once. tool-cache offers no hook of its own, so `fs.createWriteStream`
 * is wrapped for this one path while the download runs; the stream gets an `fs` of its own
 * (the documented `fs` option) whose calls turn disk faults into a StopToolCache.
 */
function interceptWrites(file) {
    const original = (external_node_fs_default()).createWriteStream;
    let stream;
    let stopReason;
    let rejectStopped;
    const stopped = new Promise((_, reject) => {
        rejectStopped = reject;
    });
    stopped.catch(() => undefined);
    const convert = (error) => error && isDiskError(error) ? new StopToolCache(error) : error;
    const pass = (cb) => (e, ...rest) => cb(convert(e), ...rest);
    const streamFs = {
        open: (p, flags, mode, cb) => external_node_fs_default().open(p, flags, mode, pass(cb)),
        write: (fd, buf, offset, length, position, cb) => external_node_fs_default().write(fd, buf, offset, length, position, pass(cb)),
        writev: (fd, buffers, position, cb) => external_node_fs_default().writev(fd, buffers, position, pass(cb)),
        close: (fd, cb) => external_node_fs_default().close(fd, pass(cb)),
    };
    (external_node_fs_default()).createWriteStream = function createWriteStream(p, options) {
        if (p !== file)
            return original.call(this, p, options);
        const base = typeof options === 'string' ? { encoding: options } : (options ?? {});
        stream = original.call(this, p, { ...base, fs: streamFs });
        if (stopReason)
            stream.destroy(new StopToolCache(stopReason));
        return stream;
    };
    (0,external_node_module_.syncBuiltinESMExports)();
    return {
        stop(reason) {
            stopReason ??= reason;
            stream?.destroy(new StopToolCache(reason));
            rejectStopped(new StopToolCache(reason));
        },
        stopped,
        restore() {
            (external_node_fs_default()).createWriteStream = original;
            (0,external_node_module_.syncBuiltinESMExports)();
        },
    };
}
/**
 * tool-cache and its http-client print through @actions/core on their own (retry lines, debug
 * lines quoting the URL). While they run, stdout passes through the same redaction as every line
 * of ours, so the signed URL's query (registered by the probe) never shows, even off a runner.
 */
async function withRedactedOutput(run) {
    const write = process.stdout.write;
    process.stdout.write = function redactedWrite(chunk, ...rest) {
        const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : chunk;
        return write.call(this, typeof text === 'string' ? log/* redact */.E$(stripQueries(text)) : text, ...rest);
    };
    try {
        return await run();
    }
    finally {
        process.stdout.write = write;
    }
}
/** Error text with the query of every URL or path it quotes replaced by `?…`. */
function stripQueries(text) {
    return text.replace(/((?:\b[a-z][a-z0-9+.-]*:\/\/|\/)[^\s?#"'<>]*)\?[^\s"'<>]*/gi, '$1?…');
}
async function explainDownloadError(error, probe, context, dir) {
    if (error instanceof StopToolCache) {
        const reason = error.reason;
        return isDiskError(reason) ? explainDiskError(reason, 'path', dir, 'writing the download') : reason;
    }
    if (error instanceof errors/* ActionError */.lZ)
        return error;
    if (error instanceof tool_cache/* HTTPError */.Hl && error.httpStatusCode !== undefined) {
        const status = error.httpStatusCode;
        const attempts = status >= 500 || status === 408 || status === 429 ? TOOL_CACHE_ATTEMPTS : 1;
        return probe.sendAuth ? explainHttpStatus(status, undefined, context, attempts) : explainStorageStatus(status, probe.url, context);
    }
    const message = (0,net_errors/* describeNetworkError */.g)(error, new URL(probe.url).hostname).message;
    return new errors/* ActionError */.lZ(`The download from ${(0,src_format/* displayUrl */.Qy)(probe.url)} failed after ${TOOL_CACHE_ATTEMPTS} attempts: ${stripQueries(message)}. The connection broke or the server stopped sending; run the job again.`, { cause: error });
}
/**
 * Hashes tool-cache's file as it grows, so the sha256 is ready with the last byte, and tells how
 * far it is written. When tool-cache starts an attempt again, the new file must begin with the
 * same bytes as the one hashed so far (checked once it is that long), or the download fails.
 */
class GrowingFileHasher {
    file;
    prefix;
    onSize;
    failed;
    hash = (0,external_node_crypto_.createHash)('sha256');
    hashed = 0;
    inode;
    timer;
    busy;
    rejectFailed;
    failure;
    buffer = Buffer.allocUnsafe(SLICE_BYTES);
    constructor(file, prefix, onSize) {
        this.file = file;
        this.prefix = prefix;
        this.onSize = onSize;
        this.failed = new Promise((_, reject) => {
            this.rejectFailed = reject;
        });
        this.failed.catch(() => undefined);
    }
    start() {
        this.timer = setInterval(() => this.poll(), POLL_MS);
    }
    /** tool-cache is done: hash the rest. */
    async finish() {
        clearInterval(this.timer);
        await this.busy;
        await this.catchUp(true);
        if (this.failure)
            throw this.failure;
        return { bytes: this.hashed, sha256: this.hash.digest('hex') };
    }
    async stop() {
        clearInterval(this.timer);
        await this.busy;
    }
    poll() {
        if (this.busy || this.failure)
            return;
        this.busy = this.catchUp(false)
            .catch((error) => {
            this.failure = error;
            this.rejectFailed(error);
        })
            .finally(() => {
            this.busy = undefined;
        });
    }
    async catchUp(final) {
        const stat = await external_node_fs_.promises.stat(this.file).catch(() => undefined);
        if (!stat) {
            if (final)
                throw new errors/* ActionError */.lZ(`tool-cache reported the download done, but ${this.file} is missing.`);
            return;
        }
        this.onSize(stat.size);
        if (this.inode !== undefined && stat.ino !== this.inode && this.hashed > 0) {
            // A new attempt: it must repeat the bytes already hashed (and followed).
            if (stat.size < this.hashed) {
                if (final)
                    throw new errors/* ActionError */.lZ("The archive came out shorter on tool-cache's next attempt than on the one before. Run the job again.");
                return;
            }
            const again = (0,external_node_crypto_.createHash)('sha256');
            await this.readRange(0, this.hashed, (bytes) => again.update(bytes));
            if (again.digest('hex') !== this.hash.copy().digest('hex')) {
                throw new errors/* ActionError */.lZ(`The server sent different bytes when tool-cache tried again (the first ${this.hashed} bytes differ): the archive changed during the download. Run the job again.`);
            }
        }
        this.inode = stat.ino;
        if (stat.size > this.hashed) {
            await this.readRange(this.hashed, stat.size, (bytes) => {
                this.hash.update(bytes);
                this.hashed += bytes.length;
            });
            this.prefix.grew(this.hashed);
        }
    }
    async readRange(from, to, take) {
        const handle = await external_node_fs_.promises.open(this.file, 'r');
        try {
            for (let at = from; at < to;) {
                const { bytesRead } = await handle.read(this.buffer, 0, Math.min(SLICE_BYTES, to - at), at);
                if (bytesRead === 0)
                    throw new errors/* ActionError */.lZ(`${this.file} ended at ${at} bytes while it was being hashed.`);
                take(this.buffer.subarray(0, bytesRead));
                at += bytesRead;
            }
        }
        finally {
            await handle.close();
        }
    }
}

;// CONCATENATED MODULE: ./src/transfer/download.ts



/**
 * Parallel, resumable ranges when the server honours them and the size is known; otherwise one
 * stream through tool-cache, which is what such a server can give.
 *
 * `follow`, when given, is called once as the download starts with the archive's bytes in order
 * (each Buffer its own to keep), read back from the written part of the file as it grows. The
 * download resolves only once `follow` has; a `follow` that rejects aborts the download with its
 * error; a download that fails makes the iterable throw, and its own error is the one reported.
 */
async function downloadArchive(probe, settings, tempFile, context, follow) {
    if (probe.rangesHonoured && probe.total !== undefined && probe.total > 0) {
        const result = await downloadRanged({ ...probe, total: probe.total }, settings.apiKey, tempFile, settings, context, follow);
        const readBack = result.bytes > 0 ? (100 * result.readBackBytes) / result.bytes : 0;
        log/* info */.pq(`sha256 computed during the download; it finished ${(result.hashTailMs / 1000).toFixed(2)} s after the last byte (${readBack.toFixed(0)} % of the bytes read back from the file, the rest hashed as they arrived)`);
        return result;
    }
    log/* info */.pq(probe.rangesHonoured
        ? 'The server did not say how large the archive is: downloading it as one stream.'
        : 'The server does not honour range requests: downloading the archive as one stream, without resume.');
    const result = await downloadWithToolCache(probe, settings.apiKey, tempFile, context, follow);
    log/* info */.pq('sha256 computed during the download, as the file grew');
    return result;
}

;// CONCATENATED MODULE: ./src/main.ts





















/**
 * One download, start to end: inputs, (wait,) job, (cache,) plan, download or the cache, verify,
 * (extract,) outputs, artifact, summary.
 */
async function run() {
    try {
        const inputs = readInputs();
        if (inputs.uploadArtifact)
            (0,artifact_service/* requireArtifactService */.vx)();
        const api = new TogetherApi(inputs.baseUrl, inputs.apiKey);
        const seen = inputs.wait
            ? await log/* group */.Os('Wait', () => waitForJob(api, { jobId: inputs.jobId, step: inputs.step, timeoutMs: inputs.waitTimeoutMinutes * 60_000 }))
            : undefined;
        const { job, checkpoint, step, checkpoints } = await log/* group */.Os('Job', () => lookUpJob(api, inputs, seen));
        const jobOutputs = checkpointOutputs(checkpoints);
        const cacheKey = { jobId: inputs.jobId, step, checkpointType: checkpoint.fetched };
        const contents = new ContentCheck(inputs, { fetched: checkpoint.fetched, step });
        const cached = inputs.cache ? await log/* group */.Os('Cache', () => lookInCache(cacheKey, inputs, contents)) : undefined;
        const plan = await log/* group */.Os('Plan', () => planDownload({ ...inputs, step }, job, checkpoint, cached));
        if (inputs.dryRun)
            return await reportDryRun(plan, inputs, jobOutputs, api);
        const { download, verified } = plan.source === 'cache'
            ? await log/* group */.Os('Restore', () => restoreFromCache(plan.cached, plan.target))
            : await fetchArchive(plan, downloadSettings(inputs), contents.inspect);
        if (inputs.cache && plan.source === 'download') {
            await log/* group */.Os('Cache', () => storeInCache(cacheKey, plan.target, { format: plan.format, ...verified }));
        }
        const extracted = plan.extractDir
            ? await log/* group */.Os('Extract', () => extractArchive(plan.target, plan.format, plan.extractDir))
            : undefined;
        setOutputs(plan, verified, {
            ...jobOutputs,
            'cache-hit': cacheHit(inputs, plan),
            'model-dir': extracted?.modelDir,
            'base-model': contents.report?.baseModel,
            'lora-rank': contents.report?.loraRank?.toString(),
        });
        const artifact = plan.artifactName
            ? await log/* group */.Os('Artifact', () => upload(plan.target, plan.artifactName, verified.sha256, inputs.retentionDays))
            : undefined;
        if (artifact)
            setArtifactOutputs(artifact);
        const archiveRemoved = extracted !== undefined && !inputs.keepArchive && (await removeArchive(plan.target));
        await writeSummary({
            ...planFacts(plan, inputs),
            metrics: await readTrainingMetrics(api, inputs.jobId, plan.step),
            size: verified.size,
            sha256: verified.sha256,
            elapsedMs: download.elapsedMs,
            contents: inputs.verifyContents ? contents.report && contentFacts(contents.report) : false,
            extracted: extracted && extractionFacts(extracted),
            archiveRemoved,
            artifact,
        });
    }
    catch (error) {
        log/* fail */.fJ((0,errors/* messageOf */.bD)(error));
    }
}
/**
 * The content check (`verify-contents`): what the archive holds against what was asked for, every
 * safetensors file whole. `inspect` reads the compressed archive as it is handed over, in the same
 * pass as the download or the cache's own check (a dry run reads none); a mismatch throws.
 */
class ContentCheck {
    report;
    inspect;
    constructor(inputs, asked) {
        if (inputs.verifyContents && !inputs.dryRun)
            this.inspect = (archive, format) => this.check(archive, format, asked);
    }
    async check(archive, format, asked) {
        const started = Date.now();
        const report = await checkContents(archive, format, asked);
        log/* info */.pq(`${describeContents(report)}; checked in ${(0,src_format/* formatDuration */.a3)((Date.now() - started) / 1000)}`);
        for (const note of report.notes)
            log/* warning */.$e(`From the archive: ${note}.`);
        this.report = report;
    }
}
/** A verified entry of the runner's tool cache, checked as it is read. */
async function lookInCache(key, inputs, contents) {
    try {
        return await findCachedArchive(key, { verify: !inputs.dryRun, inspect: contents.inspect });
    }
    catch (error) {
        if (!(error instanceof ContentsError))
            throw error;
        throw new errors/* ActionError */.lZ(`${error.message} This archive came from the runner's tool cache, stored there without the check; nothing was written.`);
    }
}
function downloadSettings(inputs) {
    return {
        apiKey: inputs.apiKey,
        apiOrigin: new URL(inputs.baseUrl).origin,
        connections: inputs.connections,
        stallTimeoutMs: inputs.stallTimeoutSeconds * 1000,
    };
}
/**
 * Downloads into a temp file beside the target and moves it into place only once verified (and its
 * contents checked, when `inspect` is given), so a failure leaves neither a partial file nor a
 * changed target behind.
 */
async function fetchArchive(plan, settings, inspect) {
    const directory = await prepareDirectory(external_node_path_.dirname(plan.target));
    const temp = tempPathFor(plan.target);
    const removeTemp = trackTempFile(temp);
    let placed = false;
    try {
        await requireFreeSpace(external_node_path_.dirname(plan.target), plan.probe.total);
        const context = { what: 'downloading the archive', jobId: plan.job.id, step: plan.step };
        // The content check reads the archive's bytes as they arrive, in the download's own pass.
        const follow = inspect
            ? (archive) => inspect(archive, plan.format).catch((error) => {
                throw error instanceof errors/* ActionError */.lZ ? new errors/* ActionError */.lZ(`${error.message} Nothing was saved.`, { cause: error }) : error;
            })
            : undefined;
        const download = await log/* group */.Os('Download', () => downloadArchive(plan.probe, settings, temp, context, follow));
        const verified = await log/* group */.Os('Verify', async () => {
            const result = await verifyArchive(temp, plan.probe, download.sha256);
            log/* info */.pq(`Size ${(0,src_format/* formatBytes */.z3)(result.size)} (${result.size} bytes) as announced; sha256 ${result.sha256}`);
            await placeVerified(temp, plan.target, result.sha256);
            placed = true;
            log/* info */.pq(`Saved ${plan.target}`);
            return result;
        });
        return { download, verified };
    }
    finally {
        await removeTemp();
        if (!placed)
            await directory.removeIfCreated();
    }
}
/**
 * Moves the verified download over the target. When something holds the target open for longer
 * than the rename waits (Windows), the verified file is kept beside it rather than thrown away.
 */
async function placeVerified(temp, target, sha256) {
    try {
        await (0,rename/* renameWithRetry */.fU)(temp, target);
    }
    catch (error) {
        if (!(error instanceof rename/* FileInUseError */.XW))
            throw error;
        const kept = `${target}.verified`;
        await (0,rename/* renameWithRetry */.fU)(temp, kept).catch(() => {
            throw error;
        });
        throw new errors/* ActionError */.lZ(`${error.message} The verified download (sha256 ${sha256}) is kept at ${kept}: move it over ${target} once nothing holds that file, or run the step again.`);
    }
}
/** Sets the outputs that have a value; `extra` holds those of the optional features. */
function setOutputs(plan, verified, extra = {}) {
    const outputs = {
        path: plan.target,
        size: verified.size === undefined ? undefined : String(verified.size),
        sha256: verified.sha256,
        'checkpoint-type': plan.checkpoint.fetched,
        step: plan.step === undefined ? '' : String(plan.step),
        ...extra,
    };
    log/* startGroup */.Oh('Outputs');
    for (const [name, value] of Object.entries(outputs)) {
        if (value === undefined)
            continue;
        setOutput(name, value);
    }
    log/* endGroup */.N4();
}
/**
 * Sets an output and logs it. Some outputs hold text that came from a server or an archive; none
 * may carry a raw control character into a later step's `${{ }}` expression.
 */
function setOutput(name, value) {
    core/* setOutput */.uH(name, log/* escapeControls */.UN(value));
    log/* info */.pq(`${name}: ${value}`);
}
/** The artifact client is loaded only when needed: it is most of the action's memory. */
async function upload(file, name, sha256, retentionDays) {
    const { uploadArtifact } = await Promise.all(/* import() */[__webpack_require__.e(584), __webpack_require__.e(190)]).then(__webpack_require__.bind(__webpack_require__, 9190));
    return uploadArtifact(file, name, sha256, retentionDays);
}
function setArtifactOutputs(artifact) {
    for (const [name, value] of [
        ['artifact-id', String(artifact.id)],
        ['artifact-url', artifact.url],
        ['artifact-digest', artifact.digest],
    ]) {
        core/* setOutput */.uH(name, log/* escapeControls */.UN(value));
    }
    log/* info */.pq(`Artifact ${artifact.name} (id ${artifact.id}): ${artifact.url}`);
}
/** `cache-hit` is `true` or `false` with `cache: true`, and not set without it. */
function cacheHit(inputs, plan) {
    return inputs.cache ? String(plan.source === 'cache') : undefined;
}
/** A dry run ends after the plan: it sets the outputs known without the archive and writes the plan as the summary. */
async function reportDryRun(plan, inputs, jobOutputs, api) {
    log/* info */.pq('dry-run: the plan above is complete; nothing was downloaded or written.');
    setOutputs(plan, { size: plan.size }, { ...jobOutputs, 'cache-hit': cacheHit(inputs, plan) });
    const metrics = await readTrainingMetrics(api, inputs.jobId, plan.step);
    await writeSummary({ ...planFacts(plan, inputs), size: plan.size, dryRun: true, extractDir: plan.extractDir, metrics });
}
function planFacts(plan, inputs) {
    return {
        jobId: plan.job.id,
        model: plan.job.modelOutputName ?? plan.job.model,
        checkpointType: plan.checkpoint.fetched,
        step: plan.step,
        file: plan.target,
        source: inputs.cache ? plan.source : undefined,
    };
}
function contentFacts(report) {
    return {
        kind: report.kind,
        baseModel: report.baseModel,
        loraRank: report.loraRank,
        architecture: report.architecture,
        weightFiles: report.weights.length,
        safetensorsFiles: report.safetensors.files,
        tensors: report.safetensors.tensors,
    };
}
function extractionFacts(extracted) {
    const { listing } = extracted;
    return {
        dir: extracted.dir,
        modelDir: extracted.modelDir,
        files: listing.files.length,
        bytes: listing.totalBytes,
        largest: largestFiles(listing.files),
    };
}
/** `keep-archive: false`: the archive goes once it is unpacked (and uploaded, when asked). */
async function removeArchive(file) {
    await external_node_fs_.promises.rm(file, { force: true });
    log/* info */.pq(`Removed the archive ${file} (keep-archive: false)`);
    return true;
}


/***/ }),

/***/ 40148:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   TZ: () => (/* binding */ parseArtifactName),
/* harmony export */   Ve: () => (/* binding */ requireUsableFileName),
/* harmony export */   Wk: () => (/* binding */ artifactUrl),
/* harmony export */   vx: () => (/* binding */ requireArtifactService)
/* harmony export */ });
/* unused harmony export isGhes */
/* harmony import */ var _errors_js__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(83916);
/* harmony import */ var _log_js__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(25625);


// What can be known about an artifact upload without loading the artifact client, which is
// large: most runs never upload, and those that do learn early that they cannot.
/** True for GitHub Enterprise Server, whose artifact service this client cannot talk to. */
function isGhes(serverUrl = process.env.GITHUB_SERVER_URL) {
    const host = new URL(serverUrl || 'https://github.com').hostname.toUpperCase();
    return host !== 'GITHUB.COM' && !host.endsWith('.GHE.COM') && !host.endsWith('.LOCALHOST');
}
/** Fails, before any request, when this run has no artifact service to upload to. */
function requireArtifactService() {
    if (!process.env.ACTIONS_RUNTIME_TOKEN || !process.env.ACTIONS_RESULTS_URL) {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .ActionError */ .lZ('Uploading an artifact needs a GitHub Actions workflow run: ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL are not set. Set `upload-artifact: false` when running elsewhere.');
    }
    if (isGhes()) {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .ActionError */ .lZ(`Artifact upload is not available on GitHub Enterprise Server (${process.env.GITHUB_SERVER_URL}): this artifact service only exists on github.com and GHE.com. Set \`upload-artifact: false\` and upload the file at the \`path\` output with actions/upload-artifact@v3 instead.`);
    }
}
// The characters GitHub's artifact service refuses in a name.
const ARTIFACT_NAME_FORBIDDEN = /[":<>|*?\\/\r\n]/;
function parseArtifactName(value) {
    if (value === '')
        return undefined;
    const trimmed = value.trim();
    if (trimmed === '') {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .InputError */ .dz('artifact-name', 'is blank. Give a name, or leave the input out to use the downloaded file name.');
    }
    // An un-zipped artifact is named like a file, and no file can be called `.` or `..`.
    if (trimmed === '.' || trimmed === '..') {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .InputError */ .dz('artifact-name', `${(0,_log_js__WEBPACK_IMPORTED_MODULE_1__/* .quote */ .hD)(trimmed)} cannot name an artifact, which is named like a file. Choose another name.`);
    }
    if (ARTIFACT_NAME_FORBIDDEN.test(trimmed)) {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .InputError */ .dz('artifact-name', `${(0,_log_js__WEBPACK_IMPORTED_MODULE_1__/* .quote */ .hD)(trimmed)} contains a character artifacts cannot have. Do not use any of: " : < > | * ? \\ / carriage return, newline.`);
    }
    return trimmed;
}
/** A default artifact name (the file's) must pass the same rules as one given as input. */
function requireUsableFileName(name) {
    try {
        parseArtifactName(name);
    }
    catch {
        throw new _errors_js__WEBPACK_IMPORTED_MODULE_0__/* .InputError */ .dz('artifact-name', `the file name ${JSON.stringify(name)} cannot be an artifact name. Set \`artifact-name\` to a name without " : < > | * ? \\ /.`);
    }
}
/** The service's URL for an artifact, as shown on the run's page. */
function artifactUrl(id, env = process.env) {
    const server = (env.GITHUB_SERVER_URL || 'https://github.com').replace(/\/+$/, '');
    return `${server}/${env.GITHUB_REPOSITORY ?? ''}/actions/runs/${env.GITHUB_RUN_ID ?? ''}/artifacts/${id}`;
}


/***/ }),

/***/ 44877:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   XW: () => (/* binding */ FileInUseError),
/* harmony export */   fU: () => (/* binding */ renameWithRetry)
/* harmony export */ });
/* unused harmony export RENAME_PATIENCE_MS */
/* harmony import */ var node_fs__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(73024);
/* harmony import */ var node_fs__WEBPACK_IMPORTED_MODULE_0___default = /*#__PURE__*/__webpack_require__.n(node_fs__WEBPACK_IMPORTED_MODULE_0__);
/* harmony import */ var node_timers_promises__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(58500);
/* harmony import */ var node_timers_promises__WEBPACK_IMPORTED_MODULE_1___default = /*#__PURE__*/__webpack_require__.n(node_timers_promises__WEBPACK_IMPORTED_MODULE_1__);
/* harmony import */ var _errors_js__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(83916);
/* harmony import */ var _log_js__WEBPACK_IMPORTED_MODULE_3__ = __webpack_require__(25625);
/**
 * Renames that survive Windows. There a file or folder that another process holds open (a model
 * server from an earlier step, the search indexer, antivirus on a self-hosted runner) cannot be
 * replaced or moved: the rename fails with EPERM, EBUSY or EACCES until the other process lets go,
 * usually within seconds. Elsewhere those codes mean what they say and are not retried.
 */




/** How long a rename is retried on Windows before it fails. */
const RENAME_PATIENCE_MS = 60_000;
const HELD_OPEN = new Set(['EPERM', 'EBUSY', 'EACCES']);
/** A rename that kept failing because something holds the file open. */
class FileInUseError extends _errors_js__WEBPACK_IMPORTED_MODULE_2__/* .ActionError */ .lZ {
    file;
    constructor(file, code, waitedMs) {
        super(`Could not replace or move ${file}: another process holds it open (${code}), and it was still held after ${Math.round(waitedMs / 1000)} s. Stop what uses it (a model server or a Python process from an earlier step, an indexer, antivirus scanning the folder), then run the step again.`);
        this.file = file;
        this.name = 'FileInUseError';
    }
}
/** `fs.rename`, retried with backoff for up to a minute on Windows while the target is held open. */
async function renameWithRetry(from, to, options = {}) {
    const { platform = process.platform, patienceMs = RENAME_PATIENCE_MS, rename = node_fs__WEBPACK_IMPORTED_MODULE_0__.promises.rename, now = Date.now, wait = (ms) => (0,node_timers_promises__WEBPACK_IMPORTED_MODULE_1__.setTimeout)(ms), } = options;
    const started = now();
    for (let attempt = 0;; attempt++) {
        try {
            await rename(from, to);
            return;
        }
        catch (error) {
            const code = error.code ?? '';
            if (platform !== 'win32' || !HELD_OPEN.has(code))
                throw error;
            const waited = now() - started;
            if (waited >= patienceMs)
                throw new FileInUseError(to, code, waited);
            if (attempt === 0)
                _log_js__WEBPACK_IMPORTED_MODULE_3__/* .info */ .pq(`${to} is held open by another process (${code}); trying again for up to ${patienceMs / 1000} s`);
            await wait(Math.min(2_000, 50 * 2 ** attempt, Math.max(0, patienceMs - waited)));
        }
    }
}


/***/ })

};
