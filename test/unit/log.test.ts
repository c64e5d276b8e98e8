import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { escapeControls, hasControls, quote, redact, registerSecret, safeLine } from '../../src/log.js';

// biome-ignore lint/suspicious/noControlCharactersInRegex: what must never be printed raw
const RAW = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

describe('escapeControls', () => {
  test('named escapes for newline, carriage return and tab; \\u escapes for the rest', () => {
    assert.equal(escapeControls('a\nb\r\nc\td'), 'a\\nb\\r\\nc\\td');
    assert.equal(escapeControls('\u0000\u001b[31m\u007f\u0085\u009b\u2028\u2029'), '\\u0000\\u001b[31m\\u007f\\u0085\\u009b\\u2028\\u2029');
    assert.equal(escapeControls('plain text, ünïcödé and emoji 🙂'), 'plain text, ünïcödé and emoji 🙂');
  });

  test('any string comes out on one line with no control character', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const escaped = escapeControls(s);
        assert.ok(!RAW.test(escaped));
        assert.equal(hasControls(s), escaped !== s);
      }),
    );
  });
});

describe('safeLine', () => {
  test('a forged workflow command stays inside the line', () => {
    assert.equal(safeLine('Job x: status \n::warning::owned'), 'Job x: status \\n::warning::owned');
  });

  test('a line that would start with :: is marked, so the runner does not read it as a command', () => {
    assert.equal(safeLine('::stop-commands::abc'), '\\::stop-commands::abc');
    assert.equal(safeLine('  ::error::x'), '\\  ::error::x');
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const line = safeLine(s);
        assert.ok(!/^\s*::/.test(line));
        assert.ok(!RAW.test(line));
      }),
    );
  });

  test('registered secrets are redacted, longest first, wherever they appear', () => {
    registerSecret('tgp_v1_unit-secret-abc');
    registerSecret('tgp_v1_unit-secret-abc-longer');
    assert.equal(safeLine('key tgp_v1_unit-secret-abc-longer and tgp_v1_unit-secret-abc.'), 'key *** and ***.');
    assert.equal(redact('x tgp_v1_unit-secret-abc y', ['y']), 'x *** ***');
  });

  test('a secret holding a control character is redacted raw and escaped', () => {
    registerSecret('tgp_v1_other\nsecret');
    assert.equal(safeLine('a tgp_v1_other\nsecret b'), 'a *** b');
    assert.equal(safeLine('a tgp_v1_other\\nsecret b'), 'a *** b', 'the escaped form, as a JSON body would hold it');
  });
});

describe('quote', () => {
  test('shows where an untrusted value starts and ends, escaped and shortened', () => {
    assert.equal(quote('a"b\nc'), '"a\\"b\\nc"');
    assert.equal(quote('\u2028'), '"\\u2028"');
    assert.equal(quote('x'.repeat(100)), `"${'x'.repeat(80)}…"`);
  });
});
