#!/usr/bin/env node
/**
 * `node scripts/node24.mjs [--then-this-node] <command> [args...]`: runs the command with Node 24,
 * the action's runtime (`runs.using: node24`), first on PATH; with `--then-this-node`, runs it
 * again with the `node` that started this script, unless that one is 24 already (so `npm test` on
 * a Node 20 machine tests both), and fails when either run failed. The `node` in use when it is 24 already;
 * otherwise, on Linux, Node NODE_24_VERSION from the npm registry's `node-linux-<arch>` package,
 * installed once into .tmp/node/<version>/ (ignored by git, kept across `npm ci`). Anywhere else it
 * fails and says to install Node 24. Plain JavaScript so that it runs on any Node before tsx does.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const NODE_24_VERSION = '24.22.3';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fail = (message) => {
  process.stderr.write(`node24: ${message}\n`);
  process.exit(1);
};

/** The folder holding a `node` 24 binary, installing it from the npm registry when needed. */
function node24Bin() {
  if (process.versions.node.split('.')[0] === '24') return path.dirname(process.execPath);
  const arch = { x64: 'x64', arm64: 'arm64' }[process.arch];
  if (process.platform !== 'linux' || !arch) {
    fail(
      `the tests run on Node 24 and this is Node ${process.version} on ${process.platform}-${process.arch}, where the npm registry has no Node 24 package. Install Node 24 (for example with nvm or fnm) and run this again.`,
    );
  }
  const prefix = path.join(root, '.tmp', 'node', NODE_24_VERSION);
  const bin = path.join(prefix, 'node_modules', `node-linux-${arch}`, 'bin');
  const node = path.join(bin, 'node');
  if (versionOf(node) !== `v${NODE_24_VERSION}`) {
    process.stderr.write(
      `node24: installing Node ${NODE_24_VERSION} from the npm registry (node-linux-${arch}) into ${path.relative(root, prefix)}\n`,
    );
    fs.rmSync(prefix, { recursive: true, force: true });
    fs.mkdirSync(prefix, { recursive: true });
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const args = ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--loglevel=error', '--prefix', prefix];
    try {
      execFileSync(npm, [...args, `node-linux-${arch}@${NODE_24_VERSION}`], { stdio: ['ignore', 'ignore', 'inherit'] });
    } catch (error) {
      fs.rmSync(prefix, { recursive: true, force: true });
      fail(
        `could not install node-linux-${arch}@${NODE_24_VERSION} from the npm registry (${error.message}). Check the registry is reachable, or install Node 24 yourself.`,
      );
    }
    const installed = versionOf(node);
    if (installed !== `v${NODE_24_VERSION}`) fail(`${node} reports ${installed ?? 'nothing'} instead of v${NODE_24_VERSION}.`);
  }
  return bin;
}

function versionOf(node) {
  try {
    return execFileSync(node, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

const argv = process.argv.slice(2);
const thenThisNode = argv[0] === '--then-this-node';
const [command, ...args] = thenThisNode ? argv.slice(1) : argv;
if (!command) fail('usage: node scripts/node24.mjs [--then-this-node] <command> [args...]');
const bin = node24Bin();
const thisNodeIs24 = bin === path.dirname(process.execPath);

/**
 * Runs the command with `binDir` first on PATH; resolves to its exit code. The child is told which
 * Node it should find (test/unit/runtime.test.ts checks that it did).
 */
function run(binDir, pass) {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      stdio: 'inherit',
      env: {
        ...process.env,
        PATH: `${binDir}${path.delimiter}${process.env.PATH ?? ''}`,
        TOGETHER_DOWNLOAD_NODE_PASS: pass,
        TOGETHER_DOWNLOAD_NODE_EXPECTED: versionOf(path.join(binDir, 'node')) ?? '',
      },
      shell: process.platform === 'win32',
    });
    const forward = (signal) => child.kill(signal);
    process.on('SIGINT', forward).on('SIGTERM', forward);
    child.on('error', (error) => fail(`could not start ${command}: ${error.message}`));
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward).off('SIGTERM', forward);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

const code = await run(bin, 'runtime');
if (thenThisNode && !thisNodeIs24) {
  process.stderr.write(
    `node24: ${code === 0 ? 'passed' : `failed (exit code ${code})`} on Node 24; now on this machine's Node ${process.version}\n`,
  );
  const here = await run(path.dirname(process.execPath), 'this-node');
  if (code !== 0) process.stderr.write(`node24: it failed on Node 24 (exit code ${code}); see above\n`);
  process.exit(code || here);
}
process.exit(code);
