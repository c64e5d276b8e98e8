// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the strings are workflow YAML, whose ${{ }} are GitHub expressions
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { ROOT } from '../support/run-action.js';
import {
  actionlintProblems,
  actionUsageProblems,
  asWorkflow,
  downloadArtifactProblems,
  fileSnippet,
  findShellcheck,
  markdownYamlBlocks,
  pinDisagreements,
  pinProblems,
  readAction,
  type Snippet,
  shellcheckProblems,
  yamlProblems,
} from '../support/snippets.js';

// Every piece of workflow YAML a user may copy, and this repository's own workflows.
const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const files = (dir: string) =>
  fs
    .readdirSync(path.join(ROOT, dir))
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => `${dir}/${f}`);
const snippets: Snippet[] = [
  ...markdownYamlBlocks(readme, 'README.md'),
  ...files('examples').map(fileSnippet),
  ...files('.github/workflows').map(fileSnippet),
];
// Earlier steps that the README's prose describes and its blocks refer to without showing.
const ASSUMED_STEPS = ['train'];
// Labels of self-hosted runners the README's blocks use (what actionlint.yaml would list).
const RUNNER_LABELS = ['gpu'];
const action = readAction();
const shellcheck = findShellcheck();

const problemsOf = async (check: (s: Snippet) => string[] | Promise<string[]>, list: Snippet[]) =>
  (await Promise.all(list.map(check))).flat();

describe('README blocks, examples and workflows', () => {
  test('there are snippets to check: the README blocks, every example, every workflow', () => {
    assert.ok(markdownYamlBlocks(readme, 'README.md').length >= 8);
    assert.ok(files('examples').length >= 3 && files('.github/workflows').length >= 4);
  });

  test('each parses as YAML, without warnings', () => {
    assert.deepEqual(snippets.flatMap(yamlProblems), []);
  });

  test('each is a workflow, a jobs mapping, a list of steps or an env mapping, and passes actionlint', async () => {
    assert.deepEqual(await problemsOf((s) => actionlintProblems(asWorkflow(s, ASSUMED_STEPS), RUNNER_LABELS), snippets), []);
  });

  test('each uses only the inputs and outputs action.yml declares, and every required input', () => {
    assert.deepEqual(
      snippets.flatMap((s) => actionUsageProblems(asWorkflow(s, ASSUMED_STEPS), action)),
      [],
    );
    // The check sees the action's steps: every snippet but the env one runs it.
    const users = snippets.filter((s) => /together-download@|uses: \.\//.test(s.text));
    assert.ok(users.length >= 10, `${users.length} snippets use the action`);
  });

  test('the shell of every run: step passes shellcheck', async () => {
    assert.ok(
      shellcheck,
      'shellcheck is not installed: the tests check the shell of every run: step with it. Install it (Debian/Ubuntu: apt-get install shellcheck; macOS: brew install shellcheck), or set SHELLCHECK to its path.',
    );
    assert.deepEqual(await problemsOf((s) => shellcheckProblems(asWorkflow(s, ASSUMED_STEPS), shellcheck), snippets), []);
  });

  test('third-party actions in workflows and examples are pinned to a commit SHA, the version in a comment', () => {
    assert.deepEqual(snippets.filter((s) => !s.source.startsWith('README.md')).flatMap(pinProblems), []);
  });

  test('each third-party action is pinned to the same commit and version everywhere', () => {
    assert.deepEqual(pinDisagreements(snippets.filter((s) => !s.source.startsWith('README.md'))), []);
  });

  test('every artifact download reads un-zipped artifacts (download-artifact v8 or later)', () => {
    assert.deepEqual(snippets.flatMap(downloadArtifactProblems), []);
  });

  test("the workflows set up Node 24, the action's runtime", () => {
    const versions = files('.github/workflows').flatMap((file) =>
      [...fs.readFileSync(path.join(ROOT, file), 'utf8').matchAll(/node-version:\s*(\S+)/g)].map((m) => `${file}: ${m[1]}`),
    );
    assert.ok(versions.length >= 3);
    assert.deepEqual(
      versions.filter((v) => !v.endsWith(': 24')),
      [],
    );
  });
});

describe('each check can fail', () => {
  const steps = (body: string, source = 'broken'): Snippet => ({ source, text: body });
  const wf = (body: string) => asWorkflow(steps(body), ASSUMED_STEPS);

  test('YAML: a plain scalar holding ": " (the old "Download once per self-hosted GPU runner" block)', () => {
    const problems = yamlProblems(steps('- run: echo "from cache: ${{ steps.model.outputs.cache-hit }}"\n'));
    assert.equal(problems.length, 1);
    assert.match(problems[0], /broken: .*(mapping|Nested)/i);
    assert.throws(() => wf('- run: echo "a: b"\n'), /broken/);
  });

  test('YAML: a duplicate key', () => {
    assert.match(
      yamlProblems(steps('- uses: org/together-download@v1\n  with:\n    job-id: a\n    job-id: b\n')).join(),
      /unique|duplicate/i,
    );
  });

  test('shape: a snippet that is none of the shapes users paste', () => {
    assert.throws(() => wf('just a string\n'), /neither a workflow/);
  });

  test('actionlint: an unknown step key and an undefined step id in an expression', async () => {
    const problems = await actionlintProblems(wf('- uses: org/together-download@v1\n  wiht:\n    job-id: ft-x\n'));
    assert.match(problems.join('\n'), /broken \(line 2 of the snippet\): unexpected key "wiht"/);
    const undefinedStep = await actionlintProblems(wf('- run: echo "${{ steps.nope.outputs.path }}"\n'));
    assert.match(undefinedStep.join('\n'), /property "nope" is not defined/);
    const labels = (list: string[]) =>
      actionlintProblems(
        asWorkflow({ source: 'broken', text: 'jobs:\n  a:\n    runs-on: [self-hosted, gpu]\n    steps:\n      - run: "true"\n' }),
        list,
      );
    assert.match((await labels([])).join('\n'), /label "gpu" is unknown/);
    assert.deepEqual(await labels(['gpu']), []);
  });

  test('inputs: an undeclared input, a missing required one, a boolean that is not one', () => {
    const problems = actionUsageProblems(
      wf('- uses: org/together-download@v1\n  id: m\n  with:\n    jobid: ft-x\n    wait: yes please\n'),
      action,
    );
    assert.deepEqual(problems, [
      'broken (job snippet, step m): input `jobid` is not declared in action.yml',
      'broken (job snippet, step m): required input `job-id` is missing',
      'broken (job snippet, step m): input `wait` takes true or false, not "yes please"',
    ]);
  });

  test('outputs: a step output the action lacks, and needs outputs that do not resolve', () => {
    const stepOutput = actionUsageProblems(
      wf('- uses: ./\n  id: m\n  with:\n    job-id: ft-x\n- run: echo "${{ steps.m.outputs.model-path }}"\n'),
      action,
    );
    assert.deepEqual(stepOutput, ['broken (job snippet): steps.m.outputs.model-path: the action has no output `model-path`']);
    const jobs = asWorkflow({
      source: 'broken',
      text: [
        'jobs:',
        '  a:',
        '    runs-on: ubuntu-latest',
        '    outputs:',
        '      sha256: ${{ steps.m.outputs.sha265 }}',
        '    steps:',
        '      - uses: org/together-download@v1',
        '        id: m',
        '        with:',
        '          job-id: ft-x',
        '  b:',
        '    needs: a',
        '    runs-on: ubuntu-latest',
        '    steps:',
        '      - run: echo "${{ needs.a.outputs.digest }} ${{ needs.c.outputs.x }}"',
        '',
      ].join('\n'),
    });
    assert.deepEqual(actionUsageProblems(jobs, action), [
      'broken (job a): steps.m.outputs.sha265: the action has no output `sha265`',
      'broken (job b): needs.a.outputs.digest: job a has no output `digest`',
      'broken (job b): needs.c: job c is not in its needs',
    ]);
  });

  test('shellcheck: an unquoted variable, with expressions blanked out', { timeout: 60_000 }, async () => {
    assert.ok(shellcheck, 'shellcheck is not installed');
    const script = (line: string) => `- run: |\n    echo "\${{ steps.m.outputs.path }}" \${{ runner.temp }}\n    ${line}\n`;
    const problems = await shellcheckProblems(wf(script('rm -rf $MODEL_DIR/model')), shellcheck);
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0], /^broken \(job snippet, step 1\): line 2:8: .*\[SC2086\]$/);
    // Quoted, it passes: the expressions on line 1 are blanked out, not read as ${...} expansions.
    assert.deepEqual(await shellcheckProblems(wf(script('rm -rf "$MODEL_DIR/model"')), shellcheck), []);
  });

  test('pins: a tag instead of a SHA, a SHA without its version, and an old download-artifact', () => {
    const broken = steps(
      [
        '- uses: actions/checkout@v7',
        '- uses: actions/setup-node@820762786026740c76f36085b0efc47a31fe5020',
        '- uses: actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97 # v7.0.0',
        '- uses: actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093 # v4.3.0',
        '- uses: actions/download-artifact@v5',
        '- uses: actions/download-artifact@v8',
        '- uses: org/together-download@v1',
        '',
      ].join('\n'),
    );
    assert.deepEqual(pinProblems(broken), [
      'broken: actions/checkout@v7 is not pinned to a full commit SHA',
      'broken: actions/setup-node@820762786026740c76f36085b0efc47a31fe5020 has no "# vX.Y.Z" comment',
      'broken: actions/download-artifact@v5 is not pinned to a full commit SHA',
      'broken: actions/download-artifact@v8 is not pinned to a full commit SHA',
    ]);
    assert.deepEqual(downloadArtifactProblems(broken), [
      'broken: actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093 (v4.3.0) cannot read an un-zipped artifact: use v8 or later',
      'broken: actions/download-artifact@v5 cannot read an un-zipped artifact: use v8 or later',
    ]);
  });

  test('pins: one action at two commits in two files', () => {
    const a = steps('- uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1\n', 'a.yml');
    const b = steps(
      '- uses: actions/checkout@de0fac2e4500dabe0009e67214ff5f5447ce83dd # v6.0.2\n- uses: github/codeql-action/init@f205ea1c3313d32999d8d6a48b4f6530d4437b38 # v4.37.4\n',
      'b.yml',
    );
    const c = steps('- uses: github/codeql-action/analyze@f205ea1c3313d32999d8d6a48b4f6530d4437b38 # v4.37.4\n', 'c.yml');
    assert.deepEqual(pinDisagreements([a, b, c]), [
      'actions/checkout is pinned @3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1 in a.yml; @de0fac2e4500dabe0009e67214ff5f5447ce83dd # v6.0.2 in b.yml',
    ]);
  });
});
