// tests/e2e/mcp_ts_client.mjs - the official MCP TypeScript SDK (@modelcontextprotocol/sdk,
// installed by scripts/setup into build/npm-mcp) against codeq, driven by
// tests/e2e/test_mcp_ts_sdk.py. Prints one JSON object of what it saw.
//
//   node mcp_ts_client.mjs stdio CODEQ_BINARY   codeq mcp over stdio
//   node mcp_ts_client.mjs http URL             codeq serve's /mcp (Streamable HTTP)
//   node mcp_ts_client.mjs long CODEQ_BINARY RESET
//        a 6 s cell printing every second, under a 3 s request timeout that progress
//        resets (RESET = 1) or not (0): the SDK's default timeout is 60 s, and a
//        long cell needs its progress notifications to outlive it.
import { pathToFileURL } from "node:url";
import path from "node:path";

const npm = process.env.CODEQ_MCP_NPM;
const sdk = (p) =>
  import(pathToFileURL(path.join(npm, "node_modules/@modelcontextprotocol/sdk/dist/esm", p)).href);
const { Client } = await sdk("client/index.js");
const { StdioClientTransport } = await sdk("client/stdio.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");

const [mode, target, reset] = process.argv.slice(2);

function stdioTransport(binary) {
  return new StdioClientTransport({
    command: binary,
    args: ["mcp", "--warm-pool", "0"],
    env: { ...process.env },
    stderr: "ignore",
  });
}

async function connect(transport) {
  const client = new Client({ name: "codeq-ts-test", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

const stdout = (r) => r.structuredContent?.stdout;
const out = {};
if (mode === "stdio") {
  const client = await connect(stdioTransport(target));
  const tools = await client.listTools();
  out.tools = tools.tools.map((t) => t.name).sort();
  out.versions = client.getServerVersion();
  await client.callTool({ name: "executeCode", arguments: { code: "x = 41" } });
  out.kept = stdout(await client.callTool({ name: "executeCode", arguments: { code: "print(x + 1)" } }));
  const failed = await client.callTool({ name: "executeCommand", arguments: { command: "exit 3" } });
  out.command = { isError: failed.isError, exitCode: failed.structuredContent?.exitCode };
  await client.close();
} else if (mode === "http") {
  // Two clients, two MCP sessions: the tenant's default session is shared.
  const first = await connect(new StreamableHTTPClientTransport(new URL(target)));
  await first.callTool({ name: "executeCode", arguments: { code: "shared = 'from the first'" } });
  const second = await connect(new StreamableHTTPClientTransport(new URL(target)));
  out.shared = stdout(await second.callTool({ name: "executeCode", arguments: { code: "print(shared)" } }));
  await first.close();
  await second.close();
} else if (mode === "long") {
  const client = await connect(stdioTransport(target));
  let progress = 0;
  try {
    const r = await client.callTool(
      {
        name: "executeCode",
        arguments: { code: "import time\nfor i in range(6):\n    print(i, flush=True)\n    time.sleep(1)" },
      },
      undefined,
      { timeout: 3000, resetTimeoutOnProgress: reset === "1", onprogress: () => progress++ },
    );
    out.stdout = stdout(r);
  } catch (e) {
    out.error = String(e.message || e);
  }
  out.progress = progress;
  await client.close();
}
console.log(JSON.stringify(out));
