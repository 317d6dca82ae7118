"""tests/frameworks/test_frameworks.py - the agent frameworks' AgentCore code-interpreter
tools against `codeq serve`, unmodified and without a model: each snippet of
docs/agentcore.md, "Agent frameworks", runs as written in a process of its own, pointed
at codeq by BEDROCK_AGENTCORE_DP_ENDPOINT with a key of its own tenant as AWS
credentials. Then the tenant's sessions show that the snippet started one and stopped
what it started.

Strands and LangChain come from build/pydeps-frameworks (scripts/setup). CrewAI and
LlamaIndex are too large for CI (docs/agentcore.md says why); their tests are collected
only when CODEQ_CREWAI_PYDEPS or CODEQ_LLAMAINDEX_PYDEPS names a directory holding
them, e.g. `pip install --target DIR "crewai-tools[bedrock]==1.15.30" crewai==1.15.30`
or `pip install --target DIR llama-index-tools-aws-bedrock-agentcore==0.4.0
llama-index-core==0.14.25`.
"""
import os
import re
import subprocess

import boto3
import pytest

from conftest import AWS_ENV, PYDEPS, REGION, REPO, make_key

FRAMEWORKS = {"strands": PYDEPS, "langchain": PYDEPS}
for name, var in (("crewai", "CODEQ_CREWAI_PYDEPS"), ("llamaindex", "CODEQ_LLAMAINDEX_PYDEPS")):
    if os.environ.get(var):
        FRAMEWORKS[name] = os.environ[var]


def snippet(name):
    text = open(os.path.join(REPO, "docs", "agentcore.md")).read()
    m = re.search(rf"<!-- framework-snippet: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"docs/agentcore.md lost its {name} snippet"
    return m.group(1)


def sessions(server, key):
    c = boto3.client("bedrock-agentcore", region_name=REGION, endpoint_url=server.endpoint,
                     aws_access_key_id=key[0], aws_secret_access_key=key[1])
    return c.list_code_interpreter_sessions(codeInterpreterIdentifier="aws.codeinterpreter.v1",
                                            maxResults=100)["items"]


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_framework_snippet(server, keys_path, name):
    key = make_key(keys_path, f"fw-{name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BEDROCK_"))}
    env.update(AWS_ENV, BEDROCK_AGENTCORE_DP_ENDPOINT=server.endpoint,
               AWS_ACCESS_KEY_ID=key[0], AWS_SECRET_ACCESS_KEY=key[1],
               PYTHONPATH=FRAMEWORKS[name], CREWAI_DISABLE_TELEMETRY="true",
               PYTHONWARNINGS="ignore")
    p = subprocess.run(["/usr/bin/python3", "-c", snippet(name)], env=env, capture_output=True,
                       text=True, timeout=300, cwd=os.path.dirname(__file__))
    assert p.returncode == 0, p.stdout + p.stderr
    # Strands prints the content's Python repr inside its result's: newlines escaped twice.
    out = re.sub(r"\\+n", "\n", p.stdout)
    # State across two calls: x was set by the first cell and printed by the second.
    assert re.search(r"(?<!\d)42$", out, re.M), out
    # The command's stderr and exit code reach what the framework hands its model.
    assert "No such file or directory" in out and "exit code 2" in out, out
    # The file written is read back.
    assert "codeq was here" in out and "wrote data/notes.txt (14 bytes)" in out, out
    # listFiles of that directory (Strands names it `path`, the others `directoryPath`).
    assert "data: 1 entry\ndata/notes.txt (file, 14 bytes)" in out, out
    # One session, the snippet's, started by this tenant and stopped.
    mine = sessions(server, key)
    assert len(mine) == 1 and mine[0]["status"] == "TERMINATED", mine
