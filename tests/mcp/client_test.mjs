// The official TypeScript SDK as a client of agentwire's MCP endpoint: lists the tools,
// calls a few, and counts what the SDK warns about (Ajv compiles every output schema,
// and warns on formats and keywords it does not know). Prints one JSON line.
//
// Usage: node client_test.mjs URL TOKEN WORKSPACE
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, workspace] = process.argv.slice(2);
const warnings = [];
for (const level of ["warn", "error", "log"]) {
  const orig = console[level].bind(console);
  console[level] = (...args) => {
    warnings.push(`${level}: ${args.map(String).join(" ")}`);
    orig(...args);
  };
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "agentwire-ts-test", version: "1.0.0" });
await client.connect(transport);
const { tools } = await client.listTools();
const calls = {};
const call = async (name, args) => {
  const r = await client.callTool({ name, arguments: args });
  calls[name] = { isError: !!r.isError, structured: r.structuredContent !== undefined };
};
await call("list_workspaces", {});
await call("get_workspace", { workspace });
const pwd = await client.callTool({ name: "workspace_bash", arguments: { workspace, command: "pwd" } });
calls.workspace_bash = { isError: !!pwd.isError, structured: pwd.structuredContent !== undefined };
await call("workspace_ls", { workspace, path: pwd.structuredContent.output.trim() });
await client.close();
process.stdout.write(
  JSON.stringify({ tools: tools.map((t) => t.name), calls, warnings }) + "\n",
);
