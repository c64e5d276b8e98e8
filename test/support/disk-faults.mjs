// Preloaded with `node --import` in tests: the disk refuses the download's temp file (a path
// ending in `.partial`, or tool-cache's `.partial.d/archive`) with DISK_FAULT_CODE (ENOSPC, EDQUOT,
// EFBIG, EROFS, EACCES) at DISK_FAULT_AT: `open`, `truncate`, or `write` once DISK_FAULT_AFTER
// bytes (default 1 MiB) are written. For the faults this machine cannot make for real.
import fs from 'node:fs';

const code = process.env.DISK_FAULT_CODE ?? 'ENOSPC';
const at = process.env.DISK_FAULT_AT ?? 'write';
const after = Number(process.env.DISK_FAULT_AFTER ?? 1024 * 1024);
const MESSAGES = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
};
const ERRNO = { ENOSPC: -28, EDQUOT: -122, EFBIG: -27, EROFS: -30, EACCES: -13 };
const fault = (syscall, path) =>
  Object.assign(new Error(`${code}: ${MESSAGES[code] ?? 'fault'}, ${syscall}${path ? ` '${path}'` : ''}`), {
    code,
    errno: ERRNO[code],
    syscall,
    ...(path ? { path } : {}),
  });
const isTemp = (p) => typeof p === 'string' && /\.partial(\.d[\\/]archive)?$/.test(p);
const fds = new Set();
let written = 0;
// A receive worker writes through a descriptor the main thread opened: tell its file by its link.
const isTempFd = (fd) => {
  if (fds.has(fd)) return true;
  try {
    return isTemp(fs.readlinkSync(`/proc/self/fd/${fd}`));
  } catch {
    return false;
  }
};

const open = fs.open;
fs.open = function faultyOpen(path, ...rest) {
  const cb = rest.at(-1);
  if (isTemp(path) && at === 'open') return process.nextTick(cb, fault('open', path));
  return open.call(this, path, ...rest.slice(0, -1), (error, fd) => {
    if (!error && isTemp(path)) fds.add(fd);
    cb(error, fd);
  });
};
const promisesOpen = fs.promises.open;
fs.promises.open = async function faultyPromisesOpen(path, ...rest) {
  if (isTemp(path) && at === 'open') throw fault('open', path);
  const handle = await promisesOpen.call(this, path, ...rest);
  if (isTemp(path)) {
    fds.add(handle.fd);
    if (at === 'truncate') handle.truncate = async () => Promise.reject(fault('ftruncate'));
  }
  return handle;
};
for (const name of ['write', 'writev']) {
  const original = fs[name];
  fs[name] = function faultyWrite(fd, ...rest) {
    const cb = rest.at(-1);
    if (at === 'write' && isTempFd(fd)) {
      const bytes =
        name === 'write' ? (typeof rest[2] === 'number' ? rest[2] : rest[0].length) : rest[0].reduce((n, b) => n + b.byteLength, 0);
      if (written + bytes > after) return process.nextTick(cb, fault('write'));
      written += bytes;
    }
    return original.call(this, fd, ...rest);
  };
}
