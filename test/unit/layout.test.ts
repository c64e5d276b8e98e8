import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

const SRC = path.resolve(import.meta.dirname, '../../src');

/** Every .ts file under src/, as a path relative to it. */
function sources(dir = SRC): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const full = path.join(dir, d.name);
    if (d.isDirectory()) return sources(full);
    return d.name.endsWith('.ts') ? [path.relative(SRC, full)] : [];
  });
}

/** The src/ files a file imports (type imports included: they shape the layout too). */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(path.join(SRC, file), 'utf8');
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"](\.[^'"]+)['"]/g)].map((m) => m[1]);
  specs.push(...[...text.matchAll(/import\(\s*['"](\.[^'"]+)['"]\s*\)/g)].map((m) => m[1]));
  return specs.map((s) => path.relative(SRC, path.resolve(SRC, path.dirname(file), s)).replace(/\.js$/, '.ts'));
}

test('src/ is grouped by concern: together, transfer, archive, runner, and the story on top', () => {
  const files = sources();
  const top = files.filter((f) => !f.includes(path.sep)).sort();
  assert.deepEqual(top, ['errors.ts', 'format.ts', 'index.ts', 'inputs.ts', 'log.ts', 'main.ts', 'plan.ts']);
  const folders = new Set(files.filter((f) => f.includes(path.sep)).map((f) => f.split(path.sep)[0]));
  assert.deepEqual([...folders].sort(), ['archive', 'runner', 'together', 'transfer']);
});

test('no import cycles in src/', () => {
  const graph = new Map(sources().map((f) => [f, importsOf(f)]));
  for (const [file, deps] of graph) {
    for (const dep of deps) assert.ok(graph.has(dep), `${file} imports ${dep}, which does not exist`);
  }
  const state = new Map<string, 'open' | 'done'>();
  const visit = (file: string, trail: string[]): void => {
    if (state.get(file) === 'done') return;
    assert.notEqual(state.get(file), 'open', `import cycle: ${[...trail.slice(trail.indexOf(file)), file].join(' -> ')}`);
    state.set(file, 'open');
    for (const dep of graph.get(file) ?? []) visit(dep, [...trail, file]);
    state.set(file, 'done');
  };
  for (const file of graph.keys()) visit(file, []);
});

test('the folders below the top never import the story (main, plan, inputs)', () => {
  for (const file of sources().filter((f) => f.includes(path.sep))) {
    for (const dep of importsOf(file)) {
      assert.ok(!['main.ts', 'plan.ts', 'inputs.ts', 'index.ts'].includes(dep), `${file} imports ${dep}`);
    }
  }
});
