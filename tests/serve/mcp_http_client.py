"""The official MCP Python SDK (build/pydeps-mcp) over Streamable HTTP against `codeq serve`,
run as a process of its own: the SDK needs newer packages than the Debian ones pytest has
imported, and the tests want separate client processes anyway.

    python3 mcp_http_client.py URL TOKEN SCENARIO [ARG...]

TOKEN is "KEY_ID:SECRET" (sent as Authorization: Bearer) or "-" for none. Prints one line
of JSON (what the scenario found) and exits 0; a failed check raises (exit 1); 2 when the
SDK is missing.
"""

import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYDEPS = os.environ.get("CODEQ_MCP_PYDEPS") or os.path.join(REPO, "build", "pydeps-mcp")
sys.path.insert(0, PYDEPS)

try:
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
except ImportError as e:
    print(f"the MCP SDK is missing ({e}): run scripts/setup (build/pydeps-mcp)")
    sys.exit(2)


def texts(result):
    return "".join(c.text for c in result.content if getattr(c, "text", None))


async def run(url, token, scenario, args):
    headers = {"Authorization": f"Bearer {token}"} if token != "-" else None
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                init = await s.initialize()
                assert init.protocol_version in ("2025-06-18", "2025-11-25"), init
                return await SCENARIOS[scenario](s, *args)


async def basic(s):
    """tools/list with output schemas; state kept between calls of one client; progress
    notifications carry the output of a cell that prints over time, in order."""
    tools = await s.list_tools()
    names = {t.name for t in tools.tools}
    assert {"executeCode", "executeCommand", "startSession"} <= names, names
    assert any(t.output_schema for t in tools.tools), tools
    r = await s.call_tool("executeCode", {"code": "kept = 41"})
    assert not r.is_error, r
    r = await s.call_tool("executeCode", {"code": "kept + 1"})
    assert not r.is_error and "42" in texts(r), r
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, message, time.monotonic()))

    r = await s.call_tool(
        "executeCode",
        {"code": "import time\nfor i in range(4):\n    print('tick', i, flush=True)\n"
                 "    time.sleep(0.4)"},
        progress_callback=on_progress)
    assert not r.is_error, r
    done = time.monotonic()
    text = "".join(m or "" for _, m, _ in seen)
    assert all(f"tick {i}\n" in text for i in range(4)), seen
    assert [p for p, _, _ in seen] == sorted({p for p, _, _ in seen}), seen
    # Streamed, not gathered at the end: the first tick came well before the response.
    first = next(t for _, m, t in seen if m and "tick 0" in m)
    assert done - first > 0.8, (done - first, seen)
    return {"progress": len(seen)}


async def set_var(s, name, value, session_id=None):
    args = {"code": f"{name} = {value!r}"}
    if session_id:
        args["sessionId"] = session_id
    r = await s.call_tool("executeCode", args)
    assert not r.is_error, r
    return {"set": name}


async def get_var(s, name, session_id=None):
    args = {"code": f"print(repr({name}))"}
    if session_id:
        args["sessionId"] = session_id
    r = await s.call_tool("executeCode", args)
    return {"is_error": bool(r.is_error), "text": texts(r)}


async def start(s):
    r = await s.call_tool("startSession", {})
    assert not r.is_error, r
    return {"sessionId": r.structured_content["sessionId"]}


async def call(s, name, arguments):
    r = await s.call_tool(name, json.loads(arguments))
    return {"is_error": bool(r.is_error), "text": texts(r),
            "structured": r.structured_content}


async def cancel(s):
    """The SDK's read timeout sends notifications/cancelled: the cell stops, the next call
    in the same session answers at once, and the variables are kept."""
    r = await s.call_tool("executeCode", {"code": "before_cancel = 7"})
    assert not r.is_error, r
    started = time.monotonic()
    try:
        await s.call_tool("executeCode", {"code": "import time\ntime.sleep(60)"},
                          read_timeout_seconds=2)
        raise AssertionError("the 60 s cell returned")
    except AssertionError:
        raise
    except Exception as e:  # the SDK's timeout error
        timed_out = type(e).__name__
    r = await s.call_tool("executeCode", {"code": "before_cancel + 1"})
    waited = time.monotonic() - started
    assert not r.is_error and "8" in texts(r), r
    # Behind an uncancelled cell this call would have waited for its 60 s.
    assert waited < 45, f"the next cell waited {waited:.1f} s"
    return {"timed_out": timed_out, "waited": round(waited, 1)}


async def resume(s):
    """A call whose stream breaks after its first event (the test's proxy cuts it): the
    SDK reconnects with Last-Event-ID and gets the rest of the progress and the result."""
    seen = []

    async def on_progress(progress, total, message):
        seen.append(message or "")

    r = await s.call_tool(
        "executeCode",
        {"code": "import time\nprint('a', flush=True)\ntime.sleep(3)\nprint('b', flush=True)"},
        progress_callback=on_progress)
    return {"is_error": bool(r.is_error), "stdout": r.structured_content["stdout"],
            "progress": "".join(seen)}


SCENARIOS = {"resume": resume, "basic": basic, "set": set_var, "get": get_var, "start": start, "call": call,
             "cancel": cancel}


def main():
    url, token, scenario, *args = sys.argv[1:]
    out = anyio.run(run, url, token, scenario, args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
