'use strict';
/*
 * tests/node/test_rewrite.js - runtimes/node/codeq_kernel.js: how a cell is rewritten
 * so that its top-level declarations outlive it and its last expression is its value,
 * and how cells run one after another in one context (as the kernel runs them).
 *
 * Required as a module, the kernel starts nothing (no control socket on fd 0); this
 * file installs what main() would (the globals a cell sees and __codeq_prepare), and
 * runs cells with the kernel's own runCell(). Run by `node --test tests/node/`.
 */

const assert = require('node:assert/strict');
const path = require('node:path');
const { test } = require('node:test');

const stdinBefore = process.stdin;
const kernel = require(path.join(__dirname, '..', '..', 'runtimes', 'node', 'codeq_kernel.js'));
const globalsAfterRequire = ['require', 'module', '__dirname', '__codeq_prepare'].filter(
  (name) => Object.prototype.hasOwnProperty.call(globalThis, name));
const { describeError, rewrite, transpile, prepareGlobals, runCell } = kernel;

// What main() installs before the first cell (require is this file's: the kernel's
// resolves from /workspace, which does not exist here).
globalThis.require = require;
globalThis.module = { exports: {} };
globalThis.exports = globalThis.module.exports;
Object.defineProperty(globalThis, '__codeq_prepare', { value: prepareGlobals });

let nextId = 1;
function run(code, language = 'javascript') {
  return runCell({ id: nextId++, code, language });
}

test('requiring the kernel exports its parts and starts nothing', () => {
  assert.deepEqual(Object.keys(kernel).sort(),
    ['describeError', 'prepareGlobals', 'rewrite', 'runCell', 'transpile']);
  // None of main()'s globals, stdin replacement or process handlers (the runner has
  // handlers of its own: the kernel's are told apart by what they write).
  assert.deepEqual(globalsAfterRequire, []);
  assert.equal(process.stdin, stdinBefore);
  for (const event of ['uncaughtException', 'unhandledRejection', 'SIGINT']) {
    for (const listener of process.listeners(event)) {
      assert.doesNotMatch(String(listener), /Uncaught \$\{|Unhandled rejection|interruptCurrent/, event);
    }
  }
});

test('declarations become assignments to globals', () => {
  assert.deepEqual(rewrite('const x = 1'),
    { code: '__codeq_prepare(["x"]); (x = (1));\n;void 0', isAsync: false });
  assert.deepEqual(rewrite('let a = 1, b;'),
    { code: '__codeq_prepare(["a","b"]); (a = (1)), (b = undefined);\n;void 0', isAsync: false });
  assert.deepEqual(rewrite('var {p, q: [r, , s]} = o, t = 2'), {
    code: '__codeq_prepare(["p","r","s","t"]); ({p, q: [r, , s]} = (o)), (t = (2));\n;void 0',
    isAsync: false,
  });
  assert.deepEqual(rewrite('class C {}'),
    { code: '__codeq_prepare(["C"]); C = class C {};\n;void 0', isAsync: false });
  // Function declarations are already hoisted globals in a script: only prepared.
  assert.deepEqual(rewrite('function f() { return 1 }'),
    { code: '__codeq_prepare(["f"]); function f() { return 1 }', isAsync: false });
  // Nothing declared: the cell is left as it is.
  assert.deepEqual(rewrite('1 + 1'), { code: '1 + 1', isAsync: false });
  // Only top-level declarations: blocks keep theirs.
  assert.deepEqual(rewrite('{ const inner = 1 }'), { code: '{ const inner = 1 }', isAsync: false });
});

test('edits keep line numbers', () => {
  const { code } = rewrite('const a = 1\nconst b = 2\n\nnull.x');
  assert.equal(code.split('\n').length, 4);
  assert.equal(code.split('\n')[3], 'null.x');
});

test('declarations are kept across cells', async () => {
  assert.equal(await run('const k1 = 40'), undefined);
  assert.equal(await run('let k2 = 2'), undefined);
  assert.equal(await run('var k3 = 1'), undefined);
  assert.equal(await run('function k4(n) { return n * 2 }'), undefined);
  assert.equal(await run('class K5 { get v() { return 5 } }'), undefined);
  assert.equal(await run('k1 + k2 + k3 + k4(1) + new K5().v'), 50);
  // Run again: a const or class can be declared again, as in the REPL.
  assert.equal(await run('const k1 = 1; class K5 {}; k1'), 1);
  assert.equal(await run('k1'), 1);
  // Destructuring declares every bound name.
  await run('const { d1, d2: [, d3] } = { d1: "a", d2: [0, "c"] }');
  assert.equal(await run('d1 + d3'), 'ac');
});

test('a declaration shadows a read-only global of node', async () => {
  // globalThis.crypto is a getter in node 20: assigning it in sloppy mode is ignored.
  assert.equal(await run('const crypto = "mine"; crypto'), 'mine');
  assert.equal(await run('crypto'), 'mine');
});

test('the last expression is the value', async () => {
  assert.equal(await run('1; 2; "three"'), 'three');
  assert.equal(await run('const e1 = 5'), undefined);
  assert.equal(await run('e1; const e2 = 6'), undefined); // a declaration last: no value
  assert.equal(await run('e1; function e3() {}'), 5); // a function declaration has none
  assert.equal(await run('e1;;'), 5);
  assert.equal(await run('if (true) { 7 } else { 8 }'), 7);
  assert.equal(await run(''), undefined);
  assert.equal(await run('// only a comment'), undefined);
});

test('cells with top-level await', async () => {
  assert.deepEqual(rewrite('const r = await Promise.resolve(3); r * 2'), {
    code: '__codeq_prepare(["r"]); (async () => { (r = (await Promise.resolve(3))); return (r * 2);\n})()',
    isAsync: true,
  });
  assert.equal(await run('const a1 = await Promise.resolve(3); a1 * 2'), 6);
  assert.equal(await run('a1'), 3);
  // Function declarations are assigned first: callable before they appear.
  assert.equal(await run('const a2 = a3(); await null; function a3() { return 9 }\na2'), 9);
  assert.equal(await run('a3() + a2'), 18);
  // A class declared after an await; no value when a declaration ends the cell.
  assert.equal(await run('await null; class A4 { static v = 4 }'), undefined);
  assert.equal(await run('A4.v'), 4);
  assert.equal(await run('let sum = 0; for await (const v of [1, 2, 3]) sum += v; sum'), 6);
  assert.equal(await run('await new Promise((resolve) => setTimeout(() => resolve("late"), 10))'), 'late');
  // Await only inside a function is not top-level: a plain script.
  assert.equal(rewrite('async function a5() { await 1; return 2 }').isAsync, false);
  assert.equal(await run('async function a5() { await 1; return 2 }\nawait a5()'), 2);
  await assert.rejects(run('await Promise.reject(new RangeError("no"))'), RangeError);
});

test('keywords in comments and strings are not code', async () => {
  const cell = "// const hidden = 1\n'let x = 2; class Y {}'";
  assert.deepEqual(rewrite(cell), { code: cell, isAsync: false });
  assert.equal(await run(cell), 'let x = 2; class Y {}');
  assert.equal(rewrite('/* await */ `await ${1}`').isAsync, false);
  assert.equal(await run('/* await x */ `await ${"class"}`'), 'await class');
  assert.equal(await run('"const function class await"'), 'const function class await');
  assert.equal(await run('typeof hidden'), 'undefined');
});

test('syntax errors are reported as such', async () => {
  await assert.rejects(run('let x = ;'), SyntaxError);
  await assert.rejects(run('1 +'), SyntaxError);
  await assert.rejects(run('function ('), SyntaxError);
  await assert.rejects(run('await ('), SyntaxError);
});

test('a declaration without a name is a syntax error', async () => {
  await assert.rejects(run('const = 1'), SyntaxError);
});

test('runtime errors point at the cell line', async () => {
  const id = nextId;
  await assert.rejects(run('const l1 = 1\nconst l2 = 2\nnull.x'), (error) => {
    assert.ok(error instanceof TypeError);
    assert.match(error.stack, new RegExp(`cell-${id}\\.js:3`));
    return true;
  });
});

test('typescript is transpiled, then rewritten', async () => {
  assert.equal(await run('const t1: number = 5; interface P { x: number }\nconst t2: P = { x: t1 }; t2.x * 2',
    'typescript'), 10);
  assert.equal(await run('t2.x', 'typescript'), 5);
  assert.equal(await run('enum Colour { Red, Green }\nColour.Green', 'typescript'), 1);
  assert.equal(await run('Colour[0]'), 'Red');
  assert.equal(await run('type T = string; let t3: T = "a"; t3 + t3', 'typescript'), 'aa');
  assert.equal(await run('const t4 = await Promise.resolve<number>(2); t4', 'typescript'), 2);
  // Types are gone and a cell stays sloppy (no "use strict").
  const out = transpile('const n: number = 5; export const e = n;');
  assert.doesNotMatch(out, /use strict/);
  assert.doesNotMatch(out, /: number/);
  await assert.rejects(run('const bad: number = ;', 'typescript'), SyntaxError);
});

test('import and export cells are transpiled even as javascript', async () => {
  assert.equal(await run('import path from "path";\npath.basename("/a/b.txt")'), 'b.txt');
  assert.equal(await run('import { join } from "path";\njoin("a", "b")'), 'a/b');
  assert.equal(await run('export const ex1 = 3;\nex1 + 1'), 4);
  // "import" in a string at the start of a line is not a module cell.
  assert.equal(await run('`\nimport x`.trim()'), 'import x');
});

test('an error names the cell line it was thrown at, as Node shows uncaught errors', async () => {
  const id = nextId;
  const code = 'const d1 = 1;\nfunction g(o) {\n  return o.x.y;\n}\ng({});';
  await assert.rejects(run(code), (error) => {
    const text = describeError(error, id, code);
    assert.equal(text.split('\n').slice(0, 4).join('\n'),
      `cell-${id}.js:3\n  return o.x.y;\n             ^\n`);
    assert.match(text, new RegExp(`TypeError: .*\\n    at g \\(cell-${id}\\.js:3:14\\)`));
    return true;
  });
  // An error whose stack names no line of the cell is left as it is.
  assert.equal(describeError(new Error('plain'), 99, code).split('\n')[0], 'Error: plain');
  assert.equal(describeError('thrown string', 99, code), "Uncaught 'thrown string'");
});
