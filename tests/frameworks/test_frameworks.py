"""tests/frameworks/test_frameworks.py - the agent frameworks' AgentCore code-interpreter
tools against `codeq serve`, unmodified and without a model: each snippet of
docs/agentcore.md, "Agent frameworks", runs as written in a process of its own, pointed
at codeq by BEDROCK_AGENTCORE_DP_ENDPOINT with a key of its own tenant as AWS
credentials. Then the tenant's sessions show that the snippet started one and stopped
what it started.

Strands and LangChain come from build/pydeps-frameworks, CrewAI from
build/pydeps-crewai and LlamaIndex from build/pydeps-llamaindex, all installed by
scripts/setup (conftest.py). The last two hold only the packages their snippets import
(scripts/pins/crewai.txt, scripts/pins/llamaindex.txt): a snippet that starts importing
another fails here with ModuleNotFoundError, which is when its pin list needs it.
"""
import os
import re
import subprocess

import boto3
import pytest

from conftest import AWS_ENV, CREWAI_PYDEPS, LLAMAINDEX_PYDEPS, PYDEPS, REGION, REPO, make_key

# Each framework's directory, and a package of its tool that tells it was installed.
FRAMEWORKS = {
    "strands": (PYDEPS, "strands_tools"),
    "langchain": (PYDEPS, "langchain_aws"),
    "crewai": (CREWAI_PYDEPS, "crewai_tools"),
    "llamaindex": (LLAMAINDEX_PYDEPS, "llama_index/tools/aws_bedrock_agentcore"),
}


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
    pydeps, package = FRAMEWORKS[name]
    assert os.path.isdir(os.path.join(pydeps, package)), \
        f"{name}'s AgentCore tool is not installed in {pydeps}: run scripts/setup"
    key = make_key(keys_path, f"fw-{name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BEDROCK_"))}
    env.update(AWS_ENV, BEDROCK_AGENTCORE_DP_ENDPOINT=server.endpoint,
               AWS_ACCESS_KEY_ID=key[0], AWS_SECRET_ACCESS_KEY=key[1],
               PYTHONPATH=pydeps, CREWAI_DISABLE_TELEMETRY="true",
               PYTHONWARNINGS="ignore")
    # -S: the directory alone, without Debian's dist-packages, so that a package missing
    # from it fails here instead of being found among Debian's by chance.
    p = subprocess.run(["/usr/bin/python3", "-S", "-c", snippet(name)], env=env,
                       capture_output=True, text=True, timeout=300, cwd=os.path.dirname(__file__))
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
