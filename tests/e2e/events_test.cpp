// GET /events and the service logs on a real `gpumod serve` with real test-engine processes:
// what a user watching the stream sees while one model pushes another off the GPU, a failure
// with the last lines of the service's log, and `gpumod service logs -f` following a log.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/e2e/daemon_fixture.hpp"
#include "tests/support/stream_client.hpp"

namespace gpumod::e2e {
namespace {

using gpumod::testing::Frame;
using gpumod::testing::StreamClient;

// Index of the first frame of `kind` for `service` at or after `from`; -1 when none.
long find_frame(const std::vector<Frame>& frames, const std::string& kind, const std::string& service,
                long from = 0) {
  for (auto i = static_cast<std::size_t>(from); i < frames.size(); ++i) {
    if (frames[i].event == kind && frames[i].data.value("service", "") == service)
      return static_cast<long>(i);
  }
  return -1;
}

std::string kinds(const std::vector<Frame>& frames) {
  std::string out;
  for (const auto& f : frames) out += f.event + "(" + f.data.value("service", "") + ") ";
  return out;
}

// Reads frames until one of `kind` for `service` has come (false: the stream ended first).
bool read_until(StreamClient& stream, std::vector<Frame>& frames, const std::string& kind,
                const std::string& service) {
  while (find_frame(frames, kind, service) < 0) {
    if (!stream.frames(frames.size() + 1, frames)) return false;
  }
  return true;
}

class EventsE2e : public ::testing::Test {
 protected:
  fs::path config_dir() const { return dir_.path() / "config"; }
  fs::path state_dir() const { return dir_.path() / "state"; }
  TempDir dir_;
};

TEST_F(EventsE2e, AnEvictionIsShownAsItHappensWithItsReason) {
  GeneratedConfig cfg;
  cfg.gpu_mb = 24576;
  cfg.presets = {engine_preset("first", "vllm", free_port(), 16000, 200),
                 engine_preset("second", "vllm", free_port(), 16000, 200)};
  write_config(config_dir(), cfg);
  Daemon d(config_dir(), state_dir());
  ASSERT_TRUE(d.started());
  StreamClient stream(d.port(), "/events");
  ASSERT_EQ(stream.head().status, 200);
  ASSERT_EQ(d.post("/request", R"({"model":"first"})").status, 200);
  ASSERT_EQ(d.post("/request", R"({"model":"second"})").status, 200);
  std::vector<Frame> frames;
  ASSERT_TRUE(read_until(stream, frames, "request.ready", "second")) << kinds(frames);

  const long evicting = find_frame(frames, "service.evicting", "first");
  ASSERT_GE(evicting, 0) << kinds(frames);
  const auto& ev = frames[evicting].data;
  EXPECT_EQ(ev.value("how", ""), "stop");
  EXPECT_EQ(ev.value("for", ""), "second");
  EXPECT_NE(ev.value("reason", "").find("stop first"), std::string::npos) << ev.dump();
  const long admitted = find_frame(frames, "service.admitted", "second", evicting);
  const long starting = find_frame(frames, "service.starting", "second", admitted);
  const long ready = find_frame(frames, "service.ready", "second", starting);
  ASSERT_GT(admitted, evicting) << kinds(frames);
  ASSERT_GT(starting, admitted) << kinds(frames);
  ASSERT_GT(ready, starting) << kinds(frames);
  // The new model started only once the evicted one's memory was free again.
  EXPECT_GE(frames[starting].data.value("free_bytes", std::int64_t{0}), std::int64_t{16000} * 1024 * 1024);
  EXPECT_GT(frames[ready].data.value("seconds", 0.0), 0.1);
  // Ids are the events' seqs, increasing.
  for (std::size_t i = 1; i < frames.size(); ++i)
    EXPECT_LT(std::stoull(frames[i - 1].id), std::stoull(frames[i].id));

  // The service's own log, through the daemon.
  auto logs = d.get("/services/second/logs?tail=5");
  EXPECT_EQ(logs.status, 200);
  EXPECT_NE(logs.body.find("gpumod-test-engine"), std::string::npos) << logs.body;
}

TEST_F(EventsE2e, AFailureIsFollowedByTheLastLinesOfTheServicesLog) {
  GeneratedConfig cfg;
  auto sick = engine_preset("sick", "vllm", free_port(), 2000, 100);
  sick.extra_engine_args = {"--never-healthy"};
  sick.startup_timeout_s = 2;
  cfg.presets = {sick};
  write_config(config_dir(), cfg);
  Daemon d(config_dir(), state_dir());
  ASSERT_TRUE(d.started());
  StreamClient stream(d.port(), "/events");
  ASSERT_EQ(stream.head().status, 200);
  EXPECT_EQ(d.post("/request", R"({"model":"sick"})").status, 503);
  std::vector<Frame> frames;
  ASSERT_TRUE(read_until(stream, frames, "service.log_tail", "sick")) << kinds(frames);
  const long failed = find_frame(frames, "service.failed", "sick");
  ASSERT_GE(failed, 0) << kinds(frames);
  EXPECT_NE(frames[failed].data.value("message", "").find("sick"), std::string::npos);
  const auto& tail = frames[find_frame(frames, "service.log_tail", "sick")].data;
  ASSERT_TRUE(tail.at("lines").is_array());
  EXPECT_NE(tail.at("lines").dump().find("gpumod-test-engine: vllm sick"), std::string::npos) << tail.dump();
}

// `gpumod service logs ID -f` as a user runs it: a child process whose output is read while the
// service starts.
TEST_F(EventsE2e, ServiceLogsFollowShowsTheLogAsTheServiceWritesIt) {
  GeneratedConfig cfg;
  cfg.presets = {engine_preset("chat", "vllm", free_port(), 2000, 300)};
  write_config(config_dir(), cfg);
  Daemon d(config_dir(), state_dir());
  ASSERT_TRUE(d.started());
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  const pid_t cli = ::fork();
  if (cli == 0) {
    ::dup2(out[1], 1);
    ::execl(kGpumodBin, "gpumod", "--url", d.url().c_str(), "service", "logs", "chat", "-f", nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  ASSERT_EQ(d.post("/request", R"({"model":"chat"})").status, 200);
  std::string seen;
  const bool got = eventually([&] {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n > 0) seen.append(buf, static_cast<std::size_t>(n));
    }
    return seen.find("chat ready") != std::string::npos;
  });
  ::kill(cli, SIGTERM);
  ::waitpid(cli, nullptr, 0);
  ::close(out[0]);
  EXPECT_TRUE(got) << "gpumod service logs -f printed:\n" << seen;
  EXPECT_NE(seen.find("gpumod-test-engine: vllm chat on port"), std::string::npos) << seen;
}

}  // namespace
}  // namespace gpumod::e2e
