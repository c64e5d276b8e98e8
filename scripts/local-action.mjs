#!/usr/bin/env node
/**
 * `npm run local-action [-- <env file>]`: runs src/main.ts with @github/local-action and the
 * settings in .env (copy .env.example first). The folders the settings name are created first:
 * local-action's stand-ins write into them but do not create them.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const envFile = process.argv[2] ?? '.env';
if (!fs.existsSync(envFile)) {
  process.stderr.write(`local-action: ${envFile} does not exist. Copy .env.example to ${envFile} and edit it.\n`);
  process.exit(1);
}
const settings = Object.fromEntries(
  fs
    .readFileSync(envFile, 'utf8')
    .split(/\r?\n/)
    .map((line) => /^\s*([\w.-]+)\s*=\s*(.*?)\s*$/.exec(line))
    .filter(Boolean)
    .map(([, key, value]) => [key, value.replace(/^(['"])(.*)\1$/, '$2')]),
);
for (const key of ['GITHUB_WORKSPACE', 'RUNNER_TEMP', 'RUNNER_TOOL_CACHE', 'LOCAL_ACTION_WORKSPACE', 'LOCAL_ACTION_ARTIFACT_PATH']) {
  if (settings[key]) fs.mkdirSync(settings[key], { recursive: true });
}
if (settings.GITHUB_STEP_SUMMARY) fs.mkdirSync(path.dirname(settings.GITHUB_STEP_SUMMARY), { recursive: true });

const bin = path.join('node_modules', '.bin', process.platform === 'win32' ? 'local-action.cmd' : 'local-action');
const run = spawnSync(bin, ['.', 'src/main.ts', envFile], { stdio: 'inherit', shell: process.platform === 'win32' });
process.exit(run.status ?? 1);
