"""Checks that need packages from build/pydeps-mcp (the MCP Python SDK, jsonschema), run in
a process of their own: they need a newer attrs than the Debian one pytest has already
imported, and two versions of a module cannot share one interpreter.

    python3 mcp_pydeps.py validate < {"schemas": [...], "pairs": [[schema, instance]]}
    python3 mcp_pydeps.py sdk CODEQ

Exits 0 when every check passed; otherwise prints what failed and exits 1 (2 when the
packages are missing).
"""

import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYDEPS = os.environ.get("CODEQ_MCP_PYDEPS") or os.path.join(REPO, "build", "pydeps-mcp")
sys.path.insert(0, PYDEPS)


def need(module):
    try:
        return __import__(module)
    except ImportError as e:
        print(f"{module} is missing ({e}): run scripts/setup, which installs it into "
              f"{PYDEPS} (or set CODEQ_MCP_PYDEPS to where it is)")
        sys.exit(2)


def validate():
    """Every schema is valid JSON Schema 2020-12 (MCP's default dialect); every instance
    is valid against its schema."""
    jsonschema = need("jsonschema")
    job = json.load(sys.stdin)
    cls = jsonschema.Draft202012Validator
    for schema in job["schemas"]:
        cls.check_schema(schema)
    for schema, instance in job["pairs"]:
        errors = list(cls(schema).iter_errors(instance))
        if errors:
            print(f"invalid: {instance!r}: {[e.message for e in errors]}")
            sys.exit(1)
    print(f"ok: {len(job['schemas'])} schemas, {len(job['pairs'])} instances")


def sdk(codeq):
    """The official MCP Python SDK over stdio: it negotiates, lists tools (compiling
    their outputSchemas), validates results against them, gets progress through its
    callback, and on its read timeout sends notifications/cancelled: the cell stops,
    its variables are kept."""
    need("mcp")
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, message))

    async def main():
        params = StdioServerParameters(command=codeq, args=["mcp", "--warm-pool", "0"],
                                       env=dict(os.environ))
        with open(os.devnull, "w") as devnull:
            async with stdio_client(params, errlog=devnull) as streams:
                async with ClientSession(streams[0], streams[1]) as s:
                    init = await s.initialize()
                    assert init.protocol_version in (
                        "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"), init
                    tools = await s.list_tools()
                    assert any(t.output_schema for t in tools.tools), tools
                    r = await s.call_tool("executeCode", {"code": "kept = 41\nkept"})
                    assert not r.is_error and r.structured_content["exitCode"] == 0, r
                    r = await s.call_tool("executeCommand", {"command": "echo hi"})
                    assert not r.is_error and r.structured_content["stdout"] == "hi\n", r
                    r = await s.call_tool(
                        "executeCode",
                        {"code": "import time\nfor i in range(3):\n    print('p', i, "
                                 "flush=True)\n    time.sleep(0.3)"},
                        progress_callback=on_progress)
                    assert not r.is_error, r
                    text = "".join(m or "" for _, m in seen)
                    assert "p 0\n" in text and "p 2\n" in text, seen
                    assert [p for p, _ in seen] == sorted({p for p, _ in seen}), seen
                    started = time.monotonic()
                    try:
                        await s.call_tool("executeCode", {"code": "while True:\n    pass"},
                                          read_timeout_seconds=2)
                        raise AssertionError("the endless cell returned")
                    except AssertionError:
                        raise
                    except Exception as e:  # the SDK's timeout error
                        print(f"timed out as expected: {type(e).__name__}")
                    r = await s.call_tool("executeCode", {"code": "kept + 1"})
                    waited = time.monotonic() - started
                    assert waited < 60, f"the next cell waited {waited:.1f} s"
                    assert not r.is_error and "42" in [c.text for c in r.content], r
                    r = await s.call_tool("executeCode", {"code": 5})
                    assert r.is_error and "must be a string" in r.content[0].text, r
                    r = await s.call_tool("startSession", {})
                    assert not r.is_error, r
                    sid = r.structured_content["sessionId"]
                    r = await s.call_tool("getSession", {"sessionId": sid})
                    assert r.structured_content["status"] == "READY", r
                    await s.call_tool("stopSession", {"sessionId": sid})

    anyio.run(main)
    import importlib.metadata as md
    print(f"ok: mcp {md.version('mcp')}")


if __name__ == "__main__":
    if sys.argv[1] == "validate":
        validate()
    else:
        sdk(sys.argv[2])
