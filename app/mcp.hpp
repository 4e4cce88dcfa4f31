// `gpumod mcp`: a Model Context Protocol server over stdio for coding agents. It speaks
// JSON-RPC 2.0, one message per line on `in` and `out` (MCP's stdio transport), and answers
// initialize, ping, tools/list, tools/call, resources/list and resources/read by calling the
// daemon's HTTP API (app/daemon_client.hpp): it holds no state of its own, so what an agent sees
// is what `gpumod status` shows. The tools and their arguments are in docs/mcp.md.
//
// One thread: messages are answered in order; a request_model call that waits for a load sends
// notifications/progress meanwhile (when the caller gave a progressToken). Diagnostics go to
// stderr, never to `out`.
#pragma once

#include <iosfwd>
#include <optional>
#include <string>

namespace gpumod::app {

// Serves until `in` ends. Returns the process exit code (0).
int run_mcp(const std::string& url, const std::optional<std::string>& token, std::istream& in,
            std::ostream& out);

}  // namespace gpumod::app
