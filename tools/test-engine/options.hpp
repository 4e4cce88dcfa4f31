// Command line of gpumod-test-engine (fixed: the demo presets and tests use it).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "base/result.hpp"

namespace gpumod::engine {

enum class Protocol { vllm, llamacpp, router, generic };
const char* to_string(Protocol p);

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  Protocol protocol = Protocol::generic;
  std::string model;                // the served model (single-model protocols)
  std::vector<std::string> models;  // router: the models it can load
  std::int64_t vram_mb = 0;         // per model for a router
  std::chrono::milliseconds load{0};
  std::chrono::milliseconds wake{0};
  std::int64_t sleep_residual_mb = 0;
  bool crash_on_load = false;
  bool never_healthy = false;
  bool ignore_sigterm = false;
  bool fail_wake = false;
  std::chrono::milliseconds release_lag{0};
  // Pause between two SSE chunks of a streamed reply; 0 sends them back to back.
  std::chrono::milliseconds stream_gap{3};
};

// argv[0] is skipped. Unknown flags and bad values are errors that name the flag.
Result<Options> parse_options(const std::vector<std::string>& args);
std::string usage();

}  // namespace gpumod::engine
