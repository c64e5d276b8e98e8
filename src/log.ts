/**
 * Every line the action prints goes through here. Text from Together, a storage host, an archive
 * or the file system is untrusted: a newline in it followed by `::warning::` or `::stop-commands::`
 * would become a workflow command, and a secret in it would be printed. So each line is escaped
 * (no control or line-separator character is printed raw), redacted (every registered secret
 * becomes `***`), and a line that would start with `::` is marked, so that the only workflow
 * commands in the log are the ones written by `@actions/core` on the action's behalf.
 */
import * as core from '@actions/core';

const secrets = new Set<string>();

/**
 * Registers a secret: masked by the runner (`::add-mask::`) and replaced by `***` in every line
 * this module prints. Call it before anything could print the value.
 */
export function registerSecret(secret: string): void {
  if (secret === '' || secrets.has(secret)) return;
  secrets.add(secret);
  core.setSecret(secret);
}

/** Replaces every registered secret in `text` (and any given in `extra`) by `***`. */
export function redact(text: string, extra: readonly string[] = []): string {
  let out = text;
  // Longest first, so that a secret containing another is replaced whole.
  const all = [...secrets, ...extra];
  // A secret with a control character in it may also appear escaped (`\n`) in text that was.
  const forms = new Set([...all, ...all.map(escapeControls)]);
  for (const secret of [...forms].sort((a, b) => b.length - a.length)) {
    if (secret.length > 0) out = out.split(secret).join('***');
  }
  return out;
}

// C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
// biome-ignore lint/suspicious/noControlCharactersInRegex: these are exactly the characters to escape
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** Shows control and separator characters escaped (`\n`, `\u001b`, ...), so that text stays on one line. */
export function escapeControls(text: string): string {
  return text.replace(UNSAFE, (c) => NAMED[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** True when `text` holds a character `escapeControls` would escape. */
export function hasControls(text: string): boolean {
  UNSAFE.lastIndex = 0;
  const found = UNSAFE.test(text);
  UNSAFE.lastIndex = 0;
  return found;
}

/** A line that is safe to print: escaped, redacted, and never starting with `::`. */
export function safeLine(text: string): string {
  const line = redact(escapeControls(text));
  return /^\s*::/.test(line) ? `\\${line}` : line;
}

/**
 * An untrusted value to put inside a message: quoted, shortened to `max` characters, escaped.
 * The quotes show where the value starts and ends.
 */
export function quote(value: string, max = 80): string {
  const shown = value.length > max ? `${value.slice(0, max)}…` : value;
  // JSON escapes C0 controls, quotes and backslashes; the rest (DEL, C1, U+2028/9) is escaped here.
  return escapeControls(JSON.stringify(shown));
}

export function info(text: string): void {
  core.info(safeLine(text));
}

export function warning(text: string): void {
  core.warning(safeLine(text));
}

export function error(text: string): void {
  core.error(safeLine(text));
}

export function debug(text: string): void {
  core.debug(safeLine(text));
}

/** Fails the step with `text` as its error annotation. */
export function fail(text: string): void {
  core.setFailed(safeLine(text));
}

/** Runs `fn` inside a collapsible group of the log. */
export function group<T>(name: string, fn: () => Promise<T>): Promise<T> {
  return core.group(safeLine(name), fn);
}

export function startGroup(name: string): void {
  core.startGroup(safeLine(name));
}

export function endGroup(): void {
  core.endGroup();
}
