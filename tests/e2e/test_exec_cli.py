"""`codeq exec`: code from -c, a FILE (the extension picks the language) or standard
input; output printed live with the final value after it; --json; --out (images and
workspace files, subdirectories included); --file; exit statuses 0, 1, 2 and 125;
--timeout; and Ctrl-C / SIGTERM stopping a run promptly without leaving sandbox
processes or cgroups behind.

Every run's stderr is checked for sanitizer reports, and after every test the host is
checked for what the test's codeq processes left behind.
"""

import base64
import hashlib
import json
import os
import re
import select
import shutil
import signal
import stat
import struct
import subprocess
import time
import zlib

import pytest

from mcp_client import CODEQ, HostWatch, assert_no_sanitizer_reports, processes_of, wait_until

RUN_TIMEOUT = 120  # hang guard for one run


@pytest.fixture(autouse=True)
def host():
    watch = HostWatch()
    yield watch
    watch.assert_clean()


class Exec:
    def __init__(self, returncode, stdout, stderr, pid):
        self.returncode = returncode
        self.stdout_bytes = stdout
        self.stdout = stdout.decode("utf-8", "replace")
        self.stderr = stderr.decode("utf-8", "replace")
        self.pid = pid

    def __repr__(self):
        return (f"<codeq exec: status {self.returncode}, stdout {self.stdout[:2000]!r}, "
                f"stderr {self.stderr[:2000]!r}>")


def codeq_exec(host, *args, input=None, env=None, cwd=None, timeout=RUN_TIMEOUT):
    proc = subprocess.Popen([CODEQ, "exec", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    host.pids.append(proc.pid)
    try:
        out, err = proc.communicate(input=input if input is not None else b"", timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"codeq exec {args!r} did not finish within {timeout} s: {err[-2000:]!r}")
    r = Exec(proc.returncode, out, err, proc.pid)
    assert_no_sanitizer_reports(r.stderr, "codeq exec")
    return r


def check_png(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    pos, kinds = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(data[pos + 4:pos + 8 + length]) == crc, kind
        kinds.append(kind)
        pos += 12 + length
    assert pos == len(data) and kinds[0] == b"IHDR" and kinds[-1] == b"IEND", kinds
    return struct.unpack(">II", data[16:24])


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


def tree(root):
    """{relative path: bytes} of every regular file below root; links listed as such."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            else:
                with open(p, "rb") as f:
                    out[rel] = f.read()
    return out


# ----------------------------------------------------------------------------------
# Help, usage errors, internal failure


def test_help(host):
    r = codeq_exec(host, "--help")
    assert r.returncode == 0 and r.stderr == "", r
    assert r.stdout.startswith("usage: codeq exec [--lang python|javascript|typescript]")
    for text in ("-c CODE", "--lang LANG", "--timeout SECONDS", "--json", "--out DIR",
                 "--out-force", "--out-dotfiles",
                 "exit status: 0 on success; 1 when the code raised an exception",
                 "N when it called sys.exit(N)", "124 when it ran out of time",
                 "2 for bad", "125 when codeq itself failed"):
        assert text in r.stdout, text


@pytest.mark.parametrize("args, text", [
    ([], "give exactly one of -c CODE, FILE or -"),
    (["-c", "1", "extra.py"], "give exactly one of -c CODE, FILE or -"),
    (["a.py", "b.py"], "give exactly one of -c CODE, FILE or -"),
    (["--bogus", "-c", "1"], "unknown or incomplete option '--bogus'"),
    (["-c"], "unknown or incomplete option '-c'"),
    (["--lang", "cobol", "-c", "1"], "--lang: 'cobol' is not python, javascript or typescript"),
    (["--timeout", "soon", "-c", "1"], "--timeout: "),
    (["--timeout", "-1", "-c", "1"], "--timeout: "),
    (["/nonexistent/code.py"], "cannot open '/nonexistent/code.py'"),
    (["--out", "/proc/codeq-e2e/out", "-c", "1"], "--out: cannot create '/proc/codeq-e2e/out'"),
    (["--out-force", "-c", "1"], "--out-force and --out-dotfiles go with --out DIR"),
])
def test_usage_errors_exit_2(host, args, text):
    r = codeq_exec(host, *args)
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert text in r.stderr and "Run 'codeq exec --help' for usage." in r.stderr, r


def test_code_with_a_nul_byte_is_a_usage_error(host, tmp_path):
    path = write(str(tmp_path / "nul.py"), b"print(1)\0print(2)\n")
    r = codeq_exec(host, path)
    assert r.returncode == 2 and "the code contains a NUL byte" in r.stderr, r


def test_internal_failure_exits_125(host):
    """codeq itself failing (its runtimes missing) is 125, with the reason."""
    env = dict(os.environ, CODEQ_RUNTIMES_DIR="/nonexistent/codeq-runtimes")
    r = codeq_exec(host, "-c", "1", env=env)
    assert r.returncode == 125, r
    assert "runtimes directory /nonexistent/codeq-runtimes has no codeq kernels" in r.stderr, r
    assert r.stdout == ""


# ----------------------------------------------------------------------------------
# Code from -c, files and stdin


def test_dash_c_prints_output_then_the_value(host):
    """stdout and stderr apart; stdout printed before the final value."""
    r = codeq_exec(host, "-c", "import sys\nprint('first')\nprint('to stderr', file=sys.stderr)\n"
                               "print('second')\n6 * 7")
    assert r.returncode == 0, r
    assert r.stdout == "first\nsecond\n42\n"
    assert r.stderr == "to stderr\n"


def test_no_value_and_empty_code(host):
    r = codeq_exec(host, "-c", "x = 1")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
    r = codeq_exec(host, "-c", "")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r


@pytest.mark.parametrize("name, code, out", [
    ("prog.py", "import sys\nprint('py', sys.version_info[0])\n[1, 2]", "py 3\n[1, 2]\n"),
    ("prog.js", "console.log('js', typeof process.versions.node);\n[1, 2]",
     "js string\n[ 1, 2 ]\n"),
    ("prog.mjs", "import { join } from 'path';\nconsole.log(join('a', 'b'))", "a/b\n"),
    ("prog.ts", "interface P { x: number }\nconst p: P = { x: 41 };\nconsole.log('ts');\np.x + 1",
     "ts\n42\n"),
    ("prog.txt", "print('python by default')", "python by default\n"),
])
def test_file_extension_picks_the_language(host, tmp_path, name, code, out):
    r = codeq_exec(host, write(str(tmp_path / name), code))
    assert r.returncode == 0, r
    assert r.stdout == out, r


def test_lang_overrides_the_extension(host, tmp_path):
    path = write(str(tmp_path / "code.py"), "const v: number = 5; v * 2")
    r = codeq_exec(host, "--lang", "typescript", path)
    assert (r.returncode, r.stdout) == (0, "10\n"), r
    r = codeq_exec(host, "--lang", "javascript", "-c", "[typeof require, 2 ** 10]")
    assert (r.returncode, r.stdout) == (0, "[ 'function', 1024 ]\n"), r


def test_code_from_stdin(host):
    r = codeq_exec(host, "-", input=b"import sys\nprint(sys.stdin.read() == '')\n'from stdin'")
    assert r.returncode == 0, r
    # The code came from stdin; the code's own stdin is empty.
    assert r.stdout == "True\n'from stdin'\n"
    r = codeq_exec(host, "--lang", "javascript", "-", input=b"console.log('js from stdin')")
    assert (r.returncode, r.stdout) == (0, "js from stdin\n"), r


def test_file_option_uploads_host_files(host, tmp_path):
    """--file copies host files into the workspace (under their names) first."""
    data = write(str(tmp_path / "in" / "data.csv"), "a,b\n1,2\n3,4\n")
    blob = write(str(tmp_path / "in" / "raw.bin"), bytes(range(256)))
    r = codeq_exec(host, "--file", data, "--file", blob, "-c",
                   "import pandas as pd, hashlib\n"
                   "print(pd.read_csv('data.csv')['b'].sum())\n"
                   "hashlib.sha256(open('raw.bin', 'rb').read()).hexdigest()")
    assert r.returncode == 0, r
    assert r.stdout == f"6\n'{hashlib.sha256(bytes(range(256))).hexdigest()}'\n"
    r = codeq_exec(host, "--file", str(tmp_path / "missing.csv"), "-c", "1")
    assert r.returncode == 2 and "--file: cannot read" in r.stderr, r


# ----------------------------------------------------------------------------------
# Failures and timeouts


def test_exception_exits_1(host):
    r = codeq_exec(host, "-c", "print('before')\ndef f():\n    raise KeyError('k')\nf()")
    assert r.returncode == 1, r
    assert r.stdout == "before\n"
    assert r.stderr.startswith("Traceback (most recent call last):\n"), r
    assert 'line 4, in <module>' in r.stderr and "line 3, in f" in r.stderr
    assert r.stderr.endswith("KeyError: 'k'\n"), r
    # The offending lines of the cell are shown under their frames.
    assert "\n    f()\n" in r.stderr and "\n    raise KeyError('k')\n" in r.stderr, r
    r = codeq_exec(host, "--lang", "javascript", "-c", "null.x")
    assert r.returncode == 1 and "TypeError" in r.stderr, r


def test_exit_status_is_the_one_the_code_asked_for(host):
    """sys.exit(n) and process.exit(n) make codeq exec exit n, as a script would;
    sys.exit(0) and sys.exit() are success, sys.exit('message') is 1."""
    r = codeq_exec(host, "-c", "import sys\nsys.exit(4)")
    assert r.returncode == 4 and r.stderr == "SystemExit: 4\n", r
    r = codeq_exec(host, "-c", "import sys\nprint('bye')\nsys.exit(0)")
    assert (r.returncode, r.stdout, r.stderr) == (0, "bye\n", ""), r
    r = codeq_exec(host, "-c", "raise SystemExit('went wrong')")
    assert r.returncode == 1 and r.stderr == "SystemExit: went wrong\n", r
    r = codeq_exec(host, "--json", "-c", "import sys\nsys.exit(42)")
    assert r.returncode == 42, r
    assert json.loads(r.stdout)["structuredContent"]["exitCode"] == 42, r.stdout
    for lang in ("javascript", "typescript"):
        r = codeq_exec(host, "--lang", lang, "-c", "console.log('js'); process.exit(3); 'not here'")
        assert (r.returncode, r.stdout, r.stderr) == (3, "js\n", "process.exit(3)\n"), r
    r = codeq_exec(host, "--lang", "javascript", "-c", "process.exit(0)")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r


def test_javascript_errors_show_the_cell_line(host):
    r = codeq_exec(host, "--lang", "javascript", "-c",
                   "const a = 1;\nfunction f(o) {\n  return o.x.y;\n}\nf({});")
    assert r.returncode == 1, r
    assert re.match(r"cell-\d+\.js:3\n  return o\.x\.y;\n {13}\^\n\nTypeError: ", r.stderr), r
    assert re.search(r"at f \(cell-\d+\.js:3:14\)", r.stderr), r


def test_large_output_streams_its_start_then_its_end(host):
    """Live output past the limit (1 MiB per stream): its first MiB as it comes, then,
    when the code ends, a note of what was cut and the kept end: THE END is seen."""
    line = "0123456789" * 9 + "abcdefghi\n"
    r = codeq_exec(host, "-c", f"print({line!r} * 50000 + 'THE END')")
    assert r.returncode == 0, r.stderr
    data = line * 50000 + "THE END\n"
    tail = 1 << 19
    assert r.stdout == (data[:1 << 20] + f"\n[codeq: output too long: "
                        f"{len(data) - (1 << 20) - tail} bytes cut here; the last {tail} follow]\n"
                        + data[-tail:]), r.stdout[(1 << 20) - 100:(1 << 20) + 200]


def test_timeout_interrupts(host):
    r = codeq_exec(host, "--timeout", "1", "-c", "print('started')\nwhile True:\n    pass")
    assert r.returncode == 124, r
    assert r.stdout == "started\n"
    assert "KeyboardInterrupt" in r.stderr, r
    assert r.stderr.endswith("codeq: timed out after 1 s; the cell was interrupted "
                             "(variables are kept)\n"), r


def test_timeout_kills_a_cell_that_ignores_the_interrupt(host):
    r = codeq_exec(host, "--timeout", "1", "-c",
                   "import time\nwhile True:\n    try:\n        time.sleep(5)\n"
                   "    except KeyboardInterrupt:\n        pass")
    assert r.returncode == 124, r
    assert "the Python kernel did not stop within 2 s of the interrupt and was restarted" in \
        r.stderr, r


def test_json_output(host):
    r = codeq_exec(host, "--json", "-c", "print('out')\n'val'")
    assert r.returncode == 0, r
    doc = json.loads(r.stdout)
    assert set(doc) == {"content", "structuredContent", "isError"}, doc
    assert doc["isError"] is False
    assert doc["content"] == [{"type": "text", "text": "out\n"}, {"type": "text", "text": "'val'"}]
    sc = doc["structuredContent"]
    assert set(sc) == {"stdout", "stderr", "exitCode", "executionTime", "cpuTime", "peakMemory"}
    assert (sc["stdout"], sc["stderr"], sc["exitCode"]) == ("out\n", "", 0)
    assert isinstance(sc["executionTime"], float) and sc["executionTime"] >= 0
    # Milliseconds to the microsecond, as written: never 8000.7420000000002.
    assert re.search(r'"executionTime": \d+\.\d{1,3},?\n', r.stdout), r.stdout
    assert r.stderr == ""  # nothing printed live besides the JSON

    r = codeq_exec(host, "--json", "--timeout", "1", "-c", "while True: pass")
    assert r.returncode == 124, r
    doc = json.loads(r.stdout)
    assert doc["isError"] is True and doc["structuredContent"]["exitCode"] == 1
    assert doc["_codeq_error"] == {"code": "TIMED_OUT",
                                   "message": "timed out; the cell was interrupted"}
    assert "KeyboardInterrupt" in doc["structuredContent"]["stderr"]

    r = codeq_exec(host, "--json", "-c", "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])")
    doc = json.loads(r.stdout)
    imgs = [b for b in doc["content"] if b["type"] == "image"]
    assert len(imgs) == 1 and imgs[0]["mimeType"] == "image/png", doc["content"]
    check_png(base64.b64decode(imgs[0]["data"]))


# ----------------------------------------------------------------------------------
# --out


def test_out_saves_images_and_workspace_files(host, tmp_path):
    """--out DIR gets image-N.png for each figure and every regular file of the
    workspace, subdirectories included, byte for byte; links and FIFOs are not
    copied (nor followed)."""
    out = tmp_path / "out"
    r = codeq_exec(host, "--out", str(out), "-c",
                   "import os, matplotlib.pyplot as plt\n"
                   "plt.figure(figsize=(3, 2)); plt.plot([1, 2])\n"
                   "plt.figure(figsize=(2, 2)); plt.plot([2, 1])\n"
                   "open('report.txt', 'w').write('the report\\n')\n"
                   "os.makedirs('sub/deeper')\n"
                   "open('sub/deeper/data.bin', 'wb').write(bytes(range(256)) * 4)\n"
                   "open('sub/empty.txt', 'w').close()\n"
                   "os.symlink('/etc/passwd', 'link')\n"
                   "os.symlink('sub', 'dirlink')\n"
                   "os.mkfifo('fifo')\n"
                   "print('done')")
    assert r.returncode == 0, r
    assert r.stdout == "done\n"
    files = tree(str(out))
    assert set(files) == {"image-1.png", "image-2.png", "report.txt", "sub/deeper/data.bin",
                          "sub/empty.txt"}, sorted(files)
    assert check_png(files["image-1.png"])[0] > check_png(files["image-2.png"])[0]
    assert files["report.txt"] == b"the report\n"
    assert files["sub/deeper/data.bin"] == bytes(range(256)) * 4
    assert files["sub/empty.txt"] == b""


def test_out_into_an_existing_directory_and_with_an_error(host, tmp_path):
    """--out --out-force into a non-empty directory adds to it; the files are saved
    even when the code fails (exit 1)."""
    out = tmp_path / "existing"
    write(str(out / "keep.txt"), "mine")
    r = codeq_exec(host, "--out", str(out), "--out-force", "-c",
                   "open('partial.txt', 'w').write('p')\n1/0")
    assert r.returncode == 1, r
    assert tree(str(out)) == {"keep.txt": b"mine", "partial.txt": b"p"}


def test_out_saves_names_that_contain_two_dots(host, tmp_path):
    """A workspace file whose name merely contains '..' (v1..2.csv) is an ordinary
    name and is saved like any other; the run succeeds."""
    out = tmp_path / "out"
    r = codeq_exec(host, "--out", str(out), "-c", "open('v1..2.csv', 'w').write('a,b\\n')")
    assert r.returncode == 0, r
    assert tree(str(out)) == {"v1..2.csv": b"a,b\n"}


def snapshot(root):
    """{relative path: (kind, mode, content)} of everything below root, links unfollowed."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            if os.path.islink(p):
                content = os.readlink(p)
            elif os.path.isdir(p):
                content = None
            else:
                with open(p, "rb") as f:
                    content = f.read()
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), st.st_mode, content)
    return out


# What a cell that wants the user's shell writes into a project directory: every file
# here runs as root at the next `git status`, shell, cd or make.
PLANT = ("import os\n"
         "os.makedirs('.git', exist_ok=True)\n"
         "open('.git/config', 'w').write('[core]\\n\\tfsmonitor = \"id > {marker}\"\\n')\n"
         "open('.bashrc', 'w').write('id > {marker}\\n')\n"
         "open('.\\x1b]0;owned\\x07', 'w').write('a name for the terminal')\n"
         "open('Makefile', 'w').write('all:\\n\\tid > {marker}\\n')\n"
         "open('result.txt', 'w').write('the result')\n")


def git_work_tree(path):
    """A git work tree with a Makefile of its own (a .git directory made by hand when
    git is missing). The hook is never run: the test only reads the files."""
    path.mkdir()
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(path)], check=True)
    else:
        write(str(path / ".git" / "config"), "[core]\n\trepositoryformatversion = 0\n")
    write(str(path / "Makefile"), "all:\n\techo mine\n")
    return snapshot(str(path))


def test_out_refuses_a_non_empty_directory(host, tmp_path):
    """--out into a git work tree (not empty) is a usage error before any code runs;
    nothing in it changes."""
    repo = tmp_path / "repo"
    before = git_work_tree(repo)
    marker = tmp_path / "pwned"
    r = codeq_exec(host, "--out", str(repo), "-c", PLANT.format(marker=marker))
    assert r.returncode == 2, r
    assert f"--out: '{repo}' is not empty" in r.stderr and "--out-force" in r.stderr, r
    assert snapshot(str(repo)) == before
    assert not marker.exists()


def test_out_force_never_writes_dot_paths_nor_replaces_files(host, tmp_path):
    """--out-force into a git work tree: .git/config and .bashrc are not written (the
    note lists them, escaped for the terminal), the existing Makefile is kept, only
    the new result.txt is added. With --out-dotfiles too, .git/config is still not
    replaced."""
    repo = tmp_path / "repo"
    before = git_work_tree(repo)
    marker = tmp_path / "pwned"
    r = codeq_exec(host, "--out", str(repo), "--out-force", "-c", PLANT.format(marker=marker))
    assert r.returncode == 0, r
    after = snapshot(str(repo))
    assert set(after) - set(before) == {"result.txt"}, sorted(after)
    assert {k: v for k, v in after.items() if k != "result.txt"} == before
    assert after["result.txt"][2] == b"the result"
    assert ("codeq: --out: skipped 3 dot-path(s) (.\\x1b]0;owned\\x07, .bashrc, .git/); "
            "--out-dotfiles saves them\n") in r.stderr, r
    assert "kept 1 existing entry in place of what the code wrote (Makefile)" in r.stderr, r
    assert "\x1b" not in r.stderr, r

    r = codeq_exec(host, "--out", str(repo), "--out-force", "--out-dotfiles", "-c",
                   PLANT.format(marker=marker))
    assert r.returncode == 0, r
    after = snapshot(str(repo))
    assert after[".git/config"] == before[".git/config"]
    assert after["Makefile"] == before["Makefile"]
    assert after[".bashrc"][2] == f"id > {marker}\n".encode()  # asked for: new dot-files
    assert after[".bashrc"][1] & 0o777 == 0o644
    assert "kept 3 existing entries" in r.stderr and ".git/config" in r.stderr, r
    assert not marker.exists()


def test_out_never_follows_a_symlink(host, tmp_path):
    """Links the code made in its workspace are neither saved nor followed; links
    planted in DIR (to a directory, to a file, dangling) are not written through with
    --out-force; DIR itself being a symlink is refused."""
    victim = tmp_path / "victim"
    write(str(victim / "target.txt"), "precious")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "sub")
    os.symlink(victim / "target.txt", out / "report.txt")
    os.symlink(victim / "created.txt", out / "new.txt")
    code = ("import os\n"
            "os.symlink('/etc', 'etcdir')\n"
            "os.symlink('/etc/passwd', 'pw')\n"
            "os.makedirs('sub')\n"
            "open('sub/target.txt', 'w').write('through a dir link')\n"
            "open('report.txt', 'w').write('through a file link')\n"
            "open('new.txt', 'w').write('through a dangling link')\n"
            "open('fine.txt', 'w').write('fine')\n")
    r = codeq_exec(host, "--out", str(out), "--out-force", "-c", code)
    assert r.returncode == 0, r
    assert snapshot(str(victim)) == {"target.txt": (stat.S_IFREG, os.stat(
        victim / "target.txt").st_mode, b"precious")}
    assert tree(str(out)) == {"sub": ("link", str(victim)),
                              "report.txt": ("link", str(victim / "target.txt")),
                              "new.txt": ("link", str(victim / "created.txt")),
                              "fine.txt": b"fine"}
    assert "skipped 2 link(s) or special file(s) (etcdir, pw)" in r.stderr, r
    assert "kept 3 existing entries" in r.stderr, r

    link = tmp_path / "link-to-victim"
    os.symlink(victim, link)
    r = codeq_exec(host, "--out", str(link), "--out-force", "-c", code)
    assert r.returncode == 2 and f"--out: '{link}' is a symbolic link" in r.stderr, r
    assert sorted(os.listdir(victim)) == ["target.txt"]


def test_out_caps_the_bytes_and_keeps_holes(host, tmp_path):
    """Sparse files cost nothing in the workspace: twelve of 100 MiB - 1 would be 1.2 GB
    on the host. At most the workspace size (256M) is saved, the rest is refused with
    a note, and zero blocks stay holes, so disk use follows the real data."""
    out = tmp_path / "out"
    mixed = b"\0" * 8192 + b"data" + b"\0" * 10000 + b"end"
    r = codeq_exec(host, "--out", str(out), "-c",
                   "import os\n"
                   "for i in range(12):\n"
                   "    open(f'big-{i:02}', 'w').close()\n"
                   "    os.truncate(f'big-{i:02}', (100 << 20) - 1)\n"
                   f"open('mixed', 'wb').write({mixed!r})\n")
    assert r.returncode == 0, r
    sizes = {n: os.lstat(out / n).st_size for n in os.listdir(out)}
    assert sum(sizes.values()) <= 256 << 20, sizes
    assert sizes == {"big-00": (100 << 20) - 1, "big-01": (100 << 20) - 1,
                     "mixed": len(mixed)}, sizes
    assert (out / "mixed").read_bytes() == mixed
    used = sum(os.lstat(out / n).st_blocks * 512 for n in sizes)
    assert used < 1 << 20, used
    assert ("codeq: --out: skipped 10 file(s) past the limit of 256M saved (big-02, big-03, "
            in r.stderr), r


def test_out_new_directory_is_private_and_files_are_not_executable(host, tmp_path):
    """A new DIR is made 0700; saved files are 0644 even when executable in the
    workspace; an existing empty DIR is accepted and keeps its mode."""
    out = tmp_path / "out"
    code = "import os\nopen('run.sh', 'w').write('echo hi')\nos.chmod('run.sh', 0o4755)"
    r = codeq_exec(host, "--out", str(out), "-c", code)
    assert r.returncode == 0 and r.stderr == "", r
    assert os.stat(out).st_mode & 0o7777 == 0o700
    assert os.stat(out / "run.sh").st_mode & 0o7777 == 0o644
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o750)
    os.chmod(empty, 0o750)
    r = codeq_exec(host, "--out", str(empty), "-c", code)
    assert r.returncode == 0, r
    assert os.stat(empty).st_mode & 0o7777 == 0o750
    assert tree(str(empty)) == {"run.sh": b"echo hi"}


def test_out_failure_is_reported_once_and_exits_125(host, tmp_path):
    """A file that cannot be saved (here: deeper than 32 directories) is one error line
    on stderr and exit status 125; the other files are still saved."""
    out = tmp_path / "out"
    r = codeq_exec(host, "--out", str(out), "-c",
                   "import os\n"
                   "deep = '/'.join(['d'] * 34)\n"
                   "os.makedirs(deep)\n"
                   "open(deep + '/x.txt', 'w').write('x')\n"
                   "open('ok.txt', 'w').write('ok')\n")
    assert r.returncode == 125, r
    lines = [x for x in r.stderr.splitlines() if x.startswith("codeq: --out: ")]
    assert lines == ["codeq: --out: " + "/".join(["d"] * 33) +
                     ": more than 32 directories deep; not saved"], r
    assert tree(str(out))["ok.txt"] == b"ok"


# ----------------------------------------------------------------------------------
# Signals and live output


def start_exec(host, code, *args):
    proc = subprocess.Popen([CODEQ, "exec", *args, "-c", code], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    host.pids.append(proc.pid)
    return proc


LOOPER = ("import subprocess\n"
          "print('step one', flush=True)\n"
          "child = subprocess.Popen(['sh', '-c', 'sleep 1000; : {marker}'])\n"
          "while True:\n"
          "    pass\n")


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_the_run_and_cleans_up(host, sig, status):
    """Ctrl-C (SIGINT) or SIGTERM while code runs (and has a child): codeq stops at
    once with 128+N, says so, and leaves no sandbox process or cgroup behind."""
    marker = f"signal-marker-{sig}"
    proc = start_exec(host, LOOPER.format(marker=marker))
    try:
        # The code is running once its child exists (seen from the host).
        wait_until(lambda: processes_of(proc.pid, marker) or proc.poll() is not None, 60,
                   "the code to start its child")
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = err.decode()
    assert_no_sanitizer_reports(err, "codeq exec")
    assert proc.returncode == status, (proc.returncode, err)
    assert err.endswith(f"codeq: stopped by signal {int(sig)} ({signal.strsignal(sig)})\n"), err
    assert b"Traceback" not in out
    host.assert_clean([proc.pid])


def test_output_is_printed_live(host):
    """A line the code prints (and flushes) appears on codeq's stdout while the code
    is still running, not only when it ends."""
    proc = start_exec(host, LOOPER.format(marker="live-marker"))
    got = b""
    try:
        wait_until(lambda: processes_of(proc.pid, "live-marker") or proc.poll() is not None,
                   60, "the code to start its child")
        # The print came before the child was started: it is due on stdout now.
        deadline = time.monotonic() + 5
        while b"step one\n" not in got and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                got += chunk
        running = proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert running, "the code ended early"
    assert got == b"step one\n", f"stdout while the code ran: {got!r}"
