"""langchain-mcp-adapters (build/pydeps-lcmcp, with the MCP SDK 1.x it depends on) against
`codeq serve`'s /mcp, in its default mode: MultiServerMCPClient.get_tools() and tools that
open a new MCP session for every call. Called directly, without a model.

    python3 lcmcp_client.py URL TOKEN

Prints one line of JSON: the two calls' text and how many MCP sessions were opened.
"""

import asyncio
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYDEPS = os.environ.get("CODEQ_LCMCP_PYDEPS") or os.path.join(REPO, "build", "pydeps-lcmcp")
sys.path.insert(0, PYDEPS)

try:
    import mcp.client.session
    from langchain_mcp_adapters.client import MultiServerMCPClient
except ImportError as e:
    print(f"langchain-mcp-adapters is missing ({e}): run scripts/setup (build/pydeps-lcmcp)")
    sys.exit(2)


def text_of(result):
    """A tool's answer as LangChain hands it to a model: a string, or content blocks."""
    if isinstance(result, str):
        return result
    if isinstance(result, tuple):
        result = result[0]
    return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in result)


async def main(url, token):
    # Counts the MCP sessions the adapter opens, to show it is in its per-call mode.
    opened = []
    original = mcp.client.session.ClientSession.initialize

    async def counting(self, *args, **kwargs):
        opened.append(1)
        return await original(self, *args, **kwargs)

    mcp.client.session.ClientSession.initialize = counting
    client = MultiServerMCPClient({
        "codeq": {
            "transport": "streamable_http",
            "url": url,
            "headers": {"Authorization": f"Bearer {token}"},
        }
    })
    tools = {t.name: t for t in await client.get_tools()}
    assert "executeCode" in tools, sorted(tools)
    first = await tools["executeCode"].ainvoke({"code": "lc_state = 6 * 7"})
    second = await tools["executeCode"].ainvoke({"code": "print('lc_state is', lc_state)"})
    return {"first": text_of(first), "second": text_of(second), "sessions": len(opened)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
