// libFuzzer target: any bytes as the JSON body of gpumod's endpoints, through the real handlers
// (ApiServer on its own HTTP server, over a loopback connection) with a fake Control behind
// them. The first byte picks the endpoint. Checks, besides the sanitizers: no answer is a 500,
// and every error is a JSON object whose message is a string (whatever input it echoes).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "api/server.hpp"
#include "tests/api/fake_control.hpp"
#include "tests/support/raw_http.hpp"

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_api_json: %s\n", what.c_str());
    std::abort();
  }
}

struct Daemon {
  Daemon() {
    auto control = std::make_shared<gpumod::api::testing::FakeControl>();
    control->record = false;
    // POST /request gets the ready answer (its JSON writer is part of the target); a /v1 call
    // is refused once its body has been read, so no time goes into connecting to a service.
    control->on_submit = [](const gpumod::scheduler::RequestSpec& spec) {
      gpumod::scheduler::RequestOutcome o;
      o.service = "qwen3-coder";
      if (spec.hold_lease) {
        o.status = gpumod::scheduler::RequestStatus::rejected;
        o.refusal = gpumod::scheduler::Refusal::queue_full;
        o.message = "the queue is full (fuzzing)";
        o.retry_after_seconds = 1;
      } else {
        o.status = gpumod::scheduler::RequestStatus::ready;
        o.endpoint = "http://127.0.0.1:1";
        o.gpu = 0;
      }
      return o;
    };
    gpumod::api::ServerOptions opts;
    opts.port = 0;
    opts.threads = 4;
    opts.max_body_bytes = 64 * 1024;
    opts.upstream_connect_timeout = std::chrono::milliseconds(200);
    server = std::make_unique<gpumod::api::ApiServer>(control, opts);
    auto bound = server->bind();
    check(bound.ok(), "bind");
    port = *bound;
    thread = std::thread([this] { server->run(); });
  }
  ~Daemon() {
    server->stop();
    thread.join();
  }
  std::unique_ptr<gpumod::api::ApiServer> server;
  int port = 0;
  std::thread thread;
  std::unique_ptr<gpumod::testing::Raw> connection;
};

Daemon& daemon_instance() {
  static Daemon d;
  return d;
}

// The endpoints that read a JSON body (the others ignore theirs).
constexpr const char* kEndpoints[] = {"/request", "/v1/chat/completions", "/v1/completions",
                                      "/v1/embeddings"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  Daemon& d = daemon_instance();
  const std::string endpoint = kEndpoints[data[0] % std::size(kEndpoints)];
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string wire = "POST " + endpoint +
                           " HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n" +
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!d.connection) d.connection = std::make_unique<gpumod::testing::Raw>(d.port);
    if (!d.connection->send(wire)) {
      d.connection.reset();
      continue;
    }
    auto reply = d.connection->reply();
    if (!reply) {  // the server closed a kept-alive connection: once more on a new one
      d.connection.reset();
      continue;
    }
    check(reply->status != 500 && reply->status >= 200 && reply->status < 600,
          endpoint + " answered " + std::to_string(reply->status) + ": " + reply->body);
    if (reply->status >= 400) {
      const auto j = nlohmann::json::parse(reply->body, nullptr, false);
      check(
          j.is_object() && j.contains("error") && j["error"].is_object() && j["error"]["message"].is_string(),
          endpoint + " error is not the JSON error shape: " + reply->body);
    }
    if (reply->head.find("Connection: close") != std::string::npos) d.connection.reset();
    return 0;
  }
  check(false, "no answer from " + endpoint);
  return 0;
}
