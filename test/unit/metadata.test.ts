import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { renderReadme } from '../../scripts/docs.js';
import { DEFAULT_INPUTS, ROOT } from '../support/run-action.js';

const actionYaml = fs.readFileSync(path.join(ROOT, 'action.yml'), 'utf8');
const action = parse(actionYaml) as {
  inputs: Record<string, { description: string; default?: string; required?: boolean }>;
  outputs: Record<string, { description: string }>;
  runs: { using: string; main: string };
  branding: { icon: string; color: string };
};
const source = fs
  .readdirSync(path.join(ROOT, 'src'), { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.ts'))
  .map((f) => fs.readFileSync(path.join(ROOT, 'src', f), 'utf8'))
  .join('\n');

test('action.yml is valid GitHub Action metadata (the SchemaStore schema)', () => {
  const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'github-action.schema.json'), 'utf8'));
  const ajv = new Ajv({ allErrors: true, strict: false });
  const validate = ajv.compile(schema);
  assert.ok(validate(action), JSON.stringify(validate.errors, null, 2));
  assert.equal(action.runs.using, 'node24');
  assert.ok(fs.existsSync(path.join(ROOT, action.runs.main)), 'runs.main exists');
});

test('the schema check can fail', () => {
  const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'github-action.schema.json'), 'utf8'));
  const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
  assert.equal(validate({ ...action, branding: { icon: 'not-an-icon', color: 'blue' } }), false);
  assert.equal(validate({ ...action, inputs: { 'job-id': { required: true } } }), false);
});

test('every input and output has a description, and branding is set', () => {
  for (const [name, input] of Object.entries(action.inputs)) assert.ok(input.description?.length > 20, `input ${name}`);
  for (const [name, output] of Object.entries(action.outputs)) assert.ok(output.description?.length > 20, `output ${name}`);
  assert.ok(action.branding.icon && action.branding.color);
});

test('the code reads exactly the inputs action.yml declares', () => {
  const read = new Set([...source.matchAll(/(?:getInput|booleanInput|getBooleanInput)\('([a-z-]+)'/g)].map((m) => m[1]));
  assert.deepEqual([...read].sort(), Object.keys(action.inputs).sort());
});

test('the e2e harness passes the defaults action.yml declares, as a runner does', () => {
  const defaults = Object.fromEntries(Object.entries(action.inputs).map(([name, input]) => [name, input.default ?? '']));
  assert.deepEqual(DEFAULT_INPUTS, defaults);
});

test('the README tables are the ones action.yml generates (npm run docs)', () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  assert.equal(readme, renderReadme(readme, actionYaml), 'README.md drifted from action.yml: run npm run docs');
  for (const name of [...Object.keys(action.inputs), ...Object.keys(action.outputs)]) assert.ok(readme.includes(`| \`${name}\` |`));
});
