"""The red-team suite (tests/e2e/test_sandbox_attacks.py and test_sandbox_limits.py) with
codeq run by a normal user: every attack, and every limit its setup can enforce.

Each variant runs those two files in a pytest of its own with CODEQ_E2E_AS_USER set
(tests/e2e/conftest.py then runs every codeq as the user, through setpriv; the probe's
host runs stay root's, as they prove what works outside), and requires all of it to
pass. What cannot apply is deselected, with the reason, and never counted as passed:

  - without a delegated cgroup (CODEQ_ALLOW_UNLIMITED=1) there is no memory limit, so
    the memory bombs are not run at all: unbounded, they would take the machine's
    memory rather than the sandbox's. The pids limit holds through RLIMIT_NPROC then
    (test_rootless.py checks it), but nothing counts the forks it refused, so the fork
    bomb test's pids_limit_hit and codeq's line about it cannot be; it is not run either.

The few outcomes that differ in a sandbox without subordinate ids (one id for init, the
shims and the code) are asserted by the attack tests themselves (ONE_ID there): files
copied into the read-only root answer EROFS instead of EACCES, setuid(0) EINVAL (uid 0
does not exist) instead of EPERM, and kill(1, SIGKILL) is accepted and dropped by the
kernel instead of refused (the shim lives on).
"""

import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import pytest

from conftest import BIN_DIR, REPO, USER, DelegatedCgroup

E2E = os.path.join(REPO, "tests", "e2e")
FILES = [os.path.join(E2E, "test_sandbox_attacks.py"), os.path.join(E2E, "test_sandbox_limits.py")]
PROBE = os.environ.get("CODEQ_PROBE") or os.path.join(os.path.dirname(BIN_DIR), "tests",
                                                      "cq-probe")

NEED_CGROUP = {
    "test_sandbox_limits.py::test_fork_bomb": "pids_limit_hit is counted by the pids cgroup",
    "test_sandbox_limits.py::test_memory_bomb": "the memory limit is a cgroup's",
    "test_sandbox_limits.py::test_node_memory_bomb": "the memory limit is a cgroup's",
}

VARIANTS = {
    "subordinate-ids-delegated-cgroup": ("subids", True, {}),
    "own-id-delegated-cgroup": ("no_subids", True, {}),
    "own-id-no-cgroup-unlimited": ("no_subids", False, NEED_CGROUP),
}


def collected():
    """How many tests the two files hold."""
    proc = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--collect-only", *FILES], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120)
    lines = proc.stdout.decode().splitlines()
    return sum(1 for ln in lines if "::" in ln)


def run_suite(cgroup, deselect, extra_env):
    with tempfile.TemporaryDirectory(prefix="codeq-red-team-") as tmp:
        xml = os.path.join(tmp, "junit.xml")
        argv = ["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "--junitxml", xml, *FILES]
        for test in deselect:
            argv += ["--deselect", f"tests/e2e/{test}"]
        env = dict(os.environ)
        env.pop("CODEQ_ALLOW_UNLIMITED", None)
        env.update(CODEQ_E2E_AS_USER=USER, CODEQ_BIN_DIR=BIN_DIR, CODEQ_PROBE=PROBE, **extra_env)

        def enter_cgroup():
            for procs in cgroup.procs_files() if cgroup is not None else ():
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))

        proc = subprocess.run(argv, env=env, preexec_fn=enter_cgroup, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1500)
        out = proc.stdout.decode(errors="replace")
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        return proc.returncode, out, counts


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_red_team_as_a_normal_user(request, variant):
    ids_fixture, with_cgroup, deselect = VARIANTS[variant]
    user = request.getfixturevalue(ids_fixture)
    cgroup = DelegatedCgroup(user.pw_uid, user.pw_gid) if with_cgroup else None
    extra = {} if with_cgroup else {"CODEQ_ALLOW_UNLIMITED": "1"}
    try:
        rc, out, counts = run_suite(cgroup, deselect, extra)
    finally:
        if cgroup is not None:
            cgroup.remove()
    not_run = "".join(f"\n  {t}: {why}" for t, why in deselect.items())
    assert rc == 0 and counts["failures"] == 0 and counts["errors"] == 0, (
        f"{variant}: {counts}\n{out[-6000:]}")
    assert counts["skipped"] == 0, f"{variant}: skipped tests: {counts}\n{out[-3000:]}"
    # The whole of both files ran, but what this setup cannot enforce.
    assert counts["tests"] == collected() - len(deselect), counts
    print(f"{variant}: {counts['tests']} passed; not run:{not_run or ' none'}")
