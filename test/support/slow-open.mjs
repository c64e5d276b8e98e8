// Preloaded with `node --import` in tests: the first SLOW_OPEN_TIMES (default: every) opens of a
// file tool-cache downloads into (`*.partial`, `*.partial.d/*`) finish SLOW_OPEN_MS (default 300) ms late,
// the way a busy machine delays them, so a response that breaks at once fails before the file is open.
import fs from 'node:fs';

const delayMs = Number(process.env.SLOW_OPEN_MS ?? 300);
let remaining = process.env.SLOW_OPEN_TIMES === undefined ? Infinity : Number(process.env.SLOW_OPEN_TIMES);

const open = fs.open;
fs.open = function slowOpen(file, ...rest) {
  if (typeof file === 'string' && /\.partial(\.d[\\/].*)?$/.test(file) && remaining > 0) {
    remaining--;
    setTimeout(() => open.call(this, file, ...rest), delayMs);
    return;
  }
  return open.call(this, file, ...rest);
};
