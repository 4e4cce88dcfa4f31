// A port gpumod does not own: a service whose port is already held by another process fails
// to start at once, naming that process, instead of gpumod health-checking a stranger and
// calling it ready; and a service that answers on its port through a stranger's socket (the
// stranger bound the port after the service was launched) is not called ready either.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <string>
#include <thread>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/e2e/e2e_helpers.hpp"

namespace gpumod::e2e {
namespace {

// This test process's command name, as /proc/PID/comm has it (15 characters at most).
std::string own_comm() {
  std::ifstream in("/proc/self/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

// A stranger: an HTTP server in this test process that answers every health check with 200.
class Stranger {
 public:
  explicit Stranger(int port) {
    server_.Get(".*", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("{}", "application/json");
    });
    bound_ = server_.bind_to_port("127.0.0.1", port);
    if (bound_) thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Stranger() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  Stranger(const Stranger&) = delete;
  Stranger& operator=(const Stranger&) = delete;
  [[nodiscard]] bool bound() const { return bound_; }

 private:
  httplib::Server server_;
  bool bound_ = false;
  std::thread thread_;
};

TEST(PortConflict, AStartOnAPortHeldByAnotherProcessFailsAtOnceNamingIt) {
  TempDir dir;
  GeneratedConfig cfg;
  cfg.presets = {engine_preset("alpha", "vllm", free_port(), 1000)};
  write_config(dir.path() / "config", cfg);
  Stranger stranger(cfg.presets[0].port);
  ASSERT_TRUE(stranger.bound());
  Daemon d(dir.path() / "config", dir.path() / "state");
  ASSERT_TRUE(d.started());

  const auto r = d.post("/services/alpha/start");
  EXPECT_GE(r.status, 400) << r.body;
  const std::string message = r.obj()["error"].value("message", "");
  const std::string want = "port " + std::to_string(cfg.presets[0].port) + " is in use by pid " +
                           std::to_string(::getpid()) + " (" + own_comm() + ")";
  EXPECT_NE(message.find(want), std::string::npos) << message;
  EXPECT_EQ(service_state(d, "alpha"), "failed");
  EXPECT_NE(service_status(d, "alpha").value("last_error", "").find(want), std::string::npos);
  // Nothing was launched: no engine process of this daemon exists.
  EXPECT_TRUE(processes_using_sim_dir(dir.path() / "state" / "sim").empty());
}

TEST(PortConflict, AServiceAnsweringThroughAStrangersSocketIsNotReady) {
  TempDir dir;
  const int port = free_port();
  const fs::path flag = dir.path() / "go";
  // The service: a process that never listens (it waits for a flag, then sleeps), so whatever
  // answers its health URL is somebody else.
  write_file(
      dir.path() / "config" / "gpumod.yaml",
      "gpus:\n  probe: sim\n  sim:\n    - name: e2e-gpu\n      memory_mb: 24576\npolicy:\n  headroom_mb: 0\n"
      "  stop_grace: 3s\n");
  write_file(dir.path() / "config" / "presets" / "mute.yaml",
             "id: mute\ndriver: generic\nport: " + std::to_string(port) +
                 "\nvram_mb: 100\nstartup_timeout: 30\nhealth_endpoint: /health\ncmd:\n  - /bin/sh\n  - -c\n"
                 "  - \"while [ ! -e " +
                 flag.string() + " ]; do sleep 0.05; done; exec sleep 60\"\n");
  Daemon d(dir.path() / "config", dir.path() / "state");
  ASSERT_TRUE(d.started());

  std::atomic<int> status{0};
  std::string body;
  std::thread starter([&] {
    const auto r = d.post("/services/mute/start");
    body = r.body;
    status = r.status;
  });
  ASSERT_TRUE(eventually([&] { return service_status(d, "mute").value("pid", 0) > 0; }))
      << "the service never got a process";
  Stranger stranger(port);  // binds after gpumod's pre-start check, before the service answers
  ASSERT_TRUE(stranger.bound());
  starter.join();
  EXPECT_GE(status.load(), 400) << body;
  EXPECT_EQ(service_state(d, "mute"), "failed");
  const std::string last_error = service_status(d, "mute").value("last_error", "");
  EXPECT_NE(last_error.find("held by pid " + std::to_string(::getpid())), std::string::npos) << last_error;
  EXPECT_NE(last_error.find("not by a process of 'mute'"), std::string::npos) << last_error;
  write_file(flag, "");
}

}  // namespace
}  // namespace gpumod::e2e
