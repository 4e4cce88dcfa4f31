// RAII: an ApiServer on 127.0.0.1 (ephemeral port) over a FakeControl, stopped and joined
// on destruction even when a test fails.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>
#include <thread>

#include "api/server.hpp"
#include "tests/api/fake_control.hpp"

namespace gpumod::api::testing {

class TestServer {
 public:
  explicit TestServer(ServerOptions options = {}, std::shared_ptr<FakeControl> control = nullptr)
      : control_(control ? std::move(control) : std::make_shared<FakeControl>()) {
    if (options.port == 7979) options.port = 0;
    options.threads = 4;
    server_ = std::make_unique<ApiServer>(control_, options);
    auto port = server_->bind();
    if (!port) throw std::runtime_error("bind failed: " + port.error());
    port_ = *port;
    thread_ = std::thread([this] { server_->run(); });
  }
  ~TestServer() {
    server_->stop();
    thread_.join();
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  FakeControl& control() { return *control_; }
  [[nodiscard]] std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(std::chrono::seconds(20));
    c->set_connection_timeout(std::chrono::seconds(5));
    return c;
  }

 private:
  std::shared_ptr<FakeControl> control_;
  std::unique_ptr<ApiServer> server_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace gpumod::api::testing
