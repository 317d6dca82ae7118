'use strict';
/*
 * codeq's JavaScript/TypeScript kernel: one persistent Node context per session,
 * inside the sandbox. Same protocol as runtimes/python/codeq_kernel.py: fd 0 is a unix
 * stream socket to the worker carrying one JSON object per line each way, fds 1 and 2
 * are the cell's stdout and stderr, and after each cell the kernel writes the cell's
 * marker on both.
 *
 * Cells run in this process's global context (as in the node REPL), so values from
 * require()d modules and from cells share one realm. To let a cell be run again and
 * declarations persist, top-level declarations are rewritten into assignments to
 * globals:  const x = 1  ->  x = (1);   class C {}  ->  C = class C {};
 * function declarations are hoisted the same way. A cell with top-level await runs
 * inside an async function whose last expression is returned. TypeScript is first
 * transpiled (types removed, imports turned into require) by the TypeScript compiler
 * from runtimes/node/node_modules, loaded once.
 *
 * checkpoint and restore (ops of the same protocol) move a session's variables when its
 * worker drains (docs/fleet.md): the cells' globals that structured clone can copy
 * (v8.serialize: numbers, strings, plain objects and arrays, Maps, Sets, Dates, typed
 * arrays...) move; functions, classes, instances of classes (their prototype would be
 * lost) and what cannot be cloned are listed as not moved, with why. The worker stores
 * the state without looking into it and hands it back to a fresh kernel of the same
 * session on another worker.
 *
 * Everything here runs as sandboxed code: the worker trusts nothing it says.
 *
 * worker/kernel.c starts it as a script (`node codeq_kernel.js`), which runs main();
 * required as a module (tests/node), it only exports its pure parts and touches
 * nothing: no fd 0, no globals, no handlers.
 */

const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');
const v8 = require('v8');
const vm = require('vm');
const { Readable } = require('stream');
const Module = require('module');

// Kept before any cell runs: cells may overwrite globals such as JSON.
const stringify = JSON.stringify.bind(JSON);
const parse = JSON.parse.bind(JSON);
const writeSync = fs.writeSync;
// The kernel's own exit (main() makes process.exit() in a cell end only the cell).
const exitKernel = process.exit.bind(process);
const inspect = util.inspect;

let ts = null;
function typescript() {
  if (ts === null) ts = require(path.join(__dirname, 'node_modules', 'typescript'));
  return ts;
}

// The control channel is fd 0 (opened by main()).
let control = null;

// What a script in /workspace would have.
const workspaceRequire = Module.createRequire('/workspace/');
const baseline = new Set();
function installGlobals() {
  globalThis.require = workspaceRequire;
  globalThis.module = { exports: {} };
  globalThis.exports = globalThis.module.exports;
  globalThis.__filename = '/workspace/[cell]';
  globalThis.__dirname = '/workspace';
}

/* Makes each name a plain writable global before a cell assigns it: a declaration
 * such as `const crypto = require('crypto')` would otherwise assign to Node's
 * read-only `crypto` getter and be ignored (sloppy mode), where a script's own
 * declaration would shadow it. */
function prepareGlobals(names) {
  for (const name of names) {
    const d = Object.getOwnPropertyDescriptor(globalThis, name);
    if (d && d.configurable && (d.get || d.set || !d.writable)) {
      Object.defineProperty(globalThis, name,
        { value: undefined, writable: true, configurable: true, enumerable: true });
    }
  }
}

function clearContext() {
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    if (baseline.has(name)) continue;
    try {
      delete globalThis[name];
    } catch (e) {
      // Function declarations make non-configurable globals: those are emptied.
      try {
        globalThis[name] = undefined;
      } catch (ignored) {
        // read-only as well: nothing more to do
      }
    }
  }
  installGlobals();
}

function containsTopLevelAwait(t, node) {
  let found = false;
  const visit = (n) => {
    if (found) return;
    if (n.kind === t.SyntaxKind.AwaitExpression ||
        (n.kind === t.SyntaxKind.ForOfStatement && n.awaitModifier)) {
      found = true;
      return;
    }
    // Functions start a new scope: an await inside one is not top-level.
    if (t.isFunctionLike(n) || t.isClassLike(n)) return;
    t.forEachChild(n, visit);
  };
  t.forEachChild(node, visit);
  return found;
}

/* Rewrites a cell (JavaScript) so that its top-level declarations become globals.
 * Edits are made in place, so line and column numbers in errors stay the cell's. */
function rewrite(source) {
  const t = typescript();
  const sf = t.createSourceFile('cell.js', source, t.ScriptTarget.ES2022, true, t.ScriptKind.JS);
  const text = (node) => source.slice(node.getStart(sf), node.getEnd());
  const isAsync = containsTopLevelAwait(t, sf);
  // A cell that does not parse is left as it is, so that running it throws the
  // engine's own SyntaxError: rewriting a broken statement can make it valid
  // (`const = 1` would become `; 1`).
  if (!isAsync && sf.parseDiagnostics && sf.parseDiagnostics.length > 0) {
    return { code: source, isAsync };
  }
  const edits = []; // [start, end, replacement]
  const hoisted = [];
  const declared = [];
  const collect = (name) => {
    if (t.isIdentifier(name)) {
      declared.push(name.text);
    } else if (t.isObjectBindingPattern(name) || t.isArrayBindingPattern(name)) {
      for (const element of name.elements) {
        if (!t.isOmittedExpression(element)) collect(element.name);
      }
    }
  };
  const statements = sf.statements;
  statements.forEach((st, index) => {
    const last = index === statements.length - 1;
    if (t.isVariableStatement(st)) {
      st.declarationList.declarations.forEach((d) => collect(d.name));
      const parts = st.declarationList.declarations.map((d) => {
        const init = d.initializer ? `(${text(d.initializer)})` : 'undefined';
        return `(${text(d.name)} = ${init})`;
      });
      edits.push([st.getStart(sf), st.getEnd(), `${parts.join(', ')};`]);
    } else if (t.isClassDeclaration(st) && st.name) {
      declared.push(st.name.text);
      edits.push([st.getStart(sf), st.getEnd(), `${st.name.text} = ${text(st)};`]);
    } else if (!isAsync && t.isFunctionDeclaration(st) && st.name) {
      declared.push(st.name.text);
    } else if (isAsync && t.isFunctionDeclaration(st) && st.name) {
      declared.push(st.name.text);
      // Inside the async wrapper a declaration would be local: assign it first
      // instead, which also keeps it callable from earlier statements.
      edits.push([st.getStart(sf), st.getEnd(), '']);
      hoisted.push(`${st.name.text} = ${text(st)};`);
    } else if (isAsync && last && t.isExpressionStatement(st)) {
      edits.push([st.getStart(sf), st.getEnd(), `return (${text(st.expression)});`]);
    }
  });
  let code = source;
  for (const [from, to, replacement] of edits.reverse()) {
    code = code.slice(0, from) + replacement + code.slice(to);
  }
  // Function declarations and empty statements have no completion value of their own,
  // so the statement before them decides the cell's value.
  const valued = statements.filter((st) => !t.isFunctionDeclaration(st) && !t.isEmptyStatement(st));
  const lastStatement = valued[valued.length - 1];
  const endsWithDeclaration = lastStatement &&
    (t.isVariableStatement(lastStatement) || t.isClassDeclaration(lastStatement));
  // On the cell's first line, so that line numbers in errors stay the cell's.
  const prepare = declared.length ? `__codeq_prepare(${stringify(declared)}); ` : '';
  if (isAsync) {
    return { code: `${prepare}(async () => { ${hoisted.join(' ')}${code}\n})()`, isAsync };
  }
  // A script's completion value is its last expression statement's value; a
  // declaration rewritten into an assignment must not show the assigned value.
  return { code: prepare + (endsWithDeclaration ? `${code}\n;void 0` : code), isAsync };
}

function transpile(source) {
  const t = typescript();
  const out = t.transpileModule(source, {
    compilerOptions: {
      target: t.ScriptTarget.ES2022,
      module: t.ModuleKind.CommonJS,
      esModuleInterop: true,
      removeComments: false,
    },
    fileName: 'cell.ts',
  });
  // A cell with imports becomes a module, which is strict; cells are sloppy scripts
  // so that their declarations can become globals.
  return out.outputText.replace(/^"use strict";\s*/, '');
}

/* import() in a cell: Node's own loader, resolving from the working directory
 * (/workspace, where `npm install` puts packages) as a script there would. Without it
 * import() fails in every cell (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING); ES-module
 * syntax (import ... from) becomes require() by transpile() instead. Undefined on a
 * Node without it: as before. */
const importModuleDynamically = vm.constants ? vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER : undefined;

let interruptCurrent = null;
// The source of the cell running (after transpiling: the lines its stack names), for
// describeError().
let cellSource = null;
// process.exit() in a cell ends the cell, not the kernel (as sys.exit() in Python): it
// throws this, which execute() turns into the result's exit code.
const EXIT = Symbol('codeq.exit');
let inCell = false;

async function runCell(request) {
  if (request.clear) clearContext();
  let source = String(request.code || '');
  if (request.language === 'typescript') source = transpile(source);
  else if (/^\s*(import|export)\s/m.test(source)) source = transpile(source); // ES module syntax
  cellSource = source;
  const { code, isAsync } = rewrite(source);
  const script = new vm.Script(code, { filename: `cell-${request.id}.js`, importModuleDynamically });
  let result = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  if (isAsync) {
    result = await new Promise((resolve, reject) => {
      interruptCurrent = () => reject(new Error('Script execution was interrupted by `SIGINT`'));
      result.then(resolve, reject);
    }).finally(() => { interruptCurrent = null; });
  }
  return result;
}

/* The line of the cell's source that a stack names, as Node shows an uncaught error's:
 * "cell-ID.js:LINE", the line, a caret under the column. The rewrite keeps lines (the
 * first one only gains a prefix: its caret is left out). */
function sourceLine(stack, id, source) {
  const at = new RegExp(`cell-${id}\\.js:(\\d+):(\\d+)`).exec(stack);
  if (!at || typeof source !== 'string') return '';
  const number = Number(at[1]);
  const line = source.split('\n')[number - 1];
  if (line === undefined) return '';
  const column = Number(at[2]);
  const caret = number > 1 && column >= 1 && column <= line.length + 1
    ? `\n${' '.repeat(column - 1)}^` : '';
  return `cell-${id}.js:${number}\n${line}${caret}\n\n`;
}

/* The error's stack without the kernel's own frames: it starts in the cell; the line
 * it was thrown at goes first. */
function describeError(error, id, source) {
  if (!error || typeof error.stack !== 'string') return `Uncaught ${inspect(error)}`;
  const lines = error.stack.split('\n');
  const kept = [];
  let inFrames = false;
  for (const line of lines) {
    const frame = /^\s+at /.test(line);
    inFrames = inFrames || frame;
    if (!inFrames || (frame && /cell-\d+\.js/.test(line))) kept.push(line);
  }
  const framed = lines.some((line) => /^\s+at .*cell-\d+\.js/.test(line));
  return (framed ? sourceLine(error.stack, id, source) : '') + kept.join('\n');
}

/* process.exit(code) while a cell runs. */
function exitCell(code) {
  const status = code === undefined ? (process.exitCode || 0) : Number(code) | 0;
  throw { [EXIT]: status & 0xff };
}

async function execute(request) {
  let ok = true;
  let value = null;
  let exit = null;
  cellSource = null;
  inCell = true;
  try {
    const result = await runCell(request);
    if (result !== undefined) value = inspect(result, { depth: 4, colors: false });
  } catch (error) {
    const exited = error !== null && typeof error === 'object' && EXIT in error;
    ok = exited && error[EXIT] === 0;
    if (exited && !ok) exit = error[EXIT];
    try {
      if (!ok) {
        const text = exited ? `process.exit(${exit})` : describeError(error, request.id, cellSource);
        writeSync(2, Buffer.from(text + '\n'));
      }
    } catch (e) {
      // stderr closed by the cell
    }
  } finally {
    inCell = false;
  }
  const marker = Buffer.from(String(request.marker || ''));
  for (const fd of marker.length ? [1, 2] : []) {
    try {
      writeSync(fd, marker);
    } catch (e) {
      // The cell closed the descriptor: its output ends here.
    }
  }
  const reply = { id: request.id, ok, value, images: [] };
  if (exit !== null) reply.exit = exit;
  // The value is held to the worker's limit (bytes of UTF-8), which refuses a reply line
  // far larger than that and replaces a kernel that sends one.
  const limit = Number.isInteger(request.limit) && request.limit > 0 ? request.limit : 1 << 20;
  if (value !== null && Buffer.byteLength(value) > limit) {
    const bytes = Buffer.from(value);
    reply.value_bytes = bytes.length;
    let end = limit;
    while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--; // cut before a continuation byte
    reply.value = bytes.subarray(0, end).toString('utf8');
  }
  return reply;
}

// Bounds of what a checkpoint lists: it ends up in a note to the client.
const MAX_LISTED = 200;
const MAX_NAME = 100;
const MAX_WHY = 200;
const STATE_OVERHEAD = 64 << 10;
// Objects whose structured clone is the same kind of object again.
const CLONED_AS_THEMSELVES = new Set([
  Object.prototype, Array.prototype, Map.prototype, Set.prototype, Date.prototype,
  RegExp.prototype, ArrayBuffer.prototype, DataView.prototype, Error.prototype,
  Boolean.prototype, Number.prototype, String.prototype, null,
]);

function short(text, limit) {
  const s = String(text);
  return s.length <= limit ? s : `${s.slice(0, limit - 3)}...`;
}

/* Why a global cannot move, for what structured clone would refuse or get wrong. */
function unmovable(value) {
  if (typeof value === 'function') {
    return /^class[\s{]/.test(Function.prototype.toString.call(value)) ? 'a class' : 'a function';
  }
  if (typeof value === 'symbol') return 'a symbol';
  if (value !== null && typeof value === 'object' && !ArrayBuffer.isView(value)) {
    const proto = Object.getPrototypeOf(value);
    if (!CLONED_AS_THEMSELVES.has(proto)) {
      const ctor = proto && proto.constructor && proto.constructor.name;
      return `an instance of ${ctor || 'a class'} (only plain data moves)`;
    }
  }
  return null;
}

/* The cells' globals as a state of at most limit bytes (a Buffer). */
function checkpointState(limit) {
  const values = {};
  const notMoved = [];
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    if (baseline.has(name)) continue;
    let value;
    try {
      value = globalThis[name];
    } catch (e) {
      notMoved.push([name, 'its getter threw']);
      continue;
    }
    if (value === undefined) continue; // emptied by a clear, or never set
    const why = unmovable(value);
    if (why !== null) {
      notMoved.push([name, why]);
      continue;
    }
    values[name] = value;
  }
  const budget = Math.max(limit - STATE_OVERHEAD, 0);
  let blob = null;
  try {
    blob = v8.serialize(values);
  } catch (e) {
    blob = null;
  }
  if (blob === null || blob.length > budget) {
    // One by one, smallest first: what cannot be cloned or does not fit stays behind.
    const sizes = [];
    for (const name of Object.keys(values)) {
      try {
        sizes.push([name, v8.serialize(values[name]).length]);
      } catch (e) {
        notMoved.push([name, short(e && e.message ? e.message : e, MAX_WHY)]);
      }
    }
    sizes.sort((a, b) => a[1] - b[1]);
    const kept = {};
    let total = 0;
    for (const [name, size] of sizes) {
      // Each value serialized alone plus its name (two bytes a UTF-16 unit at most): an
      // upper bound of its share of them all serialized together.
      const share = size + 2 * name.length + 16;
      if (total + share <= budget) {
        kept[name] = values[name];
        total += share;
      } else {
        notMoved.push([name, `too large to move: ${size} bytes serialized`]);
      }
    }
    blob = v8.serialize(kept);
  }
  const state = v8.serialize({
    version: 1,
    values: blob,
    notMoved: notMoved.slice(0, MAX_LISTED).map(([n, w]) => [short(n, MAX_NAME), w]),
  });
  if (state.length > limit) throw new Error(`the state is ${state.length} bytes, over ${limit}`);
  return state;
}

function restoreState(state) {
  const saved = v8.deserialize(state);
  const restored = [];
  const failed = [];
  let values = {};
  try {
    values = v8.deserialize(saved.values);
  } catch (e) {
    failed.push(['(the variables)', short(e && e.message ? e.message : e, MAX_WHY)]);
  }
  for (const name of Object.keys(values)) {
    try {
      prepareGlobals([name]);
      globalThis[name] = values[name];
      restored.push(name);
    } catch (e) {
      failed.push([short(name, MAX_NAME), short(e && e.message ? e.message : e, MAX_WHY)]);
    }
  }
  return {
    restored: restored.slice(0, MAX_LISTED).map((n) => short(n, MAX_NAME)),
    modules: [],
    not_moved: Array.isArray(saved.notMoved) ? saved.notMoved.slice(0, MAX_LISTED) : [],
    failed: failed.slice(0, MAX_LISTED),
  };
}

function move(request) {
  try {
    if (request.op === 'checkpoint') {
      const limit = Number.isInteger(request.limit) && request.limit > 0 ? request.limit : 1 << 20;
      return { id: request.id, ok: true, state: checkpointState(limit).toString('base64') };
    }
    return { id: request.id, ok: true, ...restoreState(Buffer.from(String(request.state || ''), 'base64')) };
  } catch (e) {
    return { id: request.id, ok: false, value: short(e && e.message ? e.message : e, MAX_WHY) };
  }
}

function send(message) {
  control.write(stringify(message) + '\n');
}

let buffered = '';
let queue = Promise.resolve();

/* The kernel itself, in the order it has always started. */
function main() {
  // The control channel is fd 0; code in cells gets an empty stdin.
  control = new net.Socket({ fd: 0, readable: true, writable: true });
  Object.defineProperty(process, 'stdin', {
    value: Readable.from([]),
    configurable: true,
    writable: true,
  });
  installGlobals();
  for (const name of Object.getOwnPropertyNames(globalThis)) baseline.add(name);
  Object.defineProperty(globalThis, '__codeq_prepare', { value: prepareGlobals });
  baseline.add('__codeq_prepare');
  process.exit = function (code) {
    if (inCell) exitCell(code);
    return exitKernel(code);
  };
  process.on('SIGINT', () => {
    if (interruptCurrent) interruptCurrent();
  });

  control.setEncoding('utf8');
  control.on('data', (chunk) => {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      let request;
      try {
        request = parse(line);
      } catch (e) {
        continue;
      }
      queue = queue.then(async () => {
        if (request.op === 'exec') {
          send(await execute(request));
        } else if (request.op === 'env') {
          Object.assign(process.env, request.env || {});
          send({ id: request.id, ok: true });
        } else if (request.op === 'checkpoint' || request.op === 'restore') {
          send(move(request));
        } else {
          send({ id: request.id, ok: false, value: 'unknown op' });
        }
      });
    }
  });
  control.on('end', () => exitKernel(0));
  control.on('error', () => exitKernel(0));
  // An exception or rejection outside a cell (a timer callback, say) is reported on
  // stderr; the kernel carries on, as the REPL does.
  process.on('uncaughtException', (e) => writeSync(2, Buffer.from(`Uncaught ${e && e.stack ? e.stack : e}\n`)));
  process.on('unhandledRejection', (e) => writeSync(2, Buffer.from(`Unhandled rejection: ${e && e.stack ? e.stack : e}\n`)));

  // Node calls the loader of import() in cells experimental, once, on the cell's
  // stderr: the cell did nothing experimental itself.
  const emitWarning = process.emitWarning;
  process.emitWarning = function (warning, ...rest) {
    if (String(warning).includes('USE_MAIN_CONTEXT_DEFAULT_LOADER')) return undefined;
    return emitWarning.call(this, warning, ...rest);
  };

  process.chdir('/workspace');
  send({ id: 0, ready: true });
  // Load the compiler now, while nobody waits: the first cell needs it.
  setImmediate(() => { try { typescript(); } catch (e) { /* reported when a cell needs it */ } });
}

if (require.main === module) {
  main();
} else {
  // For tests: how a cell is rewritten, transpiled and run, and the helper the
  // rewritten code calls (a test installs it as globalThis.__codeq_prepare, as main()
  // does). runCell with `clear` needs main()'s baseline: tests do not ask for it.
  module.exports = { rewrite, transpile, prepareGlobals, runCell, describeError };
}
