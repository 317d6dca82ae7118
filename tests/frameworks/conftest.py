"""tests/frameworks/conftest.py - `codeq serve` for the agent frameworks' tools.

scripts/setup installs the frameworks' AgentCore code-interpreter tools into three
directories, as their dependencies disagree: Strands' and langchain-aws' into
build/pydeps-frameworks (or $CODEQ_FRAMEWORKS_PYDEPS), apart from
build/pydeps-agentcore, whose newer bedrock-agentcore Strands refuses; CrewAI's into
build/pydeps-crewai ($CODEQ_CREWAI_PYDEPS) and LlamaIndex's into
build/pydeps-llamaindex ($CODEQ_LLAMAINDEX_PYDEPS), each only the packages its snippet
imports (scripts/pins/). So this is a pytest process of its own (tests/CMakeLists.txt,
e2e/frameworks). The snippets run in child processes with one directory on their
path; this process takes only boto3 from build/pydeps-frameworks, to see the sessions
a snippet left. A missing directory fails the tests rather than skipping them.
"""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin")
CODEQ = os.path.join(BIN_DIR, "codeq")
PYDEPS = os.environ.get("CODEQ_FRAMEWORKS_PYDEPS") or os.path.join(REPO, "build", "pydeps-frameworks")
CREWAI_PYDEPS = os.environ.get("CODEQ_CREWAI_PYDEPS") or os.path.join(REPO, "build", "pydeps-crewai")
LLAMAINDEX_PYDEPS = (os.environ.get("CODEQ_LLAMAINDEX_PYDEPS")
                     or os.path.join(REPO, "build", "pydeps-llamaindex"))
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


sys.path.insert(0, os.path.join(REPO, "tests", "serve"))
from serve_process import Server, make_key  # noqa: E402


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
