"""tests/runtime/test_runtime_cli.py - custom runtimes end to end: `codeq runtime
build|list|show|rm` and `codeq sandbox --runtime NAME`.

Offline: the packages are made by conftest.py from source it writes (a wheel and an
npm tarball in a wheelhouse); no public index is ever asked.
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (CODEQ, DEP_MODULE, DEP_PKG, HOST_PYTHON, NPM_PKG, PY_PKG,
                      analytics_spec, build, codeq, store_entries, write_spec, write_wheel)


def test_build_use_and_remove(tmp_path, wheelhouse, store):
    wh, hashes = wheelhouse
    r = build(tmp_path, analytics_spec(), store, wh)
    assert r.returncode == 0, r.stderr
    digest = r.stdout.strip()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert store_entries(store) == {"layers": [digest], "names": ["analytics"], "tmp": []}

    # The manifest records what got installed, the dependency too, with the wheels' sha256.
    r = codeq("runtime", "show", "analytics", store=store)
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["digest"] == digest
    pip = {a["name"]: a for a in manifest["artifacts"] if a["kind"] == "pip"}
    assert pip[PY_PKG]["version"] == "1.0" and pip[PY_PKG]["sha256"] == hashes[PY_PKG]
    assert pip[DEP_PKG]["version"] == "1.0" and pip[DEP_PKG]["sha256"] == hashes[DEP_PKG]
    npm = [a for a in manifest["artifacts"] if a["kind"] == "npm"]
    assert [(a["name"], a["version"]) for a in npm] == [(NPM_PKG, "1.2.3")]
    assert npm[0]["integrity"].startswith("sha512-")
    # Install scripts never ran (npm --ignore-scripts).
    npm_dir = os.path.join(store, "layers", digest, "node", "node_modules", NPM_PKG)
    assert sorted(os.listdir(npm_dir)) == ["index.js", "package.json"]

    # Rebuilt, and with the spec's keys in another order: the same digest, one layer.
    reordered = json.dumps(dict(reversed(list(analytics_spec().items()))), indent=4)
    r = build(tmp_path, reordered, store, wh, name="again.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == digest
    assert store_entries(store) == {"layers": [digest], "names": ["analytics"], "tmp": []}

    # A sandbox of the runtime imports both packages, with the environment applied.
    layer = f"/opt/codeq/layers/{digest}"
    program = (
        "import os, cqtest_rt\n"
        "print(cqtest_rt.GREETING)\n"
        "print(os.environ['MPLBACKEND'], os.environ['CQTEST_SETTING'])\n"
        "print(os.environ['PYTHONPATH'])\n"
        "print(os.environ['NODE_PATH'])\n"
    )
    r = codeq("sandbox", "--runtime", "analytics", "--", "python3", "-c", program, store=store)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hello from the dep", "Agg on", f"{layer}/python",
                                     f"{layer}/node/node_modules"]
    r = codeq("sandbox", "--runtime", "analytics", "--", "node", "-e",
              "console.log(require('cqtest-npm').greet())", store=store)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello from npm"
    # --env overrides one of the runtime's variables, once.
    r = codeq("sandbox", "--runtime", "analytics", "--env", "MPLBACKEND=svg", "--", "sh", "-c",
              "env | grep -c ^MPLBACKEND=; echo $MPLBACKEND", store=store)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "svg"]

    # The layer is mounted read-only; writing to it fails, even where the file mode
    # would not stop a writer.
    check_ro = (
        "import os, sys\n"
        f"layer = {layer!r}\n"
        "mounts = [l.split() for l in open('/proc/self/mountinfo')]\n"
        "opts = [m[5] for m in mounts if m[4] == layer]\n"
        "print(opts)\n"
        "assert opts and all('ro' in o.split(',') for o in opts), opts\n"
        "for path in (layer + '/python/cqtest_rt/__init__.py', layer + '/new'):\n"
        "    try:\n"
        "        open(path, 'a').close()\n"
        "    except OSError as e:\n"
        "        print('refused', e.errno)\n"
        "    else:\n"
        "        sys.exit('wrote ' + path)\n"
    )
    r = codeq("sandbox", "--runtime", "analytics", "--", "python3", "-c", check_ro, store=store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("refused") == 2

    # Without --runtime the packages are not there.
    r = codeq("sandbox", "--", "python3", "-c", "import cqtest_rt", store=store)
    assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr

    # A second name for the same digest shares the layer; rm keeps it until the last.
    r = build(tmp_path, reordered, store, wh, name="again.json")
    r = codeq("runtime", "list", store=store)
    assert r.returncode == 0 and r.stdout.split() == ["analytics", digest]
    r = codeq("runtime", "rm", "analytics", store=store)
    assert r.returncode == 0, r.stderr
    assert store_entries(store) == {"layers": [], "names": [], "tmp": []}
    r = codeq("runtime", "show", "analytics", store=store)
    assert r.returncode == 1 and "no runtime 'analytics'" in r.stderr
    r = codeq("sandbox", "--runtime", "analytics", "--", "true", store=store)
    assert r.returncode == 2 and "no runtime 'analytics'" in r.stderr


def test_shared_layer_and_changed_artifact(tmp_path, wheelhouse, store):
    wh, _ = wheelhouse
    spec = {"name": "one", "language": HOST_PYTHON, "packages": {"pip": [DEP_PKG]}}
    r1 = build(tmp_path, spec, store, wh)
    assert r1.returncode == 0, r1.stderr
    # Another name is another spec: another digest.
    r2 = build(tmp_path, dict(spec, name="two"), store, wh)
    assert r2.returncode == 0, r2.stderr
    assert r1.stdout != r2.stdout
    assert store_entries(store)["names"] == ["one", "two"]
    # The same spec against a wheel with the same name and version but other bytes: the
    # digest covers the artifacts' hashes, so it changes.
    write_wheel(wh, DEP_PKG, "1.0", {f"{DEP_MODULE}/__init__.py": "NAME = 'changed'\n"})
    r3 = build(tmp_path, spec, store, wh)
    assert r3.returncode == 0, r3.stderr
    assert r3.stdout != r1.stdout
    # "one" now names the new layer; its old one, named by nothing, is gone.
    assert store_entries(store)["layers"] == sorted([r2.stdout.strip(), r3.stdout.strip()])
    for name in ("one", "two"):
        assert codeq("runtime", "rm", name, store=store).returncode == 0
    assert store_entries(store) == {"layers": [], "names": [], "tmp": []}


def test_concurrent_builds_give_one_layer(tmp_path, wheelhouse, store):
    wh, _ = wheelhouse
    path = write_spec(tmp_path, analytics_spec())
    results = [None, None, None]

    def run(i):
        results[i] = codeq("runtime", "build", path, "--wheelhouse", wh, "--store", store)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert r.returncode == 0, r.stderr
    assert len({r.stdout for r in results}) == 1
    assert store_entries(store) == {"layers": [results[0].stdout.strip()], "names": ["analytics"],
                                    "tmp": []}


@pytest.fixture
def loopback_index(wheelhouse):
    """A PEP 503 index of the wheelhouse's wheels on 127.0.0.1 (no packet leaves the
    machine), links without hashes: pip hashes what it downloads."""
    import http.server
    wh, _ = wheelhouse
    root = tempfile.mkdtemp(prefix="codeq-index-", dir="/tmp")
    for wheel in os.listdir(wh):
        if wheel.endswith(".whl"):
            project = wheel.split("-")[0].replace("_", "-")
            os.makedirs(os.path.join(root, "simple", project), exist_ok=True)
            shutil.copy(os.path.join(wh, wheel), root)
            with open(os.path.join(root, "simple", project, "index.html"), "a") as f:
                f.write(f'<a href="/{wheel}">{wheel}</a>\n')
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=root)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    server.shutdown()
    shutil.rmtree(root)


def test_index_url_gives_the_wheelhouse_digest(tmp_path, wheelhouse, store, loopback_index):
    """The same packages from an index (--index-url) and from a wheelhouse: the same
    digest, since it covers the artifacts' hashes, not where they came from."""
    wh, hashes = wheelhouse
    spec = {"name": "idx", "language": HOST_PYTHON, "packages": {"pip": [f"{PY_PKG}==1.0"]}}
    r1 = codeq("runtime", "build", write_spec(tmp_path, spec), "--index-url", loopback_index,
               "--store", store)
    assert r1.returncode == 0, r1.stderr
    manifest = json.loads(codeq("runtime", "show", "idx", store=store).stdout)
    pip = {a["name"]: a for a in manifest["artifacts"]}
    assert pip[PY_PKG]["sha256"] == hashes[PY_PKG]
    assert pip[PY_PKG]["source"].startswith(loopback_index.replace("/simple/", "/"))
    r2 = build(tmp_path, spec, store, wh)
    assert r2.returncode == 0, r2.stderr
    assert r1.stdout == r2.stdout
    r = codeq("runtime", "build", write_spec(tmp_path, spec), "--index-url", loopback_index,
              "--wheelhouse", wh)
    assert r.returncode == 2 and "exclude each other" in r.stderr


def test_killed_build_is_swept(tmp_path, wheelhouse, store):
    """A build killed with SIGKILL leaves its directory in STORE/tmp (never a layer or a
    name); the next build removes it, and a half-removed layer's rm-* directory."""
    wh, _ = wheelhouse
    path = write_spec(tmp_path, analytics_spec())
    proc = subprocess.Popen([CODEQ, "runtime", "build", path, "--wheelhouse", wh, "--store", store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = os.path.join(store, "tmp")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (os.path.isdir(tmp) and os.listdir(tmp)):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    left = store_entries(store)
    assert left["layers"] == [] and left["names"] == []
    assert len(left["tmp"]) == 1 and left["tmp"][0].startswith("build-")
    os.makedirs(os.path.join(tmp, "rm-abcdef", "layer", "python"))
    r = build(tmp_path, analytics_spec(), store, wh)
    assert r.returncode == 0, r.stderr
    assert store_entries(store)["tmp"] == []


BAD_SPECS = [
    ("malformed JSON", '{"name": "x", "language": ', "malformed JSON at line 1"),
    ("unknown key", {"name": "x", "language": "node", "image": "debian"}, "unknown key 'image'"),
    ("unknown language", {"name": "x", "language": "ruby"}, "language 'ruby'"),
    ("another python", {"name": "x", "language": "python3.9"}, f"this host runs {HOST_PYTHON}"),
    ("name with a slash", {"name": "a/b", "language": "node"}, "name 'a/b'"),
    ("name with dots", {"name": "..", "language": "node"}, "name '..'"),
    ("option-like package", {"name": "x", "language": HOST_PYTHON,
                             "packages": {"pip": ["--index-url=https://evil.example/simple"]}},
     "packages.pip[0]"),
    ("URL package", {"name": "x", "language": HOST_PYTHON,
                     "packages": {"pip": ["cqtest-rt@https://evil.example/x.whl"]}},
     "packages.pip[0]"),
    ("npm file: package", {"name": "x", "language": "node",
                           "packages": {"npm": ["x@file:/etc"]}}, "packages.npm[0]"),
    ("reserved variable", {"name": "x", "language": "node", "environment": {"PATH": "/evil"}},
     "environment 'PATH'"),
    ("package not in the wheelhouse", {"name": "x", "language": HOST_PYTHON,
                                       "packages": {"pip": ["cqtest-missing"]}},
     "No matching distribution found for cqtest-missing"),
    ("conflicting versions", {"name": "x", "language": HOST_PYTHON,
                              "packages": {"pip": [f"{PY_PKG}==1.0", f"{PY_PKG}==2.0"]}},
     f"Cannot install {PY_PKG}==1.0 and {PY_PKG}==2.0"),
    ("sdist only", {"name": "x", "language": HOST_PYTHON,
                    "packages": {"pip": ["cqtest-sdist"]}},
     "No matching distribution found for cqtest-sdist"),
    ("npm package not in the wheelhouse", {"name": "x", "language": "node",
                                           "packages": {"npm": ["cqtest-nope"]}},
     "no cqtest-nope-VERSION.tgz in the wheelhouse"),
    ("npm version not in the wheelhouse", {"name": "x", "language": "node",
                                           "packages": {"npm": [f"{NPM_PKG}@9.9.9"]}},
     f"no {NPM_PKG}-9.9.9.tgz"),
]


@pytest.mark.parametrize("spec,message", [(s, m) for _, s, m in BAD_SPECS],
                         ids=[i for i, _, _ in BAD_SPECS])
def test_bad_spec_leaves_nothing(tmp_path, wheelhouse, store, spec, message):
    wh, _ = wheelhouse
    r = build(tmp_path, spec, store, wh)
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert r.stdout == ""
    assert len(r.stderr) < 2000  # the installers' own lines, cut short
    for entries in store_entries(store).values():
        assert entries == []


def test_installers_run_unprivileged(tmp_path, wheelhouse):
    """A store that only root can reach: the installer, run as nobody, cannot enter it,
    and the build says so (root could have)."""
    wh, _ = wheelhouse
    parent = tempfile.mkdtemp(prefix="codeq-private-", dir="/tmp")  # 0700
    try:
        store = os.path.join(parent, "store")
        r = build(tmp_path, {"name": "x", "language": HOST_PYTHON,
                             "packages": {"pip": [DEP_PKG]}}, store, wh)
        assert r.returncode == 1
        assert "searchable by others" in r.stderr, r.stderr
        assert store_entries(store) == {"layers": [], "names": [], "tmp": []}
    finally:
        shutil.rmtree(parent)


def test_help_and_usage():
    r = codeq("runtime", "--help")
    assert r.returncode == 0
    for word in ("build SPEC.json", "--wheelhouse", "--index-url", "--store", "list", "show", "rm"):
        assert word in r.stdout
    r = codeq("sandbox", "--help")
    assert "--runtime NAME" in r.stdout
    r = codeq("runtime", "frobnicate")
    assert r.returncode == 2 and "unknown subcommand" in r.stderr
    r = codeq("runtime", "build")
    assert r.returncode == 2
    r = codeq("runtime", "show", "../x")
    assert r.returncode == 1 and "name '../x'" in r.stderr
