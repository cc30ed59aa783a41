// The official TypeScript SDK's stdio client spawning `agentwire mcp`: lists the tools,
// runs one command, and counts what the SDK warns about. Prints one JSON line.
//
// Usage: node stdio_client_test.mjs AGENTWIRE_BIN WORKSPACE_DIR (AGENTWIRE_CONFIG_DIR set)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [bin] = process.argv.slice(2);
const warnings = [];
for (const level of ["warn", "error", "log"]) {
  const orig = console[level].bind(console);
  console[level] = (...args) => {
    warnings.push(`${level}: ${args.map(String).join(" ")}`);
    orig(...args);
  };
}
const transport = new StdioClientTransport({
  command: bin,
  args: ["mcp"],
  env: { ...process.env, RUST_LOG: "warn" },
  stderr: "ignore",
});
const client = new Client({ name: "agentwire-ts-stdio-test", version: "1.0.0" });
await client.connect(transport);
const { tools } = await client.listTools();
const r = await client.callTool({
  name: "workspace_bash",
  arguments: { workspace: "dev", command: "echo ok" },
});
await client.close();
process.stdout.write(
  JSON.stringify({
    tools: tools.map((t) => t.name),
    bash_output: r.structuredContent?.output,
    warnings,
  }) + "\n",
);
