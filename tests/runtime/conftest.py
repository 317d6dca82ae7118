"""tests/runtime/conftest.py - what the tests of custom runtimes and code interpreters
share: the packages they make themselves (a pure-Python wheel made in memory by
tests/net/internet.py make_wheel, and an npm tarball by `npm pack`) in a wheelhouse, a
store below /tmp, and the `codeq` runner.

Offline: no public index is ever asked. The store is made below /tmp with mode 0755:
the installers run as the user nobody, who must reach it (pytest's own tmp_path is
private to root).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "net"))
from internet import make_wheel  # noqa: E402

BIN_DIR = os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin")
CODEQ = os.path.join(BIN_DIR, "codeq")
HOST_PYTHON = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('python%d.%d' % "
                              "sys.version_info[:2])"], capture_output=True, text=True,
                             check=True).stdout.strip()

PY_PKG, PY_MODULE = "cqtest-rt", "cqtest_rt"
DEP_PKG, DEP_MODULE = "cqtest-dep", "cqtest_dep"
NPM_PKG = "cqtest-npm"


def write_wheel(wheelhouse, name, version, files, requires=()):
    filename, data = make_wheel(name, version, files, requires)
    with open(os.path.join(wheelhouse, filename), "wb") as f:
        f.write(data)
    return filename, hashlib.sha256(data).hexdigest()


def write_npm_tarball(wheelhouse, workdir, name, version, body):
    """npm pack of name@version; its install script, never to be run, would leave a file
    "postinstall-ran" in the package's directory."""
    src = os.path.join(workdir, f"npm-{name}-{version}")
    os.makedirs(src)
    with open(os.path.join(src, "package.json"), "w") as f:
        json.dump({"name": name, "version": version, "main": "index.js",
                   "scripts": {"postinstall": "echo ran > postinstall-ran"}}, f)
    with open(os.path.join(src, "index.js"), "w") as f:
        f.write(body)
    env = dict(os.environ, npm_config_cache=os.path.join(workdir, "npm-cache"),
               npm_config_update_notifier="false")
    subprocess.run(["npm", "pack", "--pack-destination", wheelhouse], cwd=src, env=env,
                   check=True, capture_output=True, timeout=60)
    return f"{name}-{version}.tgz"


@pytest.fixture
def wheelhouse(tmp_path):
    """A wheelhouse with cqtest-rt 1.0 (needs cqtest-dep), cqtest-rt 2.0, cqtest-dep 1.0,
    an sdist-only cqtest-sdist and the npm tarball cqtest-npm 1.2.3; returns (dir, hashes)."""
    wh = tmp_path / "wheelhouse"
    wh.mkdir()
    hashes = {}
    hashes[PY_PKG] = write_wheel(str(wh), PY_PKG, "1.0", {
        f"{PY_MODULE}/__init__.py": "import cqtest_dep\nGREETING = 'hello from ' + "
                                    "cqtest_dep.NAME\n"}, requires=[f"{DEP_PKG}==1.0"])[1]
    write_wheel(str(wh), PY_PKG, "2.0", {f"{PY_MODULE}/__init__.py": "GREETING = 'two'\n"})
    hashes[DEP_PKG] = write_wheel(str(wh), DEP_PKG, "1.0",
                                  {f"{DEP_MODULE}/__init__.py": "NAME = 'the dep'\n"})[1]
    # An sdist only: installing it would run its setup.py on the host.
    sdist = wh / "cqtest_sdist-1.0.tar.gz"
    sdist.write_bytes(b"not a real sdist, never to be built")
    write_npm_tarball(str(wh), str(tmp_path), NPM_PKG, "1.2.3",
                      "module.exports = { greet: () => 'hello from npm' };\n")
    return str(wh), hashes


@pytest.fixture
def store():
    path = tempfile.mkdtemp(prefix="codeq-runtime-store-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def codeq(*args, store=None, timeout=300):
    env = {"PATH": "/usr/bin:/bin"}
    if store is not None:
        env["CODEQ_RUNTIME_STORE"] = store
    return subprocess.run([CODEQ, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def write_spec(tmp_path, spec, name="spec.json"):
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return str(path)


def analytics_spec(**changes):
    spec = {"name": "analytics", "language": HOST_PYTHON,
            "packages": {"pip": [f"{PY_PKG}==1.*"], "npm": [NPM_PKG]},
            "environment": {"MPLBACKEND": "Agg", "CQTEST_SETTING": "on"},
            "preload": [PY_MODULE]}
    spec.update(changes)
    return spec


def build(tmp_path, spec, store, wh, name="spec.json"):
    return codeq("runtime", "build", write_spec(tmp_path, spec, name), "--wheelhouse", wh,
                 "--store", store)


def store_entries(store):
    return {d: sorted(os.listdir(os.path.join(store, d)))
            for d in ("layers", "names", "tmp") if os.path.isdir(os.path.join(store, d))}
