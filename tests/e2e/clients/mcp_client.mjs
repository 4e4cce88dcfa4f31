// Drives `gpumod mcp` with the official MCP SDK client, as a coding agent's host would: spawns
// it over stdio, then lists and calls its tools and reads its resources. Prints one JSON object
// with what each step returned, on a line of its own after "RESULT ", for the C++ test to check
// (tests/e2e/mcp_test.cpp).
// usage: node mcp_client.mjs GPUMOD_BINARY DAEMON_URL
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [gpumod, url] = process.argv.slice(2);
const transport = new StdioClientTransport({ command: gpumod, args: ["mcp", "--url", url], stderr: "inherit" });
const client = new Client({ name: "gpumod-e2e", version: "1.0.0" });
const out = {};
const text = (r) => r.content.map((c) => c.text).join("\n");
const call = async (name, args = {}, options = {}) => {
  const r = await client.callTool({ name, arguments: args }, undefined, options);
  return { isError: r.isError === true, text: text(r), structured: r.structuredContent ?? null };
};

try {
  await client.connect(transport);
  out.server = client.getServerVersion();
  out.protocol = transport._protocolVersion ?? null;
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  out.status = await call("status");
  out.modes = await call("list_modes");
  const progress = [];
  out.request = await call(
    "request_model",
    { model: "chat" },
    { onprogress: (p) => progress.push(p), resetTimeoutOnProgress: true, timeout: 60000 },
  );
  out.progress = progress;
  out.switch = await call("switch_mode", { mode: "pair" });
  out.sleep = await call("sleep_service", { id: "chat" });
  out.wake = await call("wake_service", { id: "chat" });
  out.stop = await call("stop_service", { id: "embed" });
  out.start = await call("start_service", { id: "embed" });
  out.plan = await call("plan", { model: "big" });
  out.logs = await call("service_logs", { id: "chat", tail: 5 });
  out.events = await call("recent_events", { count: 10 });
  out.reload = await call("reload");
  out.bad_mode = await call("switch_mode", { mode: "no-such-mode" });
  out.missing_arg = await call("start_service", {});
  try {
    await call("no_such_tool");
    out.unknown_tool = "no error";
  } catch (e) {
    out.unknown_tool = String(e.message);
  }
  out.resources = (await client.listResources()).resources.map((r) => r.uri).sort();
  const status = await client.readResource({ uri: "gpumod://status" });
  out.status_resource = JSON.parse(status.contents[0].text);
  await client.close();
} catch (e) {
  out.failure = String(e && e.stack ? e.stack : e);
}
console.log("RESULT " + JSON.stringify(out));
