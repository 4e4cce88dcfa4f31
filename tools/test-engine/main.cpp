// gpumod-test-engine: a small server of the gpumod project that speaks the llama.cpp
// (single and router) and vLLM sleep protocols with toy outputs and charges the simulated
// GPU (and real VRAM when built with CUDA on a GPU machine). For tests and the demo only;
// it is not a model server. See docs/engine.md.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include <filesystem>
#include <optional>

#include "backends/gpu_probe.hpp"
#include "http/server.hpp"
#include "tools/test-engine/engine.hpp"
#include "tools/test-engine/engine_memory.hpp"
#include "tools/test-engine/memory.hpp"
#include "tools/test-engine/options.hpp"

namespace {

using gpumod::engine::Engine;
using gpumod::engine::Options;
using gpumod::engine::Protocol;

// CUDA_VISIBLE_DEVICES names the GPU the scheduler chose; the sim charge goes to that index.
int gpu_index() {
  const char* env = std::getenv("CUDA_VISIBLE_DEVICES");
  if (env == nullptr || *env == '\0') return 0;
  try {
    return std::max(0, std::stoi(std::string(env)));
  } catch (const std::exception&) {
    return 0;  // a UUID or a list we cannot map: GPU 0
  }
}

int run(const Options& options, std::chrono::steady_clock::time_point started) {
  // Signals are taken by one thread with sigwait, so no handler runs inside a library call.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  if (options.ignore_sigterm) {
    ::signal(SIGTERM, SIG_IGN);
  } else {
    sigaddset(&stop_signals, SIGTERM);
  }
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::optional<std::filesystem::path> sim_dir;
  if (const char* dir = std::getenv(gpumod::backends::kSimDirEnv); dir != nullptr && *dir != '\0')
    sim_dir = dir;
  gpumod::engine::ChargeKeeper charge(sim_dir, gpu_index(), options.release_lag);
  gpumod::engine::Memory memory(charge, false);
  // Probing the GPU starts the CUDA runtime (and on a GPU machine the driver: tens to hundreds
  // of ms). A llama.cpp-style engine serves (/health 503) while it does that, as llama-server
  // serves while it loads; a router or vLLM engine needs the answer before it serves.
  const bool probe_while_serving =
      options.protocol == Protocol::llamacpp || options.protocol == Protocol::generic;
  auto probe_device = [&] {
    std::string why;
    const bool real_device = gpumod::engine::device_available(why);
    memory.use_device(real_device);
    std::fprintf(stderr, "gpumod-test-engine: %s %s on port %d, gpu %d, %lld MiB; real VRAM: %s\n",
                 to_string(options.protocol), options.model.c_str(), options.port, gpu_index(),
                 static_cast<long long>(options.vram_mb), real_device ? "yes" : why.c_str());
  };
  if (!probe_while_serving) probe_device();
  Engine engine(options, memory, started);

  std::thread signals([&engine, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    engine.request_stop();
  });
  signals.detach();

  gpumod::http::HttpServerOptions http;
  http.host = options.host;
  http.port = options.port;
  // Workers run the routes that wait or touch memory, and each streamed reply while it
  // streams; 8 is what httplib's pool had for everything (bench/http runs 8 streams at once).
  http.threads = 8;
  // Like the servers it stands in for (llama-server, uvicorn): idle keep-alive connections
  // are closed after 5 s; request bodies are not capped in practice.
  http.idle_timeout = std::chrono::seconds(5);
  http.max_body_bytes = std::int64_t{1} << 30;
  gpumod::http::HttpServer server(http);  // sets TCP_NODELAY on every connection
  engine.install(server);
  std::thread serving;
  auto start_serving = [&]() -> bool {
    // Once bound the port accepts connections (the kernel queues them until run() reads).
    if (auto bound = server.bind(); !bound) {
      std::fprintf(stderr, "gpumod-test-engine: %s\n", bound.error().c_str());
      return false;
    }
    serving = std::thread([&server] { server.run(); });
    return true;
  };

  int status = 0;
  if (options.protocol == Protocol::vllm) {
    // vLLM binds its port only once the engine is up: connection refused while starting.
    if (engine.load() && !start_serving()) status = 2;
  } else {
    if (!start_serving()) {
      status = 2;
    } else if (probe_while_serving) {
      probe_device();
      engine.load();
    }
  }
  if (status == 0) engine.wait_for_stop();
  server.stop();
  if (serving.joinable()) serving.join();
  engine.join_loaders();
  memory.discard_all();
  charge.finish();  // waits out --release-lag-ms, then removes the charge
  std::fprintf(stderr, "gpumod-test-engine: stopped\n");
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  const auto started = std::chrono::steady_clock::now();  // --load-ms counts from here
  const std::vector<std::string> args(argv, argv + argc);
  if (args.size() > 1 && (args[1] == "--help" || args[1] == "-h")) {
    std::fputs(gpumod::engine::usage().c_str(), stdout);
    return 0;
  }
  auto options = gpumod::engine::parse_options(args);
  if (!options) {
    std::fprintf(stderr, "gpumod-test-engine: %s\n%s", options.error().c_str(),
                 gpumod::engine::usage().c_str());
    return 2;
  }
  return run(*options, started);
}
