"""codeq's Python kernel: one persistent interpreter per session, inside the sandbox.

Started by the worker (worker/kernel.c) as
    python3 -u codeq_kernel.py [--preload [--preload-module=NAME ...]]
with fd 0 a unix stream socket to the worker (the control channel) and fds 1 and 2
pipes that the worker reads (the cell's stdout and stderr, at the file-descriptor
level, so output of C extensions and child processes is captured too).

Protocol on the control channel: one JSON object per line each way.
  worker -> kernel  {"id": N, "op": "exec", "code": "...", "clear": bool, "marker": "...",
                     "language": "python", "limit": BYTES}
                    {"id": N, "op": "env", "env": {"NAME": "VALUE", ...}}
                    {"id": N, "op": "checkpoint", "limit": BYTES}
                    {"id": N, "op": "restore", "state": "base64"}
  kernel -> worker  {"id": N, "ok": bool, "value": "repr or null", "images": ["base64", ...],
                     "value_bytes": N, "images_left_out": N, "exit": N}
                    {"id": N, "ok": true, "state": "base64"}   (checkpoint)
                    {"id": N, "ok": true, "restored": [name, ...], "modules": [[name, module]],
                     "not_moved": [[name, why]], "failed": [[name, why]]}   (restore)
                    {"id": 0, "ready": true} once, after start-up (and preloading)
After a cell, the kernel writes the marker to fd 1 and to fd 2: everything the worker
read on a stream before the marker belongs to that cell. The value is cut to `limit`
bytes of UTF-8 (value_bytes then gives its whole size) and figures stop at `limit` bytes
of PNG (images_left_out counts the others): the worker refuses a reply line far larger
than that, and kills a kernel that sends one.

checkpoint and restore move a session's variables when its worker drains
(docs/fleet.md): checkpoint serialises the globals it can (dill), records globals bound
to modules by the module's name, and lists what it cannot move with why; its state is
at most `limit` bytes (the worker refuses a larger line). The worker stores the state
without looking into it and hands it back, on another worker, to a fresh kernel of the
same session, whose restore answers with what came back. Unpickling runs code: that is
the session's own code, run in the session's own sandbox, as its cells are.

Everything here runs as sandboxed code: the worker trusts nothing it says.
"""

import ast
import base64
import builtins
import ctypes
import importlib
import importlib.machinery
import io
import json
import linecache
import os
import pickle
import signal
import site
import socket
import sys
import threading
import traceback
import types

# Bounds of the lists of names a checkpoint keeps: they end up in a note to the client.
_MAX_LISTED = 200
_MAX_NAME = 100
_MAX_WHY = 200
# What the lists and the envelope of a state may take besides the variables' own bytes.
_STATE_OVERHEAD = 64 << 10
# Cells whose source stays in linecache for tracebacks: functions defined in a cell
# are called from later ones, so not only the last; the oldest go first.
_CELLS_KEPT = 1000


def _see_user_site():
    """Makes packages installed since the kernel started (`pip install`, which goes to
    the user site below HOME, i.e. the workspace) importable in the next cell, as they
    would be in a new interpreter. Python puts the user site on the path only at
    start-up and only if it exists then, and the import system caches what it found
    missing; a pool kernel starts before its session has anything installed."""
    if not site.ENABLE_USER_SITE:
        return
    path = site.getusersitepackages()
    if not os.path.isdir(path):
        return
    if path not in sys.path:
        before = list(sys.path)
        site.addsitedir(path)  # also runs the .pth files pip may have written
        added = [p for p in sys.path if p not in before]
        # Where a new interpreter has it: ahead of the system's packages, so that a
        # package the session installed wins over the runtime's copy not yet imported.
        rest = [p for p in sys.path if p not in added]
        at = next((i for i, p in enumerate(rest) if p.endswith(("dist-packages", "site-packages"))),
                  len(rest))
        sys.path[:] = rest[:at] + added + rest[at:]
    importlib.invalidate_caches()


class _UserSiteFinder:
    """The last finder on sys.meta_path: an import that nothing else found looks again
    once the user site exists and is not on the path yet, so that a package installed
    during a cell (`subprocess.run([sys.executable, "-m", "pip", "install", ...])`,
    then `import` in the same cell) imports as it would in the next one. Later installs
    need no help: the user site's directory is then on the path, and the path finder
    sees its new entries by its modification time. Cheap on the misses libraries probe
    (optional dependencies): one `in` test, or one stat while the user site is absent."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is not None or not site.ENABLE_USER_SITE:
            return None  # a submodule: its package's __path__ decides
        user = site.getusersitepackages()
        if user in sys.path or not os.path.isdir(user):
            return None
        _see_user_site()
        return importlib.machinery.PathFinder.find_spec(name, None, target)


def _fresh_namespace():
    """The globals of cells: those of a fresh module registered as __main__, as in
    Jupyter, so that doctest.testmod(), pickling classes defined in cells and
    `if __name__ == "__main__"` behave as in a script."""
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    return main.__dict__


def _cut(text, limit):
    """text held to limit bytes of UTF-8, cut at a character boundary, and its whole
    size in bytes when it was cut (else 0)."""
    if text is None:
        return None, 0
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return text, 0
    return data[:limit].decode("utf-8", "ignore"), len(data)


def _unmovable(value):
    """Why a value cannot move to another process, for kinds that pickling would get
    wrong rather than refuse (dill reopens files by name, at a position that may no
    longer mean anything), or None."""
    if isinstance(value, io.IOBase):
        return "an open file: open it again (files in /workspace were moved)"
    if isinstance(value, socket.socket):
        return "a socket"
    if isinstance(value, threading.Thread):
        return "a thread"
    return None


def _why(error):
    return _short(f"{type(error).__name__}: {error}", _MAX_WHY)


def _short(text, limit):
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pickler_class(dill):
    class Pickler(dill.Pickler):
        """dill's pickler, refusing what _unmovable() names wherever it is nested."""

        def persistent_id(self, obj):
            why = _unmovable(obj)
            if why is not None:
                raise TypeError(f"holds {why}")
            return None

    return Pickler


def _dumps(pickler, value):
    buffer = io.BytesIO()
    pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def checkpoint_state(namespace, limit):
    """The namespace's state (bytes, at most limit), for restore_state() in a fresh
    kernel. Globals bound to modules are kept as the module's name; the others are
    pickled together (objects shared between names stay shared), and when that fails or
    is too large, one by one, leaving out those that cannot be pickled and the largest
    until the rest fits."""
    import dill

    pickler = _pickler_class(dill)
    values, modules, not_moved = {}, {}, []
    for name, value in list(namespace.items()):
        if name.startswith("__") and name.endswith("__"):
            continue  # __builtins__, __name__ and such: every namespace has its own
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        why = _unmovable(value)
        if why is not None:
            not_moved.append([name, why])
        else:
            values[name] = value
    budget = max(limit - _STATE_OVERHEAD, 0)
    blob = None
    try:
        blob = _dumps(pickler, values)
    except Exception:  # noqa: BLE001 - user objects raise anything from __reduce__
        pass
    while values and (blob is None or len(blob) > budget):
        sizes = {}
        for name, value in values.items():
            try:
                sizes[name] = len(_dumps(pickler, value))
            except Exception as e:  # noqa: BLE001
                not_moved.append([name, _why(e)])
        # Smallest first, so that as many names as possible move.
        kept, total = {}, 0
        for name in sorted(sizes, key=sizes.get):
            if total + sizes[name] <= budget:
                kept[name] = values[name]
                total += sizes[name]
            else:
                not_moved.append([name, f"too large to move: {sizes[name]} bytes pickled"])
        if len(kept) == len(values) and blob is not None:
            # Each fits, together they do not (the names themselves): drop the largest.
            largest = max(kept, key=sizes.get)
            not_moved.append([largest, f"too large to move: {sizes[largest]} bytes pickled"])
            del kept[largest]
        values = kept
        try:
            blob = _dumps(pickler, values)
        except Exception:  # noqa: BLE001 - pickled alone, failed together: move none
            for name in values:
                not_moved.append([name, "could not be pickled with the other variables"])
            values, blob = {}, _dumps(pickler, {})
    if blob is None:
        blob = _dumps(pickler, {})
    state = pickle.dumps(
        {
            "version": 1,
            "values": blob,
            "modules": modules,  # every one: names of modules are small
            "not_moved": [[_short(n, _MAX_NAME), w] for n, w in not_moved[:_MAX_LISTED]],
        },
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    if len(state) > limit:
        raise ValueError(f"the state is {len(state)} bytes, over the limit of {limit}")
    return state


def restore_state(namespace, state):
    """Puts a checkpoint_state() back into namespace (the __main__ of a fresh kernel:
    functions pickled from __main__ then see it as their globals). Returns the reply's
    lists: what was restored, which modules were imported again, what the checkpoint
    could not move, and what failed here."""
    import dill

    saved = pickle.loads(state)
    restored, modules, failed = [], [], []
    for name, module in saved.get("modules", {}).items():
        try:
            namespace[name] = importlib.import_module(module)
            modules.append([name, module])
        except Exception as e:  # noqa: BLE001 - a module missing here, say
            failed.append([name, f"import {module}: {_why(e)}"])
    try:
        values = dill.loads(saved["values"])
    except Exception as e:  # noqa: BLE001
        failed.append(["(the variables)", _why(e)])
        values = {}
    for name, value in values.items():
        namespace[name] = value
        restored.append(name)
    return {
        "restored": [_short(n, _MAX_NAME) for n in restored[:_MAX_LISTED]],
        "modules": modules[:_MAX_LISTED],
        "not_moved": saved.get("not_moved", [])[:_MAX_LISTED],
        "failed": failed[:_MAX_LISTED],
    }


class Kernel:
    def __init__(self, control):
        self.control = control
        self.reader = control.makefile("rb")
        self.namespace = _fresh_namespace()
        self.cell = 0
        try:
            self.libc = ctypes.CDLL(None)
        except OSError:
            self.libc = None

    def send(self, message):
        self.control.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def move(self, request):
        """checkpoint or restore (see the module's docstring); their output, if the
        objects' own methods print, goes to the pipes and counts as the next cell's."""
        reply = {"id": request.get("id"), "ok": True}
        try:
            if request.get("op") == "checkpoint":
                limit = request.get("limit")
                limit = limit if isinstance(limit, int) and limit > 0 else 1 << 20
                state = checkpoint_state(self.namespace, limit)
                reply["state"] = base64.b64encode(state).decode("ascii")
            else:
                state = base64.b64decode(request.get("state", ""), validate=True)
                reply.update(restore_state(self.namespace, state))
        except BaseException as e:  # noqa: B036 - an interrupt too: answer, then go on
            reply = {"id": request.get("id"), "ok": False, "value": _why(e)}
        self.flush_all()
        return reply

    def flush_all(self):
        """Python's buffers, then C stdio's (output of C extensions)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a cell may have replaced or closed them
                pass
        if self.libc is not None:
            try:
                self.libc.fflush(None)
            except Exception:
                pass

    def figures(self, limit):
        """Every matplotlib figure the cell left open, as PNG, then closed: those that
        fit in limit bytes together, and how many did not."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return [], 0
        images, used, left_out = [], 0, 0
        try:
            for number in pyplot.get_fignums():
                buffer = io.BytesIO()
                pyplot.figure(number).savefig(buffer, format="png", bbox_inches="tight")
                png = buffer.getvalue()
                if used + len(png) > limit:
                    left_out += 1
                    continue
                used += len(png)
                images.append(base64.b64encode(png).decode("ascii"))
        except Exception:
            traceback.print_exc()
        finally:
            try:
                pyplot.close("all")
            except Exception:
                pass
        return images, left_out

    def run_cell(self, code):
        """Runs code like a notebook cell: statements, then the value of a final
        expression. Returns the repr of that value, or None when the cell does not end
        in an expression or its value is None; raises whatever the cell raised (execute()
        turns that into ok false)."""
        self.cell += 1
        filename = f"<cell-{self.cell}>"
        # The source under the cell's name, so that tracebacks show its lines as they
        # do a file's. No modification time: linecache.checkcache() keeps the entry.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        linecache.cache.pop(f"<cell-{self.cell - _CELLS_KEPT}>", None)
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), self.namespace)
        if last is None:
            return None
        value = eval(compile(last, filename, "eval"), self.namespace)
        if value is None:
            return None
        self.namespace["_"] = value
        return repr(value)

    def execute(self, request):
        if request.get("clear"):
            self.namespace = _fresh_namespace()
        _see_user_site()
        ok, value, status = True, None, None
        try:
            value = self.run_cell(request.get("code", ""))
        except SystemExit as e:
            # exit() in a cell ends the cell, not the kernel; its status is the
            # result's exit code, as a script's would be (1 for a message).
            ok = e.code in (None, 0)
            if not ok:
                status = e.code if isinstance(e.code, int) and 0 < e.code < 256 else 1
                print(f"SystemExit: {e.code}", file=sys.stderr)
        except BaseException:  # noqa: B036 - KeyboardInterrupt included, on purpose
            ok = False
            kind, error, tb = sys.exc_info()
            # Drop the kernel's own frames: the traceback starts in the cell.
            while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
                tb = tb.tb_next
            sys.stderr.write("".join(traceback.format_exception(kind, error, tb)))
        limit = request.get("limit")
        limit = limit if isinstance(limit, int) and limit > 0 else 1 << 20
        images, images_left_out = self.figures(limit)
        value, value_bytes = _cut(value, limit)
        self.flush_all()
        marker = request.get("marker", "").encode()
        for fd in (1, 2) if marker else ():
            try:
                os.write(fd, marker)
            except OSError:
                pass  # the cell closed or replaced the descriptor: its output ends here
        reply = {"id": request.get("id"), "ok": ok, "value": value, "images": images}
        if value_bytes:
            reply["value_bytes"] = value_bytes
        if images_left_out:
            reply["images_left_out"] = images_left_out
        if status is not None:
            reply["exit"] = status
        return reply

    def serve(self):
        self.send({"id": 0, "ready": True})
        while True:
            try:
                line = self.reader.readline()
            except KeyboardInterrupt:
                continue  # an interrupt that arrived between cells
            if not line:
                return
            try:
                request = json.loads(line)
            except ValueError:
                continue
            if request.get("op") == "exec":
                reply = self.execute(request)
            elif request.get("op") == "env":
                os.environ.update({str(k): str(v) for k, v in request.get("env", {}).items()})
                reply = {"id": request.get("id"), "ok": True}
            elif request.get("op") in ("checkpoint", "restore"):
                reply = self.move(request)
            else:
                reply = {"id": request.get("id"), "ok": False, "value": "unknown op"}
            try:
                self.send(reply)
            except KeyboardInterrupt:
                self.send(reply)


def preload(modules):
    """What a data-science session imports first, done before the session exists, then
    the modules of the session's code interpreter. A module that fails to import is
    reported on stderr (the first cell's, as the worker reads it) and skipped: a
    session without it beats no session."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except BaseException as e:  # noqa: BLE001 - whatever the import raised
        print(f"codeq: preloading matplotlib failed: {e!r}", file=sys.stderr)
    for name in ["matplotlib.pyplot", "numpy", "pandas"] + modules:
        try:
            importlib.import_module(name)
        except BaseException as e:  # noqa: BLE001 - SystemExit, KeyboardInterrupt too
            print(f"codeq: preloading {name} failed: {e!r}", file=sys.stderr)


def main():
    want_preload = "--preload" in sys.argv[1:]
    modules = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--preload-module=")]
    serve(modules if want_preload else None)


def serve(preload_modules=None):
    """Serves the worker on the control channel, fd 0, until it closes: a kernel started
    by the worker (preloading first when given modules, [] for the usual ones only), or
    forked by the zygote (codeq_zygote.py), whose modules are imported already."""
    # The control channel arrived as fd 0; user code gets an empty stdin instead.
    control = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(0, "r", closefd=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Cells see what a script in the workspace would: argv [""], the working
    # directory first on the import path (not this file's directory).
    sys.argv = [""]
    sys.path[0] = ""
    sys.meta_path.append(_UserSiteFinder)
    if preload_modules is not None:
        preload(preload_modules)
    Kernel(control).serve()


if __name__ == "__main__":
    main()
