"""scripts/check-layering: the dependency rule holds in this checkout, and the checker
fails on each kind of violation (so that its pass means something)."""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECKER = ROOT / "scripts" / "check-layering"


def run(*args):
    return subprocess.run([sys.executable, str(CHECKER), *args], capture_output=True, text=True)


def make_tree(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


CLEAN = {
    "common/error.h": "",
    "api/api.h": '#include "common/error.h"\n',
    "sandbox/sandbox.h": '#include "common/error.h"\n',
    "sandbox/internal.h": '#include "sandbox/sandbox.h"\n',
    "worker/worker.h": '#include "api/api.h"\n#include "sandbox/sandbox.h"\n',
    "fleet/store.h": '#include "api/api.h"\n',
    "fleet/codec.h": '#include "api/api.h"\n#include "codeq.pb-c.h"\n',
    "dispatcher/dispatcher.c": '#include "fleet/store.h"\n#include "dispatcher/routes.h"\n',
    "workerd/daemon.c": '#include "fleet/store.h"\n#include "worker/worker.h"\n',
    "cli/main.c": '#include "worker/worker.h"\n#include "fleet/codec.h"\n',
}


def test_this_checkout_follows_the_rule():
    result = run()
    assert result.returncode == 0, result.stderr
    assert "every include follows the dependency rule" in result.stdout


def test_a_clean_tree_passes(tmp_path):
    result = run("--root", str(make_tree(tmp_path, CLEAN)))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name,text,expected", [
    # the dispatcher must not depend on the worker core (the issue that made this rule)
    ("dispatcher/routes.c", '#include "worker/worker.h"\n',
     "dispatcher/ must not depend on worker/"),
    # fleet/ knows the tool surface's shapes, never the worker core or the sandbox
    ("fleet/kafka.c", '#include "sandbox/sandbox.h"\n', "fleet/ must not depend on sandbox/"),
    # the leaf library depends on common/ alone
    ("api/result.c", '#include "worker/worker.h"\n', "api/ must not depend on worker/"),
    # upward: the sandbox never knows its users
    ("sandbox/process.c", '#include "fleet/store.h"\n', "sandbox/ must not depend on fleet/"),
    # private headers stay private even where the directory is allowed
    ("worker/kernel.c", '#include "sandbox/internal.h"\n', "private to sandbox/"),
    ("cli/backend.c", '#include "worker/internal.h"\n', "private to worker/"),
])
def test_each_violation_fails(tmp_path, name, text, expected):
    files = dict(CLEAN)
    files[name] = text
    result = run("--root", str(make_tree(tmp_path, files)))
    assert result.returncode == 1
    assert f"{name}: includes" in result.stderr
    assert expected in result.stderr


def test_the_dispatcher_binary_carries_no_worker_or_sandbox(tmp_path):
    build = pathlib.Path(__import__("os").environ.get("CODEQ_BUILD_DIR", ROOT / "build"))
    if not (build / "bin" / "codeq-dispatcher").exists():
        pytest.fail(f"no codeq-dispatcher in {build}/bin: set CODEQ_BUILD_DIR")
    result = run(str(build))
    assert result.returncode == 0, result.stderr
