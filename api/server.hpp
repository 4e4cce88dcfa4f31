// ApiServer: gpumod's HTTP face, on its own epoll HTTP/1.1 server (http/server.hpp; why
// not cpp-httplib's server: docs/api.md). Serves the control API, /metrics, /healthz, the
// landing page and the OpenAI-compatible proxy under /v1. Handlers never touch scheduler state
// directly: they post to the Scheduler and are answered on the loop thread when its Notify
// fires (api/later.hpp), so no thread waits; cheap reads and the ready-model fast path of
// POST /request answer on the loop thread at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/result.hpp"
#include "exporter/metrics.hpp"
#include "scheduler/scheduler.hpp"

namespace gpumod::api {

class Control;  // api/control.hpp: what the handlers need from the daemon (fakeable in tests)

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 7979;                       // 0 => pick a free port (tests)
  std::optional<std::string> api_token;  // bearer token; required to bind beyond loopback
  std::int64_t max_body_bytes = 8 * 1024 * 1024;
  // Worker threads for the few handlers that block (GET /metrics renders under the registry's
  // lock; a unit file is rendered from disk state). Waiting for the scheduler (a model loading, a
  // start, a mode switch, a reload) holds no thread: the answer is posted back to the loop.
  int threads = 2;
  // A keep-alive connection with nothing to do (or stuck mid-request) is closed after this.
  std::chrono::milliseconds idle_timeout{60000};
  // /v1 proxy: how long to wait for a service to accept a connection, and for each read of
  // its answer (a long generation without streaming must fit in this).
  std::chrono::milliseconds upstream_connect_timeout{5000};
  std::chrono::milliseconds upstream_read_timeout{600000};
  // Extra time a parked client waits for the scheduler beyond the operation's own deadline.
  std::chrono::milliseconds scheduler_grace{5000};
};

class ApiServer {
 public:
  ApiServer(scheduler::Scheduler& scheduler, exporter::Metrics& metrics, ServerOptions options);
  // Same server over any Control (tests use a fake one).
  ApiServer(std::shared_ptr<Control> control, ServerOptions options);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds the socket; refuses a non-loopback host without a token. Returns the bound port.
  Result<int> bind();
  void run();   // serves until stop(); call after bind()
  void stop();  // safe from any thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpumod::api
