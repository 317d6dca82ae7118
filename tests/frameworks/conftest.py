"""tests/frameworks/conftest.py - `codeq serve` for the agent frameworks' tools.

The frameworks (Strands' and langchain-aws' AgentCore code-interpreter tools) live in
build/pydeps-frameworks (or $CODEQ_FRAMEWORKS_PYDEPS), where scripts/setup installs
them: apart from build/pydeps-agentcore, whose newer bedrock-agentcore Strands refuses,
so this is a pytest process of its own (tests/CMakeLists.txt, e2e/frameworks). The
snippets run in child processes; this process takes only boto3 from there, to see the
sessions a snippet left. Their absence fails the tests rather than skipping them.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin")
CODEQ = os.path.join(BIN_DIR, "codeq")
PYDEPS = os.environ.get("CODEQ_FRAMEWORKS_PYDEPS") or os.path.join(REPO, "build", "pydeps-frameworks")
sys.path.insert(0, PYDEPS)

REGION = "us-east-1"
# Nothing reaches AWS: no AWS configuration of the machine is read.
AWS_ENV = {
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}
os.environ.update(AWS_ENV)

import boto3  # noqa: E402  (from PYDEPS: fails here when it is missing)

assert boto3.__file__.startswith(PYDEPS), \
    f"boto3 from {boto3.__file__}: run scripts/setup (build/pydeps-frameworks)"


def make_key(keys, tenant):
    subprocess.run([CODEQ, "tenant", "create", tenant, "--keys", keys], check=True,
                   capture_output=True)
    out = subprocess.run([CODEQ, "key", "create", tenant, "--keys", keys], check=True,
                         capture_output=True, text=True).stdout
    fields = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    return fields["key_id"], fields["secret"]


class Server:
    def __init__(self, args):
        self.log = tempfile.NamedTemporaryFile(prefix="codeq-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([CODEQ, "serve", "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        self.port = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on .* \(port (\d+)\)", self.text())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        assert self.port, f"codeq serve did not start: {self.text()}"
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)
        return self.proc.returncode


@pytest.fixture(scope="session")
def keys_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("frameworks") / "keys")
    make_key(path, "setup")  # the file exists before serve reads it
    return path


@pytest.fixture(scope="session")
def server(keys_path):
    s = Server(["--keys", keys_path, "--warm-pool", "0"])
    yield s
    assert s.stop() == 0
